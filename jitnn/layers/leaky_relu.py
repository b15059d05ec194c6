"""LeakyReLU as a layer (Maas et al. 2013, https://ai.stanford.edu/~amaas/papers/relu_hybrid_icml2013_final.pdf)."""

from __future__ import annotations

import numpy as np

from jitnn import activations
from jitnn.layers.base import Layer, flat


class LeakyReLU(Layer):
    """A = X where X > 0, else negative_slope * X (Keras 3's layer and default slope); dX = dA * f'(A)."""

    kind = "LeakyReLU"

    def __init__(self, negative_slope: float = 0.3, name: str | None = None):
        super().__init__(name)
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) \
                or not 0 <= negative_slope < 1:
            raise ValueError(f"LeakyReLU negative_slope must be in [0, 1), received: negative_slope={negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self.activation = activations.LeakyReLU(self.negative_slope)

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.input_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.ops.activate(flat(x), self._buf_out[:x.shape[0]], self.activation).reshape(x.shape)

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        n = grad.shape[0]
        out = self._buf_out[:n]  # f'(z) reads the output's sign: no copy of the input is kept
        dx = self.ops.backprop_activation(flat(grad), out, out, self.activation, self._buf_dx[:n])
        return dx.reshape(grad.shape)

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        return f"LeakyReLU {self.negative_slope:g}"

    def get_config(self) -> dict:
        return {"negative_slope": self.negative_slope, "name": self.name}
