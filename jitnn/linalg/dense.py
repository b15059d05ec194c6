"""The user-facing matrix products: ``gemm`` and ``matmul``, validated, over any strides.

The compiled kernel is specialised once per dtype with every array typed as "any layout", so C, F and
strided inputs share one compiled function (one compile, not one per layout combination), and packing
absorbs the layout. Scratch buffers live in a per-thread workspace that grows to the largest shape
seen, so repeated calls allocate nothing but their output.
"""

from __future__ import annotations

import threading
import time

import numba
import numpy as np
from numba import njit, types

from jitnn.config import FLOAT_DTYPES, PARALLEL_MIN_FLOPS, PJIT, kernel_turns, threads_for
from jitnn.kernels import gemm as _k
from jitnn.kernels.blocking import blocks_for
from jitnn.kernels.elementwise import CODES
from jitnn.linalg.views import strided, thread_slots

_FLOATS = tuple(np.dtype(d) for d in FLOAT_DTYPES)


def _gemm_signature(dtype):
    t = numba.from_dtype(np.dtype(dtype))
    ro2 = types.Array(t, 2, "A", readonly=True)  # inputs: read-only arrays are accepted too
    ro1 = types.Array(t, 1, "C", readonly=True)
    return types.void(t, ro2, ro1, types.UniTuple(types.int64, 2), ro2, ro1, types.int64, t, types.Array(t, 2, "A"), types.Array(t, 1, "C"),
                      types.int64, types.Array(t, 1, "A", readonly=True), types.int64, types.float64,
                      types.UniTuple(types.int64, 6), types.int64, types.Array(t, 2, "C"),
                      types.Array(t, 1, "C"), types.Array(t, 2, "C"))


def _flat_rows(x):
    """(1-D view of x's memory, row stride in elements) when x's columns are unit-stride, else -1.

    The kernel then addresses x[i, j] as flat[i*rs + j] with loops LLVM can vectorize.
    """
    # The two common cases inline (gemm_into is a call of a few us, and going through strided for them
    # measured +0.2 us): C order, and a transposed operand refused before strided builds its view.
    if x.flags.c_contiguous and x.size:
        return x.reshape(-1), x.shape[1]
    if x.size == 0 or x.strides[1] != x.itemsize:
        return _NO_FLAT[x.dtype], -1
    view = strided(x)
    if view is None or view[2] != 1:
        return _NO_FLAT[x.dtype], -1
    return view[0], view[1]


def _flat_a(a):
    """(1-D view of a's memory, row stride, column stride) in elements when a's rows or columns are
    unit-stride (row- or column-major: the micro-kernel may read it in place), else (empty, -1, -1)."""
    view = strided(a) if a.size else None
    if view is None or (view[2] != 1 and view[1] != 1):
        return _NO_FLAT[a.dtype], -1, -1
    return view if view[2] == 1 else (view[0], 1, view[2])


compiled_kernels: dict = {}  # dtype -> the GEMM kernel compiled for it (perf/report.py swaps in Python)
_compile_lock = threading.Lock()
compile_seconds: dict = {}  # dtype name -> seconds spent compiling (or loading from cache)


def _kernel_for(dtype):
    fn = compiled_kernels.get(dtype)
    if fn is None:
        key = np.dtype(dtype).name
        with _compile_lock:
            fn = compiled_kernels.get(dtype)
            if fn is None:
                t0 = time.perf_counter()
                fn = njit(_gemm_signature(dtype), **PJIT)(_k.gemm_kernel.py_func)
                compile_seconds[key] = time.perf_counter() - t0
                compiled_kernels[dtype] = fn
    return fn


def compiled_gemm(dtype):
    """The GEMM kernel ``gemm_into`` runs for ``dtype``, compiled once with every array typed "any
    layout": jitted callers (jitnn.compiled_step) pass C or F arrays, which numba converts, so no new
    specialisation is compiled for them."""
    return _kernel_for(np.dtype(dtype))


class Workspace(threading.local):
    """Per-thread packing buffers, grown to the largest problem seen (never shrunk).

    Not ``views.Scratch``: the three buffers are sized together by ``workspace_sizes``, start on cache
    lines (``allocate_workspace``), and remember which (n, k, threads) already fit them."""

    def __init__(self):
        self.buffers = {}

    def get(self, dtype, m, n, k, threads):
        blocks = BLOCKS[dtype]
        have = self.buffers.get(dtype)
        # (n, k, threads) decide the sizes (workspace_sizes, for any m): shapes known to fit the current
        # buffers are remembered, so a model's alternating products skip the sizing (~3.5 us a call).
        key = (n, k, threads)
        if have is not None and key in have[3]:
            return blocks, have
        a_size, b_size, c_size = _k.workspace_sizes(m, n, k, blocks, threads)
        if have is None or have[0].shape[1] < a_size or have[1].shape[0] < b_size:
            if have is not None:
                a_size = max(a_size, have[0].shape[1])
                b_size = max(b_size, have[1].shape[0])
            have = _k.allocate_workspace(a_size, b_size, c_size, dtype, thread_slots()) + (set(),)
            self.buffers[dtype] = have
        have[3].add(key)
        return blocks, have


BLOCKS = {dt: blocks_for(dt) for dt in _FLOATS}  # runtime arguments: perf/sweep_blocks.py rewrites them
_NO_BIAS = {dt: np.empty(0, dt) for dt in _FLOATS}
_NO_FLAT = _NO_BIAS
workspace = Workspace()
_REALS = (int, float, np.integer, np.floating)
_NATIVE = frozenset(_FLOATS)


def _check_operand(name, x):
    if type(x) is np.ndarray and x.ndim == 2 and x.dtype in _NATIVE:
        return x  # the common case, in ~0.1 us
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, received: {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, received: {name}.ndim={x.ndim} with shape {x.shape}")
    if x.dtype.newbyteorder("=") not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, received: {name}.dtype={x.dtype}")
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))  # numba computes in native byte order only
    return x


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float = 1.0,
         beta: float = 0.0, trans_a: bool = False, trans_b: bool = False,
         bias: np.ndarray | None = None, activation: str = "linear",
         activation_param: float = 0.0) -> np.ndarray:
    """C = act(alpha * op(A) @ op(B) + beta * C + bias), written into ``c`` when given; returns C.

    ``op(X)`` is ``X.T`` when ``trans_X`` is true. ``a``, ``b`` and ``c`` may have any strides (C order,
    F order, slices such as ``x[::2, 1::3]``); nothing is copied. Without ``c`` a new C-order array is
    returned and ``beta`` is ignored. ``bias`` (length N) and ``activation`` (linear, relu, leaky_relu,
    sigmoid, tanh, swish/silu, gelu) are the Dense-layer epilogue, applied while each tile is hot.
    """
    a = _check_operand("a", a)
    b = _check_operand("b", b)
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must share a dtype, received: a.dtype={a.dtype}, b.dtype={b.dtype}")
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    m, k = opa.shape
    k2, n = opb.shape
    if k != k2:
        raise ValueError(
            f"inner dimensions differ: op(a) is {m}x{k} and op(b) is {k2}x{n} "
            f"(a.shape={a.shape}, trans_a={trans_a}; b.shape={b.shape}, trans_b={trans_b})"
        )
    for name, value in (("alpha", alpha), ("beta", beta), ("activation_param", activation_param)):
        if type(value) is not float and (not isinstance(value, _REALS) or isinstance(value, (bool, np.bool_))):
            raise TypeError(f"{name} must be a real number, received: {name}={value!r}")
    dtype = a.dtype
    if c is None:
        c = np.empty((m, n), dtype)
        beta = 0.0
    else:
        if not isinstance(c, np.ndarray):
            raise TypeError(f"c must be a numpy.ndarray, received: {type(c).__name__}")
        if c.shape != (m, n):
            raise ValueError(f"c must have shape {(m, n)} (op(a) rows x op(b) columns), received: {c.shape}")
        if c.dtype != dtype:
            raise TypeError(f"c must have the dtype of a and b ({dtype}), received: c.dtype={c.dtype}")
        if not c.flags.writeable:
            raise ValueError("c is read-only")
        if not c.dtype.isnative:
            raise TypeError(f"c must be in native byte order, received: c.dtype={c.dtype.str}")
        if np.may_share_memory(c, a) or np.may_share_memory(c, b):
            # C is written block by block while A and B are still being read: go through a copy.
            out = gemm(a, b, c.copy() if beta != 0 else None, alpha=alpha, beta=beta, trans_a=trans_a,
                       trans_b=trans_b, bias=bias, activation=activation, activation_param=activation_param)
            c[...] = out
            return c
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), received: {bias.shape}")
        if bias.dtype != dtype:
            raise TypeError(f"bias must have dtype {dtype}, received: {bias.dtype}")
    try:
        act = CODES[activation]
    except KeyError:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(CODES)}") from None
    return gemm_into(opa, opb, c, alpha, beta, bias, act, activation_param)


def gemm_into(opa, opb, c, alpha=1.0, beta=0.0, bias=None, act=0, act_param=0.0):
    """C = act(alpha * opa @ opb + beta * C + bias) with no validation: the layers' entry point.

    Callers guarantee 2-D arrays of one float dtype, matching shapes, a writable ``c`` that does not
    overlap the operands, and ``act`` an activation code from ``kernels.elementwise``.
    """
    dtype = c.dtype
    if bias is None:
        bias = _NO_BIAS[dtype]
    m, k = opa.shape
    n = opb.shape[1]
    if n == 1 or (m == 1 and opb.strides[0] <= opb.strides[1]):
        # A matrix-vector product or a dot: no packing, the operands are read once (row x column
        # vector was 40x slower through the tiles). For 1 x N with row-major B, the GEMM path reads B
        # along its rows and stays faster; C^T = B^T A^T puts every other case in the N == 1 form.
        if n == 1:
            _k.gemv_kernel(dtype.type(alpha), opa, opb, dtype.type(beta), c, bias, act, float(act_param), False)
        else:
            _k.gemv_kernel(dtype.type(alpha), opb.T, opa.T, dtype.type(beta), c.T, bias, act, float(act_param),
                           True)
        return c
    threads = threads_for(_k.product_work(m, n, k), PARALLEL_MIN_FLOPS)
    blocks, (abuf, bbuf, cbuf, _) = workspace.get(dtype, m, n, k, threads)
    aflat, a_rs, a_cs = _flat_a(opa)
    bflat, b_rs = _flat_rows(opb)
    cflat, c_rs = _flat_rows(c)
    with kernel_turns:  # a no-op unless the user chose numba's workqueue layer
        _kernel_for(dtype)(dtype.type(alpha), opa, aflat, (a_rs, a_cs), opb, bflat, b_rs, dtype.type(beta), c, cflat, c_rs, bias, act,
                           float(act_param), blocks, threads, abuf, bbuf, cbuf)
    return c


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul`` for 1-D and 2-D float32/float64 arrays of any strides, computed by ``gemm``."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, received: {type(x).__name__}")
        if x.ndim not in (1, 2):
            raise ValueError(f"matmul takes 1-D or 2-D arrays, received: {name}.shape={x.shape}")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    shape = a2.shape[:1] * (a.ndim == 2) + b2.shape[1:] * (b.ndim == 2)
    if out is None:
        if a2.shape[1] != b2.shape[0]:
            raise ValueError(f"matmul: inner dimensions differ: a.shape={a.shape}, b.shape={b.shape}")
        return gemm(a2, b2).reshape(shape)
    if not isinstance(out, np.ndarray) or out.shape != shape:
        got = out.shape if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be an array of shape {shape}, received: {got}")
    gemm(a2, b2, out.reshape(a2.shape[0], b2.shape[1]) if out.ndim != 2 else out)
    return out


__all__ = ["BLOCKS", "compile_seconds", "compiled_gemm", "compiled_kernels", "gemm", "gemm_into", "matmul",
           "workspace"]
