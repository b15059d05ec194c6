"""The Ops interface: everything a layer, loss, metric, optimizer or the training loop asks of a device.

One implementation per device (``cpu.py``: numba ``@njit`` kernels on numpy arrays; ``cuda.py``:
numba-cuda kernels on device arrays), the same method names and arguments on both, so moving a
model to another device swaps one object (thinc's ``Ops``, Keras 3's backends). Callers never branch
on the device or on an activation's kind: the backend does.

Conventions:
- Arrays are the backend's own (``to_device``/``to_host`` cross the border); outputs are passed in,
  and the methods allocate nothing (except ``alloc``/``zeros``/``to_device``).
- ``activation`` arguments are ``jitnn.activations.Activation`` objects (softmax included).
- Loss and metric kernels are named by the strings a ``Loss`` lists in ``kernels`` (``"mse"``,
  ``"softmax_xent_int"``, ...); ``check_loss``/``check_metric``/``check_optimizer`` say at ``compile``
  (or ``to``) what the device cannot run, so training never fails half-way for that reason.
- ``sums`` is a small float64 vector on the device: the running loss and metric numerators of an
  epoch. The host reads it (``to_host``) every ``sync_every`` steps: every step on the CPU, where it
  costs nothing, rarely on a GPU, where each read waits for the device.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar


class Ops:
    """The interface; see the module docstring. Every method here is implemented by each backend."""

    name = "ops"
    sync_every = 1  # steps between the host's reads of the running sums (NaN guard, progress bar)
    array_type: type = object  # the arrays this backend computes on
    loss_kernels: ClassVar[dict] = {}  # loss kernel name -> this backend's kernel
    row_dtype = None  # dtype of per-sample loss rows (None: the model's dtype)
    # True: the update methods take ``snapshot=`` (w before the step) and ``out=`` (the buffers the new moments
    # go to, the optimizer's state double-buffered), and return True on a non-finite weight; False: they update
    # the moments in place, and the NaN guard copies the state aside itself (jitnn.nan_guard)
    guard_in_update = False

    # --- memory and transfer ----------------------------------------------------------------------
    def alloc(self, shape, dtype):
        """An uninitialized array on this device."""
        raise NotImplementedError

    def zeros(self, shape, dtype):
        """A zero-filled array on this device."""
        raise NotImplementedError

    def to_device(self, host, out=None):
        """``host`` (numpy) on this device: a new array, or copied into ``out``; returned."""
        raise NotImplementedError

    def to_host(self, array, out=None):
        """``array`` as numpy (a copy, or copied into ``out``); returned."""
        raise NotImplementedError

    def asarray(self, x, dtype=None):
        """``x`` on this device, without a copy when it already is a device array of that dtype."""
        raise NotImplementedError

    def copy(self, src, dst):
        """dst[...] = src, both on this device."""
        raise NotImplementedError

    def is_finite(self, value) -> bool:
        """True when the host scalar ``value`` (read from ``sums``) is finite."""
        raise NotImplementedError

    def denormals_flushed(self):
        """A context manager under which this device's kernels flush denormals to zero (``fit`` runs in
        it: jitnn/kernels/fpenv.py says why); the default changes nothing."""
        return contextlib.nullcontext()

    # --- linear algebra ---------------------------------------------------------------------------
    def gemm(self, a, b, out, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None, activation=None):
        """out = f(alpha * op(a) @ op(b) + beta * out + bias); ``activation`` must be elementwise
        (``activation.in_epilogue``) or None. Returns ``out``."""
        raise NotImplementedError

    def column_sums(self, x, out):
        """out[j] = sum_i x[i, j] (bias gradients)."""
        raise NotImplementedError

    # --- activations --------------------------------------------------------------------------------
    def activate(self, x, out, activation):
        """out = f(x) (row-wise for softmax; ``out`` may be ``x``); returns the result, which is ``x``
        itself for the identity (nothing is copied)."""
        raise NotImplementedError

    def backprop_activation(self, grad, z, a, activation, dz):
        """dz = dL/dz from ``grad`` = dL/da, the pre-activation ``z`` and the output ``a`` (pass ``a``
        as ``z`` when ``activation.needs_preactivation`` is False); returns ``grad`` itself for the
        identity."""
        raise NotImplementedError

    # --- convolution, pooling, batch normalization (channels-last (N, H, W, C); jitnn.kernels.conv,
    #     .pooling, .normalization give the semantics; geometry from conv2d_geometry/pool_geometry) -------
    def conv2d_workspace(self, x_shape, w_shape, out_hw, dtype):
        """The scratch ``conv2d``/``backprop_conv2d`` take as ``cols`` for these shapes (allocate once)."""
        raise NotImplementedError

    def conv2d(self, x, w, bias, y, strides, dilation, pads, activation, cols):
        """y = f(conv(x, w) + bias); ``bias`` may be None, ``activation`` elementwise (``in_epilogue``)."""
        raise NotImplementedError

    def backprop_conv2d(self, x, w, dy, dx, dw, db, strides, dilation, pads, cols):
        """dW (and db, dX unless None) from dY, the gradient after the activation's derivative."""
        raise NotImplementedError

    def maxpool2d(self, x, pool, strides, pads, y, argmax):
        """Max over windows ``pool`` = (ph, pw), ``strides``, ``pads`` = (top, left); ``argmax`` int32."""
        raise NotImplementedError

    def backprop_maxpool2d(self, dy, argmax, pool, strides, pads, dx):
        raise NotImplementedError

    def avgpool2d(self, x, pool, strides, pads, y):
        """Mean over the real (unpadded) cells of each window."""
        raise NotImplementedError

    def backprop_avgpool2d(self, dy, pool, strides, pads, dx):
        raise NotImplementedError

    def global_avgpool2d(self, x, y):
        """y (N, C) = the mean of x (N, H, W, C) over H and W."""
        raise NotImplementedError

    def backprop_global_avgpool2d(self, dy, dx):
        raise NotImplementedError

    def batchnorm_workspace(self, channels):
        """The float64 partial-sum scratch the batch-norm reductions take."""
        raise NotImplementedError

    def batchnorm_train(self, x, gamma, beta, eps, y, mean, var, scale, shift, partial):
        """Batch statistics of x (rows, C) into mean/var, y = gamma * xhat + beta (``y`` may be x)."""
        raise NotImplementedError

    def batchnorm_inference(self, x, gamma, beta, moving_mean, moving_var, eps, y, scale, shift):
        raise NotImplementedError

    def batchnorm_update_moving(self, moving_mean, moving_var, mean, var, momentum):
        """moving = momentum * moving + (1 - momentum) * batch (Keras)."""
        raise NotImplementedError

    def backprop_batchnorm(self, dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, partial):
        raise NotImplementedError

    def check_ops(self, layer, *names):
        """ValueError when this device lacks one of the ops ``names`` that ``layer`` calls."""
        missing = [n for n in names if getattr(type(self), n, None) is getattr(Ops, n)]
        if missing:
            raise ValueError(f"{layer} needs the ops {missing}, which device {self.name!r} does not implement "
                             "yet; run this model on the CPU")

    # --- dropout ------------------------------------------------------------------------------------
    def dropout(self, x, rate, seed, mask, out):
        """Inverted dropout with the counter hash of jitnn.kernels.dropout (same seed, same units)."""
        raise NotImplementedError

    def backprop_dropout(self, grad, mask, rate, dx):
        raise NotImplementedError

    # --- batches ------------------------------------------------------------------------------------
    def gather_rows(self, src, order, start, count, out):
        """out[i] = src[order[start + i]] for i < ``count`` (``out`` 1-D or 2-D, ``count`` rows); returns the
        batch (on the CPU a new CSR batch when ``src`` is a CSRMatrix, ``out`` then unused)."""
        raise NotImplementedError

    # --- losses, metrics ----------------------------------------------------------------------------
    def check_loss(self, loss):
        """ValueError when this device has no kernel for ``loss`` (every name in ``loss.kernels``)."""
        missing = [k for k in loss.kernels if k not in self.loss_kernels]
        if missing:
            raise ValueError(f"{type(loss).__name__} needs the loss kernels {missing}, which device "
                             f"{self.name!r} lacks; train it on another device")

    def loss(self, kernel, pred, y, grad, row_loss, *scalars):
        """Run loss ``kernel`` (a name from ``Loss.kernels``): dL/dpred into ``grad``, per-sample losses
        into ``row_loss``; returns the batch mean as a float where the host computed it, else None."""
        raise NotImplementedError

    def loss_from_logits(self, kernel, z, y, probs, grad, row_loss):
        """The fused path: ``probs`` = activation(z), ``grad`` = dL/dz; returns as ``loss``."""
        raise NotImplementedError

    def weight_rows(self, grad, row_loss, weights):
        """Per-sample weights after a loss: grad[i] *= w[i] and row_loss[i] *= w[i] (Keras'
        "sum_over_batch_size" reduction); returns Σ w_i l_i / N where the host computes it, else None."""
        raise NotImplementedError

    def add_loss(self, sums, slot, mean, row_loss, n):
        """sums[slot] += the batch's summed loss (``mean * n`` when ``mean`` is known on the host)."""
        raise NotImplementedError

    def check_metric(self, fn):
        """ValueError when this device cannot compute metric ``fn`` during training."""
        raise NotImplementedError

    def add_metric(self, fn, y_true, y_pred, sums, slot, rows, scratch):
        """sums[slot] += the batch's metric numerator (per-sample values summed)."""
        raise NotImplementedError

    # --- optimizer updates (one in-place kernel per parameter array, same arguments as
    #     jitnn.kernels.optim; flat arrays) -----------------------------------------------------------
    def check_optimizer(self, optimizer):
        """ValueError when this device has no update kernel for ``optimizer`` (its ``kernel`` method)."""
        impl = getattr(type(self), optimizer.kernel or "-", None)
        if impl is None or impl is getattr(Ops, optimizer.kernel, None):
            raise ValueError(f"{type(optimizer).__name__} has no update kernel on device {self.name!r}; "
                             f"use one of jitnn.optimizers.OPTIMIZERS or another device")

    def sgd_update(self, w, g, velocity, lr, momentum, nesterov, l1, l2):
        raise NotImplementedError

    def adagrad_update(self, w, g, accum, lr, eps, l1, l2):
        raise NotImplementedError

    def rmsprop_update(self, w, g, ms, lr, rho, eps, l1, l2):
        raise NotImplementedError

    def adam_update(self, w, g, m, v, vmax, lr, beta1, beta2, eps, t, weight_decay, amsgrad, l1, l2):
        raise NotImplementedError

    # --- profiling ----------------------------------------------------------------------------------
    def recorder(self, profile_recorder, layers):
        """The timing object the training loop uses for ``profile_recorder`` (jitnn.profiler), which
        may be None: then a recorder that does nothing."""
        raise NotImplementedError

    def __repr__(self):
        return f"<jitnn ops {self.name!r}>"
