"""Reductions over rows and columns: bias gradients, softmax, non-finite counts (losses: kernels/losses.py).

Conventions shared by the kernels below:

- Arrays are 2-D ``(N, D)`` (any strides); outputs and scratch are passed in, nothing is allocated.
- Parallel kernels split the ROWS with ``prange``: each iteration writes only its own row of the
  outputs and its own ``row_loss[i]``, so no two iterations touch the same element.
- Scalars are carried in float64 and rounded once when stored (softmax's exp alone runs in the
  array's dtype, see ``softmax_row``); ``softmax_rows`` has its ``backprop_softmax_rows`` partner.
"""

import math

import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT

# column_sums gives each parallel task this many adjacent columns (a few cache lines per row); the
# block a column falls in never depends on the thread count, so neither does its sum.
COL_BLOCK = 64


@njit(**PJIT)
def nonfinite_count(x):
    """#{x : x is NaN or ±inf} over a 1-D or 2-D array (prange reduction: per-thread counts, race-free)."""
    c = 0
    if x.ndim == 1:
        for i in prange(x.shape[0]):
            if not math.isfinite(x[i]):
                c += 1
    else:
        for i in prange(x.shape[0]):
            for j in range(x.shape[1]):
                if not math.isfinite(x[i, j]):
                    c += 1
    return c


@njit(**JIT)
def _column_block_sums(x, out, j0, j1):
    """out[j0:j1] = Σ_i x[i, j0:j1], rows in order (a fixed summation order)."""
    o = out[j0:j1]
    w = j1 - j0
    for jj in range(w):
        o[jj] = 0
    # columns innermost over 1-D row slices: contiguous loads LLVM vectorizes (indexing x[i, j] directly
    # in the prange body measured ~8x slower: the outlined parallel loop did not vectorize)
    for i in range(x.shape[0]):
        xi = x[i, j0:j1]
        for jj in range(w):
            o[jj] += xi[jj]


@njit(**PJIT)
def column_sums(x, out):
    """out[j] = Σ_i x[i, j] (the bias gradient); parallel over fixed blocks of COL_BLOCK columns."""
    d = x.shape[1]
    for b in prange((d + COL_BLOCK - 1) // COL_BLOCK):
        _column_block_sums(x, out, b * COL_BLOCK, min((b + 1) * COL_BLOCK, d))


@njit(**JIT, inline="always")
def softmax_row(zi, pi):
    """pi = softmax(zi) for one row; returns logsumexp(zi) = max + log Σ exp(zi - max), never log(pi).

    exp runs in the array's dtype (expf for float32, ~1.5x faster); the sum is carried in float64.
    """
    d = zi.shape[0]
    m = zi[0]
    for j in range(1, d):
        m = max(m, zi[j])
    s = 0.0
    for j in range(d):
        e = math.exp(zi[j] - m)
        pi[j] = e
        s += e
    inv = 1.0 / s
    for j in range(d):
        pi[j] = pi[j] * inv
    return m + math.log(s)


@njit(**PJIT)
def softmax_rows(z, out):
    """out[i] = exp(z[i] - max z[i]) / Σ_j exp(z[i, j] - max z[i]); in place (out is z) is fine."""
    for i in prange(z.shape[0]):
        softmax_row(z[i], out[i])


@njit(**JIT, inline="always")
def backprop_softmax_row(pi, dpi, dzi):
    """dzi = pi * (dpi - dpi . pi) for one row (the sum in float64)."""
    d = pi.shape[0]
    s = 0.0
    for j in range(d):
        s += dpi[j] * np.float64(pi[j])
    for j in range(d):
        dzi[j] = pi[j] * (dpi[j] - s)


@njit(**PJIT)
def backprop_softmax_rows(probs, dprobs, dz):
    """dz[i] = p[i] ⊙ (dp[i] - Σ_j dp[i, j] p[i, j]), the softmax Jacobian (diag p - p pᵀ) times dp."""
    for i in prange(probs.shape[0]):
        backprop_softmax_row(probs[i], dprobs[i], dz[i])
