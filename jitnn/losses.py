"""Losses: the mean over the batch of a per-sample loss, with its gradient from fused kernels.

Two call paths:

- ``loss(y_true, y_pred)``: user-facing; validates, converts, allocates, returns a float.
- ``value_and_grad`` / ``value_and_grad_from_logits``: the training path; the model validates the
  targets once per ``fit`` (``prepare_targets``) and passes preallocated buffers every batch. The
  ``_from_logits`` variant fuses the last activation (``from_logits_activation``) into the loss, which
  is both faster and stable: softmax + cross-entropy never takes ``log`` of a rounded probability.

The arithmetic runs on the ``ops`` passed in (jitnn.backend: the CPU by default), by the kernel names a
loss lists in ``kernels`` (jitnn/kernels/losses.py); a device that lacks one says so at ``compile``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from jitnn.backend.cpu import CPU
from jitnn.backend.ops import Ops
from jitnn.config import FLOAT_DTYPES, launch
from jitnn.kernels import reductions as K

EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [EPSILON, 1 - EPSILON]


def _check_2d(y_pred, grad_out, row_loss):
    """Cheap shape checks for the training path (no pass over the data)."""
    if y_pred.ndim != 2 or grad_out.shape != y_pred.shape:
        raise ValueError(
            f"value_and_grad needs a 2-D y_pred and a grad_out of the same shape, received: "
            f"y_pred.shape={y_pred.shape}, grad_out.shape={grad_out.shape}"
        )
    if row_loss.ndim != 1 or row_loss.shape[0] < y_pred.shape[0]:
        raise ValueError(
            f"row_loss must be 1-D with at least N={y_pred.shape[0]} entries, received shape {row_loss.shape}"
        )


def _as_2d_targets(y, shape):
    """A 1-D target of length N for D == 1 becomes a (N, 1) view; otherwise the shape must match."""
    if y.ndim == 1 and shape[1] == 1:
        y = y.reshape(shape[0], 1)
    if y.shape != shape:
        raise ValueError(f"targets of shape {y.shape} do not match predictions of shape {shape}")
    return y


def _as_predictions(y_pred):
    p = np.asarray(y_pred)
    if p.dtype.name not in FLOAT_DTYPES:
        p = p.astype(np.float64)
    if p.ndim == 1:
        p = p.reshape(-1, 1)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"predictions must be a non-empty (N, D) array, received shape {np.shape(y_pred)}")
    return np.ascontiguousarray(p)


class Loss:
    """Base: subclasses set ``name``/``aliases`` and implement ``value_and_grad`` (and the fused path)."""

    name = "loss"
    aliases: tuple[str, ...] = ()
    from_logits_activation: str | None = None
    kernels: tuple[str, ...] = ()  # the kernels the training path runs (an Ops must have all of them)

    def __call__(self, y_true, y_pred, sample_weight=None) -> float:
        """Mean loss of predictions ``y_pred`` (post-activation) against ``y_true``; with ``sample_weight``
        (one weight per row) Σ wᵢ·lᵢ / N, Keras' "sum_over_batch_size" reduction."""
        p = _as_predictions(y_pred)
        y = self.prepare_targets(y_true, p.shape[1], p.dtype)
        if y.shape[0] != p.shape[0]:
            raise ValueError(f"{y.shape[0]} targets for {p.shape[0]} predictions")
        grad, rows = np.empty_like(p), np.empty(p.shape[0])
        value = self.value_and_grad(p, y, grad, rows)
        if sample_weight is None:
            return value
        w = np.ascontiguousarray(sample_weight, np.float64).reshape(-1)
        if w.shape[0] != p.shape[0]:
            raise ValueError(f"sample_weight needs one weight per prediction ({p.shape[0]}), received: {w.shape[0]}")
        return CPU.weight_rows(grad, rows, w)

    def value_and_grad(self, y_pred: np.ndarray, y_true: np.ndarray, grad_out: np.ndarray,
                       row_loss: np.ndarray, ops: Ops = CPU) -> float | None:
        """dL/dy_pred into ``grad_out``, per-sample losses into ``row_loss[:N]``; returns the mean loss
        (None on a device that leaves it there: read the row losses instead)."""
        raise NotImplementedError

    def value_and_grad_from_logits(self, z: np.ndarray, y_true: np.ndarray, probs_out: np.ndarray,
                                   grad_out: np.ndarray, row_loss: np.ndarray,
                                   ops: Ops = CPU) -> float | None:
        """Fused path: ``probs_out`` = activation(z), ``grad_out`` = dL/dz; returns as ``value_and_grad``."""
        raise TypeError(f"{self.name} fuses with no activation; call value_and_grad on the layer's output")

    def prepare_targets(self, y: ArrayLike, n_outputs: int, dtype: DTypeLike | None = None) -> np.ndarray:
        """Validate ``y`` (see ``check_targets``) and return it as the kernels take it: C-contiguous, and
        float targets cast to ``dtype`` (the predictions' dtype) when given."""
        y = self._check(np.asarray(y), int(n_outputs))
        if dtype is not None and y.dtype.kind == "f":
            y = y.astype(dtype, copy=False)
        return np.ascontiguousarray(y)

    def _check(self, y, n_outputs):
        """Regression targets: finite, (N, n_outputs) or 1-D when n_outputs == 1; returned 2-D float."""
        y = _finite_float_targets(y, self.name)
        if y.ndim == 1 and n_outputs == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != n_outputs:
            raise ValueError(
                f"{self.name} targets must have shape (N, {n_outputs}) to match the model's outputs, "
                f"received shape {y.shape}"
            )
        return y

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        config = dict(config)
        config.pop("name", None)
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _finite_float_targets(y, name):
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{name} targets must be numeric, received dtype {y.dtype}")
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise ValueError(f"{name} targets must be a non-empty 1-D or 2-D array, received shape {y.shape}")
    if y.dtype.kind != "f":
        y = y.astype(np.float64)
    bad = launch(K.nonfinite_count, y.size, y)
    if bad:
        raise ValueError(f"{name} targets contain {bad} NaN or infinite value(s)")
    return y


class _Regression(Loss):
    """A loss computed by one kernel ``kernels[0](pred, y, grad, row_loss)`` over 2-D targets."""

    def value_and_grad(self, y_pred: np.ndarray, y_true: np.ndarray, grad_out: np.ndarray,
                       row_loss: np.ndarray, ops: Ops = CPU) -> float | None:
        _check_2d(y_pred, grad_out, row_loss)
        y = _as_2d_targets(y_true, y_pred.shape)
        return ops.loss(self.kernels[0], y_pred, y, grad_out, row_loss)


class MeanSquaredError(_Regression):
    """mean over the batch of mean_j (y_pred - y_true)²."""

    name = "mean_squared_error"
    aliases = ("mse",)
    kernels = ("mse",)


class MeanAbsoluteError(_Regression):
    """mean over the batch of mean_j |y_pred - y_true| (subgradient 0 where they are equal)."""

    name = "mean_absolute_error"
    aliases = ("mae",)
    kernels = ("mae",)


class _Clipped(Loss):
    """A loss on probabilities clipped to [epsilon, 1 - epsilon] (the cross-entropies)."""

    def __init__(self, epsilon: float = EPSILON):
        if not 0.0 < epsilon < 0.5:
            raise ValueError(f"epsilon must be in (0, 0.5), received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def get_config(self) -> dict:
        return {"name": self.name, "epsilon": self.epsilon}


class BinaryCrossentropy(_Clipped):
    """mean of -(y log p + (1-y) log(1-p)) over outputs and batch; p clipped to [epsilon, 1-epsilon]."""

    name = "binary_crossentropy"
    aliases = ("bce",)
    from_logits_activation = "sigmoid"
    kernels = ("bce_probs", "sigmoid_bce_logits")

    def value_and_grad(self, y_pred: np.ndarray, y_true: np.ndarray, grad_out: np.ndarray,
                       row_loss: np.ndarray, ops: Ops = CPU) -> float | None:
        _check_2d(y_pred, grad_out, row_loss)
        y = _as_2d_targets(y_true, y_pred.shape)
        return ops.loss("bce_probs", y_pred, y, grad_out, row_loss, self.epsilon)

    def value_and_grad_from_logits(self, z: np.ndarray, y_true: np.ndarray, probs_out: np.ndarray,
                                   grad_out: np.ndarray, row_loss: np.ndarray,
                                   ops: Ops = CPU) -> float | None:
        _check_2d(z, grad_out, row_loss)
        y = _as_2d_targets(y_true, z.shape)
        return ops.loss_from_logits("sigmoid_bce_logits", z, y, probs_out, grad_out, row_loss)

    def _check(self, y, n_outputs):
        y = super()._check(y, n_outputs)
        if y.min() < 0 or y.max() > 1:
            raise ValueError(
                f"binary_crossentropy targets must lie in [0, 1], received values in [{y.min()}, {y.max()}]"
            )
        return y



class CategoricalCrossentropy(_Clipped):
    """mean over the batch of -Σ_j y_j log p_j; targets are int labels (sparse) or one-hot/probability rows.

    On probabilities (``value_and_grad``), rows are renormalized to sum to 1 and clipped to
    [epsilon, 1-epsilon], as Keras does; from logits, the softmax is fused and exact.
    """

    name = "categorical_crossentropy"
    aliases = ("sparse_categorical_crossentropy", "cce")
    from_logits_activation = "softmax"
    kernels = ("xent_probs_int", "xent_probs_dense", "softmax_xent_int", "softmax_xent_dense")

    def value_and_grad(self, y_pred: np.ndarray, y_true: np.ndarray, grad_out: np.ndarray,
                       row_loss: np.ndarray, ops: Ops = CPU) -> float | None:
        _check_2d(y_pred, grad_out, row_loss)
        if y_true.ndim == 1:
            _check_labels_len(y_true, y_pred.shape[0])
            return ops.loss("xent_probs_int", y_pred, y_true, grad_out, row_loss, self.epsilon)
        y = _as_2d_targets(y_true, y_pred.shape)
        return ops.loss("xent_probs_dense", y_pred, y, grad_out, row_loss, self.epsilon)

    def value_and_grad_from_logits(self, z: np.ndarray, y_true: np.ndarray, probs_out: np.ndarray,
                                   grad_out: np.ndarray, row_loss: np.ndarray,
                                   ops: Ops = CPU) -> float | None:
        _check_2d(z, grad_out, row_loss)
        if probs_out.shape != z.shape:
            raise ValueError(f"probs_out has shape {probs_out.shape}, logits have shape {z.shape}")
        if y_true.ndim == 1:
            _check_labels_len(y_true, z.shape[0])
            return ops.loss_from_logits("softmax_xent_int", z, y_true, probs_out, grad_out, row_loss)
        y = _as_2d_targets(y_true, z.shape)
        return ops.loss_from_logits("softmax_xent_dense", z, y, probs_out, grad_out, row_loss)

    def _check(self, y, n_outputs):
        """int labels (1-D, or an integer (N, 1) column) in [0, n_outputs), or (N, n_outputs) float rows."""
        if y.dtype.kind not in "biuf":
            raise ValueError(f"{self.name} targets must be numeric, received dtype {y.dtype}")
        if y.ndim == 2 and y.shape[1] == 1 and n_outputs > 1 and y.dtype.kind in "biu":
            y = y[:, 0]  # a column of labels, as Keras' sparse loss accepts
        if y.ndim == 1:
            return _check_labels(y, n_outputs, self.name)
        y = _finite_float_targets(y, self.name)
        if y.ndim != 2 or y.shape[1] != n_outputs:
            hint = "; for class labels pass a 1-D int array" if y.ndim == 2 and y.shape[1] == 1 else ""
            raise ValueError(
                f"{self.name} one-hot/probability targets must have shape (N, {n_outputs}), one column per "
                f"class, received shape {y.shape}{hint}"
            )
        return y



def _check_labels_len(labels, n):
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"1-D targets must be integer labels here, received dtype {labels.dtype} (see prepare_targets)"
        )
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for a batch of {n} predictions")


def _check_labels(y, n_outputs, name):
    """1-D class labels: integral, finite, in [0, n_outputs); returned as int64."""
    if y.shape[0] == 0:
        raise ValueError(f"{name} received no targets")
    if y.dtype.kind == "f":
        bad = launch(K.nonfinite_count, y.size, y)
        if bad:
            raise ValueError(f"{name} targets contain {bad} NaN or infinite value(s)")
        frac = np.flatnonzero(y != np.round(y))
        if frac.size:
            i = int(frac[0])
            raise ValueError(
                f"{name} got 1-D float targets that are not integer class labels: y[{i}] = {y[i].item()!r}; "
                f"pass int labels, or one-hot rows of shape (N, {n_outputs})"
            )
    out = np.flatnonzero((y < 0) | (y >= n_outputs))
    if out.size:
        i = int(out[0])
        raise ValueError(
            f"{name} label {y[i].item()!r} at index {i} is out of range [0, {n_outputs}) for a model with "
            f"{n_outputs} outputs ({out.size} bad label(s) in all)"
        )
    return y.astype(np.int64, copy=False)


_CLASSES = (MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy, CategoricalCrossentropy)
_BY_NAME = {n: cls for cls in _CLASSES for n in (cls.name, *cls.aliases)}


def get(identifier: str | dict | Loss) -> Loss:
    """A Loss from a name ("mse", "categorical_crossentropy", ...), a ``get_config`` dict, or a Loss."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict) and identifier.get("name") in _BY_NAME:
        return _BY_NAME[identifier["name"]].from_config(identifier)
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"unknown loss {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")


def check_targets(loss: str | dict | Loss, y: ArrayLike, n_outputs: int) -> None:
    """Raise ValueError when ``y`` is not valid for ``loss`` and a model with ``n_outputs`` outputs."""
    get(loss)._check(np.asarray(y), int(n_outputs))
