"""The training loop, one for every device: epochs, shuffled batches, the NaN guard, callbacks, profiling.

Per step, one of two paths, chosen once per fit by ``compiled_step.plan`` (the one place that decides;
``model.step_path`` says which ran: ``"compiled"`` or ``"layers: <reason>"``, also logged at DEBUG on
the ``jitnn`` logger):
- compiled (a CPU model whose layers, loss, optimizer and metrics all have kernels, no profile open):
  one ``@njit`` call trains the batch, gather to update (jitnn/compiled_step.py), bitwise the same
  results as the layer-by-layer path;
- layer by layer (any device, CSR input, pruned layers, custom metrics, a profile recording): gather
  the batch on the device (``ops.gather_rows`` from the training set, uploaded once, and a permutation
  drawn on the host from the fit's seed: the same batches on every device), ``model.train_step``
  (forward, loss, backward, running loss and metric sums), then ``model.apply_gradients``.

What differs per device is a setting of its Ops, not a branch here: the host reads the running sums
every ``ops.sync_every`` steps (every step on the CPU, rarely on a GPU where each read waits for the
device) and at the end of each epoch.

NaN guard (the documented behaviour of ``fit``): no step's update is kept when it makes a weight NaN
or inf, and a non-finite running loss stops training; either raises ``NonFiniteLossError`` naming the
epoch and batch. A non-finite loss is seen at a read, before that step's update: the weights are
restored to those that produced the last finite loss. A non-finite weight restores the weights from
before that update. On the CPU (``ops.guard_in_update``) the update kernels copy each weight into the
snapshot and check the new one in their own pass (jitnn/kernels/optim.py), so the guard reads the
weights no second time; other devices copy the parameters at each good read and check the weights
on the host at the end of each epoch (a GPU's last step is a read). ``nan_guard=False`` keeps no
snapshot: a non-finite loss or weight still raises, and the weights are those that produced it.

Profiling goes through the backend's recorder (jitnn.profiler), which does nothing when no profile is
open, so the loop has no branches for it. The phases are those listed in jitnn/profiler.py.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from jitnn import callbacks as cbks
from jitnn import compiled_step, profiler
from jitnn.metrics import log_key
from jitnn.sparse import CSRMatrix

_now = time.perf_counter_ns
_log = logging.getLogger("jitnn")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the model keeps the weights of the last good step."""


def fit(model, x, y, *, epochs, batch_size, validation_data, verbose, rng, shuffle, callbacks, profile,
        nan_guard, t_start):
    """Train ``model`` (built, compiled, arguments validated by ``Sequential.fit``); returns a History."""
    ops = model.ops
    n = x.shape[0]
    steps = (n + batch_size - 1) // batch_size
    sparse = isinstance(x, CSRMatrix)
    model.optimizer.check_learning_rate(model.dtype)  # 1e39 is inf in float32: say so before training
    xs, ys = ops.asarray(x), ops.asarray(y)  # the training set on the device, once per fit
    model.allocate(batch_size, gather=not sparse, y_like=y)
    xbuf, ybuf = model.batch_buffers()
    params = [p for layer in model.layers for p in layer.params]
    snapshot = [ops.alloc(p.shape, p.dtype) for p in params] if nan_guard else None
    if snapshot is not None:
        for p, s in zip(params, snapshot):
            ops.copy(p, s)
    in_update = ops.guard_in_update  # the update kernels fill the snapshot and check the new weights
    flat_snaps = [s.reshape(s.size) for s in snapshot] if in_update and snapshot is not None else None
    host_sums = np.zeros(1 + len(model.metrics))
    keys = ["loss"] + [log_key(name) for name, _ in model.metrics]

    history = cbks.History()
    cb_list = [history] + ([cbks.ProgbarLogger(verbose)] if verbose else []) + list(callbacks or [])
    for cb in cb_list:
        cb.set_model(model)
        if isinstance(cb, cbks.ProgbarLogger):
            cb.set_params(epochs, steps)
    profile_rec = profiler.current(profile, model, t_start)
    compiled, model.step_path = compiled_step.plan(model, x, y, batch_size, profile_rec, flat_snaps,
                                                      steps * epochs)
    _log.debug("fit: %s step path", model.step_path)
    rec = ops.recorder(profile_rec, model.layers)
    model.recorder = rec
    rec.add(None, "setup", t_start, _now(), batch_size)
    model.stop_training = False
    order = np.arange(n)
    d_order = None
    sync = ops.sync_every
    try:
        for cb in cb_list:
            cb.on_train_begin()
        for epoch in range(epochs):
            t = rec.host_start()
            for cb in cb_list:
                cb.on_epoch_begin(epoch)
            if shuffle:
                rng.shuffle(order)
            d_order = ops.to_device(order, out=d_order)
            model.reset_sums()
            rec.host_stop(t, None, "shuffle", batch_size)
            seen, good, logs = 0, 0, {}
            for step in range(steps):
                start = step * batch_size
                m = min(batch_size, n - start)
                for cb in cb_list:
                    cb.on_train_batch_begin(step)
                if compiled is not None:  # the whole step; no update when the loss is not finite
                    status = compiled.run(xs, ys, d_order, start, m)
                else:
                    t = rec.start()
                    xb = ops.gather_rows(xs, d_order, start, m, None if sparse else xbuf[:m])
                    yb = ops.gather_rows(ys, d_order, start, m, ybuf[:m])
                    rec.stop(t, None, "batching", m)
                    model.train_step(xb, yb)
                seen += m
                if (step + 1) % sync == 0 or step + 1 == steps:
                    t = rec.host_start()
                    ops.to_host(model.sums, host_sums)  # the host's read: on a GPU it waits for the device
                    if not ops.is_finite(host_sums[0]):
                        _stop(model, ops, params, snapshot, f"loss became {host_sums[0]}", epoch, good, step, steps)
                    good = step + 1
                    if snapshot is not None and not in_update:
                        for p, s in zip(params, snapshot):
                            ops.copy(p, s)
                    logs = {k: float(v / seen) for k, v in zip(keys, host_sums)}
                    rec.host_stop(t, None, "nan_guard", m)
                if compiled is None:
                    bad = model.apply_gradients(on_param=rec.update_hook(m), snapshots=flat_snaps)
                    rec.end_update(m)
                    if bad is None and step + 1 == steps:  # a device whose kernels do not check
                        bad = not all(np.isfinite(ops.to_host(p)).all() for p in params)
                    status = compiled_step.WEIGHTS_NOT_FINITE if bad else compiled_step.STEP_OK
                if status == compiled_step.WEIGHTS_NOT_FINITE:
                    _stop(model, ops, params, snapshot, "a weight became NaN or inf in the update", epoch, step,
                          step, steps)
                t = rec.host_start()
                for cb in cb_list:
                    cb.on_train_batch_end(step, logs)
                rec.host_stop(t, None, "loop", m)
            rec.flush()
            if validation_data is not None:
                t = rec.host_start()
                values = model.evaluate(*validation_data)
                values = values if isinstance(values, list) else [values]
                logs.update(("val_" + k, v) for k, v in zip(keys, values))
                rec.host_stop(t, None, "validation", validation_data[0].shape[0])
            t = rec.host_start()
            for cb in cb_list:
                cb.on_epoch_end(epoch, logs)
            rec.host_stop(t, None, "callbacks", batch_size)
            if model.stop_training:
                break
        t = rec.host_start()
        for cb in cb_list:
            cb.on_train_end()
        rec.host_stop(t, None, "callbacks", batch_size)
    finally:
        rec.finish()  # a fit that raises (NonFiniteLossError, KeyboardInterrupt) still closes its profile
        model.recorder = profiler.NULL_RECORDER
    return history


def _stop(model, ops, params, snapshot, what, epoch, good, step, steps):
    """Restore the snapshot (when kept) and raise NonFiniteLossError saying where and what."""
    if snapshot is not None:
        for p, s in zip(params, snapshot):
            ops.copy(s, p)
        model.weights_changed()
    where = f"batch {step + 1}" if good == step else f"between batches {good + 1} and {step + 1}"
    how = f" (device={ops.name!r} checks every {ops.sync_every} batches)" if ops.sync_every > 1 else ""
    raise NonFiniteLossError(
        f"{what} at epoch {epoch + 1}, {where} of {steps}{how}; "
        + ("the weights of the last good step were restored" if snapshot is not None else
           "nan_guard=False: the weights are those that produced it"))


__all__ = ["NonFiniteLossError", "fit"]
