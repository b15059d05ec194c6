"""The CUDA backend: numba-cuda device arrays and the kernels of jitnn/cuda/ (docs/gpu.md).

What differs from the CPU is here, as settings and objects, not in a second training loop:
- ``sync_every``: the host reads the running loss and metric sums (a device vector) every 50 steps
  and at the end of each epoch; every read waits for the device, so the NaN guard and the progress
  bar look only then.
- ``recorder``: profiling times device work with CUDA events around each call, resolved at the end
  of each epoch (``flush``); host phases keep the host clock.
- Losses and metrics run on the device, by the kernel names the CPU uses; a metric without a device
  kernel fails at ``compile``/``to``, not half-way through training.
Scalars are cast to the arrays' dtype on the host once per call (Adam's bias corrections folded into
two numbers exactly as jitnn.kernels.optim does), so the updates match the CPU's.
"""

from __future__ import annotations

import math
import time

import numpy as np

from jitnn.backend.ops import Ops
from jitnn.cuda import conv as CC
from jitnn.cuda import kernels as K
from jitnn.cuda import normalization as CN
from jitnn.cuda import pooling as CP
from jitnn.cuda.gemm import gemm_into
from jitnn.cuda.runtime import cuda, simulated
from jitnn.kernels.elementwise import LINEAR

_now = time.perf_counter_ns

LOSS_KERNELS = {name: getattr(K, name) for name in (
    "mse", "mae", "bce_probs", "xent_probs_int", "xent_probs_dense",
    "sigmoid_bce_logits", "softmax_xent_int", "softmax_xent_dense")}
METRIC_KERNELS = ("accuracy", "binary_accuracy", "mse", "mae")


class CUDAOps(Ops):
    """Device arrays and numba-cuda kernels; the host reads the running sums every ``sync_every`` steps."""

    name = "cuda"
    sync_every = 50
    array_type = type(cuda.device_array(0, np.float32)) if cuda is not None else object
    loss_kernels = LOSS_KERNELS
    row_dtype = np.float64  # per-sample losses and metric values: summed on the device in float64

    # --- memory and transfer ----------------------------------------------------------------------
    def alloc(self, shape, dtype):
        return cuda.device_array(shape, dtype)

    def zeros(self, shape, dtype):
        a = cuda.device_array(shape, dtype)
        if a.size:
            cuda.to_device(np.zeros(shape, dtype), to=a)
        return a

    def to_device(self, host, out=None):
        if out is None:
            return cuda.to_device(np.ascontiguousarray(host))
        cuda.to_device(np.ascontiguousarray(host), to=out)
        return out

    def to_host(self, array, out=None):
        if out is None:
            return array.copy_to_host()
        array.copy_to_host(out)
        return out

    def asarray(self, x, dtype=None):
        if isinstance(x, self.array_type) and (dtype is None or x.dtype == np.dtype(dtype)):
            return x
        if not isinstance(x, np.ndarray):
            raise ValueError(  # noqa: TRY004 - a kind of input the device cannot take, as for CSR on the GPU before
                f"{type(x).__name__} input runs on the CPU only: use device='cpu' or pass a dense numpy array")
        return cuda.to_device(np.ascontiguousarray(x, dtype))

    def copy(self, src, dst):
        dst.copy_to_device(src)

    def is_finite(self, value):
        return math.isfinite(value)

    # --- linear algebra ---------------------------------------------------------------------------
    def gemm(self, a, b, out, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None, activation=None):
        code, param = (LINEAR, 0.0) if activation is None else (activation.code, activation.param)
        return gemm_into(a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, bias=bias,
                         act=code, act_param=param)

    def column_sums(self, x, out):
        K.launch_column_sums(x, out)
        return out

    # --- activations --------------------------------------------------------------------------------
    def activate(self, x, out, activation):
        if activation.identity:
            return x
        if activation.rowwise:
            K.launch(K.softmax_rows, x.shape[0], x, out)  # one thread per row
        else:
            K.launch(K.activate, out.size, x, out, activation.code, out.dtype.type(activation.param))
        return out

    def backprop_activation(self, grad, z, a, activation, dz):
        if activation.identity:
            return grad
        if activation.rowwise:
            K.launch(K.backprop_softmax_rows, dz.shape[0], a, grad, dz)
        else:
            K.launch(K.backprop_activation, dz.size, grad, z, a, activation.code,
                     dz.dtype.type(activation.param), dz)
        return dz

    # --- convolution, pooling, batch normalization (jitnn/cuda/conv.py, pooling.py, normalization.py:
    #     the CPU's algorithms and summation orders, so both devices agree to rounding) -----------------
    def conv2d_workspace(self, x_shape, w_shape, out_hw, dtype):
        return CC.conv2d_workspace(x_shape, w_shape, out_hw, dtype)

    def conv2d(self, x, w, bias, y, strides, dilation, pads, activation, cols):
        code, param = (LINEAR, 0.0) if activation is None else (activation.code, activation.param)
        return CC.conv2d(x, w, bias, y, strides, dilation, pads, code, param, cols)

    def backprop_conv2d(self, x, w, dy, dx, dw, db, strides, dilation, pads, cols):
        return CC.backprop_conv2d(x, w, dy, dx, dw, db, strides, dilation, pads, cols)

    def maxpool2d(self, x, pool, strides, pads, y, argmax):
        K.launch(CP.maxpool2d, y.size, x, *pool, *strides, *pads, y, argmax)
        return y

    def backprop_maxpool2d(self, dy, argmax, pool, strides, pads, dx):
        K.launch(CP.backprop_maxpool2d, dx.size, dy, argmax, *pool, *strides, *pads, dx.dtype.type(0), dx)
        return dx

    def avgpool2d(self, x, pool, strides, pads, y):
        K.launch(CP.avgpool2d, y.size, x, *pool, *strides, *pads, y.dtype.type(0), y)
        return y

    def backprop_avgpool2d(self, dy, pool, strides, pads, dx):
        K.launch(CP.backprop_avgpool2d, dx.size, dy, *pool, *strides, *pads, dx.dtype.type(0), dx)
        return dx

    def global_avgpool2d(self, x, y):
        K.launch(CP.global_avgpool2d, y.size, x, y.dtype.type(0), y)
        return y

    def backprop_global_avgpool2d(self, dy, dx):
        K.launch(CP.backprop_global_avgpool2d, dx.size, dy, dx)
        return dx

    def batchnorm_workspace(self, channels):
        return CN.batchnorm_workspace(channels)

    def batchnorm_train(self, x, gamma, beta, eps, y, mean, var, scale, shift, partial):
        return CN.batchnorm_train(x, gamma, beta, eps, y, mean, var, scale, shift, partial)

    def batchnorm_inference(self, x, gamma, beta, moving_mean, moving_var, eps, y, scale, shift):
        return CN.batchnorm_inference(x, gamma, beta, moving_mean, moving_var, eps, y, scale, shift)

    def batchnorm_update_moving(self, moving_mean, moving_var, mean, var, momentum):
        CN.batchnorm_update_moving(moving_mean, moving_var, mean, var, momentum)

    def backprop_batchnorm(self, dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, partial):
        return CN.backprop_batchnorm(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, partial)

    # --- dropout ------------------------------------------------------------------------------------
    def dropout(self, x, rate, seed, mask, out):
        K.launch(K.dropout_forward, out.size, x, rate, seed, mask, out)
        return out

    def backprop_dropout(self, grad, mask, rate, dx):
        K.launch(K.backprop_dropout, dx.size, grad, mask, rate, dx)
        return dx

    # --- batches ------------------------------------------------------------------------------------
    def gather_rows(self, src, order, start, count, out):
        if out.ndim == 1:
            K.launch(K.gather_items, out.shape[0], src, order, start, out)
        else:  # images (N, H, W, C) gather as (N, H*W*C) rows of the same contiguous memory
            K.launch(K.gather_rows, out.size, src.reshape(src.shape[0], -1), order, start,
                     out.reshape(out.shape[0], -1))
        return out

    # --- losses, metrics ----------------------------------------------------------------------------
    def loss(self, kernel, pred, y, grad, row_loss, *scalars):
        K.launch(LOSS_KERNELS[kernel], pred.shape[0], pred, y, grad, row_loss, *scalars)

    def loss_from_logits(self, kernel, z, y, probs, grad, row_loss):
        K.launch(LOSS_KERNELS[kernel], z.shape[0], z, y, probs, grad, row_loss)

    def weight_rows(self, grad, row_loss, weights):
        K.launch(K.weight_rows, grad.shape[0], grad, row_loss, weights)

    def add_loss(self, sums, slot, mean, row_loss, n):
        K.launch_accumulate(row_loss, n, sums, slot)

    def check_metric(self, fn):
        if getattr(fn, "kernel", None) not in METRIC_KERNELS:
            raise ValueError(
                "device='cuda' computes the metrics accuracy, binary_accuracy, mse and mae on the device; "
                f"{getattr(fn, '__name__', fn)!r} would need every batch's output on the host. Use "
                "device='cpu', or evaluate()/predict() after fit")

    def add_metric(self, fn, y_true, y_pred, sums, slot, rows, scratch):
        n = y_pred.shape[0]
        kind = fn.kernel
        if kind == "accuracy" and y_pred.shape[1] > 1:
            kern = K.argmax_hits_int if y_true.ndim == 1 else K.argmax_hits_dense
            K.launch(kern, n, y_pred, y_true, rows)
        elif kind in ("accuracy", "binary_accuracy"):
            K.launch(K.threshold_hits, n, y_pred, y_true, 0.5, rows)
        else:
            K.launch(K.mse_rows if kind == "mse" else K.mae_rows, n, y_pred, y_true, scratch, rows)
        K.launch_accumulate(rows, n, sums, slot)

    # --- optimizer updates (flat device arrays; scalars cast once per call) ------------------------
    def sgd_update(self, w, g, velocity, lr, momentum, nesterov, l1, l2):
        dt = w.dtype.type
        K.launch(K.sgd_update, w.size, w, g, velocity, dt(lr), dt(momentum), nesterov, dt(l1), dt(2.0 * l2),
                 l1 != 0.0 or l2 != 0.0)

    def adagrad_update(self, w, g, accum, lr, eps, l1, l2):
        dt = w.dtype.type
        K.launch(K.adagrad_update, w.size, w, g, accum, dt(lr), dt(eps), dt(l1), dt(2.0 * l2), l1 != 0.0 or l2 != 0.0)

    def rmsprop_update(self, w, g, ms, lr, rho, eps, l1, l2):
        dt = w.dtype.type
        K.launch(K.rmsprop_update, w.size, w, g, ms, dt(lr), dt(rho), dt(1.0 - rho), dt(eps), dt(l1), dt(2.0 * l2),
                 l1 != 0.0 or l2 != 0.0)

    def adam_update(self, w, g, m, v, vmax, lr, beta1, beta2, eps, t, weight_decay, amsgrad, l1, l2):
        dt = w.dtype.type
        K.launch(K.adam_update, w.size, w, g, m, v, vmax, dt(lr / (1.0 - beta1**t)),
                 dt(1.0 / math.sqrt(1.0 - beta2**t)), dt(beta1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2),
                 dt(eps), dt(lr * weight_decay), amsgrad, dt(l1), dt(2.0 * l2), l1 != 0.0 or l2 != 0.0)

    # --- profiling ----------------------------------------------------------------------------------
    def recorder(self, profile_recorder, layers):
        from jitnn import profiler

        if profile_recorder is None:
            return profiler.NULL_RECORDER
        return EventRecorder(profile_recorder, layers)


class EventRecorder:
    """CUDA-event timing of device work for the profiler: ``start()`` / ``stop(...)`` pairs per region,
    resolved to nanoseconds (``Event.elapsed_time``) in ``flush``, once the device has finished. Host
    phases (``host_start``/``host_stop``) use the host clock.

    The simulator's events carry no time; there kernels run synchronously on the host, so the host
    clock times them exactly and stands in for the events."""

    def __init__(self, rec, layers):
        self.rec, self.pending, self.events = rec, [], not simulated()
        self.owner = [i for i, layer in enumerate(layers) for _ in layer.params]
        self.mark, self.batch = None, 0

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

    def host_start(self):
        return _now()

    def host_stop(self, mark, layer, phase, batch):
        self.rec.add(layer, phase, mark, _now(), batch)

    def add(self, layer, phase, t0, t1, batch):
        self.rec.add(layer, phase, t0, t1, batch)

    def update_hook(self, batch):
        self.batch = batch
        return self._on_param

    def _on_param(self, i):
        """``on_param`` for Optimizer.step: one event pair per layer's update, as the host recorder bills it."""
        owner = self.owner
        if 0 < i < len(owner) and owner[i] == owner[i - 1]:
            return
        if i > 0:
            self.stop(self.mark, owner[i - 1], "update", self.batch)
        if i < len(owner):
            self.mark = self.start()

    def end_update(self, batch):
        pass

    def flush(self):
        if not self.pending:
            return
        if self.events:
            cuda.synchronize()
        for e0, e1, t0, layer, phase, batch in self.pending:
            ns = int(e0.elapsed_time(e1) * 1e6) if self.events else e1 - t0  # elapsed_time: ms, ~0.5 us steps
            self.rec.add(layer, phase, t0, t0 + ns, batch)
        self.pending.clear()

    def finish(self):
        self.flush()
        self.rec.finish()


CUDA = CUDAOps()

__all__ = ["CUDA", "LOSS_KERNELS", "METRIC_KERNELS", "CUDAOps", "EventRecorder"]
