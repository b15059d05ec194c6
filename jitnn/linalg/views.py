"""What the dense and the sparse products share: strided views of their arrays, and per-thread scratch.

A kernel reads a 2-D operand as a 1-D view of its memory plus a row and a column stride in elements
(``strided``), so one compiled kernel serves C order, F order and slices without copying them.
Scratch that a kernel needs lives per calling thread, grown to the largest problem seen, so repeated
calls allocate nothing but their output; its rows are indexed by numba thread id (``thread_slots``).

Not shared, on purpose: the thread count (the GEMM splits its own tasks over thread ids and takes the
count as an argument, ``config.threads_for``; the sparse kernels are ``prange`` loops whose width is
numba's thread count, which ``config.launch`` sets), and the checks of ``gemm``'s ``c``, which copies
through a temporary by calling itself rather than by ``dense_out``/``finish``, with its own messages.
"""

from __future__ import annotations

import threading

import numba
import numpy as np


def strided(x):
    """(1-D view of x's memory from x[0, 0], row stride, column stride) in elements; None when a
    stride is negative or not a multiple of the item size (the caller copies then)."""
    if x.flags.c_contiguous:
        return x.reshape(-1), x.shape[1], 1  # a view; as_strided costs ~8 us a call
    if x.flags.f_contiguous:
        return x.T.reshape(-1), 1, x.shape[0]
    item = x.itemsize
    rs, cs = x.strides
    if rs < 0 or cs < 0 or rs % item or cs % item:
        return None
    rs, cs = rs // item, cs // item
    span = (x.shape[0] - 1) * rs + (x.shape[1] - 1) * cs + 1
    return np.lib.stride_tricks.as_strided(x, shape=(span,), strides=(item,)), rs, cs


def dense_in(name, x, dtype, ndim):
    """A dense operand of exactly ``dtype`` and ``ndim`` (the out= functions promote nothing)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, received: {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, received: {name}.ndim={x.ndim} with shape {x.shape}")
    if x.dtype != dtype:
        raise TypeError(f"{name}.dtype={x.dtype} differs from the sparse matrix's {dtype}; convert one "
                        "with astype (the @ operator promotes for you)")
    return x


def view_in(x, rows_reread=False):
    """strided(x), copied to C order first when it has negative strides, or when its rows are read
    many times (``rows_reread``) and its columns are not unit-stride: the copy costs one pass, the
    unit-stride loops save more than that whenever each row is used more than once."""
    v = strided(x)
    if v is None or (rows_reread and v[2] != 1 and x.shape[1] > 1):
        v = strided(np.ascontiguousarray(x))
    return v


def dense_out(out, shape, dtype, inputs, rows_rewritten=False):
    """(array the kernel writes, array to copy it into afterwards or None). The kernel writes a C-order
    temporary when ``out`` has negative or zero strides, overlaps an input, or (``rows_rewritten``)
    has non-unit column stride for a kernel that updates each row many times."""
    if out is None:
        return np.empty(shape, dtype), None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, received: {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out must have shape {shape} and dtype {dtype}, received: shape={out.shape}, "
                         f"dtype={out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    view = strided(out)
    direct = view is not None and all(s != 0 or d <= 1 for s, d in zip(out.strides, out.shape))
    if rows_rewritten and direct and view[2] != 1 and shape[1] > 1:
        direct = False
    if direct and not any(np.may_share_memory(out, x) for x in inputs):
        return out, None
    return np.empty(shape, dtype), out  # reversed, self-overlapping or aliasing an input


def finish(target, back):
    """The result of a product that ``dense_out`` planned: ``target``, copied into ``back`` if any."""
    if back is None:
        return target
    back[...] = target
    return back


def thread_slots():
    """Rows of a per-thread kernel scratch array: numba's thread ids range over its whole pool
    (NUMBA_NUM_THREADS), not over the threads one call activates."""
    return numba.config.NUMBA_NUM_THREADS


class Scratch(threading.local):
    """Per-thread kernel scratch by name, (thread slots, size) arrays grown to the largest size seen."""

    def __init__(self):
        self.arrays = {}

    def get(self, name, dtype, size):
        have = self.arrays.get((name, dtype))
        if have is None or have.shape[1] < size:
            have = np.empty((thread_slots(), max(size, 1)), dtype)
            self.arrays[(name, dtype)] = have
        return have
