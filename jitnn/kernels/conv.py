"""2-D convolution, channels-last: forward, and backward for the weights and the input.

Layouts (Keras): x (N, H, W, C), w (KH, KW, C, F), bias (F,), y (N, OH, OW, F). Geometry travels as
``strides=(sh, sw)``, ``dilation=(dh, dw)`` and ``pads=(top, bottom, left, right)``; ``conv2d_geometry``
turns Keras' "valid"/"same" (or explicit amounts) into those numbers and the output size.

Two forward algorithms, chosen per shape by ``conv2d`` (figures in docs/conv.md):

- im2col + GEMM: ``im2col`` gathers the receptive field of each output pixel into one row of a patch
  matrix (rows = output pixels, columns = (kh, kw, c), the order of ``w.reshape(KH*KW*C, F)``), then one
  packed GEMM with the bias + activation epilogue writes y. Images go through in chunks so the patch
  matrix stays in cache (``CHUNK_BYTES``) and the buffer stays small.
- direct: for few input channels (the first layer, C=1: K = 9, a GEMM would spend its time packing)
  each tap adds F-wide vector FMAs into a whole output row held in L1; no patch matrix at all.

Backward (``backprop_conv2d``) reuses one patch buffer per chunk: dW += colsᵀ·dY (GEMM, beta=1 after
the first chunk, a fixed order: bitwise the same for any thread count), then the same buffer receives
dcols = dY·Wᵀ and ``col2im`` gathers it into dX. col2im is written as a gather over input rows (each
(n, ih) row of dX is summed by one thread from every patch that covers it), so no two threads ever add
into one element.
"""

import numpy as np
from numba import njit, prange

from jitnn.config import PJIT, launch
from jitnn.kernels.elementwise import LINEAR, activate_scalar
from jitnn.kernels.gemm import u
from jitnn.kernels.reductions import column_sums
from jitnn.linalg import gemm_into

# Patch-matrix bytes per chunk of images: the GEMM reads the chunk right after im2col wrote it, so it
# should still sit in L3 (32 MiB), but every chunk costs three more parallel regions (im2col, packing,
# the GEMM), and on a loaded machine each region can wait a scheduler slice. Swept in
# perf/bench_conv.py --sweep (docs/conv.md): 256 KiB chunks were 2-2.5x slower than 8 MiB ones.
CHUNK_BYTES = 1 << 23
# Up to this many input channels the direct loop beats im2col + GEMM: 1.7-4x for C <= 8, 1.1-1.3x at
# C = 16, a tie or a loss at C = 32 (one thread, docs/conv.md). 8, not 16: the GEMM is still being tuned,
# and a faster GEMM moves the crossover down.
DIRECT_MAX_CHANNELS = 8


def conv2d_geometry(h, w, kh, kw, strides=(1, 1), dilation=(1, 1), padding="valid"):
    """(OH, OW, (top, bottom, left, right)) of a convolution of an H x W input with a KH x KW kernel.

    ``padding``: "valid" (none), "same" (Keras/TF: OH = ceil(H / sh), the odd pixel of padding at the
    bottom/right), or explicit ``(top, bottom, left, right)`` (or ``(ph, pw)``, symmetric) amounts.
    """
    sh, sw = strides
    dh, dw = dilation
    for name, v in (("strides", sh), ("strides", sw), ("dilation", dh), ("dilation", dw), ("kernel", kh),
                    ("kernel", kw)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be positive integers, received: {name}={v!r}")
    ekh = (kh - 1) * dh + 1  # the dilated kernel's extent
    ekw = (kw - 1) * dw + 1
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            oh, ow = -(-h // sh), -(-w // sw)
            ph = max((oh - 1) * sh + ekh - h, 0)
            pw = max((ow - 1) * sw + ekw - w, 0)
            pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        else:
            raise ValueError(f"padding must be 'valid', 'same' or explicit amounts, received: padding={padding!r}")
    else:
        pads = tuple(int(p) for p in padding)
        if len(pads) == 2:
            pads = (pads[0], pads[0], pads[1], pads[1])
        if len(pads) != 4 or min(pads) < 0:
            raise ValueError(f"explicit padding needs 2 or 4 non-negative amounts, received: padding={padding!r}")
    oh = (h + pads[0] + pads[1] - ekh) // sh + 1
    ow = (w + pads[2] + pads[3] - ekw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"the {kh}x{kw} kernel (dilation {dilation}) does not fit the {h}x{w} input with "
                         f"padding {pads}, received: input=({h}, {w}), kernel=({kh}, {kw})")
    return oh, ow, pads


@njit(**PJIT)
def im2col(x, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, cols):
    """cols[((n-n0)*OH + i)*OW + j, (a*KW + b)*C + c] = x[n, i*sh - pt + a*dh, j*sw - pl + b*dw, c], 0 outside.

    For images n0..n1; parallel over output rows (n, i), each of which writes its own rows of cols.
    """
    c_in = x.shape[3]
    h, w = x.shape[1], x.shape[2]
    for r in prange((n1 - n0) * oh):
        n = n0 + r // oh
        i = r % oh
        for j in range(ow):
            row = r * ow + j
            for a in range(kh):
                y = i * sh - pt + a * dh
                for b in range(kw):
                    xx = j * sw - pl + b * dw
                    o = (a * kw + b) * c_in
                    if 0 <= y < h and 0 <= xx < w:
                        for c in range(c_in):
                            cols[row, o + c] = x[n, y, xx, c]
                    else:
                        for c in range(c_in):
                            cols[row, o + c] = 0


@njit(**PJIT)
def col2im(dcols, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, dx):
    """dx[n, y, x, c] = Σ dcols[patch, tap] over every patch and tap that read x[n, y, x, c] (im2col's adjoint).

    A gather: each input row (n, y) is summed by one thread from the patch rows i whose taps a land on
    it (y = i*sh - pt + a*dh), so threads never share an element of dx. Writes dx[n0:n1] completely.
    """
    c_in = dx.shape[3]
    h, w = dx.shape[1], dx.shape[2]
    for r in prange((n1 - n0) * h):
        n = n0 + r // h
        y = r % h
        for xx in range(w):
            for c in range(c_in):
                dx[n, y, xx, c] = 0
        for a in range(kh):
            t = y + pt - a * dh
            if t < 0 or t % sh != 0 or t // sh >= oh:
                continue
            i = t // sh
            base = ((n - n0) * oh + i) * ow
            for j in range(ow):
                for b in range(kw):
                    xx = j * sw - pl + b * dw
                    if 0 <= xx < w:
                        o = (a * kw + b) * c_in
                        for c in range(c_in):
                            dx[n, y, xx, c] += dcols[base + j, o + c]


@njit(**PJIT)
def conv2d_direct(x, w2, bias, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, act, act_param, y2):
    """y = act(conv(x, w) + bias) tap by tap, for few input channels: no patch matrix at all.

    ``w2`` is w (KH, KW, C, F) viewed as (KH*KW*C, F), ``y2`` is y (N, OH, OW, F) as (N*OH*OW, F).
    For each output row (n, i), every tap (a, b, c) adds x[n, i*sh - pt + a*dh, j*sw - pl + b*dw, c] *
    w[a, b, c, :] into the row's OW x F outputs: unit-stride F-wide FMAs into a row that stays in L1,
    with the KH*KW*C x F weights in L1 too. ``bias`` of length 0 means none. Parallel over (n, i).
    Indices go in unsigned (``u``; each is in range by the bounds above): numba then drops its
    negative-index wraparound, 1.11-1.23x on conv1 of the reference CNN (paired, batch 64 and 256; the
    same change measured nothing in im2col, col2im and conv2d_direct_dw, which keep plain indices).
    """
    n_img, h, wd, c_in = x.shape
    f = w2.shape[1]
    has_bias = bias.shape[0] > 0
    for r in prange(n_img * oh):
        n = r // oh
        i = r % oh
        row0 = r * ow
        for j in range(ow):
            for q in range(f):
                y2[u(row0 + j), u(q)] = bias[q] if has_bias else 0
        for a in range(kh):
            yy = i * sh - pt + a * dh
            if yy < 0 or yy >= h:
                continue
            for b in range(kw):
                # the output columns j whose tap b lands inside the image: j*sw - pl + b*dw in [0, W)
                off = b * dw - pl
                j0 = max(0, (-off + sw - 1) // sw)
                j1 = min(ow, (wd - 1 - off) // sw + 1)
                for c in range(c_in):
                    t = (a * kw + b) * c_in + c
                    for j in range(j0, j1):
                        v = x[u(n), u(yy), u(j * sw + off), u(c)]
                        for q in range(f):
                            y2[u(row0 + j), u(q)] += v * w2[u(t), u(q)]
        if act != LINEAR:
            for j in range(ow):
                for q in range(f):
                    y2[u(row0 + j), u(q)] = activate_scalar(act, y2[u(row0 + j), u(q)], act_param)


# Images per partial sum of conv2d_direct_dw: a fixed grouping (not one per thread), so dW has the same
# bits for any thread count.
DW_GROUP_IMAGES = 4


@njit(**PJIT)
def conv2d_direct_dw(x, dy2, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, partial, dw2):
    """dW = Σ patchesᵀ·dY pixel by pixel, for few input channels: no patch matrix, no GEMM.

    The GEMM's view of the first layer's dW (C = 1: 9 x N·OH·OW times N·OH·OW x F) is one 9 x F tile with
    a K of 173,056 at batch 256: a single tile, so one thread, and each KC slab pays for packing and the
    tile's write-back (8-12 GFLOP/s). Here each group of DW_GROUP_IMAGES images sums into its own
    (KH*KW*C, F) accumulator, groups in parallel: for every output pixel, its F-wide row of dY takes one
    FMA per tap into that tap's row of the accumulator (which stays in L1). The accumulator is allocated
    inside the loop: LLVM then knows it aliases nothing and keeps the row loop vectorized (in a stride-1,
    unpadded sketch of this loop, 40 against 21 GFLOP/s for accumulating into a slice of ``partial``, at
    batch 256; the padding checks here cost about 1.2x of that). The groups' sums land
    in ``partial`` (groups, KH*KW*C, F) and are added in order into ``dw2`` (w viewed as (KH*KW*C, F)).
    ``dy2`` is dY (N, OH, OW, F) viewed as (N*OH*OW, F).
    """
    n_img, h, wd, c_in = x.shape
    k, f = dw2.shape
    groups = partial.shape[0]
    for g in prange(groups):
        acc = np.zeros((k, f), dw2.dtype)
        for n in range(g * DW_GROUP_IMAGES, min(n_img, (g + 1) * DW_GROUP_IMAGES)):
            for i in range(oh):
                row0 = (n * oh + i) * ow
                for j in range(ow):
                    for a in range(kh):
                        yy = i * sh - pt + a * dh
                        if yy < 0 or yy >= h:
                            continue
                        for b in range(kw):
                            xx = j * sw - pl + b * dw
                            if xx < 0 or xx >= wd:
                                continue
                            for c in range(c_in):
                                v = x[n, yy, xx, c]
                                t = (a * kw + b) * c_in + c
                                for q in range(f):
                                    acc[t, q] += v * dy2[row0 + j, q]
        partial[g] = acc
    for t in prange(k):
        for q in range(f):
            s = partial[0, t, q]
            for g in range(1, groups):
                s += partial[g, t, q]
            dw2[t, q] = s


def chunk_images(n, rows_per_image, k, itemsize, chunk_bytes=None):
    """Images per im2col chunk: as many as keep the patch matrix under ``chunk_bytes`` (at least one)."""
    per = max(rows_per_image * k * itemsize, 1)
    return max(1, min(n, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // per))


def conv2d_workspace(x_shape, w_shape, out_hw, dtype, chunk_bytes=None):
    """The patch buffer ``conv2d``/``backprop_conv2d`` need for these shapes (allocate once, reuse)."""
    n = x_shape[0]
    kh, kw, c_in, _ = w_shape
    rows = out_hw[0] * out_hw[1]
    k = kh * kw * c_in
    nb = chunk_images(n, rows, k, np.dtype(dtype).itemsize, chunk_bytes)
    return np.empty((nb * rows, k), dtype)


def patch_buffer(cols, x_shape, w_shape, out_hw, dtype):
    """``cols``, checked to hold at least one image's patches (the kernels do not bounds-check), or a new one."""
    if cols is None:
        return conv2d_workspace(x_shape, w_shape, out_hw, dtype)
    check_patch_buffer(cols, w_shape, out_hw, dtype)
    require_contiguous(cols=cols)
    return cols


def check_patch_buffer(cols, w_shape, out_hw, dtype):
    """ValueError unless ``cols`` (a host or device array) is 2-D, of ``dtype``, and holds one image's patches."""
    k = w_shape[0] * w_shape[1] * w_shape[2]
    rows = out_hw[0] * out_hw[1]
    if cols.ndim != 2 or cols.shape[0] < rows or cols.shape[1] != k or cols.dtype != dtype:
        raise ValueError(f"cols must be a ({rows}*images, {k}) {np.dtype(dtype).name} buffer from conv2d_workspace, "
                         f"received: cols.shape={cols.shape}, cols.dtype={cols.dtype}")


def require_contiguous(**arrays):
    """The arrays conv2d reshapes to 2-D must be C-contiguous: a reshape of anything else is a copy, and
    results written into a copy would be lost. x and dx may have any strides."""
    for name, a in arrays.items():
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous, received: {name}.strides={a.strides} for shape "
                             f"{a.shape}")


def use_direct(c_in, algorithm):
    """True when ``algorithm`` ("auto", "direct" or "gemm") means the direct loop for C = ``c_in`` channels."""
    if algorithm == "auto":
        return c_in <= DIRECT_MAX_CHANNELS
    if algorithm not in ("direct", "gemm"):
        raise ValueError(f"algorithm must be 'auto', 'direct' or 'gemm', received: algorithm={algorithm!r}")
    return algorithm == "direct"


def conv2d(x, w, bias, y, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), act=LINEAR, act_param=0.0,
           cols=None, algorithm="auto"):
    """y = act(conv2d(x, w) + bias), written into ``y`` (N, OH, OW, F); returns y.

    No validation beyond contiguity and the buffer's size (the layer validates once): x (N, H, W, C) of
    any strides, w (KH, KW, C, F) and y C-contiguous, one float dtype; ``bias`` (F,) or None; ``pads``
    from ``conv2d_geometry``; ``act`` a code from ``kernels.elementwise``. ``cols``: the patch buffer from ``conv2d_workspace`` (allocated when None).
    ``algorithm``: "auto" (direct for C <= DIRECT_MAX_CHANNELS, else im2col + GEMM), "direct" or "gemm".
    """
    require_contiguous(w=w, y=y)
    n, _, _, c_in = x.shape
    kh, kw, _, f = w.shape
    oh, ow = y.shape[1], y.shape[2]
    sh, sw = strides
    dh, dw = dilation
    pt, pl = pads[0], pads[2]
    if use_direct(c_in, algorithm):
        b = np.empty(0, y.dtype) if bias is None else bias
        launch(conv2d_direct, y.size * kh * kw * c_in, x, w.reshape(kh * kw * c_in, f), b, kh, kw, sh, sw, dh, dw,
               pt, pl, oh, ow, act, float(act_param), y.reshape(n * oh * ow, f))
        return y
    k = kh * kw * c_in
    rows = oh * ow
    cols = patch_buffer(cols, x.shape, w.shape, (oh, ow), y.dtype)
    nb = cols.shape[0] // rows
    wmat = w.reshape(k, f)
    y2 = y.reshape(n * rows, f)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        m = (n1 - n0) * rows
        c = cols[:m]
        launch(im2col, m * k, x, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, c)
        gemm_into(c, wmat, y2[n0 * rows:n1 * rows], 1.0, 0.0, bias, act, act_param)
    return y


def backprop_conv2d(x, w, dy, dx, dw, db=None, strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), cols=None,
                    algorithm="auto"):
    """dW = Σ patchesᵀ·dY into ``dw`` (KH, KW, C, F); dX = col2im(dY·Wᵀ) into ``dx`` unless dx is None
    (the first layer); db = column sums of dY into ``db`` unless None.

    ``algorithm`` as in ``conv2d``: for few channels dW is summed tap by tap (``conv2d_direct_dw``,
    1.7-2.5x the GEMM path on the reference CNN's first layer), else im2col + GEMM per chunk of images.

    ``dy`` is the gradient of the convolution's output (N, OH, OW, F) after the activation's derivative.
    Same conventions as ``conv2d``; results do not depend on the thread count.
    """
    require_contiguous(w=w, dy=dy, dw=dw)
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
    direct = use_direct(c_in, algorithm)
    if n == 0:
        dw2[...] = 0
    elif direct:  # dW here; the chunks below then only make dX
        partial = np.empty((-(-n // DW_GROUP_IMAGES), k, f), dw.dtype)
        launch(conv2d_direct_dw, dy2.size * k, x, dy2, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow, partial, dw2)
    chunked = not direct or dx is not None  # the patch buffer feeds dW's GEMM, or takes dcols for dX
    for n0 in range(0, n if chunked else 0, nb):
        n1 = min(n, n0 + nb)
        m = (n1 - n0) * rows
        c = cols[:m]
        dyc = dy2[n0 * rows:n1 * rows]
        if not direct:
            launch(im2col, m * k, x, n0, n1, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow, c)
            gemm_into(c.T, dyc, dw2, 1.0, 0.0 if n0 == 0 else 1.0)
        if dx is not None:
            gemm_into(dyc, wmat.T, c)  # the patches are consumed: the buffer now takes dcols
            launch(col2im, m * k, c, n0, n1, kh, kw, sh, sw, dh, dw_, pt, pl, oh, ow, dx)
    if db is not None:
        launch(column_sums, dy2.size, dy2, db)
    return dw


__all__ = [
    "CHUNK_BYTES",
    "DIRECT_MAX_CHANNELS",
    "DW_GROUP_IMAGES",
    "backprop_conv2d",
    "check_patch_buffer",
    "chunk_images",
    "col2im",
    "conv2d",
    "conv2d_direct",
    "conv2d_direct_dw",
    "conv2d_geometry",
    "conv2d_workspace",
    "im2col",
    "use_direct",
]
