"""The training loop, one for every device: epochs, shuffled batches, the NaN guard, callbacks, profiling.

Per step, one of two paths, chosen once per fit by ``compiled_step.plan`` (the one place that decides;
``model.step_path`` says which ran: ``"compiled"`` or ``"layers: <reason>"``, also logged at DEBUG on
the ``jitnn`` logger):
- compiled (a CPU model whose layers, loss, optimizer and metrics all have kernels, no profile open):
  one ``@njit`` call trains the batch, gather to update (jitnn/compiled_step.py), bitwise the same
  results as the layer-by-layer path; in data-parallel training two calls, the gradients (this rank's
  rows) and the update, with the strategy's allreduce between them (``"compiled, gradients and update
  apart"``);
- layer by layer (any device, CSR input, pruned layers, custom metrics, a profile recording): gather
  the batch on the device (``ops.gather_rows`` from the training set, uploaded once, and a permutation
  drawn on the host from the fit's seed: the same batches on every device), ``model.train_step``
  (forward, loss, backward, running loss and metric sums), then ``model.apply_gradients``.

What differs per device is a setting of its Ops, not a branch here: the host reads the running sums
every ``ops.sync_every`` steps (every step on the CPU, rarely on a GPU where each read waits for the
device) and at the end of each epoch.

NaN guard (the documented behaviour of ``fit``): no step's update is kept when it makes a weight NaN
or inf, and a non-finite running loss stops training; either raises ``NonFiniteLossError`` naming the
epoch and batch (with a ``TerminateOnNaN`` callback, as in Keras, a RuntimeWarning instead, and fit
returns its History after the callbacks see the non-finite loss). A non-finite loss is seen at a read, before that step's update: the weights are
restored to those that produced the last finite loss. A non-finite weight restores the weights from
before that update. Either way the optimizer's moments and step counter go back with the weights
(jitnn.nan_guard), so a later fit at a sane rate trains and the model saves. On the CPU
(``ops.guard_in_update``) the update kernels copy each weight into the snapshot, write the new moments
into the optimizer's second set of buffers (swapped in only for an accepted step) and check the new
weight in their own pass (jitnn/kernels/optim.py), so the guard reads the weights no second time; other devices copy the parameters at each good read and check the weights
on the host at the end of each epoch (a GPU's last step is a read). ``nan_guard=False`` keeps no
snapshot: a non-finite loss or weight still raises, and the weights are those that produced it.

Data parallelism plugs in through a strategy object (``fit(strategy=...)``, jitnn.distributed): which
rows of each batch this process computes, one reduction of the gradients and running sums before the
update, and agreement on stopping. The default ``SINGLE_PROCESS`` does nothing, so the loop has no
branches for it either.

Interrupts: a Ctrl-C (SIGINT) during a step waits for the step to end (the handler only notes it while a
step runs, in the main thread, when Python's default handler is installed), then ``KeyboardInterrupt``
is raised with a RuntimeWarning naming the epoch and batch: the model keeps the weights and optimizer
state of its last complete step. A ``KeyboardInterrupt`` raised inside a step by other means (code in a
hook, or a handler of the user's) puts back the weights and step counter of the step's start from the
NaN guard's snapshot (the step's moments were never swapped in), and the warning says so.

Profiling goes through the backend's recorder (jitnn.profiler), which does nothing when no profile is
open, so the loop has no branches for it. The phases are those listed in jitnn/profiler.py.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import warnings

import numpy as np

from jitnn import callbacks as cbks
from jitnn import compiled_step, profiler
from jitnn.config import kernel_turns
from jitnn.metrics import log_key
from jitnn.nan_guard import StepSnapshot
from jitnn.sparse import CSRMatrix

_now = time.perf_counter_ns
_log = logging.getLogger("jitnn")


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

    def in_turn(self, fn):
        return fn()

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


class _DeferredInterrupt:
    """While ``in_step``, a SIGINT is noted instead of raised: the loop raises it when the step is done.

    Installed only in the main thread (the only one Python delivers signals to) and only over Python's
    default handler, so a handler of the user's is left alone; the previous handler returns on exit."""

    def __init__(self):
        self.in_step = self.updating = self.pending = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if not self.in_step:
            raise KeyboardInterrupt
        self.pending = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def fit(model, x, y, *, epochs, batch_size, validation_data, verbose, rng, shuffle, callbacks, profile,
        nan_guard, t_start, strategy=SINGLE_PROCESS, sample_weight=None, initial_epoch=0):
    """Train ``model`` (built, compiled, arguments validated by ``Sequential.fit``); returns a History.

    ``sample_weight`` (float64, one per row, or None) is gathered with each batch and scales its rows'
    losses and gradients; epochs ``initial_epoch`` to ``epochs - 1`` run (Keras' resume numbering)."""
    ops = model.ops
    n = x.shape[0]
    steps = (n + batch_size - 1) // batch_size
    sparse = isinstance(x, CSRMatrix)
    model.optimizer.check_learning_rate(model.dtype)  # 1e39 is inf in float32: say so before training
    xs, ys = ops.asarray(x), ops.asarray(y)  # the training set on the device, once per fit
    model.allocate(batch_size, gather=not sparse, y_like=y)
    xbuf, ybuf = model.batch_buffers()
    ws = wbuf = None
    if sample_weight is not None:
        ws, wbuf = ops.asarray(sample_weight), ops.zeros(batch_size, np.float64)
    strategy.setup(model)  # every rank starts from the root's weights and optimizer state
    params = [p for layer in model.layers for p in layer.params]
    grads = [g for layer in model.layers for g in layer.grads]
    # the weights, optimizer moments and step counter a rejected step goes back to
    snapshot = StepSnapshot(ops, params, model.optimizer) if nan_guard else None
    in_update = ops.guard_in_update  # the update kernels fill the snapshot and check the new weights
    flat_snaps = snapshot.flat if snapshot is not None else None
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
    # Keras: TerminateOnNaN ends training and fit returns; every rank is given the same callbacks
    terminate_on_nan = any(isinstance(cb, cbks.TerminateOnNaN) for cb in callbacks or [])
    profile_rec = profiler.current(profile, model, t_start)
    if sample_weight is not None:  # the compiled step has no row weights
        compiled, model.step_path = None, "layers: sample weights"
    else:  # data parallel: a step in two calls, the gradients reduced between backward and update
        compiled, model.step_path = strategy.in_turn(lambda: compiled_step.plan(
            model, x, y, batch_size, profile_rec, flat_snaps, steps * (epochs - initial_epoch),
            split=strategy is not SINGLE_PROCESS))
    _log.debug("fit: %s step path", model.step_path)
    rec = ops.recorder(profile_rec, model.layers)
    model.recorder = rec
    rec.add(None, "setup", t_start, _now(), batch_size)
    model.stop_training = False
    order = np.arange(n)
    d_order = None
    sync = ops.sync_every
    interrupt = _DeferredInterrupt()
    epoch = step = done = 0
    it0 = model.optimizer.iterations
    try:
        interrupt.__enter__()
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
                interrupt.in_step = True  # from here to the update, a Ctrl-C waits for the step's end
                it_step = model.optimizer.iterations  # the step counter this step's snapshot goes back to
                if compiled is not None and not compiled.split:  # no update when the loss is not finite
                    # a concurrent predict sees whole steps only; under a user's workqueue layer, kernels
                    # take turns (config.kernel_turns, a no-op otherwise)
                    with model.writing_weights(), kernel_turns:
                        status = compiled.run(xs, ys, d_order, start, m)
                else:
                    first, rows = strategy.shard(start, m)  # this process's rows of the batch
                    if rows and compiled is not None:  # its loss is checked below, reduced over the ranks
                        with kernel_turns:
                            compiled.gradients(xs, ys, d_order, first, rows)
                    elif rows:
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
                    if not ops.is_finite(host_sums[0]):  # seen before this step's update: none is applied
                        _stop_or_terminate(terminate_on_nan, model, ops, params, snapshot,
                                           f"loss became {host_sums[0]}", epoch, good, step, steps)
                        interrupt.in_step = False
                        logs = {k: float(v / seen) for k, v in zip(keys, host_sums)}
                        for cb in batch_end:  # TerminateOnNaN reads the loss and says so, as in Keras
                            cb.on_train_batch_end(step, logs)
                        rec.host_stop(t, None, "nan_guard", m)
                        break
                    good = step + 1
                    if snapshot is not None and not in_update:
                        snapshot.take()
                    logs = {k: float(v / seen) for k, v in zip(keys, host_sums)}
                    rec.host_stop(t, None, "nan_guard", m)
                if compiled is not None and compiled.split:
                    with model.writing_weights(), kernel_turns:
                        status = compiled.update(xs, ys, d_order)
                elif compiled is None:
                    interrupt.updating = True
                    bad = model.apply_gradients(on_param=rec.update_hook(m), snapshots=flat_snaps)
                    rec.end_update(m)
                    if bad is None and step + 1 == steps:  # a device whose kernels do not check
                        bad = not all(np.isfinite(ops.to_host(p)).all() for p in params)
                    status = compiled_step.WEIGHTS_NOT_FINITE if bad else compiled_step.STEP_OK
                interrupt.in_step = interrupt.updating = False
                if snapshot is not None and in_update:  # the update kernels kept this step's starting weights
                    snapshot.updated(it_step, status == compiled_step.STEP_OK)
                if status == compiled_step.WEIGHTS_NOT_FINITE:  # Keras would see a NaN loss at the next batch
                    _stop_or_terminate(terminate_on_nan, model, ops, params, snapshot,
                                       "a weight became NaN or inf in the update", epoch, step, step, steps)
                    break
                done += 1
                if interrupt.pending:
                    raise KeyboardInterrupt
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
    except KeyboardInterrupt:
        _interrupted(model, ops, params, snapshot, interrupt.updating, it0 + done, epoch, step, steps, done)
        raise
    finally:
        interrupt.__exit__()
        rec.finish()  # a fit that raises (NonFiniteLossError, KeyboardInterrupt) still closes its profile
        model.recorder = profiler.NULL_RECORDER
    return history


def _overrides(cb, *hooks):
    """True when ``cb``'s class overrides one of the batch ``hooks``: the others are skipped each step."""
    return any(getattr(type(cb), h) is not getattr(cbks.Callback, h) for h in hooks)


def _interrupted(model, ops, params, snapshot, mid_update, iterations, epoch, step, steps, done):
    """Say where a KeyboardInterrupt stopped fit; one raised inside the optimizer's update (not through
    our SIGINT handler) first puts back the weights, moments and step counter of the step's start (the
    snapshot the NaN guard took right before this update). Before the update no weight has changed yet."""
    where = f"in epoch {epoch + 1}, batch {step + 1} of {steps}"
    if not mid_update:
        warnings.warn(f"fit interrupted (KeyboardInterrupt) {where}: the model keeps the weights and optimizer "
                      f"state of its last complete step ({done} steps in this fit)", RuntimeWarning, stacklevel=3)
        return
    opt = model.optimizer
    if ops.guard_in_update and snapshot is not None:
        # the update kernels fill the snapshots, so only Optimizer.step knows which arrays it had updated:
        # it put back those arrays' weights (their new moments were never swapped in) and its step counter,
        # before the interrupt reached us
        warnings.warn(f"fit interrupted (KeyboardInterrupt) inside a step {where}, outside jitnn's SIGINT "
                      f"handler: the weights and optimizer state are those of the last complete "
                      f"step ({done} in this fit)", RuntimeWarning, stacklevel=3)
        return
    if snapshot is None or ops.sync_every != 1:
        warnings.warn(f"fit interrupted (KeyboardInterrupt) inside a step {where}, outside jitnn's SIGINT "
                      "handler: that step may be half applied (nan_guard=False keeps no copy of the weights "
                      "to put back)", RuntimeWarning, stacklevel=3)
        return
    with model.writing_weights():  # every step's read took the snapshot (sync_every == 1): this step's start
        snapshot.restore()
        model.weights_changed()
    opt.iterations = iterations
    warnings.warn(f"fit interrupted (KeyboardInterrupt) inside a step {where}, outside jitnn's SIGINT handler: "
                  f"the weights and optimizer state are those of the last complete step ({done} in "
                  "this fit)", RuntimeWarning, stacklevel=3)


def _stop_or_terminate(terminate_on_nan, model, *where):
    """``_stop``; with a TerminateOnNaN callback its error becomes a RuntimeWarning and
    ``model.stop_training``: the weights stay those ``_stop`` restored and fit returns its History."""
    try:
        _stop(model, *where)
    except NonFiniteLossError as e:
        if not terminate_on_nan:
            raise
        warnings.warn(f"{e}; TerminateOnNaN: terminating training", RuntimeWarning, stacklevel=4)
        model.stop_training = True


def _stop(model, ops, params, snapshot, what, epoch, good, step, steps):
    """Restore the snapshot (when kept: weights, optimizer moments and step counter, a StepSnapshot) and
    raise NonFiniteLossError saying where and what."""
    if snapshot is not None:
        with model.writing_weights():
            snapshot.restore()
            model.weights_changed()
    where = f"batch {step + 1}" if good == step else f"between batches {good + 1} and {step + 1}"
    how = f" (device={ops.name!r} checks every {ops.sync_every} batches)" if ops.sync_every > 1 else ""
    raise NonFiniteLossError(
        f"{what} at epoch {epoch + 1}, {where} of {steps}{how}; "
        + ("the weights and optimizer state of the last good step were restored" if snapshot is not None else
           "nan_guard=False: the weights are those that produced it"))


__all__ = ["NonFiniteLossError", "fit"]
