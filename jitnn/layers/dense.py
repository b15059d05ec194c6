"""Dense: A = f(X @ W + b), one GEMM with the bias and activation fused into its epilogue."""

from __future__ import annotations

import numpy as np

from jitnn import activations, initializers
from jitnn.activations import SOFTMAX
from jitnn.config import launch
from jitnn.kernels.elementwise import LINEAR, activate, backprop_activation
from jitnn.kernels.reductions import backprop_softmax_rows, column_sums, softmax_rows
from jitnn.layers.base import Layer
from jitnn.linalg import gemm_into


def _regularizer(value):
    """None, a float (L2), or {"l1": .., "l2": ..} -> (l1, l2)."""
    if value is None:
        return 0.0, 0.0
    if isinstance(value, (int, float)):
        value = {"l2": float(value)}
    if isinstance(value, dict):
        l1, l2 = float(value.get("l1", 0.0)), float(value.get("l2", 0.0))
        if l1 < 0 or l2 < 0:
            raise ValueError(f"regularization factors must be >= 0, received: {value}")
        return l1, l2
    raise TypeError(f"kernel_regularizer must be None, a float (L2) or a dict, received: {value!r}")


class Dense(Layer):
    """Fully connected layer: forward = one GEMM + bias + activation; backward = dZ, X^T dZ, col sums, dZ W^T."""

    kind = "Dense"

    def __init__(self, units, activation=None, input_dim=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", use_bias=True, kernel_regularizer=None, name=None):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense units must be a positive int, received: units={units!r}")
        if input_dim is not None and (not isinstance(input_dim, (int, np.integer)) or input_dim < 1):
            raise ValueError(f"Dense input_dim must be a positive int, received: input_dim={input_dim!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.declared_input_dim = None if input_dim is None else int(input_dim)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.use_bias = bool(use_bias)
        self.l1, self.l2 = _regularizer(kernel_regularizer)
        self.emit_logits = False  # set by the model when the loss fuses this layer's activation

    def build(self, input_dim, dtype, rng):
        if self.declared_input_dim is not None and self.declared_input_dim != input_dim:
            raise ValueError(f"Dense(input_dim={self.declared_input_dim}) receives {input_dim} features")
        self.input_dim, self.output_dim, self.dtype = int(input_dim), self.units, np.dtype(dtype)
        self.W = self.kernel_initializer((self.input_dim, self.units), rng, self.dtype)
        self.dW = np.zeros_like(self.W)
        self.params, self.grads, self.param_names = [self.W], [self.dW], ["kernel"]
        self.regularizers = [(self.l1, self.l2)]
        self.b = self.bias_initializer((self.units,), rng, self.dtype)
        self.db = np.zeros_like(self.b)
        if self.use_bias:
            self.params.append(self.b)
            self.grads.append(self.db)
            self.param_names.append("bias")
            self.regularizers.append((0.0, 0.0))
        self.built = True

    def allocate(self, batch):
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.units)
        self._buf_dz = self._buffer("_buf_dz", self.units)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)
        if self.activation.needs_preactivation:
            self._buf_z = self._buffer("_buf_z", self.units)

    def forward(self, x, training):
        n = x.shape[0]
        out = self._buf_out[:n]
        act = self.activation
        bias = self.b if self.use_bias else None
        self._x = x
        if self.emit_logits or act.code == LINEAR:
            gemm_into(x, self.W, out, bias=bias)
        elif act.code == SOFTMAX:
            gemm_into(x, self.W, out, bias=bias)
            launch(softmax_rows, out.size, out, out)
        elif act.needs_preactivation:
            z = self._buf_z[:n]
            gemm_into(x, self.W, z, bias=bias)
            launch(activate, z.size, z, out, act.code, act.param)
        else:
            gemm_into(x, self.W, out, bias=bias, act=act.code, act_param=act.param)
        return out

    def backward(self, grad, need_input_grad, grad_is_dz=False):
        """``grad`` is dL/dA, or dL/dZ when ``grad_is_dz`` (a loss fused with the activation)."""
        n = grad.shape[0]
        act = self.activation
        out = self._buf_out[:n]
        if grad_is_dz or self.emit_logits or act.code == LINEAR:
            dz = grad
        elif act.code == SOFTMAX:
            dz = self._buf_dz[:n]
            launch(backprop_softmax_rows, dz.size, out, grad, dz)
        else:
            dz = self._buf_dz[:n]
            z = self._buf_z[:n] if act.needs_preactivation else out
            launch(backprop_activation, dz.size, grad, z, out, act.code, act.param, dz)
        gemm_into(self._x.T, dz, self.dW)
        if self.use_bias:
            launch(column_sums, dz.size, dz, self.db)
        if not need_input_grad:
            return None
        dx = self._buf_dx[:n]
        gemm_into(dz, self.W.T, dx)
        return dx

    def flops(self, batch, need_input_grad=True):
        mm = 2 * batch * self.input_dim * self.units
        dx = mm if need_input_grad else 0  # the first layer skips dX = dZ W^T
        return {"forward": mm + 2 * batch * self.units, "backward": mm + dx + 2 * batch * self.units}

    def bytes_moved(self, batch, need_input_grad=True):
        item = self.dtype.itemsize
        w = self.input_dim * self.units * item
        io = batch * (self.input_dim + self.units) * item
        dx = (w + batch * self.input_dim * item) if need_input_grad else 0
        return {"forward": w + io, "backward": w + io + dx}

    def describe(self):
        return f"Dense {self.input_dim}\u2192{self.units} {self.activation.name}"

    def get_config(self):
        return {"units": self.units, "activation": self.activation.get_config(), "input_dim": self.input_dim,
                "use_bias": self.use_bias, "kernel_regularizer": {"l1": self.l1, "l2": self.l2},
                "name": self.name}
