"""Keras' data utilities: ``to_categorical``."""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike, DTypeLike


def to_categorical(y: ArrayLike, num_classes: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """One-hot rows for integer class labels, as ``keras.utils.to_categorical``.

    ``y`` of shape ``S`` gives shape ``S + (num_classes,)``, except that a trailing axis of length 1
    is dropped first (labels of shape (N, 1) give (N, num_classes)). ``num_classes`` defaults to
    ``max(y) + 1``. Labels must be integers (integral floats are accepted) in ``[0, num_classes)``.
    """
    y = np.asarray(y)
    integral_floats = y.dtype.kind == "f" and bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    if y.dtype.kind not in "iub" and not integral_floats:
        bad = y.dtype if y.dtype.kind != "f" else "non-integer or non-finite floats"
        raise ValueError(f"to_categorical needs integer class labels, received: {bad}")
    labels = y.astype(np.int64)
    shape = labels.shape[:-1] if labels.ndim > 1 and labels.shape[-1] == 1 else labels.shape
    labels = labels.reshape(-1)
    if num_classes is None:
        if labels.size == 0:
            raise ValueError("to_categorical of no labels needs num_classes, received: num_classes=None")
        num_classes = int(labels.max()) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, received: num_classes={num_classes!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"labels must be in [0, {num_classes}), received: label {bad}")
    dtype = np.dtype(dtype)
    out = np.zeros((labels.size, int(num_classes)), dtype=dtype)
    out[np.arange(labels.size), labels] = 1
    return out.reshape(shape + (int(num_classes),))


__all__ = ["to_categorical"]
