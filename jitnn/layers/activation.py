"""Activation(name): an activation as a layer of its own (when it does not follow a Dense)."""

from __future__ import annotations

from jitnn import activations
from jitnn.activations import SOFTMAX
from jitnn.config import launch
from jitnn.kernels.elementwise import LINEAR, activate, backprop_activation
from jitnn.kernels.reductions import backprop_softmax_rows, softmax_rows
from jitnn.layers.base import Layer


class Activation(Layer):
    """A = f(X) elementwise (or row-wise softmax); backward dX = dA * f'(X)."""

    kind = "Activation"

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = activations.get(activation)

    def allocate(self, batch):
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.input_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)

    def forward(self, x, training):
        act = self.activation
        if act.code == LINEAR:
            return x
        self._x = x
        out = self._buf_out[: x.shape[0]]
        if act.code == SOFTMAX:
            launch(softmax_rows, x.size, x, out)
        else:
            launch(activate, x.size, x, out, act.code, act.param)
        return out

    def backward(self, grad, need_input_grad):
        act = self.activation
        if act.code == LINEAR:
            return grad
        n = grad.shape[0]
        out, dx = self._buf_out[:n], self._buf_dx[:n]
        if act.code == SOFTMAX:
            launch(backprop_softmax_rows, dx.size, out, grad, dx)
        else:
            launch(backprop_activation, dx.size, grad, self._x, out, act.code, act.param, dx)
        return dx

    def describe(self):
        return f"Activation {self.activation.name}"

    def get_config(self):
        return {"activation": self.activation.get_config(), "name": self.name}
