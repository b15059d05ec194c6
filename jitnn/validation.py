"""Input checks shared by the model and the compat layer: clear errors before any training starts."""

from __future__ import annotations

import numpy as np

from jitnn.config import PARALLEL_MIN_WORK, launch
from jitnn.kernels.reductions import nonfinite_count
from jitnn.sparse import CSRMatrix


def count_nonfinite(flat):
    """NaN and inf values in a 1-D array. Small arrays are counted by numpy on this thread: a parallel
    region costs more than the count there (a predict of one row waited milliseconds on a loaded machine)."""
    if flat.size < PARALLEL_MIN_WORK:
        return flat.size - int(np.count_nonzero(np.isfinite(flat)))
    return int(launch(nonfinite_count, flat.size, flat))


def as_features(x, dtype, what="x"):
    """x as a C-order 2-D array of ``dtype`` (one copy only if it is not one already), all finite.

    A ``CSRMatrix`` stays sparse: its data converted to ``dtype`` (a copy only when it differs) and
    checked finite; its shape and indices were validated when it was built."""
    if isinstance(x, CSRMatrix):
        if x.dtype != dtype:
            x = x.astype(dtype)
        bad = count_nonfinite(x.data) if x.nnz else 0
        if bad:
            p = int(np.flatnonzero(~np.isfinite(x.data))[0])
            row = int(np.searchsorted(x.indptr, p, side="right")) - 1
            raise ValueError(f"{what} contains {bad} NaN/inf value(s), the first in row {row}")
        return x
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:
            raise TypeError(f"{what} must be array-like, received: {type(x).__name__}") from e
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{what} must hold numbers, received: dtype={x.dtype}")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (samples, features), received: shape={x.shape}")
    x = np.ascontiguousarray(x, dtype=dtype)
    bad = count_nonfinite(x.reshape(-1)) if x.size else 0
    if bad:
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise ValueError(f"{what} contains {bad} NaN/inf value(s), the first in row {row}")
    return x


def check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, received: batch_size={batch_size!r}")
    return int(batch_size)


def check_lengths(x, y):
    if len(y) != x.shape[0]:
        raise ValueError(f"x and y have different lengths: {x.shape[0]} samples vs {len(y)} targets")
