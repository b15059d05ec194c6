"""Device-resident training for ``Sequential(device="cuda")``: what stays on the GPU and when the host looks.

At the start of ``fit`` the parameters (once per model) and the training set (once per fit) go to the
device. Each epoch the host draws the shuffle permutation (the same generator as the CPU path, so a
seed gives the same batches) and sends it: 4 bytes per sample, one copy. Every step then runs on
the device with no host round trip: gather the batch, forward, fused loss, backward, one update kernel
per parameter array. Loss and metric sums accumulate in a small device vector; the host reads it only
at logging points (``log_every`` steps and the end of each epoch), which is also where the NaN guard
looks: a non-finite loss restores the weights of the last logging point whose loss was finite and
raises NonFiniteLossError naming the batches in between.

Profiling times the device work with CUDA events around each layer's forward, backward and update,
read when the profile closes; host-side phases keep their perf_counter timers.
"""

from __future__ import annotations

import time

import numpy as np

from jitnn import losses as losses_mod
from jitnn import metrics as metrics_mod
from jitnn.activations import SOFTMAX
from jitnn.cuda import kernels as K
from jitnn.cuda.layers import twin
from jitnn.cuda.optim import DeviceOptimizer, flat
from jitnn.cuda.runtime import cuda, require, simulated
from jitnn.kernels.elementwise import SIGMOID

_now = time.perf_counter_ns
LOG_EVERY = 50  # steps between the host's reads of the loss (progress bar, NaN guard)


def _metric_kind(fn):
    for kind, f in (("accuracy", metrics_mod.accuracy), ("binary_accuracy", metrics_mod.binary_accuracy),
                    ("mse", metrics_mod.mse), ("mae", metrics_mod.mae)):
        if fn is f:
            return kind
    raise ValueError("device='cuda' computes the metrics accuracy, binary_accuracy, mse and mae on the device; "
                     f"{getattr(fn, '__name__', fn)!r} would need every batch's output on the host. Use "
                     "device='cpu', or evaluate()/predict() after fit")


class EventTimer:
    """CUDA-event timing of device work for the profiler: ``start()`` / ``stop(...)`` pairs per region,
    resolved to nanoseconds (``Event.elapsed_time``) in ``flush``, once the device has finished.

    The simulator's events carry no time; there kernels run synchronously on the host, so the host
    clock times them exactly and stands in for the events."""

    def __init__(self, rec):
        self.rec, self.pending, self.events = rec, [], not simulated()

    def start(self):
        ev = None
        if self.events:
            ev = cuda.event()
            ev.record()
        return ev, _now()

    def stop(self, mark, layer, phase, batch):
        end = _now()
        if self.events:
            end = cuda.event()
            end.record()
        self.pending.append((mark[0], end, mark[1], layer, phase, batch))

    def flush(self):
        if not self.pending:
            return
        if self.events:
            cuda.synchronize()
        for e0, e1, t0, layer, phase, batch in self.pending:
            ns = int(e0.elapsed_time(e1) * 1e6) if self.events else e1 - t0  # elapsed_time: ms, ~0.5 us steps
            self.rec.add(layer, phase, t0, t0 + ns, batch)
        self.pending.clear()


class _UpdateEvents:
    """``on_param`` for DeviceOptimizer.step: one event pair per layer's update, as the CPU hook bills it."""

    def __init__(self, timer, owner, batch):
        self.timer, self.owner, self.batch, self.mark = timer, owner, batch, None

    def __call__(self, i):
        owner = self.owner
        if 0 < i < len(owner) and owner[i] == owner[i - 1]:
            return
        if i > 0:
            self.timer.stop(self.mark, owner[i - 1], "update", self.batch)
        if i < len(owner):
            self.mark = self.timer.start()


class DeviceModel:
    """The GPU state of one Sequential: layer twins, optimizer buffers, loss and metric scratch."""

    def __init__(self, model):
        require()
        self.model = model
        self.layers = [twin(layer) for layer in model.layers]
        self.opt = None
        self.cap = 0

    # --- weights ----------------------------------------------------------------------------------
    def download(self):
        """Device weights (and optimizer state) -> the host model, in place."""
        for t in self.layers:
            t.download()
        if self.opt is not None:
            self.opt.download()

    def upload(self):
        for t in self.layers:
            t.upload()
        if self.opt is not None and self.opt.opt is self.model.optimizer:
            self.opt.upload()

    def _optimizer(self):
        model = self.model
        if self.opt is None or self.opt.opt is not model.optimizer:
            self.opt = DeviceOptimizer(model.optimizer, [p for layer in model.layers for p in layer.params])
        return self.opt

    # --- buffers ----------------------------------------------------------------------------------
    def _allocate(self, batch, y_shape=None, y_dtype=None):
        for t in self.layers:
            t.allocate(batch)
        model = self.model
        if self.cap < batch:
            self.cap = batch
            out = model.output_dim
            self.probs = cuda.device_array((batch, out), model.dtype)
            self.grad = cuda.device_array((batch, out), model.dtype)
            self.row_loss = cuda.device_array(batch, np.float64)
            self.row_metric = cuda.device_array(batch, np.float64)
            self.xb = cuda.device_array((batch, model.input_dim), model.dtype)
            self.yb = None
        if y_shape is not None and (self.yb is None or self.yb.shape[1:] != y_shape or self.yb.dtype != y_dtype):
            self.yb = cuda.device_array((self.cap,) + y_shape, y_dtype)

    # --- forward / inference ----------------------------------------------------------------------
    def _forward(self, x, training, timer=None):
        out = x
        for i, t in enumerate(self.layers):
            if timer is None:
                out = t.forward(out, training)
            else:
                mark = timer.start()
                out = t.forward(out, training)
                timer.stop(mark, i, "forward", x.shape[0])
        return out

    def _finish(self, out, n):
        model = self.model
        if not model._fused:
            return out
        probs = self.probs[:n]
        if model.layers[-1].activation.code == SOFTMAX:
            K.launch(K.softmax_rows, n, out, probs)
        else:
            K.launch(K.activate, out.size, out, probs, SIGMOID, out.dtype.type(0))
        return probs

    def predict(self, x, batch_size):
        """Outputs for every row of host array ``x`` (uploaded chunk by chunk), as numpy."""
        model = self.model
        result = np.empty((x.shape[0], model.output_dim), model.dtype)
        self._allocate(min(batch_size, max(1, x.shape[0])))
        for s in range(0, x.shape[0], batch_size):
            chunk = x[s:s + batch_size]
            n = chunk.shape[0]
            xb = self.xb[:n]
            cuda.to_device(np.ascontiguousarray(chunk), to=xb)
            self._finish(self._forward(xb, False), n).copy_to_host(result[s:s + n])
        return result

    # --- loss and metrics on the device -----------------------------------------------------------
    def _loss(self, out, yb, n):
        """Row losses into ``row_loss[:n]`` and dL/d(out or logits) into ``grad[:n]``; returns the output
        the metrics read (probabilities when the loss is fused with the last activation)."""
        model, loss = self.model, self.model.loss
        grad, row_loss, probs = self.grad[:n], self.row_loss[:n], self.probs[:n]
        d = out.shape[1]
        ints = yb.ndim == 1
        if model._fused:
            if isinstance(loss, losses_mod.CategoricalCrossentropy):
                kern = K.softmax_xent_int if ints else K.softmax_xent_dense
                K.launch(kern, n, out, yb, probs, grad, row_loss, 1.0 / n)
            else:
                K.launch(K.sigmoid_bce_logits, n, out, yb, probs, grad, row_loss, 1.0 / (n * d))
            return probs
        if isinstance(loss, losses_mod.MeanSquaredError):
            K.launch(K.mse, n, out, yb, grad, row_loss, 2.0 / (n * d))
        elif isinstance(loss, losses_mod.MeanAbsoluteError):
            K.launch(K.mae, n, out, yb, grad, row_loss, 1.0 / (n * d))
        elif isinstance(loss, losses_mod.BinaryCrossentropy):
            K.launch(K.bce_probs, n, out, yb, grad, row_loss, 1.0 / (n * d), loss.epsilon)
        elif isinstance(loss, losses_mod.CategoricalCrossentropy):
            kern = K.xent_probs_int if ints else K.xent_probs_dense
            K.launch(kern, n, out, yb, grad, row_loss, 1.0 / n, loss.epsilon)
        else:
            raise ValueError(f"{type(loss).__name__} has no CUDA kernel; use device='cpu'")
        return out

    def _metric(self, kind, pred, yb, n, acc, slot):
        """Adds this batch's metric numerator to ``acc[slot]`` (hits, or summed row errors)."""
        rows = self.row_metric[:n]
        if kind == "accuracy" and pred.shape[1] > 1:
            K.launch(K.argmax_hits_int if yb.ndim == 1 else K.argmax_hits_dense, n, pred, yb, rows)
        elif kind in ("accuracy", "binary_accuracy"):
            K.launch(K.threshold_hits, n, pred, yb, 0.5, rows)
        else:
            scratch = self.grad[:n]  # metrics run after backward, when the loss gradient is spent
            kern = K.mse if kind == "mse" else K.mae
            K.launch(kern, n, pred, yb, scratch, rows, 0.0)
        K.launch_accumulate(rows, n, acc, slot)

    # --- training ---------------------------------------------------------------------------------
    def fit(self, x, y, epochs, batch_size, validation_data, verbose, rng, shuffle, cb_list, prof, nan_guard):
        """The epochs of ``Sequential.fit`` (which has validated everything and set up the callbacks)."""
        from jitnn.model import NonFiniteLossError, _metric_key, _Progress

        t_setup = _now()
        model = self.model
        kinds = [_metric_kind(fn) for _, fn in model.metrics]
        n = x.shape[0]
        y2 = y.reshape(-1, 1) if y.ndim == 1 and y.dtype.kind == "f" else y
        dx = cuda.to_device(np.ascontiguousarray(x))
        dy = cuda.to_device(np.ascontiguousarray(y2))
        self._allocate(batch_size, y2.shape[1:], y2.dtype)
        opt = self._optimizer()
        params = [flat(p) for t in self.layers for p in t.params]
        grads = [flat(g) for t in self.layers for g in t.grads]
        regs = [r for layer in model.layers for r in layer.regularizers]
        owner = [i for i, t in enumerate(self.layers) for _ in t.params]
        snapshot = [cuda.device_array_like(p) for p in params] if nan_guard else None
        acc = cuda.to_device(np.zeros(1 + len(kinds)))
        d_order = cuda.device_array(n, np.int64)
        timer = EventTimer(prof) if prof else None
        if prof:
            prof.add(None, "setup", t_setup, _now(), batch_size)
        steps = (n + batch_size - 1) // batch_size
        order = np.arange(n)
        last = len(self.layers) - 1
        out_dim = model.output_dim
        for epoch in range(epochs):
            t_epoch = t0 = _now()
            bar = _Progress(epoch, epochs, steps, verbose)
            if shuffle:
                rng.shuffle(order)
            cuda.to_device(order, to=d_order)
            acc.copy_to_device(np.zeros(1 + len(kinds)))
            if snapshot is not None:
                for p, s in zip(params, snapshot):
                    s.copy_to_device(p)
            good_step, seen = 0, 0
            if prof:
                prof.add(None, "shuffle", t0, _now(), batch_size)
            for step in range(steps):
                start = step * batch_size
                m = min(batch_size, n - start)
                xb, yb = self.xb[:m], self.yb[:m]
                mark = timer.start() if timer else None
                K.launch(K.gather_rows, m * x.shape[1], dx, d_order, start, xb)
                if yb.ndim == 1:
                    K.launch(K.gather_items, m, dy, d_order, start, yb)
                else:
                    K.launch(K.gather_rows, m * yb.shape[1], dy, d_order, start, yb)
                if timer:
                    timer.stop(mark, None, "batching", m)
                out = self._forward(xb, True, timer)
                mark = timer.start() if timer else None
                pred = self._loss(out, yb, m)
                K.launch_accumulate(self.row_loss[:m], m, acc, 0)
                if timer:
                    timer.stop(mark, None, "loss", m)
                grad = self.grad[:m]
                for i in range(last, -1, -1):
                    mark = timer.start() if timer else None
                    if i == last and model._fused:
                        grad = self.layers[i].backward(grad, i > 0, grad_is_dz=True)
                    else:
                        grad = self.layers[i].backward(grad, i > 0)
                    if timer:
                        timer.stop(mark, i, "backward", m)
                if timer:
                    mark = timer.start()
                for k, kind in enumerate(kinds):
                    self._metric(kind, pred, yb, m, acc, 1 + k)
                if timer:
                    timer.stop(mark, None, "metrics", m)
                hook = _UpdateEvents(timer, owner, m) if timer else None
                opt.step(params, grads, regs, on_param=hook)
                seen += m
                if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                    t0 = _now()
                    sums = acc.copy_to_host()  # the one host read: waits for the device
                    if not np.isfinite(sums[0]):
                        if snapshot is not None:
                            for p, s in zip(params, snapshot):
                                p.copy_to_device(s)
                            self.download()
                        raise NonFiniteLossError(
                            f"loss became {sums[0]} at epoch {epoch + 1}, between batches {good_step + 1} and "
                            f"{step + 1} of {steps} (device='cuda' checks every {LOG_EVERY} batches); "
                            + ("the weights after batch %d were restored" % good_step if nan_guard else
                               "nan_guard=False: the weights are those that produced it"))
                    good_step = step + 1
                    if snapshot is not None and step + 1 < steps:
                        for p, s in zip(params, snapshot):
                            s.copy_to_device(p)
                    bar.update(step + 1, sums[0] / seen)
                    if prof:
                        prof.add(None, "nan_guard", t0, _now(), m)
            logs = {"loss": float(sums[0] / seen)}
            for k, (name, _) in enumerate(model.metrics):
                per = seen * out_dim if kinds[k] == "binary_accuracy" or (kinds[k] == "accuracy" and out_dim == 1) \
                    else seen
                logs[_metric_key(name)] = float(sums[1 + k] / per)
            if timer:
                timer.flush()
            self.download()  # callbacks (checkpoints, early stopping) see the host model
            model._end_epoch(epoch, logs, validation_data, bar, t_epoch, cb_list, prof, batch_size)
            if model.stop_training:
                break
