"""Input checks shared by the model and the compat layer: clear errors before any training starts."""

from __future__ import annotations

import numpy as np

from jitnn.kernels.reductions import nonfinite_count
from jitnn.sparse import CSRMatrix


def as_features(x, dtype, what="x"):
    """x as a C-order 2-D array of ``dtype`` (one copy only if it is not one already), all finite.

    Lists and pandas DataFrames/Series are converted. A C-contiguous array of ``dtype`` is returned as
    a view, never copied: a ``np.load(path, mmap_mode="r")`` file stays on disk and training gathers
    each batch from it; a file of another dtype (float64 for a float32 model) is converted once, into
    memory of the model's dtype (docs/keras.md).

    A ``CSRMatrix`` stays sparse: its data converted to ``dtype`` (a copy only when it differs) and
    checked finite; its shape and indices were validated when it was built."""
    if isinstance(x, CSRMatrix):
        if x.dtype != dtype:
            x = x.astype(dtype)
        bad = nonfinite_count(x.data) if x.nnz else 0
        if bad:
            p = int(np.flatnonzero(~np.isfinite(x.data))[0])
            row = int(np.searchsorted(x.indptr, p, side="right")) - 1
            raise ValueError(f"{what} contains {bad} NaN/inf value(s), the first in row {row}")
        return x
    if not isinstance(x, np.ndarray):
        try:  # a pandas DataFrame/Series (duck-typed: pandas is not imported) gives its values
            x = np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x)
        except Exception as e:
            raise TypeError(f"{what} must be array-like, received: {type(x).__name__}") from e
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{what} must hold numbers, received: dtype={x.dtype}")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (samples, features), received: shape={x.shape}")
    x = np.ascontiguousarray(x, dtype=dtype)
    bad = nonfinite_count(x.reshape(-1)) if x.size else 0
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
