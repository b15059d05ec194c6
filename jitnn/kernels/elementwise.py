"""Elementwise activation functions, as scalar kernels the GEMM epilogue and the layers share.

Activations are identified by a small integer code so one compiled epilogue serves them all
(the branch on ``code`` is the same for every element, so it predicts perfectly).
"""

import math

from numba import njit, prange

from jitnn.config import JIT, PJIT

LINEAR, RELU, LEAKY_RELU, SIGMOID, TANH, SWISH, GELU = range(7)

CODES = {
    "linear": LINEAR,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "swish": SWISH,
    "silu": SWISH,
    "gelu": GELU,
}

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@njit(**JIT, inline="always")
def sigmoid_scalar(x):
    """1 / (1 + exp(-x)), evaluated without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(**JIT, inline="always")
def activate_scalar(code, x, param):
    """f(x) for activation ``code`` (``param`` is leaky_relu's slope)."""
    if code == LINEAR:
        return x
    if code == RELU:
        return x if x > 0 else x * 0
    if code == LEAKY_RELU:
        return x if x > 0 else x * param
    if code == SIGMOID:
        return sigmoid_scalar(x)
    if code == TANH:
        return math.tanh(x)
    if code == SWISH:
        return x * sigmoid_scalar(x)
    # GELU, tanh approximation (Hendrycks & Gimpel, https://arxiv.org/abs/1606.08415)
    return 0.5 * x * (1.0 + math.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


@njit(**JIT)
def activate_block(x, r0, c0, m, n, code, param):
    """x[r0:r0+m, c0:c0+n] = f(x) in place, the branch on ``code`` hoisted out of the loops."""
    if code == RELU:
        for i in range(r0, r0 + m):
            for j in range(c0, c0 + n):
                if x[i, j] < 0:  # noqa: PLR1730 - NaN compares false and passes through (max() would not)
                    x[i, j] = 0
    elif code == LEAKY_RELU:
        for i in range(r0, r0 + m):
            for j in range(c0, c0 + n):
                if x[i, j] < 0:
                    x[i, j] *= param
    elif code != LINEAR:
        for i in range(r0, r0 + m):
            for j in range(c0, c0 + n):
                x[i, j] = activate_scalar(code, x[i, j], param)


@njit(**JIT, inline="always")
def derivative_scalar(code, z, a, param):
    """f'(z) for activation ``code``, from the output ``a = f(z)`` where that suffices."""
    if code == LINEAR:
        return 1.0
    if code == RELU:
        return 1.0 if a > 0 else 0.0
    if code == LEAKY_RELU:
        return 1.0 if a > 0 else param
    if code == SIGMOID:
        return a * (1.0 - a)
    if code == TANH:
        return 1.0 - a * a
    if code == SWISH:
        s = sigmoid_scalar(z)
        return s + z * s * (1.0 - s)
    t = math.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z * z * z))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * z * z)


@njit(**PJIT)
def activate(x, out, code, param):
    """out = f(x) elementwise over a 2-D array (``out`` may be ``x``), parallel over rows."""
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = activate_scalar(code, x[i, j], param)


@njit(**PJIT)
def backprop_activation(da, z, a, code, param, dz):
    """dz = da * f'(z), reading f' from the output ``a`` (relu, leaky_relu, sigmoid, tanh) or ``z``.

    Needs ``z`` only for swish and gelu; pass ``a`` as ``z`` otherwise. ``dz`` may be ``da``.
    """
    for i in prange(da.shape[0]):
        if code == RELU:
            for j in range(da.shape[1]):
                dz[i, j] = da[i, j] if a[i, j] > 0 else 0
        elif code == SIGMOID:
            for j in range(da.shape[1]):
                dz[i, j] = da[i, j] * a[i, j] * (1 - a[i, j])
        else:
            for j in range(da.shape[1]):
                dz[i, j] = da[i, j] * derivative_scalar(code, z[i, j], a[i, j], param)
