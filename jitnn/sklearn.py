"""scikit-learn estimators over ``jitnn.Sequential``: ``MLPClassifier`` and ``MLPRegressor``.

They take the parameters of ``sklearn.neural_network.MLPClassifier``/``MLPRegressor`` with the same
meaning, so an existing pipeline changes one import:

    from jitnn.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=20, random_state=0).fit(X, y)

What differs from scikit-learn (docs/ecosystem.md):
- the network runs in float32 (``dtype="float64"`` for double precision);
- ``loss_curve_`` holds each epoch's mean data loss over its batches (half the mean squared error for
  the regressor, as in scikit-learn), without scikit-learn's L2 term;
- ``alpha`` is applied as scikit-learn does, ``alpha * W / batch_size`` added to each batch's gradient,
  through the Dense layers' L2 regularizer;
- multilabel targets (a 2-D indicator ``y`` for the classifier) are not supported: ValueError.

Requires scikit-learn >= 1.6 (``pip install 'jitnn[sklearn]'``).
"""

from __future__ import annotations

import copy
import numbers
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data

from jitnn.callbacks import Callback
from jitnn.config import FLOAT_DTYPES
from jitnn.layers import Dense
from jitnn.model import Sequential
from jitnn.optimizers import SGD, Adam

# scikit-learn's activation names, and jitnn's own beyond them.
ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "leaky_relu": "leaky_relu", "gelu": "gelu", "swish": "swish"}
SOLVERS = ("adam", "sgd")

if sys.version_info >= (3, 11):
    from typing import Self
elif TYPE_CHECKING:  # Python 3.10: for type checkers only (annotations are not evaluated here)
    from typing_extensions import Self


class _Stopper(Callback):
    """scikit-learn's stopping rule at each epoch end: ``n_iter_no_change`` epochs without a gain of ``tol``
    in the training loss, or, with ``early_stopping``, in the validation score (best weights kept)."""

    def __init__(self, est, validation):
        self.est, self.validation = est, validation

    def on_epoch_end(self, epoch, logs=None):
        est = self.est
        loss = float(logs["loss"]) / est.LOSS_DIVISOR
        est.loss_curve_.append(loss)
        est.n_iter_ += 1
        est.t_ += est._n_train
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is None:
            if loss > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_, loss)
        else:
            x_val, y_val = self.validation
            score = est._score_encoded(x_val, y_val)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_weights = self.model.get_weights()
        if est._no_improvement_count > est.n_iter_no_change:
            self.model.stop_training = True


class _BaseMLP(BaseEstimator):
    """What the classifier and regressor share: parameters, validation, the network, the fit loop."""

    def __init__(self, hidden_layer_sizes: int | Sequence[int] = (100,), activation: str = "relu", *,
                 solver: Literal["adam", "sgd"] = "adam", alpha: float = 0.0001,
                 batch_size: int | Literal["auto"] = "auto", learning_rate_init: float = 0.001,
                 max_iter: int = 200, shuffle: bool = True,
                 random_state: int | np.random.RandomState | None = None, tol: float = 1e-4,
                 verbose: bool = False, early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int = 10, momentum: float = 0.9, nesterovs_momentum: bool = True,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 dtype: DTypeLike = "float32") -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.dtype = dtype

    # --- parameters ------------------------------------------------------------------------------
    def _check_params(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            sizes = None
        if sizes is None or any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1
                                for h in sizes):
            raise ValueError("hidden_layer_sizes must be positive ints, received: "
                             f"hidden_layer_sizes={self.hidden_layer_sizes!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, received: "
                             f"activation={self.activation!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS} (jitnn has no lbfgs), received: "
                             f"solver={self.solver!r}")
        _real("alpha", self.alpha, 0.0)
        _real("learning_rate_init", self.learning_rate_init, 0.0, strict=True)
        _real("tol", self.tol, 0.0)
        _real("momentum", self.momentum, 0.0, 1.0)
        _real("beta_1", self.beta_1, 0.0, 1.0, strict=True, strict_high=True)
        _real("beta_2", self.beta_2, 0.0, 1.0, strict=True, strict_high=True)
        _real("epsilon", self.epsilon, 0.0, strict=True)
        _real("validation_fraction", self.validation_fraction, 0.0, 1.0, strict=True, strict_high=True)
        _int("max_iter", self.max_iter, 1)
        _int("n_iter_no_change", self.n_iter_no_change, 1)
        if self.batch_size != "auto":
            _int("batch_size", self.batch_size, 1)
        if np.dtype(self.dtype).name not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be {' or '.join(map(repr, FLOAT_DTYPES))}, received: dtype={self.dtype!r}")
        return [int(h) for h in sizes]

    # jitnn's gradient is _grad_factor(n_outputs) times scikit-learn's (the regressor: scikit-learn
    # steps along the gradient of half the squared error summed over outputs, jitnn along that of the
    # mean squared error). Dividing SGD's rate by it and multiplying Adam's epsilon and the L2 factor by
    # it makes each step the one scikit-learn takes with the same parameters (tests/test_sklearn.py).
    LOSS_DIVISOR = 1.0  # jitnn's reported loss over scikit-learn's

    def _grad_factor(self, n_outputs):
        return 1.0

    def _optimizer(self, c):
        if self.solver == "sgd":
            return SGD(learning_rate=self.learning_rate_init / c, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum) and self.momentum > 0)
        return Adam(learning_rate=self.learning_rate_init, beta_1=self.beta_1, beta_2=self.beta_2,
                    epsilon=self.epsilon * c)

    def _batch(self, n):
        return min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    # --- the network -----------------------------------------------------------------------------
    def _build(self, n_features, n_outputs, batch, rng):
        """A fresh compiled Sequential: hidden Dense layers, then the output layer and loss of the task."""
        sizes = self._check_params()
        # scikit-learn adds alpha * W / batch to the gradient; jitnn's L2 factor l2 adds 2 * l2 * W.
        c = self._grad_factor(n_outputs)
        l2 = c * float(self.alpha) / (2.0 * batch)
        act = ACTIVATIONS[self.activation]
        layers = [Dense(h, activation=act, kernel_regularizer=l2) for h in sizes]
        out_act, loss = self._head(n_outputs)
        layers.append(Dense(n_outputs, activation=out_act, kernel_regularizer=l2))
        model = Sequential(layers, dtype=self.dtype)
        model.compile(loss=loss, optimizer=self._optimizer(c))
        model.build(n_features, seed=int(rng.randint(2**31 - 1)))
        return model

    def _reset(self):
        self.n_iter_, self.t_, self.loss_curve_ = 0, 0, []
        self.best_loss_, self._no_improvement_count = np.inf, 0
        self.validation_scores_ = None
        self.best_validation_score_ = None

    def _train(self, x, y, epochs, incremental):
        """``epochs`` epochs of training on encoded targets ``y``; the stopping rule is a callback."""
        rng = self._rng
        validation = None
        if self.early_stopping and not incremental:
            stratify = y if self._stratify() else None
            x, x_val, y, y_val = train_test_split(x, y, test_size=self.validation_fraction, stratify=stratify,
                                                  random_state=int(rng.randint(2**31 - 1)))
            if x_val.shape[0] < 2 or x.shape[0] < 1:
                raise ValueError(f"validation_fraction={self.validation_fraction} of {len(y) + len(y_val)} "
                                 "samples leaves too few for early stopping")
            validation = (x_val, y_val)
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self._best_weights = None
        self._n_train = x.shape[0]
        self.model_.fit(x, y, epochs=epochs, batch_size=self._batch(x.shape[0]), verbose=0,
                        shuffle=self.shuffle, seed=int(rng.randint(2**31 - 1)),
                        callbacks=[_Stopper(self, validation)])
        if validation is not None and self._best_weights is not None:
            self.model_.set_weights(self._best_weights)
        self._best_weights = None
        if not incremental and not self.model_.stop_training and self.n_iter_ == self.max_iter:
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} reached and the optimization "
                          "has not converged yet", ConvergenceWarning, stacklevel=3)

    def _fit(self, x, y, incremental):
        first = not (incremental and hasattr(self, "model_"))
        x, y = validate_data(self, x, y, reset=first, dtype=(np.float64, np.float32), multi_output=True)
        y = self._encode(y, first)
        if first:
            self._check_params()
            self._rng = check_random_state(self.random_state)
            self._reset()
            self.model_ = self._build(x.shape[1], self._n_outputs, self._batch(x.shape[0]), self._rng)
        self._train(x, y, 1 if incremental else self.max_iter, incremental)
        return self

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Train a new network on ``X, y`` for up to ``max_iter`` epochs; returns self."""
        return self._fit(X, y, incremental=False)

    def _forward(self, X):
        check_is_fitted(self, "model_")
        x = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self.model_.predict(x).astype(x.dtype, copy=False)  # outputs in the input's precision

    def __setstate__(self, state):
        # A copy, so that weights unpickled from a read-only buffer (joblib's memmaps) are writable
        # arrays again: the kernels update them in place and take no read-only arrays.
        if "model_" in state:
            state = dict(state, model_=copy.deepcopy(state["model_"]))
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier (softmax over classes, logistic for two) trained by jitnn."""

    def _head(self, n_outputs):
        if n_outputs == 1:
            return "sigmoid", "binary_crossentropy"
        return "softmax", "categorical_crossentropy"

    def _stratify(self):
        return True

    def _encode(self, y, first, classes=None):
        """Labels -> 0..K-1 (a float column for two classes); sets ``classes_`` on the first call."""
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if type_of_target(y) == "multilabel-indicator":
            raise ValueError("jitnn.sklearn.MLPClassifier does not support multilabel targets")
        if first:
            self._encoder = LabelEncoder().fit(y if classes is None else classes)
            self.classes_ = self._encoder.classes_
            if classes is None and len(self.classes_) < 2:
                raise ValueError(f"the classifier needs samples of at least 2 classes, received 1 class: "
                                 f"{self.classes_[0]!r}")
            self._n_outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels not in classes_ {list(self.classes_)}, received: {list(unknown)}")
        codes = self._encoder.transform(y)
        return codes.astype(self.dtype).reshape(-1, 1) if self._n_outputs == 1 else codes

    def _score_encoded(self, x, codes):
        proba = self.model_.predict(x)
        pred = (proba[:, 0] > 0.5).astype(int) if self._n_outputs == 1 else proba.argmax(axis=1)
        return accuracy_score(np.asarray(codes).reshape(-1).astype(int), pred)

    def partial_fit(self, X: ArrayLike, y: ArrayLike, classes: ArrayLike | None = None) -> Self:
        """One epoch over ``X, y``; the first call needs ``classes`` (every label the data will hold)."""
        if not hasattr(self, "model_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            x = validate_data(self, X, reset=True, dtype=(np.float64, np.float32))
            self._encode(np.asarray(classes), True, classes=np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"classes must hold at least 2 labels, received: {list(classes)}")
            self._check_params()
            self._rng = check_random_state(self.random_state)
            self._reset()
            self.model_ = self._build(x.shape[1], self._n_outputs, self._batch(x.shape[0]), self._rng)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={list(classes)} differs from the classes_ of the first call "
                             f"{list(self.classes_)}")
        return self._fit(X, y, incremental=True)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, one column per entry of ``classes_``."""
        proba = self._forward(X)
        if self._n_outputs == 1:
            proba = np.hstack([1.0 - proba, proba])
        return proba

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor (linear output, squared error) trained by jitnn."""

    LOSS_DIVISOR = 2.0

    def _grad_factor(self, n_outputs):
        return 2.0 / n_outputs

    def _head(self, n_outputs):
        return None, "mean_squared_error"

    def _stratify(self):
        return False

    def _encode(self, y, first):
        y = check_array(y, ensure_2d=False, dtype=self.dtype, input_name="y")
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if first:
            self._n_outputs, self._y_1d = n_outputs, y.ndim == 1
        elif n_outputs != self._n_outputs:
            raise ValueError(f"y has {n_outputs} outputs, the fitted model has {self._n_outputs}")
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _score_encoded(self, x, y):
        return r2_score(y, self.model_.predict(x))

    def partial_fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """One epoch over ``X, y`` (a new network on the first call)."""
        return self._fit(X, y, incremental=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted targets: 1-D for a single output, (n_samples, n_outputs) otherwise."""
        out = self._forward(X)
        return out.reshape(-1) if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _real(name, value, low, high=None, strict=False, strict_high=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or (value <= low if strict else value < low) \
            or (high is not None and (value >= high if strict_high else value > high)):
        top = high if high is not None else "inf"
        bounds = f"{'(' if strict else '['}{low}, {top}{')' if strict_high else ']'}"
        raise ValueError(f"{name} must be a real number in {bounds}, received: {name}={value!r}")


def _int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, received: {name}={value!r}")


__all__ = ["MLPClassifier", "MLPRegressor"]
