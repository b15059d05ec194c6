"""Inverted dropout kernels (Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html).

The mask comes from a counter-based hash of (seed, element index), so it is the same for the same seed
whatever the thread count or the device: the CUDA kernels call ``uniform_hash`` too.
"""

import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT


@njit(**JIT, inline="always")
def uniform_hash(seed, index):
    """splitmix64 of (seed, index) -> a float in [0, 1) with 53 random bits."""
    z = np.uint64(seed) + np.uint64(index) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(**JIT, inline="always")
def dropout_element(xi, seed, index, rate, scale):
    """(kept?, output) for element ``index`` of the flattened input; the CUDA kernel calls it too."""
    keep = uniform_hash(seed, index) >= rate
    return keep, (xi * scale if keep else 0.0)


@njit(**PJIT)
def dropout_forward(x, rate, seed, mask, out):
    """mask = u >= rate; out = x * mask / (1 - rate)."""
    scale = 1.0 / (1.0 - rate)
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            mask[i, j], out[i, j] = dropout_element(x[i, j], seed, i * d + j, rate, scale)


@njit(**PJIT)
def backprop_dropout(grad, mask, rate, dx):
    """dx = grad * mask / (1 - rate): the kept units carry the gradient, the dropped ones get zero."""
    scale = 1.0 / (1.0 - rate)
    for i in prange(grad.shape[0]):
        for j in range(grad.shape[1]):
            dx[i, j] = grad[i, j] * scale if mask[i, j] else 0
