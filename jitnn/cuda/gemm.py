"""GPU GEMM: C = f(alpha * op(A) @ op(B) + beta * C + bias), a shared-memory tiled, register-blocked kernel.

The structure (the classic SGEMM progression: coalesced loads, shared-memory tiles, then 2-D register
blocking, as in Volkov & Demmel 2008, https://doi.org/10.1109/SC.2008.5214359):

- A thread block owns a BM x BN tile of C and walks K in steps of BK. Each step its threads copy a
  BM x BK slab of op(A) and a BK x BN slab of op(B) from global memory into shared memory, then each
  thread multiplies out its TM x TN outputs from registers: per k, TM + TN shared loads feed TM * TN
  FMAs (16 per 8 loads for the 4x4 tile, 64 per 16 for the 8x8 one).
- Global loads are coalesced for every transpose: consecutive threads read consecutive addresses of
  the array as it is stored (along k for a row-major A, along m for a transposed one), and the copy
  writes the slab k-major into shared memory (As[k, m], Bs[k, n]) so the inner loop reads rows.
- Shared tiles are padded by one element (BM + 1 columns): a warp's transposed stores then fall in
  different banks. The inner-loop reads are conflict-free without it: a thread's outputs are strided
  (rows tm + i * BM/TM, columns tn + j * BN/TN), so the 32 threads of a warp read 16 consecutive B
  elements and broadcast 2 A elements, and the epilogue's stores of C are coalesced along n.
- Edge tiles: loads outside A or B read 0 and stores outside C are skipped, so any M, N, K works
  (K = 0 leaves f(beta * C + bias)).
- The epilogue fuses alpha, beta, the bias and the activation (``activate_scalar``, the CPU's own
  scalar code, compiled for the GPU), so a Dense forward is one kernel.

One kernel is compiled per (tile, trans_a, trans_b, dtype); tile sizes are data in ``TILES``. The large
tile pays only when the grid still fills the GPU (``pick_tile``).
"""

from __future__ import annotations

import numpy as np

from jitnn.config import FLOAT_DTYPES
from jitnn.cuda.runtime import cuda, device_function, multiprocessors
from jitnn.kernels.elementwise import CODES, LINEAR
from jitnn.kernels.elementwise import activate_scalar as _activate_scalar

activate_scalar = device_function(_activate_scalar)

# name: (BM, BN, BK, TM, TN). Both use 256 threads. "small" suits the MLP shapes (N = 10..512);
# "large" does 4x the FMAs per shared load for matrices big enough to keep every SM busy with it.
TILES = {
    "small": (64, 64, 16, 4, 4),
    "large": (128, 128, 8, 8, 8),
}
PAD = 1

_FLOATS = tuple(np.dtype(d) for d in FLOAT_DTYPES)
_KERNELS: dict = {}


def _numba_type(dtype):
    from numba import from_dtype

    return from_dtype(np.dtype(dtype))


def _make_kernel(tile, trans_a, trans_b, dtype):
    """Compile-time constants by closure: numba specializes the loops on them."""
    BM, BN, BK, TM, TN = TILES[tile]
    TN_THREADS = BN // TN  # threads along n
    NT = (BM // TM) * TN_THREADS
    A_LOADS = BM * BK // NT
    B_LOADS = BK * BN // NT
    A_COLS, B_COLS = BM + PAD, BN + PAD  # shared shapes must be literal constants
    M_STRIDE = BM // TM  # distance between one thread's rows
    T = _numba_type(dtype)

    @cuda.jit(fastmath=False)
    def gemm_tile(a, b, c, bias, alpha, beta, code, param):
        As = cuda.shared.array((BK, A_COLS), T)
        Bs = cuda.shared.array((BK, B_COLS), T)
        acc = cuda.local.array((TM, TN), T)
        ra = cuda.local.array(TM, T)
        rb = cuda.local.array(TN, T)
        tid = cuda.threadIdx.x
        tm = tid // TN_THREADS
        tn = tid % TN_THREADS
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        M = c.shape[0]
        N = c.shape[1]
        K = a.shape[0] if trans_a else a.shape[1]
        zero = T(0)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(0, K, BK):
            for r in range(A_LOADS):
                e = tid + r * NT
                if trans_a:  # a is (K, M): consecutive threads along m
                    kk = e // BM
                    mm = e % BM
                    gk = k0 + kk
                    gm = m0 + mm
                    As[kk, mm] = a[gk, gm] if gk < K and gm < M else zero
                else:  # a is (M, K): consecutive threads along k
                    mm = e // BK
                    kk = e % BK
                    gk = k0 + kk
                    gm = m0 + mm
                    As[kk, mm] = a[gm, gk] if gk < K and gm < M else zero
            for r in range(B_LOADS):
                e = tid + r * NT
                if trans_b:  # b is (N, K): consecutive threads along k
                    nn = e // BK
                    kk = e % BK
                    gk = k0 + kk
                    gn = n0 + nn
                    Bs[kk, nn] = b[gn, gk] if gk < K and gn < N else zero
                else:  # b is (K, N): consecutive threads along n
                    kk = e // BN
                    nn = e % BN
                    gk = k0 + kk
                    gn = n0 + nn
                    Bs[kk, nn] = b[gk, gn] if gk < K and gn < N else zero
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    ra[i] = As[kk, tm + i * M_STRIDE]
                for j in range(TN):
                    rb[j] = Bs[kk, tn + j * TN_THREADS]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ra[i] * rb[j]
            cuda.syncthreads()
        has_bias = bias.shape[0] > 0
        for i in range(TM):
            gm = m0 + tm + i * M_STRIDE
            for j in range(TN):
                gn = n0 + tn + j * TN_THREADS
                if gm < M and gn < N:
                    v = alpha * acc[i, j]
                    if beta != 0:
                        v += beta * c[gm, gn]
                    if has_bias:
                        v += bias[gn]
                    c[gm, gn] = v
        # The activation re-reads this thread's own stores: folded into the loop above, its large body
        # stops the full unroll, and one dynamic acc[i, j] index sends the whole tile to local memory.
        if code != LINEAR:
            for i in range(TM):
                gm = m0 + tm + i * M_STRIDE
                for j in range(TN):
                    gn = n0 + tn + j * TN_THREADS
                    if gm < M and gn < N:
                        c[gm, gn] = activate_scalar(code, c[gm, gn], param)

    return gemm_tile, NT, BM, BN


def kernel_for(tile, trans_a, trans_b, dtype):
    """The compiled kernel for one (tile, transposes, dtype), with its block size and tile shape."""
    key = (tile, bool(trans_a), bool(trans_b), np.dtype(dtype))
    k = _KERNELS.get(key)
    if k is None:
        k = _KERNELS[key] = _make_kernel(*key)
    return k


def pick_tile(m, n):
    """The large tile when it still gives every SM two blocks, else the small one."""
    BM, BN = TILES["large"][:2]
    blocks = -(-m // BM) * -(-n // BN)
    return "large" if blocks >= 2 * multiprocessors() else "small"


def gemm_into(a, b, c, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None, act=0, act_param=0.0,
              tile=None, stream=0):
    """c = f(alpha * op(a) @ op(b) + beta * c + bias) on device arrays, no checks (the lean training path).

    ``op(a)`` is ``a.T`` when ``trans_a`` (``a`` stored (K, M)); ``bias`` is a device vector of length N
    or None; ``act`` an activation code from jitnn.kernels.elementwise.
    """
    m, n = c.shape
    if m == 0 or n == 0:
        return c
    kern, threads, bm, bn = kernel_for(tile or pick_tile(m, n), trans_a, trans_b, c.dtype)
    if bias is None:
        bias = empty_vector(c.dtype)
    dt = c.dtype.type
    grid = (-(-n // bn), -(-m // bm))
    kern[grid, threads, stream](a, b, c, bias, dt(alpha), dt(beta), act, dt(act_param))
    return c


_EMPTY: dict = {}


def empty_vector(dtype):
    """A cached empty device vector standing in for "no bias" (in every kernel that takes an optional vector)."""
    dtype = np.dtype(dtype)
    e = _EMPTY.get(dtype)
    if e is None:
        e = _EMPTY[dtype] = cuda.device_array(0, dtype)
    return e


def _is_device(x):
    """A numba device array (real or simulated) or any __cuda_array_interface__ object (CuPy, torch)."""
    return not isinstance(x, np.ndarray) and (hasattr(x, "copy_to_host") or hasattr(x, "__cuda_array_interface__"))


def matmul(a, b, out=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None, activation=None,
           tile=None):
    """f(alpha * op(a) @ op(b) + beta * out + bias) on the GPU; numpy inputs give a numpy result.

    ``a``, ``b`` (and ``out``, ``bias``) may be numpy arrays (copied to the device) or device arrays
    (used in place; the result then stays on the device). Shapes and dtypes are checked here with
    errors that name them; both operands must be float32 or float64 of the same dtype.
    """
    from jitnn.cuda.runtime import require

    require()
    host = not (_is_device(a) or _is_device(b))
    for name, x in (("a", a), ("b", b)):
        if not (_is_device(x) or isinstance(x, np.ndarray)):
            raise TypeError(f"{name} must be a numpy or CUDA device array, received: {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D, received shape {x.shape}")
    dtype = np.dtype(a.dtype)
    if dtype not in _FLOATS or np.dtype(b.dtype) != dtype:
        raise ValueError(f"a and b must both be float32 or both float64, received: {a.dtype} and {b.dtype}")
    m, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"inner dimensions differ: op(a) is {m}x{ka}, op(b) is {kb}x{n}")
    code = CODES.get(activation or "linear") if isinstance(activation, (str, type(None))) else None
    if code is None:
        raise ValueError(f"activation must be None or one of {sorted(CODES)}, received: {activation!r}")
    if tile is not None and tile not in TILES:
        raise ValueError(f"tile must be one of {sorted(TILES)}, received: {tile!r}")
    da, db = _to_device(a), _to_device(b)
    if bias is not None:
        if tuple(bias.shape) != (n,) or np.dtype(bias.dtype) != dtype:
            raise ValueError(f"bias must be a {dtype} vector of length {n}, received {bias.dtype} {bias.shape}")
        bias = _to_device(bias)
    if out is None:
        if beta != 0:
            raise ValueError("beta != 0 needs an out array to accumulate into")
        dc = cuda.device_array((m, n), dtype)
    else:
        if tuple(out.shape) != (m, n) or np.dtype(out.dtype) != dtype:
            raise ValueError(f"out must be {dtype} of shape {(m, n)}, received {out.dtype} {tuple(out.shape)}")
        dc = _to_device(out)
    gemm_into(da, db, dc, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, bias=bias, act=code,
              tile=tile)
    if out is not None and isinstance(out, np.ndarray):
        dc.copy_to_host(out)
        return out
    return dc.copy_to_host() if host else dc


def _to_device(x):
    """A device array for ``x``: itself when already on the device, else a copy (any strides, made C)."""
    if _is_device(x):
        return x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)
    return cuda.to_device(np.ascontiguousarray(x))
