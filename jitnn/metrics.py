"""Metrics: plain functions ``(y_true, y_pred) -> float``, with njit kernels for the per-row work."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from jitnn import losses
from jitnn.config import PJIT, launch


@njit(**PJIT)
def argmax_hits_int(pred, labels):
    """#{i : argmax_j pred[i, j] == labels[i]} (first maximum wins ties, as np.argmax)."""
    hits = 0
    for i in prange(pred.shape[0]):
        best = 0
        for j in range(1, pred.shape[1]):
            if pred[i, j] > pred[i, best]:
                best = j
        if best == labels[i]:
            hits += 1
    return hits


@njit(**PJIT)
def argmax_hits_dense(pred, y):
    """#{i : argmax_j pred[i, j] == argmax_j y[i, j]}."""
    hits = 0
    for i in prange(pred.shape[0]):
        bp = 0
        by = 0
        for j in range(1, pred.shape[1]):
            if pred[i, j] > pred[i, bp]:
                bp = j
            if y[i, j] > y[i, by]:
                by = j
        if bp == by:
            hits += 1
    return hits


@njit(**PJIT)
def threshold_hits(pred, y, threshold):
    """#{(i, j) : (pred[i, j] > t) == (y[i, j] > t)}."""
    hits = 0
    for i in prange(pred.shape[0]):
        for j in range(pred.shape[1]):
            if (pred[i, j] > threshold) == (y[i, j] > threshold):
                hits += 1
    return hits


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
    return launch(threshold_hits, p.size, p, y, threshold) / y.size


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
        return launch(argmax_hits_int, p.size, p, y.astype(np.int64, copy=False)) / p.shape[0]
    return launch(argmax_hits_dense, p.size, p, _targets_like(y, p)) / p.shape[0]


def mse(y_true, y_pred) -> float:
    """Mean squared error (mean over outputs, then over the batch)."""
    return losses.MeanSquaredError()(y_true, y_pred)


def mae(y_true, y_pred) -> float:
    """Mean absolute error (mean over outputs, then over the batch)."""
    return losses.MeanAbsoluteError()(y_true, y_pred)


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
