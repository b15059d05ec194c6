"""Dropout (Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html), inverted.

Training keeps each unit with probability 1 - rate and scales it by 1/(1 - rate), so inference is the
identity and costs nothing. The mask comes from a counter-based hash of (seed, step, element)
(jitnn/kernels/dropout.py), so it is the same for the same seed whatever the thread count or device,
and needs no random state shared by threads.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from jitnn.layers.base import Layer, ShapeLike, flat


class Dropout(Layer):
    """Inverted dropout: zero a ``rate`` fraction of units in training, identity in inference."""

    kind = "Dropout"

    def __init__(self, rate: float, seed: int | None = None, name: str | None = None):
        super().__init__(name)
        if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), received: rate={rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self._step = 0

    def build(self, input_dim: ShapeLike, dtype: DTypeLike, rng: np.random.Generator) -> None:
        super().build(input_dim, dtype, rng)
        self._base_seed = int(rng.integers(0, 2**63)) if self.seed is None else int(self.seed)

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.input_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)
        self._buf_mask = self._buffer("_buf_mask", self.input_dim, np.bool_)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._active = training and self.rate > 0
        if not self._active:
            return x
        n = x.shape[0]
        out = self.ops.dropout(flat(x), self.rate, self.next_seed(), self._buf_mask[:n], self._buf_out[:n])
        return out.reshape(x.shape)

    def next_seed(self) -> int:
        """The hash seed of the next training call (the step counter travels with the layer across devices)."""
        self._step += 1
        return (self._base_seed + self._step * 0x632BE59BD9B4E019) % 2**63  # fits numba int64

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        if not self._active:
            return grad
        n = grad.shape[0]
        dx = self.ops.backprop_dropout(flat(grad), self._buf_mask[:n], self.rate, self._buf_dx[:n])
        return dx.reshape(grad.shape)

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        return f"Dropout {self.rate:g}"

    def get_config(self) -> dict:
        return {"rate": self.rate, "seed": self.seed, "name": self.name}
