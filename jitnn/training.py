"""The training loop, one for every device: epochs, shuffled batches, the NaN guard, callbacks, profiling.

Per step: gather the batch on the device (``ops.gather_rows`` from the training set, uploaded once,
and a permutation drawn on the host from the fit's seed: the same batches on every device), then
``model.train_step`` (forward, loss, backward, running loss and metric sums), then the NaN guard, then
``model.apply_gradients`` (one optimizer step).

What differs per device is a setting of its Ops, not a branch here: the host reads the running sums
every ``ops.sync_every`` steps (every step on the CPU, rarely on a GPU where each read waits for the
device) and at the end of each epoch.

NaN guard (the documented behaviour of ``fit``): at each read, a non-finite running loss stops training
with ``NonFiniteLossError`` naming the epoch and the batches since the last read; before that step's
update, the weights are restored to the snapshot taken at the last good read (on the CPU: the weights
that produced the last finite loss). ``nan_guard=False`` skips the snapshot (the weights are then those
that produced the non-finite loss). Each good read copies the parameters once.

Data parallelism plugs in through a strategy object (``fit(strategy=...)``, jitnn.distributed): which
rows of each batch this process computes, one reduction of the gradients and running sums before the
update, and agreement on stopping. The default ``SINGLE_PROCESS`` does nothing, so the loop has no
branches for it either.

Profiling goes through the backend's recorder (jitnn.profiler), which does nothing when no profile is
open, so the loop has no branches for it. The phases are those listed in jitnn/profiler.py.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from jitnn import callbacks as cbks
from jitnn import profiler
from jitnn.metrics import log_key
from jitnn.sparse import CSRMatrix

_now = time.perf_counter_ns


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the model keeps the weights of the last good step."""


class SingleProcess:
    """The strategy of a one-process fit: every hook does nothing (jitnn.distributed.DataParallel is the
    other implementation, and documents each hook)."""

    is_root = True

    def agree_seed(self, seed):
        return seed

    def setup(self, model):
        pass

    def shard(self, start, rows):
        return start, rows

    def reduce_gradients(self, grads, rows, global_rows, recorder):
        pass

    def reduce_sums(self, sums):
        pass

    def agree(self, flag):
        return flag

    def evaluate(self, model, x, y, sample_weight=None):
        return model.evaluate(x, y, sample_weight=sample_weight)

    def end_epoch(self, model):
        pass

    def end_training(self, model):
        pass

    def guard(self):
        return contextlib.nullcontext()


SINGLE_PROCESS = SingleProcess()


def fit(model, x, y, *, epochs, batch_size, validation_data, verbose, rng, shuffle, callbacks, profile,
        nan_guard, t_start, strategy=SINGLE_PROCESS, sample_weight=None, initial_epoch=0):
    """Train ``model`` (built, compiled, arguments validated by ``Sequential.fit``); returns a History.

    ``sample_weight`` (float64, one per row, or None) is gathered with each batch and scales its rows'
    losses and gradients; epochs ``initial_epoch`` to ``epochs - 1`` run (Keras' resume numbering)."""
    ops = model.ops
    n = x.shape[0]
    steps = (n + batch_size - 1) // batch_size
    sparse = isinstance(x, CSRMatrix)
    xs, ys = ops.asarray(x), ops.asarray(y)  # the training set on the device, once per fit
    model.allocate(batch_size, gather=not sparse, y_like=y)
    xbuf, ybuf = model.batch_buffers()
    ws = wbuf = None
    if sample_weight is not None:
        ws, wbuf = ops.asarray(sample_weight), ops.zeros(batch_size, np.float64)
    strategy.setup(model)  # every rank starts from the root's weights and optimizer state
    params = [p for layer in model.layers for p in layer.params]
    grads = [g for layer in model.layers for g in layer.grads]
    snapshot = [ops.alloc(p.shape, p.dtype) for p in params] if nan_guard else None
    if snapshot is not None:
        for p, s in zip(params, snapshot):
            ops.copy(p, s)
    host_sums = np.zeros(1 + len(model.metrics))
    keys = ["loss"] + [log_key(name) for name, _ in model.metrics]

    history = cbks.History()
    cb_list = [history]
    if strategy.is_root:  # side effects (progress, checkpoints, logs) happen once, not once per rank
        cb_list += ([cbks.ProgbarLogger(verbose)] if verbose else []) + list(callbacks or [])
    for cb in cb_list:
        cb.set_model(model)
        cb.set_params({"epochs": epochs, "steps": steps, "verbose": verbose})
    batch_begin = [cb for cb in cb_list if _overrides(cb, "on_train_batch_begin", "on_batch_begin")]
    batch_end = [cb for cb in cb_list if _overrides(cb, "on_train_batch_end", "on_batch_end")]
    rec = ops.recorder(profiler.current(profile, model, t_start), model.layers)
    model.recorder = rec
    rec.add(None, "setup", t_start, _now(), batch_size)
    model.stop_training = False
    order = np.arange(n)
    d_order = None
    sync = ops.sync_every
    try:
        for cb in cb_list:
            cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
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
                for cb in batch_begin:
                    cb.on_train_batch_begin(step)
                first, rows = strategy.shard(start, m)  # this process's rows of the batch
                if rows:
                    t = rec.start()
                    xb = ops.gather_rows(xs, d_order, first, rows, None if sparse else xbuf[:rows])
                    yb = ops.gather_rows(ys, d_order, first, rows, ybuf[:rows])
                    if ws is None:
                        rec.stop(t, None, "batching", rows)
                        model.train_step(xb, yb)
                    else:  # the batch's sample weights, gathered like its rows
                        wb = ops.gather_rows(ws, d_order, first, rows, wbuf[:rows])
                        rec.stop(t, None, "batching", rows)
                        model.train_step(xb, yb, wb)
                strategy.reduce_gradients(grads, rows, m, rec)
                seen += m
                if (step + 1) % sync == 0 or step + 1 == steps:
                    t = rec.host_start()
                    ops.to_host(model.sums, host_sums)  # the host's read: on a GPU it waits for the device
                    strategy.reduce_sums(host_sums)
                    if not ops.is_finite(host_sums[0]):
                        _stop(model, ops, params, snapshot, host_sums[0], epoch, good, step, steps)
                    good = step + 1
                    if snapshot is not None:
                        for p, s in zip(params, snapshot):
                            ops.copy(p, s)
                    logs = {k: float(v / seen) for k, v in zip(keys, host_sums)}
                    rec.host_stop(t, None, "nan_guard", m)
                model.apply_gradients(on_param=rec.update_hook(m))
                rec.end_update(m)
                t = rec.host_start()
                for cb in batch_end:
                    cb.on_train_batch_end(step, logs)
                rec.host_stop(t, None, "loop", m)
            rec.flush()
            if validation_data is not None:
                t = rec.host_start()
                values = strategy.evaluate(model, *validation_data)
                values = values if isinstance(values, list) else [values]
                logs.update(("val_" + k, v) for k, v in zip(keys, values))
                rec.host_stop(t, None, "validation", validation_data[0].shape[0])
            t = rec.host_start()
            for cb in cb_list:
                cb.on_epoch_end(epoch, logs)
            model.stop_training = strategy.agree(model.stop_training)  # the root's callbacks decide for all
            strategy.end_epoch(model)
            rec.host_stop(t, None, "callbacks", batch_size)
            if model.stop_training:
                break
        t = rec.host_start()
        for cb in cb_list:
            cb.on_train_end()
        strategy.end_training(model)
        rec.host_stop(t, None, "callbacks", batch_size)
    finally:
        rec.finish()  # a fit that raises (NonFiniteLossError, KeyboardInterrupt) still closes its profile
        model.recorder = profiler.NULL_RECORDER
    return history


def _overrides(cb, *hooks):
    """True when ``cb``'s class overrides one of the batch ``hooks``: the others are skipped each step."""
    return any(getattr(type(cb), h) is not getattr(cbks.Callback, h) for h in hooks)


def _stop(model, ops, params, snapshot, value, epoch, good, step, steps):
    """Restore the last good snapshot (when kept) and raise NonFiniteLossError saying where and what."""
    if snapshot is not None:
        for p, s in zip(params, snapshot):
            ops.copy(s, p)
        model.weights_changed()
    where = f"batch {step + 1}" if good == step else f"between batches {good + 1} and {step + 1}"
    how = f" (device={ops.name!r} checks every {ops.sync_every} batches)" if ops.sync_every > 1 else ""
    raise NonFiniteLossError(
        f"loss became {value} at epoch {epoch + 1}, {where} of {steps}{how}; "
        + ("the weights of the last good step were restored" if snapshot is not None else
           "nan_guard=False: the weights are those that produced it"))


__all__ = ["NonFiniteLossError", "fit"]
