"""Cache-line-aligned arrays for the buffers the GEMM reads with full-width vector loads.

numpy aligns a new array to 16 bytes only (seen here: addresses 16, 32 or 0 mod 64, depending on the
size). A packed B panel read with 64-byte zmm loads from an address 16 mod 64 splits every load across
two cache lines: the macro-kernel ran 8-10% slower from such a buffer (1024^3 float32 and float64, one
thread, same process, 15 alternating rounds). Workspaces, weights and activations are allocated here.
"""

from __future__ import annotations

import numpy as np

#: A cache line, and the width of a zmm register.
ALIGN_BYTES = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose first element sits on an ALIGN_BYTES boundary (C order)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN_BYTES, np.uint8)
    start = -raw.ctypes.data % ALIGN_BYTES
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype) -> np.ndarray:
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out


def padded_to_line(count: int, dtype) -> int:
    """``count`` elements rounded up to whole cache lines, so rows of a 2-D buffer stay aligned."""
    per_line = max(1, ALIGN_BYTES // np.dtype(dtype).itemsize)
    return -(-count // per_line) * per_line


__all__ = ["ALIGN_BYTES", "aligned_empty", "aligned_zeros", "padded_to_line"]
