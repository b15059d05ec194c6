"""Activation(name): an activation as a layer of its own (when it does not follow a Dense)."""

from __future__ import annotations

import numpy as np

from jitnn import activations
from jitnn.layers.base import Layer, flat


class Activation(Layer):
    """A = f(X) elementwise (or row-wise softmax); backward dX = dA * f'(X)."""

    kind = "Activation"

    def __init__(self, activation: str | activations.Activation, name: str | None = None):
        super().__init__(name)
        self.activation = activations.get(activation)

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.input_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        return self.ops.activate(flat(x), self._buf_out[:x.shape[0]], self.activation).reshape(x.shape)

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        n = grad.shape[0]
        dx = self.ops.backprop_activation(flat(grad), flat(self._x), self._buf_out[:n], self.activation,
                                          self._buf_dx[:n])
        return dx.reshape(grad.shape)

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        return f"Activation {self.activation.name}"

    def get_config(self) -> dict:
        return {"activation": self.activation.get_config(), "name": self.name}
