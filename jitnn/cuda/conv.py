"""CUDA 2-D convolution, channels-last: the algorithms of jitnn.kernels.conv on device arrays.

Layouts, geometry and the choice of algorithm are the CPU's (x (N, H, W, C), w (KH, KW, C, F),
``pads`` from ``conv2d_geometry``; direct for C <= ``DIRECT_MAX_CHANNELS``, else im2col + GEMM), so the
two devices add the same products in the same order and agree to rounding:

- direct: one thread per output element (n, i, j, f) sums bias + Σ_(a, b, c) x·w in the CPU loop's tap
  order; consecutive threads take consecutive filters, so the weight reads coalesce and the input value
  is a broadcast.
- im2col + GEMM: ``im2col`` fills the patch matrix (one thread per element, consecutive threads along
  (kh, kw, c): coalesced reads of x for wide C), then jitnn.cuda.gemm with the bias + activation epilogue.
- backward, per chunk of images: dW += colsᵀ·dY (TN GEMM, beta = 1 after the first chunk), dcols =
  dY·Wᵀ (NT GEMM) into the same buffer, and ``col2im`` as a gather: one thread per element of dX sums
  the patch cells that read it, in the CPU's order. db = column sums of dY. No atomics: every run gives
  the same bits.

A chunk on the GPU is as large as ``CHUNK_BYTES`` allows (the CPU's chunks are sized for its L3; here
fewer launches matter more): the reference CNN's batch of 64 is one chunk.
"""

from __future__ import annotations

import numpy as np

from jitnn.cuda import kernels as K
from jitnn.cuda.gemm import empty_vector, gemm_into
from jitnn.cuda.kernels import unravel4
from jitnn.cuda.runtime import cuda, device_function
from jitnn.kernels import conv as KC
from jitnn.kernels.elementwise import LINEAR
from jitnn.kernels.elementwise import activate_scalar as _activate_scalar

activate_scalar = device_function(_activate_scalar)

CHUNK_BYTES = 1 << 26  # patch-matrix bytes per chunk of images (64 MiB of device memory)


@cuda.jit
def im2col(x, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, cols):
    """cols[((n-n0)*OH + i)*OW + j, (a*KW + b)*C + c] = x[n, i*sh - pt + a*dh, j*sw - pl + b*dw, c], 0 outside."""
    h, w, c_in = x.shape[1], x.shape[2], x.shape[3]
    k = kh * kw * c_in
    for e in range(cuda.grid(1), (n1 - n0) * oh * ow * k, cuda.gridsize(1)):
        row = e // k
        col = e - row * k
        tap = col // c_in
        c = col - tap * c_in
        a = tap // kw
        b = tap - a * kw
        r = row // ow
        j = row - r * ow
        n = n0 + r // oh
        i = r % oh
        yy = i * sh - pt + a * dh
        xx = j * sw - pl + b * dw
        if 0 <= yy < h and 0 <= xx < w:
            cols[row, col] = x[n, yy, xx, c]
        else:
            cols[row, col] = 0


@cuda.jit
def col2im(dcols, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, zero, dx):
    """dx[n, y, x, c] = Σ dcols[patch, tap] over every patch and tap that read x[n, y, x, c], for n0 <= n < n1.

    A gather, one thread per element of dx. The CPU adds, for each tap row a, the output columns j in
    ascending order; j grows as b shrinks, so b runs backwards here to add in the same order.
    """
    h, w, c_in = dx.shape[1], dx.shape[2], dx.shape[3]
    for e in range(cuda.grid(1), (n1 - n0) * h * w * c_in, cuda.gridsize(1)):
        n, yy, xx, c = unravel4(e, h, w, c_in)
        n += n0
        s = zero
        for a in range(kh):
            t = yy + pt - a * dh
            if t < 0 or t % sh != 0 or t // sh >= oh:
                continue
            base = ((n - n0) * oh + t // sh) * ow
            for b in range(kw - 1, -1, -1):
                u = xx + pl - b * dw
                if u < 0 or u % sw != 0 or u // sw >= ow:
                    continue
                s += dcols[base + u // sw, (a * kw + b) * c_in + c]
        dx[n, yy, xx, c] = s


@cuda.jit
def conv2d_direct(x, w2, bias, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, act, act_param, zero, y2):
    """y2[(n*OH + i)*OW + j, f] = act(bias[f] + Σ_(a, b, c) x[n, i*sh - pt + a*dh, j*sw - pl + b*dw, c] * w2[tap, f]).

    ``w2`` is w viewed as (KH*KW*C, F), ``y2`` is y as (N*OH*OW, F); ``bias`` of length 0 means none.
    """
    h, wd, c_in = x.shape[1], x.shape[2], x.shape[3]
    rows, f = y2.shape
    has_bias = bias.shape[0] > 0
    for e in range(cuda.grid(1), rows * f, cuda.gridsize(1)):
        r = e // f
        q = e - r * f
        j = r % ow
        i = (r // ow) % oh
        n = r // (ow * oh)
        s = bias[q] if has_bias else zero
        for a in range(kh):
            yy = i * sh - pt + a * dh
            if yy < 0 or yy >= h:
                continue
            for b in range(kw):
                xx = j * sw - pl + b * dw
                if xx < 0 or xx >= wd:
                    continue
                t = (a * kw + b) * c_in
                for c in range(c_in):
                    s += x[n, yy, xx, c] * w2[t + c, q]
        y2[r, q] = s if act == LINEAR else activate_scalar(act, s, act_param)


def conv2d_workspace(x_shape, w_shape, out_hw, dtype, chunk_bytes=None):
    """The device patch buffer ``conv2d``/``backprop_conv2d`` take: whole images, at most ``CHUNK_BYTES``."""
    kh, kw, c_in, _ = w_shape
    rows = out_hw[0] * out_hw[1]
    k = kh * kw * c_in
    nb = KC.chunk_images(x_shape[0], rows, k, np.dtype(dtype).itemsize,
                         CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
    return cuda.device_array((nb * rows, k), dtype)


def patch_buffer(cols, x_shape, w_shape, out_hw, dtype):
    """``cols``, checked to hold at least one image's patches (the kernels do not bounds-check), or a new one."""
    if cols is None:
        return conv2d_workspace(x_shape, w_shape, out_hw, dtype)
    KC.check_patch_buffer(cols, w_shape, out_hw, dtype)
    return cols


def conv2d(x, w, bias, y, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), act=LINEAR, act_param=0.0,
           cols=None, algorithm="auto"):
    """y = act(conv2d(x, w) + bias) into ``y`` (N, OH, OW, F) on the device; returns y.

    The arguments of jitnn.kernels.conv.conv2d, as device arrays. w and y are reshaped to 2-D views: a
    device array that is not contiguous refuses the reshape (numba-cuda never copies there), so results
    cannot land in a lost copy.
    """
    n, _, _, c_in = x.shape
    kh, kw, _, f = w.shape
    oh, ow = y.shape[1], y.shape[2]
    sh, sw = strides
    dh, dw = dilation
    pt, pl = pads[0], pads[2]
    k = kh * kw * c_in
    rows = oh * ow
    wmat = w.reshape(k, f)
    y2 = y.reshape(n * rows, f)
    dt = y.dtype.type
    if KC.use_direct(c_in, algorithm):
        b = empty_vector(y.dtype) if bias is None else bias
        K.launch(conv2d_direct, y2.size, x, wmat, b, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, act, dt(act_param),
                 dt(0), y2)
        return y
    cols = patch_buffer(cols, x.shape, w.shape, (oh, ow), y.dtype)
    nb = cols.shape[0] // rows
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        c = cols[:(n1 - n0) * rows]
        K.launch(im2col, c.size, x, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, c)
        gemm_into(c, wmat, y2[n0 * rows:n1 * rows], bias=bias, act=act, act_param=act_param)
    return y


def backprop_conv2d(x, w, dy, dx, dw, db=None, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), cols=None):
    """dW into ``dw``, db into ``db`` and dX into ``dx`` (each skipped when None; dW never): the arguments
    and results of jitnn.kernels.conv.backprop_conv2d, as device arrays."""
    n, _, _, c_in = x.shape
    kh, kw, _, f = w.shape
    oh, ow = dy.shape[1], dy.shape[2]
    sh, sw = strides
    dh, dw_ = dilation
    pt, pl = pads[0], pads[2]
    k = kh * kw * c_in
    rows = oh * ow
    cols = patch_buffer(cols, x.shape, w.shape, (oh, ow), dy.dtype)
    nb = cols.shape[0] // rows
    wmat = w.reshape(k, f)
    dw2 = dw.reshape(k, f)
    dy2 = dy.reshape(n * rows, f)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        c = cols[:(n1 - n0) * rows]
        dyc = dy2[n0 * rows:n1 * rows]
        K.launch(im2col, c.size, x, n0, n1, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow, c)
        gemm_into(c, dyc, dw2, trans_a=True, beta=0.0 if n0 == 0 else 1.0)
        if dx is not None:
            gemm_into(dyc, wmat, c, trans_b=True)  # the patches are consumed: the buffer now takes dcols
            K.launch(col2im, (n1 - n0) * dx.size // n, c, n0, n1, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow,
                     dx.dtype.type(0), dx)
    if db is not None:
        K.launch_column_sums(dy2, db)
    return dw


__all__ = ["CHUNK_BYTES", "backprop_conv2d", "col2im", "conv2d", "conv2d_direct", "conv2d_workspace", "im2col",
           "patch_buffer"]
