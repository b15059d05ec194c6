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

from typing import ClassVar


class Ops:
    """The interface; see the module docstring. Every method here is implemented by each backend."""

    name = "ops"
    sync_every = 1  # steps between the host's reads of the running sums (NaN guard, progress bar)
    array_type: type = object  # the arrays this backend computes on
    loss_kernels: ClassVar[dict] = {}  # loss kernel name -> this backend's kernel
    row_dtype = None  # dtype of per-sample loss rows (None: the model's dtype)

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
