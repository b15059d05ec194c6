"""CUDA 2-D pooling, channels-last: the kernels of jitnn.kernels.pooling on device arrays.

One thread per output element for the forward kernels and per input element for the backward ones
(grid-stride loops over the flattened array, channels fastest: consecutive threads read consecutive
addresses). Each thread walks its window, or the windows covering its cell (``window_range``, the CPU's
own function), in the CPU kernels' order, so:
- max pooling keeps the same argmax (the first maximum in row-major window order; a NaN wins), and
  backprop routes each gradient to the same cell;
- averages and their gradients add the same terms in the same order.
The backward kernels are gathers, as on the CPU: no two threads write one element, no atomics.
"""

from __future__ import annotations

import math

from jitnn.cuda.kernels import on_device, unravel4
from jitnn.cuda.runtime import cuda, device_function
from jitnn.kernels import pooling as KP

window_range = device_function(KP.window_range)


@on_device
def output_window(e, y, ph, pw, sh, sw, pt, pl, h, w):
    """(n, i, j, c) of output element ``e`` of y, and the real rows [y0, y1) and columns [x0, x1) of its window."""
    n, i, j, c = unravel4(e, y.shape[1], y.shape[2], y.shape[3])
    return n, i, j, c, max(i * sh - pt, 0), min(i * sh - pt + ph, h), max(j * sw - pl, 0), min(j * sw - pl + pw, w)


@cuda.jit
def maxpool2d(x, ph, pw, sh, sw, pt, pl, y, argmax):
    """y[n, i, j, c] = max of x over window (i, j); argmax[n, i, j, c] = y*W + x of the first maximum."""
    h, w = x.shape[1], x.shape[2]
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, i, j, c, y0, y1, x0, x1 = output_window(e, y, ph, pw, sh, sw, pt, pl, h, w)
        best = x[n, y0, x0, c]
        where = y0 * w + x0
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                v = x[n, yy, xx, c]
                if v > best or (math.isnan(v) and not math.isnan(best)):
                    best = v
                    where = yy * w + xx
        y[n, i, j, c] = best
        argmax[n, i, j, c] = where


@cuda.jit
def backprop_maxpool2d(dy, argmax, ph, pw, sh, sw, pt, pl, zero, dx):
    """dx[n, y, x, c] = Σ dy[n, i, j, c] over the windows (i, j) covering (y, x) whose argmax it is."""
    _, h, w, c_in = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, yy, xx, c = unravel4(e, h, w, c_in)
        here = yy * w + xx
        i0, i1 = window_range(yy, ph, sh, pt, oh)
        j0, j1 = window_range(xx, pw, sw, pl, ow)
        s = zero
        for i in range(i0, i1):
            for j in range(j0, j1):
                if argmax[n, i, j, c] == here:
                    s += dy[n, i, j, c]
        dx[n, yy, xx, c] = s


@cuda.jit
def avgpool2d(x, ph, pw, sh, sw, pt, pl, zero, y):
    """y[n, i, j, c] = mean of x over the real (unpadded) cells of window (i, j)."""
    h, w = x.shape[1], x.shape[2]
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, i, j, c, y0, y1, x0, x1 = output_window(e, y, ph, pw, sh, sw, pt, pl, h, w)
        s = zero
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                s += x[n, yy, xx, c]
        y[n, i, j, c] = s * (1.0 / ((y1 - y0) * (x1 - x0)))


@cuda.jit
def backprop_avgpool2d(dy, ph, pw, sh, sw, pt, pl, zero, dx):
    """dx[n, y, x, c] = Σ dy[n, i, j, c] / count(i, j) over the windows (i, j) covering (y, x)."""
    _, h, w, c_in = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, yy, xx, c = unravel4(e, h, w, c_in)
        i0, i1 = window_range(yy, ph, sh, pt, oh)
        j0, j1 = window_range(xx, pw, sw, pl, ow)
        s = zero
        for i in range(i0, i1):
            rows = min(i * sh - pt + ph, h) - max(i * sh - pt, 0)
            for j in range(j0, j1):
                s += dy[n, i, j, c] * (1.0 / (rows * (min(j * sw - pl + pw, w) - max(j * sw - pl, 0))))
        dx[n, yy, xx, c] = s


@cuda.jit
def global_avgpool2d(x, zero, y):
    """y[n, c] = mean over (h, w) of x[n, :, :, c]; one thread per (n, c)."""
    _, h, w, c_in = x.shape
    inv = 1.0 / (h * w)
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n = e // c_in
        c = e - n * c_in
        s = zero
        for yy in range(h):
            for xx in range(w):
                s += x[n, yy, xx, c]
        y[n, c] = s * inv


@cuda.jit
def backprop_global_avgpool2d(dy, dx):
    """dx[n, y, x, c] = dy[n, c] / (H * W)."""
    _, h, w, c_in = dx.shape
    inv = 1.0 / (h * w)
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, yy, xx, c = unravel4(e, h, w, c_in)
        dx[n, yy, xx, c] = dy[n, c] * inv


__all__ = ["avgpool2d", "backprop_avgpool2d", "backprop_global_avgpool2d", "backprop_maxpool2d",
           "global_avgpool2d", "maxpool2d"]
