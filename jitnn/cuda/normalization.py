"""CUDA batch normalization over the channel axis of (rows, C) data: jitnn.kernels.normalization on the device.

The reductions keep the CPU's fixed blocks (``STAT_BLOCKS`` blocks of rows, ``block_rows``): one thread per
(block, channel) sums its block's rows in row order into the float64 ``partial`` buffer, then one thread
per channel adds the blocks in block order. The CPU does exactly these additions, so the batch
statistics and the parameter gradients are the same bits on both devices, and the same every run (no
atomics). Consecutive threads take consecutive channels: the reads of a row coalesce.

The per-channel affine map (``channel_scale_shift``) and the moving-statistics update (``moving_average``)
are the CPU's own ``@njit`` functions, compiled again for the device.
"""

from __future__ import annotations

import numpy as np

from jitnn.cuda import kernels as K
from jitnn.cuda.runtime import cuda, device_function
from jitnn.kernels import normalization as KN

block_rows = device_function(KN.block_rows)
channel_backprop = device_function(KN.channel_backprop)
channel_scale_shift = device_function(KN.channel_scale_shift)
moving_average = device_function(KN.moving_average)
STAT_BLOCKS = KN.STAT_BLOCKS


def batchnorm_workspace(channels):
    """The float64 (STAT_BLOCKS, 2 * channels) partial-sum buffer, on the device."""
    return cuda.device_array((STAT_BLOCKS, 2 * channels), np.float64)


@cuda.jit
def block_sums(x, partial):
    """partial[b, c] = Σ x[i, c] over the rows i of block b, in row order."""
    rows, ch = x.shape
    for e in range(cuda.grid(1), STAT_BLOCKS * ch, cuda.gridsize(1)):
        b = e // ch
        c = e - b * ch
        r0, r1 = block_rows(b, rows)
        s = 0.0
        for i in range(r0, r1):
            s += x[i, c]
        partial[b, c] = s


@cuda.jit
def channel_means(partial, rows, mean):
    """mean[c] = Σ_b partial[b, c] / rows, the blocks in order."""
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        s = 0.0
        for b in range(STAT_BLOCKS):
            s += partial[b, c]
        mean[c] = s / rows


@cuda.jit
def block_squares(x, mean, partial):
    """partial[b, C + c] = Σ (x[i, c] - mean[c])² over the rows of block b (the two-pass variance)."""
    rows, ch = x.shape
    for e in range(cuda.grid(1), STAT_BLOCKS * ch, cuda.gridsize(1)):
        b = e // ch
        c = e - b * ch
        r0, r1 = block_rows(b, rows)
        m = np.float64(mean[c])
        s = 0.0
        for i in range(r0, r1):
            d = x[i, c] - m
            s += d * d
        partial[b, ch + c] = s


@cuda.jit
def variance_scale_shift(partial, rows, gamma, beta, mean, eps, var, scale, shift):
    """var[c] = Σ_b partial[b, C + c] / rows, then scale and shift (batchnorm_scale_shift) for channel c."""
    ch = mean.shape[0]
    for c in range(cuda.grid(1), ch, cuda.gridsize(1)):
        s = 0.0
        for b in range(STAT_BLOCKS):
            s += partial[b, ch + c]
        var[c] = s / rows
        scale[c], shift[c] = channel_scale_shift(gamma[c], beta[c], mean[c], var[c], eps)


@cuda.jit
def scale_shift_params(gamma, beta, mean, var, eps, scale, shift):
    """scale = gamma / sqrt(var + eps), shift = beta - mean * scale, one thread per channel."""
    for c in range(cuda.grid(1), scale.shape[0], cuda.gridsize(1)):
        scale[c], shift[c] = channel_scale_shift(gamma[c], beta[c], mean[c], var[c], eps)


@cuda.jit
def scale_shift(x, scale, shift, y):
    """y[i, c] = x[i, c] * scale[c] + shift[c] (``y`` may be ``x``)."""
    rows, ch = x.shape
    for e in range(cuda.grid(1), rows * ch, cuda.gridsize(1)):
        i = e // ch
        c = e - i * ch
        y[i, c] = x[i, c] * scale[c] + shift[c]


@cuda.jit
def update_moving(moving_mean, moving_var, mean, var, momentum):
    """moving = momentum * moving + (1 - momentum) * batch, one thread per channel (Keras' biased variance)."""
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        moving_mean[c] = moving_average(moving_mean[c], mean[c], momentum, 1.0)
        moving_var[c] = moving_average(moving_var[c], var[c], momentum, 1.0)


@cuda.jit
def backprop_block_sums(dy, x, mean, partial):
    """partial[b, c] = Σ dy and partial[b, C + c] = Σ dy * (x - mean) over the rows of block b, in row order."""
    rows, ch = x.shape
    for e in range(cuda.grid(1), STAT_BLOCKS * ch, cuda.gridsize(1)):
        b = e // ch
        c = e - b * ch
        r0, r1 = block_rows(b, rows)
        m = np.float64(mean[c])
        s = 0.0
        t = 0.0
        for i in range(r0, r1):
            g = np.float64(dy[i, c])
            s += g
            t += g * (x[i, c] - m)
        partial[b, c] = s
        partial[b, ch + c] = t


@cuda.jit
def backprop_coefficients(partial, rows, gamma, mean, var, eps, dgamma, dbeta):
    """dbeta, dgamma, and dx's per-channel coefficients into partial's first rows (``channel_backprop``)."""
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        channel_backprop(partial, c, rows, gamma, mean, var, eps, dgamma, dbeta)


@cuda.jit
def backprop_input(dy, x, partial, dx):
    """dx[i, c] = a[c] * dy[i, c] + b[c] * x[i, c] + k[c] with the coefficients of backprop_coefficients."""
    rows, ch = x.shape
    for e in range(cuda.grid(1), rows * ch, cuda.gridsize(1)):
        i = e // ch
        c = e - i * ch
        dx[i, c] = partial[0, c] * dy[i, c] + partial[0, ch + c] * x[i, c] + partial[1, c]


# ---------------------------------------------------------------------------------------------------
# Drivers: the CPU's functions of the same names, as kernel sequences (x, y, dy, dx are (rows, C))


def batchnorm_train(x, gamma, beta, eps, y, mean, var, scale, shift, partial):
    """Batch statistics into ``mean``/``var``, then y = gamma * xhat + beta (``y`` may be x)."""
    rows, ch = x.shape
    K.launch(block_sums, STAT_BLOCKS * ch, x, partial)
    K.launch(channel_means, ch, partial, rows, mean)
    K.launch(block_squares, STAT_BLOCKS * ch, x, mean, partial)
    K.launch(variance_scale_shift, ch, partial, rows, gamma, beta, mean, float(eps), var, scale, shift)
    K.launch(scale_shift, x.size, x, scale, shift, y)
    return y


def batchnorm_inference(x, gamma, beta, moving_mean, moving_var, eps, y, scale, shift):
    """y = gamma * (x - moving_mean) / sqrt(moving_var + eps) + beta (``y`` may be x)."""
    K.launch(scale_shift_params, scale.shape[0], gamma, beta, moving_mean, moving_var, float(eps), scale, shift)
    K.launch(scale_shift, x.size, x, scale, shift, y)
    return y


def batchnorm_update_moving(moving_mean, moving_var, mean, var, momentum):
    K.launch(update_moving, mean.shape[0], moving_mean, moving_var, mean, var, float(momentum))


def backprop_batchnorm(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, partial):
    """dX, dgamma and dbeta of the training forward (batch statistics); ``dx`` may be ``dy``."""
    rows, ch = x.shape
    K.launch(backprop_block_sums, STAT_BLOCKS * ch, dy, x, mean, partial)
    K.launch(backprop_coefficients, ch, partial, rows, gamma, mean, var, float(eps), dgamma, dbeta)
    K.launch(backprop_input, x.size, dy, x, partial, dx)
    return dx


__all__ = ["STAT_BLOCKS", "backprop_batchnorm", "backprop_block_sums", "backprop_coefficients", "backprop_input",
           "batchnorm_inference", "batchnorm_train", "batchnorm_update_moving", "batchnorm_workspace",
           "block_squares", "block_sums", "channel_means", "scale_shift", "scale_shift_params", "update_moving",
           "variance_scale_shift"]
