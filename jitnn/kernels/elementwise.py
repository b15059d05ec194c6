"""Elementwise activation functions, as scalar kernels the GEMM epilogue and the layers share.

Activations are identified by a small integer code so one compiled epilogue serves them all
(the branch on ``code`` is the same for every element, so it predicts perfectly).
"""

import math

from numba import njit

from jitnn.config import JIT

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
                if x[i, j] < 0:  # NaN compares false and passes through, as in numpy
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
