"""Activation(name): an activation as a layer of its own (when it does not follow a Dense)."""

from __future__ import annotations

from jitnn import activations
from jitnn.layers.base import Layer, flat


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
        self._x = x
        return self.ops.activate(flat(x), self._buf_out[:x.shape[0]], self.activation).reshape(x.shape)

    def backward(self, grad, need_input_grad):
        n = grad.shape[0]
        dx = self.ops.backprop_activation(flat(grad), flat(self._x), self._buf_out[:n], self.activation,
                                          self._buf_dx[:n])
        return dx.reshape(grad.shape)

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        return f"Activation {self.activation.name}"

    def get_config(self):
        return {"activation": self.activation.get_config(), "name": self.name}
