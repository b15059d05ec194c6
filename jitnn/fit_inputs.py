"""Keras' ``fit`` data arguments: ``validation_split``, ``sample_weight`` and ``class_weight``.

Each has Keras's meaning (docs/keras.md):
- ``validation_split=f``: the LAST ``f`` of the rows, taken before any shuffling, is held out
  (``split_at = floor(N * (1 - f))``), its sample weights with it; row slices, so a memory-mapped
  ``x`` is not copied.
- ``sample_weight``: one finite weight >= 0 per row; the loss of a batch is Σ wᵢ·lᵢ / (batch rows)
  (Keras 3's ``"sum_over_batch_size"`` reduction), its gradient rows scaled by wᵢ.
- ``class_weight={label: weight}``: turned into per-row sample weights from the targets' labels
  (argmax of one-hot rows, else the integer labels); classes left out weigh 1.0, as in Keras 3.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def split_validation(x, y, sample_weight, validation_split):
    """(x, y, weights) for training and for validation: the last ``validation_split`` of the rows held out."""
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be a float in [0, 1), received: "
                         f"validation_split={validation_split!r}")
    n = x.shape[0]
    split_at = math.floor(n * (1.0 - validation_split))
    if split_at == 0 or split_at == n:
        raise ValueError(f"training data has {n} samples, which is not enough to split into a training and "
                         f"a validation set with validation_split={validation_split!r}")
    w = sample_weight
    return ((x[:split_at], y[:split_at], None if w is None else w[:split_at]),
            (x[split_at:], y[split_at:], None if w is None else w[split_at:]))


def check_sample_weight(sample_weight, n, what="sample_weight"):
    """``sample_weight`` as a float64 vector of ``n`` finite weights >= 0 (a (n, 1) column is accepted)."""
    w = np.asarray(sample_weight.to_numpy() if hasattr(sample_weight, "to_numpy") else sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold numbers, received: dtype={w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(f"{what} must have one weight per sample, shape ({n},), received: shape={w.shape}")
    w = np.ascontiguousarray(w, np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{what} must be finite and >= 0, received: {what}[{i}]={float(w[i])!r} "
                         f"({bad.size} bad weight(s) in all)")
    return w


def class_weight_to_sample_weight(class_weight, y, n_outputs):
    """Per-row weights from ``class_weight`` ({label: weight}) and the targets ``y`` (labels or one-hot rows).

    Keys must be class labels of a model with ``n_outputs`` outputs (0/1 for one sigmoid output)."""
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class: weight}}, received: {type(class_weight).__name__}")
    n_classes = max(2, int(n_outputs))
    table = np.ones(n_classes)
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not 0 <= key < n_classes:
            raise ValueError(f"class_weight keys must be class labels in [0, {n_classes}), received: "
                             f"class_weight[{key!r}]")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"class_weight values must be finite numbers >= 0, received: "
                             f"class_weight[{key!r}]={value!r}")
        table[int(key)] = float(value)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        labels = np.argmax(y, axis=1)
    else:
        labels = np.rint(y.reshape(y.shape[0], -1)[:, 0]).astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"class_weight needs class labels in [0, {n_classes}), received: y[{i}]={labels[i]}")
    return table[labels]


__all__ = ["check_sample_weight", "class_weight_to_sample_weight", "split_validation"]
