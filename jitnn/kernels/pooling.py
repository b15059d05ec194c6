"""2-D pooling, channels-last (N, H, W, C): max (argmax kept), average, global average.

Geometry is Keras': ``pool_geometry`` gives the output size and the (top, left) padding for "valid"
or "same" (OH = ceil(H / sh), the odd padded pixel at the bottom/right). Padded cells never count:
max pooling ignores them, average pooling divides by the number of real cells in the window (as
TensorFlow/Keras do; PyTorch's ``count_include_pad=False``).

Forward kernels run in parallel over output rows (n, i). The backward kernels are gathers over input
rows (n, y): each input element sums the windows that cover it, so threads never add into one
element even when windows overlap (strides < pool size), and the batch-1 case is still parallel.
"""

import math

from numba import njit, prange

from jitnn.config import JIT, PJIT


def pool_geometry(h, w, pool_size, strides=None, padding="valid"):
    """(OH, OW, top, left) of pooling an H x W input with windows ``pool_size``; strides default to it."""
    ph, pw = pool_size
    sh, sw = pool_size if strides is None else strides
    for name, v in (("pool_size", ph), ("pool_size", pw), ("strides", sh), ("strides", sw)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be positive integers, received: {name}={v!r}")
    if padding == "valid":
        if ph > h or pw > w:
            raise ValueError(f"pool_size {pool_size} exceeds the input ({h}, {w}) with padding='valid', "
                             f"received: pool_size={pool_size}")
        return (h - ph) // sh + 1, (w - pw) // sw + 1, 0, 0
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        return oh, ow, max((oh - 1) * sh + ph - h, 0) // 2, max((ow - 1) * sw + pw - w, 0) // 2
    raise ValueError(f"padding must be 'valid' or 'same', received: padding={padding!r}")


@njit(**PJIT)
def maxpool2d(x, ph, pw, sh, sw, pt, pl, y, argmax):
    """y[n, i, j, c] = max of x over window (i, j); argmax[n, i, j, c] = y*W + x of the first maximum.

    ``argmax`` is an int32/int64 array shaped like y. A NaN in the window wins (propagates), as in PyTorch.
    """
    n_img, h, w, c_in = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for r in prange(n_img * oh):
        n = r // oh
        i = r % oh
        y0 = max(i * sh - pt, 0)
        y1 = min(i * sh - pt + ph, h)
        for j in range(ow):
            x0 = max(j * sw - pl, 0)
            x1 = min(j * sw - pl + pw, w)
            for c in range(c_in):
                y[n, i, j, c] = x[n, y0, x0, c]
                argmax[n, i, j, c] = y0 * w + x0
            for yy in range(y0, y1):
                for xx in range(x0, x1):
                    for c in range(c_in):
                        v = x[n, yy, xx, c]
                        best = y[n, i, j, c]
                        if v > best or (math.isnan(v) and not math.isnan(best)):
                            y[n, i, j, c] = v
                            argmax[n, i, j, c] = yy * w + xx


@njit(**PJIT)
def backprop_maxpool2d(dy, argmax, ph, pw, sh, sw, pt, pl, dx):
    """dx[n, y, x, c] = Σ dy[n, i, j, c] over the windows (i, j) covering (y, x) whose argmax it is."""
    n_img, h, w, c_in = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for r in prange(n_img * h):
        n = r // h
        yy = r % h
        for xx in range(w):
            for c in range(c_in):
                dx[n, yy, xx, c] = 0
        i0, i1 = window_range(yy, ph, sh, pt, oh)
        for i in range(i0, i1):
            for xx in range(w):
                j0, j1 = window_range(xx, pw, sw, pl, ow)
                here = yy * w + xx
                for j in range(j0, j1):
                    for c in range(c_in):
                        if argmax[n, i, j, c] == here:
                            dx[n, yy, xx, c] += dy[n, i, j, c]


@njit(**JIT, inline="always")
def window_range(p, k, s, pad, out):
    """The output indices i in [i0, i1) whose window [i*s - pad, i*s - pad + k) contains input index p."""
    t = p + pad
    i1 = min(t // s + 1, out)
    i0 = max(t - k + s, 0) // s  # smallest i with i*s > t - k
    return i0, max(i1, i0)


@njit(**PJIT)
def avgpool2d(x, ph, pw, sh, sw, pt, pl, y):
    """y[n, i, j, c] = mean of x over the real (unpadded) cells of window (i, j)."""
    n_img, h, w, c_in = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for r in prange(n_img * oh):
        n = r // oh
        i = r % oh
        y0 = max(i * sh - pt, 0)
        y1 = min(i * sh - pt + ph, h)
        for j in range(ow):
            x0 = max(j * sw - pl, 0)
            x1 = min(j * sw - pl + pw, w)
            for c in range(c_in):
                y[n, i, j, c] = 0
            for yy in range(y0, y1):
                for xx in range(x0, x1):
                    for c in range(c_in):
                        y[n, i, j, c] += x[n, yy, xx, c]
            inv = 1.0 / ((y1 - y0) * (x1 - x0))
            for c in range(c_in):
                y[n, i, j, c] *= inv


@njit(**PJIT)
def backprop_avgpool2d(dy, ph, pw, sh, sw, pt, pl, dx):
    """dx[n, y, x, c] = Σ dy[n, i, j, c] / count(i, j) over the windows (i, j) covering (y, x)."""
    n_img, h, w, c_in = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for r in prange(n_img * h):
        n = r // h
        yy = r % h
        for xx in range(w):
            for c in range(c_in):
                dx[n, yy, xx, c] = 0
        i0, i1 = window_range(yy, ph, sh, pt, oh)
        for i in range(i0, i1):
            rows = min(i * sh - pt + ph, h) - max(i * sh - pt, 0)
            for xx in range(w):
                j0, j1 = window_range(xx, pw, sw, pl, ow)
                for j in range(j0, j1):
                    inv = 1.0 / (rows * (min(j * sw - pl + pw, w) - max(j * sw - pl, 0)))
                    for c in range(c_in):
                        dx[n, yy, xx, c] += dy[n, i, j, c] * inv


@njit(**PJIT)
def global_avgpool2d(x, y):
    """y[n, c] = mean over (h, w) of x[n, :, :, c]; y is (N, C)."""
    n_img, h, w, c_in = x.shape
    inv = 1.0 / (h * w)
    for n in prange(n_img):
        for c in range(c_in):
            y[n, c] = 0
        for yy in range(h):
            for xx in range(w):
                for c in range(c_in):
                    y[n, c] += x[n, yy, xx, c]
        for c in range(c_in):
            y[n, c] *= inv


@njit(**PJIT)
def backprop_global_avgpool2d(dy, dx):
    """dx[n, y, x, c] = dy[n, c] / (H * W)."""
    n_img, h, w, c_in = dx.shape
    inv = 1.0 / (h * w)
    for r in prange(n_img * h):
        n = r // h
        yy = r % h
        for xx in range(w):
            for c in range(c_in):
                dx[n, yy, xx, c] = dy[n, c] * inv


__all__ = ["avgpool2d", "backprop_avgpool2d", "backprop_global_avgpool2d", "backprop_maxpool2d",
           "global_avgpool2d", "maxpool2d", "pool_geometry", "window_range"]
