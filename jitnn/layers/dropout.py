"""Dropout (Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html), inverted.

Training keeps each unit with probability 1 - rate and scales it by 1/(1 - rate), so inference is the
identity and costs nothing. The mask comes from a counter-based hash of (seed, step, element), so it
is the same for the same seed whatever the thread count, and needs no random state shared by threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT, launch
from jitnn.layers.base import Layer


@njit(**JIT, inline="always")
def _uniform(seed, index):
    """splitmix64 of (seed, index) -> a float in [0, 1) with 53 random bits."""
    z = np.uint64(seed) + np.uint64(index) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(**PJIT)
def dropout_forward(x, rate, seed, mask, out):
    """mask = u >= rate; out = x * mask / (1 - rate)."""
    scale = 1.0 / (1.0 - rate)
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            keep = _uniform(seed, i * d + j) >= rate
            mask[i, j] = keep
            out[i, j] = x[i, j] * scale if keep else 0


@njit(**PJIT)
def backprop_dropout(grad, mask, rate, dx):
    """dx = grad * mask / (1 - rate): the kept units carry the gradient, the dropped ones get zero."""
    scale = 1.0 / (1.0 - rate)
    for i in prange(grad.shape[0]):
        for j in range(grad.shape[1]):
            dx[i, j] = grad[i, j] * scale if mask[i, j] else 0


class Dropout(Layer):
    """Inverted dropout: zero a ``rate`` fraction of units in training, identity in inference."""

    kind = "Dropout"

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name)
        if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), received: rate={rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self._step = 0

    def build(self, input_dim, dtype, rng):
        super().build(input_dim, dtype, rng)
        self._base_seed = int(rng.integers(0, 2**63)) if self.seed is None else int(self.seed)

    def allocate(self, batch):
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.input_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)
        self._buf_mask = self._buffer("_buf_mask", self.input_dim, np.bool_)

    def forward(self, x, training):
        self._active = training and self.rate > 0
        if not self._active:
            return x
        n = x.shape[0]
        seed = self.next_seed()
        out, mask = self._buf_out[:n], self._buf_mask[:n]
        launch(dropout_forward, x.size, x, self.rate, seed, mask, out)
        return out

    def next_seed(self):
        """The hash seed of the next training call (also the GPU twin's: both count the same steps)."""
        self._step += 1
        return (self._base_seed + self._step * 0x632BE59BD9B4E019) % 2**63  # fits numba int64

    def backward(self, grad, need_input_grad):
        if not self._active:
            return grad
        n = grad.shape[0]
        dx = self._buf_dx[:n]
        launch(backprop_dropout, dx.size, grad, self._buf_mask[:n], self.rate, dx)
        return dx

    def describe(self):
        return f"Dropout {self.rate:g}"

    def get_config(self):
        return {"rate": self.rate, "seed": self.seed, "name": self.name}
