"""The CPU backend: numpy arrays, numba ``@njit`` kernels from jitnn/kernels/, the GEMM of jitnn.linalg.

Small work runs on the calling thread: every parallel kernel goes through ``config.launch`` here, and
nowhere else, with the work it touches (elements) as the measure. CSR inputs (jitnn.sparse) are a CPU
feature: ``gemm`` takes a ``CSRMatrix`` as ``a`` (a CSR batch) or as ``b`` (pruned weights) and runs the
sparse product, then the bias and activation in one epilogue pass; ``gather_rows`` gathers CSR rows.
"""

from __future__ import annotations

import contextlib
import math

import numba
import numpy as np

from jitnn import profiler
from jitnn.backend.ops import Ops
from jitnn.config import FLOAT_DTYPES, FLUSH_DENORMALS, call, launch
from jitnn.kernels import conv as KC
from jitnn.kernels import dropout as KD
from jitnn.kernels import fpenv
from jitnn.kernels import losses as KL
from jitnn.kernels import normalization as KN
from jitnn.kernels import optim as KO
from jitnn.kernels import pooling as KP
from jitnn.kernels.elementwise import LINEAR, activate, backprop_activation
from jitnn.kernels.gemm import scale_epilogue
from jitnn.kernels.reductions import backprop_softmax_rows, column_sums, softmax_rows
from jitnn.linalg import dense_spmm, gemm_into, spmm, spmm_t
from jitnn.memory import aligned_empty, aligned_zeros
from jitnn.sparse import CSRMatrix

_NO_BIAS = {np.dtype(d): np.empty(0, d) for d in FLOAT_DTYPES}  # "no bias" for the epilogue kernel
LOSS_KERNELS = {name: getattr(KL, name) for name in (
    "mse", "mae", "bce_probs", "xent_probs_int", "xent_probs_dense",
    "sigmoid_bce_logits", "softmax_xent_int", "softmax_xent_dense")}


def _snap(snapshot, w):
    return _NO_BIAS[w.dtype] if snapshot is None else snapshot


class CPUOps(Ops):
    """numpy arrays and numba kernels; the host reads the running loss every step (``sync_every = 1``)."""

    name = "cpu"
    sync_every = 1
    array_type = np.ndarray
    loss_kernels = LOSS_KERNELS
    row_dtype = None  # per-sample losses in the model's dtype (the mean is still summed in float64)

    @staticmethod
    def launch(kernel, work, *args):
        """``kernel(*args)`` on the calling thread alone when ``work`` is small (config.launch): the one
        door through which jitnn's parallel CPU kernels are called."""
        return launch(kernel, work, *args)

    # --- memory and transfer ----------------------------------------------------------------------
    def alloc(self, shape, dtype):
        return aligned_empty(shape, dtype)  # weights and activations are GEMM operands read in place

    def zeros(self, shape, dtype):
        return aligned_zeros(shape, dtype)

    def to_device(self, host, out=None):
        if out is None:
            return host
        if out is not host:
            np.copyto(out, host)
        return out

    def to_host(self, array, out=None):
        if out is None:
            return np.array(array)
        np.copyto(out, array)
        return out

    def asarray(self, x, dtype=None):
        return x if isinstance(x, CSRMatrix) else np.asarray(x, dtype)

    def copy(self, src, dst):
        np.copyto(dst, src)

    def is_finite(self, value):
        return math.isfinite(value)

    # --- linear algebra ---------------------------------------------------------------------------
    def gemm(self, a, b, out, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None, activation=None):
        code, param = (LINEAR, 0.0) if activation is None else (activation.code, activation.param)
        if isinstance(a, CSRMatrix) or isinstance(b, CSRMatrix):
            return self._sparse_gemm(a, b, out, trans_a, bias, code, param)
        return gemm_into(a.T if trans_a else a, b.T if trans_b else b, out, alpha, beta, bias, code, param)

    def _sparse_gemm(self, a, b, out, trans_a, bias, code, param):
        """A CSR batch (``a``, transposed for a weight gradient) or pruned CSR weights (``b``); spmm has
        no epilogue, so the bias and activation follow in one pass."""
        if isinstance(b, CSRMatrix):
            dense_spmm(a, b, out=out)
        elif trans_a:
            spmm_t(a, b, out=out)  # never densifies the batch
        else:
            spmm(a, b, out=out)
        if bias is not None or code != LINEAR:
            bias = bias if bias is not None else _NO_BIAS[out.dtype]
            launch(scale_epilogue, out.size, out, out.dtype.type(1), bias, code, float(param))
        return out

    def column_sums(self, x, out):
        launch(column_sums, x.size, x, out)
        return out

    # --- activations --------------------------------------------------------------------------------
    def activate(self, x, out, activation):
        if activation.identity:
            return x
        if activation.rowwise:
            launch(softmax_rows, x.size, x, out)
        else:
            launch(activate, x.size, x, out, activation.code, activation.param)
        return out

    def backprop_activation(self, grad, z, a, activation, dz):
        if activation.identity:
            return grad
        if activation.rowwise:
            launch(backprop_softmax_rows, dz.size, a, grad, dz)
        else:
            launch(backprop_activation, dz.size, grad, z, a, activation.code, activation.param, dz)
        return dz

    # --- convolution, pooling, batch normalization ------------------------------------------------
    # The conv kernels choose direct vs im2col + GEMM per shape and call ``launch`` themselves.
    def conv2d_workspace(self, x_shape, w_shape, out_hw, dtype):
        return KC.conv2d_workspace(x_shape, w_shape, out_hw, dtype)

    def conv2d(self, x, w, bias, y, strides, dilation, pads, activation, cols):
        code, param = (LINEAR, 0.0) if activation is None else (activation.code, activation.param)
        return KC.conv2d(x, w, bias, y, strides, dilation, pads, code, param, cols)

    def backprop_conv2d(self, x, w, dy, dx, dw, db, strides, dilation, pads, cols):
        return KC.backprop_conv2d(x, w, dy, dx, dw, db, strides, dilation, pads, cols)

    def maxpool2d(self, x, pool, strides, pads, y, argmax):
        launch(KP.maxpool2d, x.size, x, *pool, *strides, *pads, y, argmax)
        return y

    def backprop_maxpool2d(self, dy, argmax, pool, strides, pads, dx):
        launch(KP.backprop_maxpool2d, dx.size, dy, argmax, *pool, *strides, *pads, dx)
        return dx

    def avgpool2d(self, x, pool, strides, pads, y):
        launch(KP.avgpool2d, x.size, x, *pool, *strides, *pads, y)
        return y

    def backprop_avgpool2d(self, dy, pool, strides, pads, dx):
        launch(KP.backprop_avgpool2d, dx.size, dy, *pool, *strides, *pads, dx)
        return dx

    def global_avgpool2d(self, x, y):
        launch(KP.global_avgpool2d, x.size, x, y)
        return y

    def backprop_global_avgpool2d(self, dy, dx):
        launch(KP.backprop_global_avgpool2d, dx.size, dy, dx)
        return dx

    def batchnorm_workspace(self, channels):
        return KN.batchnorm_workspace(channels)

    def batchnorm_train(self, x, gamma, beta, eps, y, mean, var, scale, shift, partial):
        # the fixed-block reductions are parallel over STAT_BLOCKS regardless of size (config.call, no
        # launch gate); the kernel routes its parallel parts itself
        return KN.batchnorm_train(x, gamma, beta, eps, y, mean, var, scale, shift, partial)

    def batchnorm_inference(self, x, gamma, beta, moving_mean, moving_var, eps, y, scale, shift):
        KN.batchnorm_scale_shift(gamma, beta, moving_mean, moving_var, eps, scale, shift)
        launch(KN.scale_shift, x.size, x, scale, shift, y)
        return y

    def batchnorm_update_moving(self, moving_mean, moving_var, mean, var, momentum):
        KN.batchnorm_update_moving(moving_mean, moving_var, mean, var, momentum)

    def backprop_batchnorm(self, dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, partial):
        call(KN.backprop_batchnorm, dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, partial)
        return dx

    # --- dropout ------------------------------------------------------------------------------------
    def dropout(self, x, rate, seed, mask, out):
        launch(KD.dropout_forward, x.size, x, rate, seed, mask, out)
        return out

    def backprop_dropout(self, grad, mask, rate, dx):
        launch(KD.backprop_dropout, dx.size, grad, mask, rate, dx)
        return dx

    # --- batches ------------------------------------------------------------------------------------
    def gather_rows(self, src, order, start, count, out):
        idx = order[start:start + count]
        if isinstance(src, CSRMatrix):
            return src.take_rows(idx)  # a new CSR batch each step: O(batch + its nonzeros)
        # mode="clip": with the default "raise" numpy gathers through a temporary (64 KiB a step for
        # the reference MLP); the indices come from a permutation, so they are always in range.
        return np.take(src, idx, axis=0, out=out, mode="clip")

    # --- losses, metrics ----------------------------------------------------------------------------
    def loss(self, kernel, pred, y, grad, row_loss, *scalars):
        return launch(LOSS_KERNELS[kernel], pred.size, pred, y, grad, row_loss, *scalars)

    def loss_from_logits(self, kernel, z, y, probs, grad, row_loss):
        return launch(LOSS_KERNELS[kernel], z.size, z, y, probs, grad, row_loss)

    def weight_rows(self, grad, row_loss, weights):
        return launch(KL.weight_rows, grad.size, grad, row_loss, weights)

    def add_loss(self, sums, slot, mean, row_loss, n):
        sums[slot] += mean * n

    def check_metric(self, fn):
        if not callable(fn):
            raise TypeError(f"a metric must be callable (y_true, y_pred) -> float, received: {fn!r}")

    def add_metric(self, fn, y_true, y_pred, sums, slot, rows, scratch):
        # any (y_true, y_pred) -> float runs here: the batch is already on the host
        sums[slot] += fn(y_true, y_pred) * y_pred.shape[0]

    # --- optimizer updates --------------------------------------------------------------------------
    # The update kernels split their own work (kernels.optim SERIAL_MAX: a bias vector stays serial);
    # config.call only makes them fork- and workqueue-safe. ``snapshot`` (flat, w's length) receives w from
    # before the step in the same pass; ``out`` holds the buffers the new moments go to, in the order the
    # moments are passed (double-buffered: the inputs are left as they were, and the optimizer swaps the two
    # sets once the step is accepted). Each returns True when the step made a weight non-finite
    # (kernels.optim: the NaN guard fused into the update; jitnn.nan_guard restores from the snapshot).
    guard_in_update = True

    def sgd_update(self, w, g, velocity, lr, momentum, nesterov, l1, l2, snapshot=None, *, out):
        return call(KO.sgd_update, w, g, velocity, lr, momentum, nesterov, l1, l2, _snap(snapshot, w), *out) != 0

    def adagrad_update(self, w, g, accum, lr, eps, l1, l2, snapshot=None, *, out):
        return call(KO.adagrad_update, w, g, accum, lr, eps, l1, l2, _snap(snapshot, w), *out) != 0

    def rmsprop_update(self, w, g, ms, lr, rho, eps, l1, l2, snapshot=None, *, out):
        return call(KO.rmsprop_update, w, g, ms, lr, rho, eps, l1, l2, _snap(snapshot, w), *out) != 0

    def adam_update(self, w, g, m, v, vmax, lr, beta1, beta2, eps, t, weight_decay, amsgrad, l1, l2, snapshot=None, *,
                    out):
        return call(KO.adam_update, w, g, m, v, vmax, lr, beta1, beta2, eps, t, weight_decay, amsgrad, l1, l2,
                    _snap(snapshot, w), *out) != 0

    # --- profiling ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def denormals_flushed(self):
        """FTZ and DAZ on every numba thread while the block runs (``JITNN_FLUSH_DENORMALS=0`` or a
        non-x86 CPU: nothing); afterwards the workers' bits are cleared and the calling thread's MXCSR is
        restored exactly, so the user's own numpy code never runs flushed."""
        if not (FLUSH_DENORMALS and fpenv.SUPPORTED):
            yield
            return
        caller = fpenv.get_mxcsr()
        seen = np.zeros(numba.config.NUMBA_NUM_THREADS, np.int32)
        # through config.call: a serial build in a child forked after OpenMP use, one at a time under a
        # user's workqueue layer
        call(fpenv.set_mxcsr_bits, fpenv.FTZ_DAZ, True, numba.get_num_threads(), seen)
        try:
            yield
        finally:
            call(fpenv.set_mxcsr_bits, fpenv.FTZ_DAZ, False, numba.get_num_threads(), seen)
            fpenv.set_mxcsr(caller)

    def recorder(self, profile_recorder, layers):
        if profile_recorder is None:
            return profiler.NULL_RECORDER
        return profiler.HostRecorder(profile_recorder, layers)


CPU = CPUOps()

__all__ = ["CPU", "LOSS_KERNELS", "CPUOps"]
