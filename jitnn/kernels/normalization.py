"""Batch normalization over the channel axis of (rows, C) data (Ioffe & Szegedy, https://arxiv.org/abs/1502.03167).

A Dense output is (batch, units); a Conv2D output (N, H, W, C) is viewed as (N*H*W, C), a reshape.

Training: ``batchnorm_stats`` (batch mean and biased variance), ``batchnorm_scale_shift`` (per-channel
scale = gamma / sqrt(var + eps), shift = beta - mean * scale), ``scale_shift`` (y = x * scale + shift),
``batchnorm_update_moving``; ``backprop_batchnorm`` gives dX, dgamma and dbeta. Inference uses the
moving statistics through the same ``batchnorm_scale_shift`` + ``scale_shift``, or ``fold_batchnorm``
folds them into the preceding layer's weights and bias.

Reductions run over STAT_BLOCKS fixed blocks of rows: each block is summed in row order by one thread
into float64 partial sums, and the blocks are combined serially in block order, so the statistics are
bitwise the same for any thread count. The variance is two-pass (mean first, then Σ(x - mean)²):
no cancellation when |mean| >> std, unlike Σx² - n·mean².
"""

import math

import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT, call, launch

STAT_BLOCKS = 64


def batchnorm_workspace(channels):
    """The float64 partial-sum buffer every reduction here takes: (STAT_BLOCKS, 2 * channels)."""
    return np.empty((STAT_BLOCKS, 2 * channels), np.float64)


@njit(**JIT, inline="always")
def block_rows(b, rows):
    """Rows [r0, r1) of fixed block b of STAT_BLOCKS."""
    per = (rows + STAT_BLOCKS - 1) // STAT_BLOCKS
    return min(b * per, rows), min((b + 1) * per, rows)


@njit(**PJIT)
def batchnorm_stats(x, mean, var, partial):
    """mean[c] = Σ_i x[i, c] / R and var[c] = Σ_i (x[i, c] - mean[c])² / R (biased, as Keras), R = rows."""
    rows, ch = x.shape
    for b in prange(STAT_BLOCKS):
        r0, r1 = block_rows(b, rows)
        for c in range(ch):
            partial[b, c] = 0.0
        for i in range(r0, r1):
            for c in range(ch):
                partial[b, c] += x[i, c]
    for c in range(ch):
        s = 0.0
        for b in range(STAT_BLOCKS):
            s += partial[b, c]
        mean[c] = s / rows
    for b in prange(STAT_BLOCKS):
        r0, r1 = block_rows(b, rows)
        for c in range(ch):
            partial[b, ch + c] = 0.0
        for i in range(r0, r1):
            for c in range(ch):
                d = x[i, c] - np.float64(mean[c])
                partial[b, ch + c] += d * d
    for c in range(ch):
        s = 0.0
        for b in range(STAT_BLOCKS):
            s += partial[b, ch + c]
        var[c] = s / rows


@njit(**JIT, inline="always")
def channel_scale_shift(gamma, beta, mean, var, eps):
    """(scale, shift) of one channel: gamma / sqrt(var + eps) and beta - mean * scale (also a CUDA device function)."""
    s = gamma / math.sqrt(np.float64(var) + eps)
    return s, beta - mean * s


@njit(**JIT)
def batchnorm_scale_shift(gamma, beta, mean, var, eps, scale, shift):
    """scale = gamma / sqrt(var + eps), shift = beta - mean * scale: BN as one affine map per channel."""
    for c in range(scale.shape[0]):
        scale[c], shift[c] = channel_scale_shift(gamma[c], beta[c], mean[c], var[c], eps)


@njit(**PJIT)
def scale_shift(x, scale, shift, y):
    """y[i, c] = x[i, c] * scale[c] + shift[c], parallel over rows (``y`` may be ``x``)."""
    for i in prange(x.shape[0]):
        for c in range(x.shape[1]):
            y[i, c] = x[i, c] * scale[c] + shift[c]


@njit(**JIT)
def batchnorm_update_moving(moving_mean, moving_var, mean, var, momentum, rows=0):
    """moving = momentum * moving + (1 - momentum) * batch (Keras' momentum, 0.99 by default).

    ``rows`` > 1 updates the variance with the unbiased batch variance var * R / (R - 1) (PyTorch's
    running_var; its momentum is 1 - this one); ``rows`` = 0 uses the biased one, as Keras does.
    """
    corr = rows / (rows - 1.0) if rows > 1 else 1.0
    for c in range(mean.shape[0]):
        moving_mean[c] = moving_average(moving_mean[c], mean[c], momentum, 1.0)
        moving_var[c] = moving_average(moving_var[c], var[c], momentum, corr)


@njit(**JIT, inline="always")
def moving_average(moving, batch, momentum, corr):
    """momentum * moving + (1 - momentum) * batch * corr, one channel (also a CUDA device function)."""
    return momentum * moving + (1.0 - momentum) * batch * corr


@njit(**PJIT)
def backprop_batchnorm(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, partial):
    """Gradients of y = gamma * xhat + beta, xhat = (x - mean) / sqrt(var + eps), batch statistics.

    dbeta = Σ_i dy, dgamma = Σ_i dy ⊙ xhat, dx = gamma / sqrt(var + eps) ⊙ (dy - (dbeta + xhat ⊙ dgamma) / R).
    ``dx`` may be ``dy``. Both sums come from one pass over fixed row blocks (thread-count independent).
    """
    rows, ch = x.shape
    for b in prange(STAT_BLOCKS):
        r0, r1 = block_rows(b, rows)
        for c in range(2 * ch):
            partial[b, c] = 0.0
        for i in range(r0, r1):
            for c in range(ch):
                g = np.float64(dy[i, c])
                partial[b, c] += g
                partial[b, ch + c] += g * (x[i, c] - np.float64(mean[c]))
    for c in range(ch):
        channel_backprop(partial, c, rows, gamma, mean, var, eps, dgamma, dbeta)
    for i in prange(rows):
        for c in range(ch):
            dx[i, c] = partial[0, c] * dy[i, c] + partial[0, ch + c] * x[i, c] + partial[1, c]


@njit(**JIT, inline="always")
def channel_backprop(partial, c, rows, gamma, mean, var, eps, dgamma, dbeta):
    """Channel c of backprop_batchnorm: its block sums (Σ dy in partial[:, c], Σ dy (x - mean) in
    partial[:, C + c]) added in block order into dbeta[c] and dgamma[c], and dx's coefficients
    (dx = a*dy + b*x + k) written over partial[0, c], partial[0, C + c] and partial[1, c]: only columns
    c and C + c are touched, so channels may run in parallel (also a CUDA device function)."""
    ch = partial.shape[1] // 2
    s = 0.0
    t = 0.0
    for b in range(STAT_BLOCKS):
        s += partial[b, c]
        t += partial[b, ch + c]
    inv = 1.0 / math.sqrt(np.float64(var[c]) + eps)
    dbeta[c] = s
    dgamma[c] = t * inv
    a = gamma[c] * inv
    bc = -a * inv * inv * t / rows  # -a * dgamma * inv / R
    partial[0, c] = a
    partial[0, ch + c] = bc
    partial[1, c] = -a * s / rows - bc * mean[c]


def fold_batchnorm(w, b, gamma, beta, mean, var, eps):
    """(W', b') with layer(x; W', b') = BN(layer(x; W, b)) in inference: W' = W * s, b' = (b - mean) * s + beta.

    s = gamma / sqrt(var + eps). ``w``'s last axis is the output channel (Dense (in, out), Conv2D
    (KH, KW, C, F)); ``b`` may be None (no bias). Computed in float64, returned in w's dtype.
    """
    s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b0 = 0.0 if b is None else np.asarray(b, np.float64)
    w2 = (np.asarray(w, np.float64) * s).astype(w.dtype)
    b2 = ((b0 - np.asarray(mean, np.float64)) * s + np.asarray(beta, np.float64)).astype(w.dtype)
    return w2, b2


def batchnorm_train(x, gamma, beta, eps, y, mean, var, scale, shift, partial):
    """Training forward: batch statistics into ``mean``/``var``, then y = gamma * xhat + beta (``y`` may be x).

    The parallel kernels go through ``config.call``/``launch`` like every other one, so a child forked after
    OpenMP use runs their serial builds and the workqueue layer runs them one at a time; the fixed-block
    reductions are parallel over STAT_BLOCKS whatever the size, so the statistics take no thread gate."""
    call(batchnorm_stats, x, mean, var, partial)
    batchnorm_scale_shift(gamma, beta, mean, var, eps, scale, shift)
    launch(scale_shift, x.size, x, scale, shift, y)
    return y


def batchnorm_inference(x, gamma, beta, moving_mean, moving_var, eps, y, scale, shift):
    """Inference forward with the moving statistics (``y`` may be x)."""
    batchnorm_scale_shift(gamma, beta, moving_mean, moving_var, eps, scale, shift)
    launch(scale_shift, x.size, x, scale, shift, y)
    return y


__all__ = [
    "STAT_BLOCKS",
    "backprop_batchnorm",
    "batchnorm_inference",
    "batchnorm_scale_shift",
    "batchnorm_stats",
    "batchnorm_train",
    "batchnorm_update_moving",
    "batchnorm_workspace",
    "block_rows",
    "channel_backprop",
    "channel_scale_shift",
    "fold_batchnorm",
    "moving_average",
    "scale_shift",
]
