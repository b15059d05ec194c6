"""Input checks shared by the model and the compat layer: clear errors before any training starts."""

from __future__ import annotations

import numpy as np

from jitnn.config import launch
from jitnn.kernels.reductions import nonfinite_count
from jitnn.sparse import CSRMatrix


def as_features(x, dtype, what="x"):
    """x as a C-order array of ``dtype`` (one copy only if it is not one already), all finite: 2-D
    (samples, features), or (samples, *sample_shape) such as images (N, H, W, C); 1-D becomes one column.

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
        try:
            x = np.asarray(x)
        except Exception as e:
            raise TypeError(f"{what} must be array-like, received: {type(x).__name__}") from e
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{what} must hold numbers, received: dtype={x.dtype}")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim < 2:
        raise ValueError(f"{what} must have a samples axis and at least one more (samples, features) or "
                         f"(samples, height, width, channels), received: shape={x.shape}")
    x = np.ascontiguousarray(x, dtype=dtype)
    # through launch: a small input (a batch-1 predict) stays on this thread, no parallel region to wait for
    bad = launch(nonfinite_count, x.size, x.reshape(-1)) if x.size else 0
    if bad:
        row = int(np.argwhere(~np.isfinite(x.reshape(x.shape[0], -1)))[0][0])
        raise ValueError(f"{what} contains {bad} NaN/inf value(s), the first in row {row}")
    return x


def check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, received: batch_size={batch_size!r}")
    return int(batch_size)


def check_lengths(x, y):
    if len(y) != x.shape[0]:
        raise ValueError(f"x and y have different lengths: {x.shape[0]} samples vs {len(y)} targets")
