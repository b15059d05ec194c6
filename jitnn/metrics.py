"""Metrics: plain functions ``(y_true, y_pred) -> float``, with njit kernels for the per-row work.

Each built-in metric names its kernel (``fn.kernel``): a device backend computes that metric's
per-sample numerators during training from the name (jitnn.kernels.metrics holds the row functions
both devices run). Any other callable works on the CPU, where the batch is on the host.
"""

from __future__ import annotations

import numpy as np

from jitnn import losses
from jitnn.kernels.metrics import argmax_hits_dense, argmax_hits_int, threshold_hits


def _pred_2d(y_pred):
    p = np.asarray(y_pred)
    if p.ndim == 1:
        p = p.reshape(-1, 1)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"predictions must be a non-empty (N, D) array, received shape {np.shape(y_pred)}")
    return p


def _targets_like(y_true, p):
    y = np.asarray(y_true)
    if y.ndim == 1 and p.shape[1] == 1:
        y = y.reshape(-1, 1)
    if y.shape != p.shape:
        raise ValueError(f"targets of shape {y.shape} do not match predictions of shape {p.shape}")
    return y


def binary_accuracy(y_true, y_pred, threshold: float = 0.5) -> float:
    """Fraction of elements where prediction and target fall on the same side of ``threshold``."""
    p = _pred_2d(y_pred)
    y = _targets_like(y_true, p)
    return threshold_hits(p, y, threshold) / y.size


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct samples: thresholded at 0.5 for one output; else argmax of the prediction
    against int labels (1-D, or an (N, 1) integer column) or against the argmax of one-hot rows."""
    p = _pred_2d(y_pred)
    if p.shape[1] == 1:
        return binary_accuracy(y_true, p)
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == 1 and y.dtype.kind in "biu":
        y = y[:, 0]
    if y.ndim == 1:
        if y.shape[0] != p.shape[0]:
            raise ValueError(f"{y.shape[0]} labels for {p.shape[0]} predictions")
        return argmax_hits_int(p, y.astype(np.int64, copy=False)) / p.shape[0]
    return argmax_hits_dense(p, _targets_like(y, p)) / p.shape[0]


def mse(y_true, y_pred) -> float:
    """Mean squared error (mean over outputs, then over the batch)."""
    return losses.MeanSquaredError()(y_true, y_pred)


def mae(y_true, y_pred) -> float:
    """Mean absolute error (mean over outputs, then over the batch)."""
    return losses.MeanAbsoluteError()(y_true, y_pred)


accuracy.kernel = "accuracy"
binary_accuracy.kernel = "binary_accuracy"
mse.kernel = "mse"
mae.kernel = "mae"

_BY_NAME = {
    "accuracy": accuracy,
    "acc": accuracy,
    "binary_accuracy": binary_accuracy,
    "mse": mse,
    "mean_squared_error": mse,
    "mae": mae,
    "mean_absolute_error": mae,
}


def get(identifier):
    """A metric function from its name, or a callable ``(y_true, y_pred) -> float`` passed through."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]
    raise ValueError(f"unknown metric {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")


def log_key(identifier) -> str:
    """The key a metric's value gets in the training logs: its name (``"acc"`` -> ``"accuracy"``), or a
    callable's ``__name__``."""
    if isinstance(identifier, str):
        return {"acc": "accuracy"}.get(identifier, identifier)
    return getattr(identifier, "__name__", "metric")
