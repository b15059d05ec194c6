"""Input checks shared by the model and the compat layer: clear errors before any training starts.

Every check raises TypeError (wrong kind of value) or ValueError (right kind, wrong value) naming the
argument and what it received; tests/test_bad_inputs.py attacks them with hypothesis.
"""

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
    """x as a C-order array of ``dtype`` (one copy only if it is not one already), all finite: 2-D
    (samples, features), or (samples, *sample_shape) such as images (N, H, W, C); 1-D becomes one column.

    Lists and pandas DataFrames/Series are converted. A C-contiguous array of ``dtype`` is returned as
    a view, never copied: a ``np.load(path, mmap_mode="r")`` file stays on disk and training gathers
    each batch from it; a file of another dtype (float64 for a float32 model) is converted once, into
    memory of the model's dtype (docs/keras.md).

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
    x = _as_numeric_array(x, what, "(samples, features)")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim < 2:
        raise ValueError(f"{what} must have a samples axis and at least one more (samples, features) or "
                         f"(samples, height, width, channels), received: shape={x.shape}")
    if 0 in x.shape[1:]:
        raise ValueError(f"{what} has no features, received: shape={x.shape}")
    x = np.ascontiguousarray(x, dtype=dtype)
    bad = count_nonfinite(x.reshape(-1)) if x.size else 0
    if bad:
        row = int(np.argwhere(~np.isfinite(x.reshape(x.shape[0], -1)))[0][0])
        raise ValueError(f"{what} contains {bad} NaN/inf value(s), the first in row {row}")
    return x


def _as_numeric_array(a, what, form):
    if a is None:
        raise TypeError(f"{what} must be an array {form}, received: None")
    if isinstance(a, CSRMatrix):
        raise TypeError(f"{what} must be a dense array {form}, received: a CSRMatrix")
    if not isinstance(a, np.ndarray):
        try:  # a pandas DataFrame/Series (duck-typed: pandas is not imported) gives its values
            a = np.asarray(a.to_numpy() if hasattr(a, "to_numpy") else a)
        except (ValueError, TypeError, OverflowError) as e:  # ragged nested lists, objects numpy refuses
            raise TypeError(f"{what} must be array-like {form} (rows of equal length), received: "
                            f"{type(a).__name__} ({str(e)[:80]})") from None
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{what} must hold real numbers, received: dtype={a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{what} must be an array {form}, received: the scalar {a.item()!r}")
    return a


def as_targets(y, n, what="y"):
    """``y`` as a numeric array with one target per row of x (``n`` rows); the loss checks the rest."""
    y = _as_numeric_array(y, what, "of targets, one per row of x")
    if y.shape[0] != n:
        raise ValueError(f"x and {what} have different lengths: {n} samples vs {y.shape[0]} targets")
    return y


def check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, received: {name}={value!r}")
    return bool(value)


def check_verbose(verbose):
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    if not isinstance(verbose, (int, np.integer)) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, received: verbose={verbose!r}")
    return int(verbose)


def check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None or an int, received: seed={seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, received: seed={seed}")
    return int(seed)


def check_callbacks(callbacks, base):
    """``callbacks`` as a list of ``base`` instances (None: none)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, base):
        raise TypeError(f"callbacks must be a list, received: a single {type(callbacks).__name__} "
                        "(pass callbacks=[...])")
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of Callback objects, received: {type(callbacks).__name__}")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, base):
            raise TypeError(f"callbacks[{i}] must be a jitnn.callbacks.Callback, received: {type(cb).__name__}")
    return list(callbacks)


def check_validation_data(validation_data):
    """(x, y) or (x, y, sample_weight) from ``validation_data`` (None: None)."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        got = f"shape={validation_data.shape}" if isinstance(validation_data, np.ndarray) else \
            f"{type(validation_data).__name__}" + (f" of length {len(validation_data)}"
                                                   if isinstance(validation_data, (tuple, list)) else "")
        raise TypeError(f"validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight), "
                        f"received: {got}")
    return tuple(validation_data)


def check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, received: batch_size={batch_size!r}")
    return int(batch_size)
