"""Sparse-times-dense products, what layers call: ``spmm``, ``spmm_t``, ``dense_spmm`` and ``spmv``.

A is a ``jitnn.sparse.CSRMatrix``; the dense operand has any strides. With ``out=`` they allocate
nothing, and they insist on matching dtypes (no hidden copies; the matrices' ``@`` operators, which
call these, promote dtypes as numpy does). The arithmetic lives in ``jitnn/kernels/sparse.py``.
"""

from __future__ import annotations

import numba
import numpy as np

from jitnn.config import launch, threads_for
from jitnn.kernels import sparse as _k
from jitnn.linalg.views import Scratch, dense_in, dense_out, finish, strided, view_in

__all__ = ["dense_spmm", "register_csr_type", "spmm", "spmm_t", "spmv"]

# dense_spmm: rows of X per block (the axpy length; 64 float32 = 8 ymm) and the depth of one packed
# slab of X; a block's n x rows accumulator is kept within half of Zen 3's 512 KiB L2.
_DENSE_ROWS, _DENSE_KC, _ACC_BYTES = 64, 256, 256 * 1024
_ROW_CHUNK = 16  # spmm: rows per dynamically scheduled chunk

_scratch = Scratch()
_csr_types: tuple = ()  # filled by register_csr_type


def register_csr_type(cls):
    """Accept instances of ``cls`` as the sparse operand: ``jitnn.sparse`` registers ``CSRMatrix``.

    The matrices' ``@`` operators call these functions, so this module cannot import the class without
    an import circle. The check stays exact (a scipy CSR matrix, whose indices were never validated, is
    refused), and a plain tuple keeps it at one ``isinstance``: an ``abc.ABC`` registration measured
    ~1.5 us a call, against ~0.1 us."""
    global _csr_types
    _csr_types += (cls,)
    return cls


def _csr_arg(a):
    if not isinstance(a, _csr_types):
        raise TypeError(f"a must be a CSRMatrix, received: {type(a).__name__} (COOMatrix: use tocsr())")
    return a


def _aligned(left, right, k_left, k_right):
    if k_left != k_right:
        raise ValueError(f"shapes {left} and {right} not aligned: {k_left} (dim 1) != {k_right} (dim 0)")


def spmm(a, b, out=None):
    """A @ B for CSR A (m x k) and dense B (k x n, any strides): dense (m x n), into ``out`` if given.

    Parallel over rows of the result; 2·nnz·n FLOPs. Bitwise the same for any thread count."""
    _csr_arg(a)
    b = dense_in("b", b, a.dtype, 2)
    (m, k), n = a.shape, b.shape[1]
    _aligned(a.shape, b.shape, k, b.shape[0])
    reuse = a.nnz > max(m, k)  # rows of B and of C are each used more than once on average
    target, back = dense_out(out, (m, n), a.dtype, (b,), reuse)
    bf, brs, bcs = view_in(b, reuse)
    cf, crs, ccs = strided(target)
    # Rows go to threads in dynamic chunks, not one static half each: real matrices have skewed row
    # lengths (bag-of-words), and on a shared machine a thread that loses its core no longer holds
    # up the whole product. 8192^2 @ 8192x256, under load: uniform 1% 8% faster, skewed rows 15%.
    previous = numba.set_parallel_chunksize(_ROW_CHUNK)
    try:
        launch(_k.spmm, a.nnz * n + m * n, a.indptr, a.indices, a.data, bf, brs, bcs, n, cf, crs, ccs)
    finally:
        numba.set_parallel_chunksize(previous)
    return finish(target, back)


def spmm_t(a, b, out=None):
    """Aᵀ @ B for CSR A (m x k) and dense B (m x n): dense (k x n), into ``out`` if given.

    The weight gradient X.T @ dZ of a layer fed a CSR batch X. Rows of A scatter into shared rows of
    the result, so this builds Aᵀ once (``transpose``: a parallel counting sort, O(nnz + k)) and runs
    ``spmm``, which owns its rows and writes each one once. That measured 1.0-2.4x faster than having
    threads split the result's columns and scatter in place (docs/sparse.md), and is bitwise the
    same for any thread count."""
    _csr_arg(a)
    b = dense_in("b", b, a.dtype, 2)
    if b.shape[0] != a.shape[0]:
        raise ValueError(f"shapes {a.shape[::-1]} (transposed) and {b.shape} not aligned: {a.shape[0]} "
                         f"(dim 1) != {b.shape[0]} (dim 0)")
    return spmm(a.transpose(), b, out)


def dense_spmm(x, a, out=None):
    """X @ A for dense X (m x k, any strides) and CSR A (k x n): dense (m x n), into ``out`` if given.

    Parallel over blocks of rows of X; each block accumulates transposed so the inner loop is a
    vectorized axpy (``kernels.dense_spmm``). The forward pass of a layer with pruned (CSR) weights."""
    _csr_arg(a)
    x = dense_in("x", x, a.dtype, 2)
    (k, n), m = a.shape, x.shape[0]
    _aligned(x.shape, a.shape, x.shape[1], k)
    target, back = dense_out(out, (m, n), a.dtype, (x,))
    xf, xrs, xcs = view_in(x)
    cf, crs, ccs = strided(target)
    if m == 0 or n == 0:
        return finish(target, back)
    work = a.nnz * m + m * n + m * k
    threads = threads_for(work)
    row_blocks = -(-m // _DENSE_ROWS)
    if row_blocks < threads and a.has_sorted_indices:  # a minibatch: threads split the columns
        rows, col_blocks = min(m, _DENSE_ROWS), min(-(-threads // row_blocks), max(1, n))
    else:
        rows, col_blocks = min(_DENSE_ROWS, max(1, -(-m // threads))), 1
    width = -(-n // col_blocks)
    while rows > 8 and rows * width * a.dtype.itemsize > _ACC_BYTES:
        rows //= 2
    acc = _scratch.get("acc", a.dtype, width * rows)
    xt = _scratch.get("xt", a.dtype, _DENSE_KC * rows)
    launch(_k.dense_spmm, work, xf, xrs, xcs, m, a.indptr, a.indices, a.data, n, cf, crs, ccs, rows,
           col_blocks, _DENSE_KC, acc, xt)
    return finish(target, back)


def spmv(a, x, out=None):
    """A @ x for CSR A (m x k) and a dense vector x (k,): a dense vector (m,). Parallel over rows."""
    _csr_arg(a)
    x = dense_in("x", x, a.dtype, 1)
    m, k = a.shape
    _aligned(a.shape, x.shape, k, x.shape[0])
    if out is None:
        target = back = np.empty(m, a.dtype)
    else:
        if not isinstance(out, np.ndarray) or out.shape != (m,) or out.dtype != a.dtype:
            raise ValueError(f"out must be a ({m},) {a.dtype} array, received: "
                             f"{getattr(out, 'shape', type(out).__name__)!r}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        back = out
        target = out if out.flags.c_contiguous and not np.may_share_memory(out, x) else np.empty(m, a.dtype)
    launch(_k.spmv, a.nnz + m, a.indptr, a.indices, a.data, np.ascontiguousarray(x), 1, target, 1)
    if target is not back:
        back[...] = target
    return back
