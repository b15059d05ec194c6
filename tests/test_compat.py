"""jitnn.compat against the numpy tutorial it replaces (perf/baselines/tutorial_numpy.py): the tutorial's code
runs unchanged, starts from the same weights, computes the same forward pass, and trains as well."""

import importlib.util
import pathlib
import re

import helpers
import numpy as np
import pytest
from helpers import DTYPES

from jitnn import compat
from jitnn.datasets import load_digits, one_hot

_PATH = pathlib.Path(__file__).resolve().parents[1] / "perf" / "baselines" / "tutorial_numpy.py"
_spec = importlib.util.spec_from_file_location("tutorial_numpy_for_compat", _PATH)
tutorial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tutorial)

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) err: ([0-9.]+)")


# ---------------------------------------------------------------- shared helpers


def blobs(n_per_class=60, classes=3, seed=0):
    """Well separated Gaussian blobs in 2-D (centers about 5 apart, unit spread); int labels."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 3.0], [2.6, -1.5], [-2.6, -1.5]])[:classes]
    x = np.concatenate([c + rng.normal(size=(n_per_class, 2)) for c in centers])
    return x, np.repeat(np.arange(classes), n_per_class)


def build(module, sizes, activations, loss, seed):
    """The same network from ``module`` (compat or the tutorial), weights drawn after np.random.seed(seed)."""
    np.random.seed(seed)
    layers = [module.Layer(a, b, act) for a, b, act in zip(sizes, sizes[1:], activations)]
    return module.NN(layers, loss, module.Adam())


def logged_errors(out, epochs):
    """The per-epoch errors ``fit`` printed, in order, checking every line's format."""
    return helpers.logged_errors(out, epochs, EPOCH_LINE)


# ---------------------------------------------------------------- the tutorial's code, unchanged


def test_tutorial_code_runs_unchanged(capsys):
    from jitnn.compat import NN, Adam, Layer  # the only line a tutorial user changes

    np.random.seed(0)
    x, labels = blobs()
    y = np.eye(3)[labels]
    nn = NN([Layer(2, 16, 'relu'), Layer(16, 3, 'softmax')], 'categorical_crossentropy', Adam())
    nn.fit(x, y, epochs=8, learning_rate=0.01, sample_size=30)
    errs = logged_errors(capsys.readouterr().out, 8)
    assert errs[-1] < 0.5 * errs[0]
    proba = nn.predict(x)
    assert proba.shape == (len(x), 3)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-10)
    assert np.mean(proba.argmax(axis=1) == labels) > 0.9


def test_fit_without_logs_prints_nothing(capsys):
    nn = build(compat, [2, 4, 3], ["relu", "softmax"], "categorical_crossentropy", seed=0)
    x, labels = blobs()
    nn.fit(x, np.eye(3)[labels], 2, 0.01, 30, include_logs=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_initial_weights_match_the_tutorial(seed):
    sizes, acts = [5, 7, 4, 3], ["relu", "sigmoid", "softmax"]
    ours = build(compat, sizes, acts, "categorical_crossentropy", seed)
    theirs = build(tutorial, sizes, acts, "categorical_crossentropy", seed)
    for a, b in zip(ours.layers, theirs.layers):
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.B, b.B)
    # the same weights once inside jitnn's model, and the same forward pass
    x = np.random.default_rng(seed).normal(size=(9, 5))
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-10, atol=1e-13)
    for a, b in zip(ours.layers, theirs.layers):
        np.testing.assert_array_equal(a.W, b.W)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_compat_follows_the_input_dtype(dtype):
    nn = build(compat, [2, 8, 3], ["relu", "softmax"], "categorical_crossentropy", seed=0)
    x, labels = blobs()
    x = x.astype(dtype)
    nn.fit(x, np.eye(3, dtype=dtype)[labels], 2, 0.01, 30, include_logs=False)
    p = nn.predict(x)
    assert p.dtype == dtype
    assert nn.layers[0].W.dtype == dtype
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-12)
    other = np.float64 if dtype == np.float32 else np.float32
    q = nn.predict(x.astype(other))  # switching dtype keeps the trained weights
    assert q.dtype == other
    np.testing.assert_allclose(q, p, rtol=1e-4, atol=1e-6)


def test_mse_with_one_dimensional_labels_and_a_single_output(capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3  # 1-D, as the tutorial wants for mse
    np.random.seed(0)
    nn = compat.NN([compat.Layer(3, 8, 'relu'), compat.Layer(8, 1, 'linear')], 'mse', compat.Adam())
    nn.fit(x, y, epochs=30, learning_rate=0.01, sample_size=20)
    errs = logged_errors(capsys.readouterr().out, 30)
    assert errs[-1] < 0.05 * errs[0]
    p = nn.predict(x)
    assert p.shape == (200, 1)
    assert np.mean((p[:, 0] - y) ** 2) < 0.05 * np.var(y)


def test_sgd_mse_linear_model_converges(capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 2))
    y = x @ np.array([2.0, -1.0])
    np.random.seed(0)
    nn = compat.NN([compat.Layer(2, 1, 'linear')], 'mse', compat.SGD())
    nn.fit(x, y, epochs=40, learning_rate=0.1, sample_size=10)
    errs = logged_errors(capsys.readouterr().out, 40)
    assert errs[-1] < 1e-3 * errs[0]
    np.testing.assert_allclose(nn.layers[0].W[:, 0], [2.0, -1.0], atol=1e-2)


def test_binary_crossentropy_with_a_sigmoid_output(capsys):
    x, labels = blobs(classes=2)
    np.random.seed(1)
    nn = compat.NN([compat.Layer(2, 8, 'relu'), compat.Layer(8, 1, 'sigmoid')], 'binary_crossentropy',
                   compat.Adam())
    nn.fit(x, labels.astype(np.float64), epochs=15, learning_rate=0.01, sample_size=20)
    errs = logged_errors(capsys.readouterr().out, 15)
    assert errs[-1] < 0.5 * errs[0]
    p = nn.predict(x)
    assert p.shape == (len(x), 1) and np.all((p > 0) & (p < 1))
    assert np.mean((p[:, 0] > 0.5) == labels) > 0.95


def test_layer_sizes_must_chain():
    with pytest.raises(ValueError, match="do not chain"):
        compat.NN([compat.Layer(2, 4, 'relu'), compat.Layer(5, 3, 'softmax')])


# ---------------------------------------------------------------- training quality


def test_accuracy_parity_with_the_tutorial_on_digits(capsys):
    (x_train, y_train), (x_test, y_test) = load_digits(dtype="float64")
    y_hot = one_hot(y_train, 10, dtype="float64")
    sizes, acts = [64, 32, 10], ["relu", "softmax"]
    epochs, lr, sample_size = 8, 0.01, 64
    accuracy = {}
    for name, module in (("tutorial", tutorial), ("compat", compat)):
        nn = build(module, sizes, acts, "categorical_crossentropy", seed=0)
        nn.fit(x_train, y_hot, epochs, lr, sample_size)
        logged_errors(capsys.readouterr().out, epochs)
        accuracy[name] = np.mean(nn.predict(x_test).argmax(axis=1) == y_test)
    assert accuracy["tutorial"] > 0.85, accuracy  # the reference itself learned
    assert accuracy["compat"] >= accuracy["tutorial"] - 0.03, accuracy
