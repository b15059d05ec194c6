"""jitnn.sklearn: scikit-learn's own estimator checks, Pipeline and GridSearchCV, and agreement with
scikit-learn's MLP (the very same gradient step from the same weights; accuracy on real data).

scikit-learn's checks skip themselves in two cases, with their own written reason: the array-API
check unless SCIPY_ARRAY_API=1 is set (jitnn computes with numpy only), and the pandas checks when
pandas is not installed (the dev extra installs it). No check is skipped or expected to fail here.
"""

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from jitnn.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Small networks and few epochs keep the ~50 checks per estimator fast; these settings still pass the
# checks that ask for real learning (check_classifiers_train wants 83% on its blobs, the regressor's R²).
CHECKED = [MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, random_state=0),
           MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, learning_rate_init=0.01, random_state=0)]


@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)


# --- the same step as scikit-learn ----------------------------------------------------------------------


def _same_step(ours, theirs, x, y, fit_kw, rtol):
    """From the weights scikit-learn has after one partial_fit, and fresh optimizer state on both sides,
    one more full-batch step in each: the same weights, and the same loss in loss_curve_."""
    theirs.partial_fit(x, y, **fit_kw)
    ours.partial_fit(x, y, **fit_kw)
    start = [a.copy() for w, b in zip(theirs.coefs_, theirs.intercepts_) for a in (w, b)]
    ours.model_.set_weights(start)
    opt = ours.model_.optimizer
    ours.model_.optimizer = type(opt).from_config(opt.get_config())  # zero momentum / moments
    del theirs._optimizer  # scikit-learn makes a new one (zero velocities) when it has none
    theirs.partial_fit(x, y)
    ours.partial_fit(x, y)
    expected = [a for w, b in zip(theirs.coefs_, theirs.intercepts_) for a in (w, b)]
    got = ours.model_.get_weights()
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert max(np.abs(e - s).max() for e, s in zip(expected, start)) > 1e-3  # a real step
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * 1e-3)
    # scikit-learn's loss adds 0.5 * alpha * sum(W**2) / batch; loss_curve_ holds the data loss only.
    penalty = 0.5 * theirs.alpha * sum((w ** 2).sum() for w in start[0::2]) / len(y)
    assert ours.loss_curve_[-1] == pytest.approx(theirs.loss_curve_[-1] - penalty, rel=1e-9)


SETTINGS = [
    {"solver": "sgd", "momentum": 0.0, "learning_rate_init": 0.3, "alpha": 0.5, "activation": "tanh"},
    {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": False, "learning_rate_init": 0.1, "alpha": 1e-3,
     "activation": "logistic"},
    {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": True, "learning_rate_init": 0.1, "alpha": 0.0,
     "activation": "relu"},
    {"solver": "adam", "learning_rate_init": 0.05, "alpha": 0.2, "activation": "identity", "epsilon": 1e-12},
]


@pytest.mark.parametrize("params", SETTINGS, ids=lambda p: f"{p['solver']}-{p['activation']}")
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "multioutput"])
def test_one_step_matches_scikit_learn(task, params):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 5))
    common = dict(hidden_layer_sizes=(7, 3), batch_size=37, shuffle=False, random_state=0, **params)
    if task in ("binary", "multiclass"):
        y = np.array(["a", "b", "c"])[rng.integers(0, 2 if task == "binary" else 3, 37)]
        ours, theirs = MLPClassifier(dtype="float64", **common), SkMLPClassifier(**common)
        fit_kw = {"classes": np.unique(y)}
    else:
        y = x @ rng.standard_normal((5, 1 if task == "regression" else 3)) + 0.1
        y = y.ravel() if task == "regression" else y
        ours, theirs = MLPRegressor(dtype="float64", **common), SkMLPRegressor(**common)
        fit_kw = {}
    # Adam: scikit-learn's epsilon acts as epsilon / sqrt(1 - beta_2**t) in jitnn's (Keras', PyTorch's)
    # formula, 32x larger at the first step, a difference of about lr * 30 * epsilon / |gradient|: with
    # epsilon = 1e-12 that is below 1e-7 of the step.
    _same_step(ours, theirs, x, y, fit_kw, rtol=1e-6 if params["solver"] == "adam" else 1e-9)


# --- real data, pipelines, stopping ------------------------------------------------------------------


def test_digits_accuracy_close_to_scikit_learn():
    x_tr, x_te, y_tr, y_te = _digits()
    kw = {"hidden_layer_sizes": (64,), "max_iter": 60, "random_state": 0}
    ours = MLPClassifier(**kw).fit(x_tr, y_tr)
    theirs = SkMLPClassifier(**kw).fit(x_tr, y_tr)
    assert ours.n_iter_ == len(ours.loss_curve_) and ours.n_features_in_ == 64
    assert list(ours.classes_) == list(range(10))
    proba = ours.predict_proba(x_te)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert ours.score(x_te, y_te) > 0.95
    assert abs(ours.score(x_te, y_te) - theirs.score(x_te, y_te)) < 0.03  # different initial weights
    assert ours.loss_curve_[-1] == pytest.approx(theirs.loss_curve_[-1], rel=0.5, abs=0.02)


def test_pipeline_and_grid_search():
    x_tr, x_te, y_tr, y_te = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, random_state=0)
    pipe = make_pipeline(StandardScaler(), clf)
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1.0], "mlpclassifier__solver": ["adam", "sgd"]},
                        cv=2).fit(x_tr, y_tr)
    assert grid.best_params_["mlpclassifier__solver"] == "adam"  # SGD at 1e-3 has barely moved in 50 epochs
    assert grid.best_estimator_.score(x_te, y_te) > 0.9
    again = pickle.loads(pickle.dumps(grid.best_estimator_))
    np.testing.assert_array_equal(again.predict_proba(x_te), grid.best_estimator_.predict_proba(x_te))


def test_stops_when_the_training_loss_stalls():
    x_tr, _, y_tr, _ = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=500, tol=0.5, n_iter_no_change=3, random_state=0)
    clf.fit(x_tr, y_tr)
    # tol=0.5 counts every epoch after the first big drops as "no change"; stops after 3 + 1 of them.
    curve = np.array(clf.loss_curve_)
    assert clf.n_iter_ < 20 and clf.n_iter_ == len(curve)
    assert clf.best_loss_ == curve.min()


def test_early_stopping_keeps_the_best_validation_weights():
    x_tr, x_te, y_tr, y_te = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, early_stopping=True, n_iter_no_change=4,
                        validation_fraction=0.2, learning_rate_init=0.05, random_state=1).fit(x_tr, y_tr)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ < 300
    assert clf.best_validation_score_ == max(scores)
    # scores[-k:] did not beat the best by tol; the model holds the weights of the best epoch
    assert all(s < clf.best_validation_score_ + clf.tol for s in scores[-clf.n_iter_no_change:])
    assert clf.score(x_te, y_te) > 0.9


def test_partial_fit_is_one_epoch_and_remembers_classes():
    x_tr, _, y_tr, _ = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(x_tr, y_tr)
    clf.partial_fit(x_tr[:100], y_tr[:100], classes=np.arange(10))
    clf.partial_fit(x_tr[100:], y_tr[100:])
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(x_tr[:5], np.full(5, 11))
    with pytest.raises(ValueError, match="differs"):
        clf.partial_fit(x_tr[:5], y_tr[:5], classes=[0, 1])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(x_tr[:5, :10], y_tr[:5])


def test_regressor_multioutput_and_dtype():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6))
    y = np.tanh(x @ rng.standard_normal((6, 2)))
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, learning_rate_init=0.01, random_state=0)
    reg.fit(x, y)
    assert reg.predict(x).shape == (200, 2) and reg.predict(x).dtype == np.float64
    assert reg.predict(x.astype(np.float32)).dtype == np.float32
    assert reg.score(x, y) > 0.9
    one = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(x, y[:, 0])
    assert one.predict(x).shape == (200,)


@pytest.mark.parametrize("bad, match", [
    ({"hidden_layer_sizes": (10, 0)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": "10"}, "hidden_layer_sizes"),
    ({"activation": "softplus"}, "activation"), ({"solver": "lbfgs"}, "lbfgs"), ({"alpha": -1.0}, "alpha"),
    ({"batch_size": 0}, "batch_size"), ({"max_iter": 0}, "max_iter"),
    ({"learning_rate_init": 0}, "learning_rate"),
    ({"validation_fraction": 1.0}, "validation_fraction"), ({"beta_2": 1.0}, "beta_2"),
    ({"n_iter_no_change": 0}, "n_iter_no_change"), ({"dtype": "float16"}, "dtype")])
def test_bad_parameters_name_the_value(bad, match):
    x, y = np.zeros((10, 3)), np.arange(10) % 2
    for est in (MLPClassifier(**bad), MLPRegressor(**bad)):
        with pytest.raises(ValueError, match=match):
            est.fit(x, y)


def test_max_iter_reached_warns():
    x_tr, _, y_tr, _ = _digits()
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(x_tr, y_tr)
