"""perf/baselines/tutorial_numpy.py, our speed peer: it must train, and its math must be what we describe."""

import importlib.util
import pathlib
import re

import helpers
import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "perf" / "baselines" / "tutorial_numpy.py"
_spec = importlib.util.spec_from_file_location("tutorial_numpy", _PATH)
tn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tn)

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) err: (-?\d+\.\d{6})$")


def logged_errors(out, epochs):
    """The per-epoch errors ``fit`` printed, checking the line format."""
    return helpers.logged_errors(out, epochs, EPOCH_LINE)


def blobs(n_per_class=100, classes=3, seed=0):
    """Well separated Gaussian blobs (centers 5 apart, unit spread)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 3.0], [2.6, -1.5], [-2.6, -1.5]])[:classes]
    x = np.concatenate([c + rng.normal(size=(n_per_class, 2)) for c in centers])
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def test_softmax_classifier_trains(capsys):
    np.random.seed(0)
    x, y = blobs()
    net = tn.NN(layers=[
        tn.Layer(2, 16, activation='relu'),
        tn.Layer(16, 3, activation='softmax'),
    ], loss='categorical_crossentropy', optimizer=tn.Adam())
    net.fit(x, np.eye(3)[y], epochs=20, learning_rate=0.01, sample_size=50)
    errs = logged_errors(capsys.readouterr().out, 20)
    assert errs[-1] < 0.5 * errs[0]
    probs = net.predict(x)
    assert probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.mean(probs.argmax(axis=1) == y) > 0.9


def test_binary_crossentropy_trains_titanic_style(capsys):
    np.random.seed(1)
    x, y = blobs(classes=2)
    net = tn.NN(layers=[
        tn.Layer(2, 8, activation='relu'),
        tn.Layer(8, 1, activation='sigmoid'),
    ], loss='binary_crossentropy', optimizer=tn.Adam())
    net.fit(x, y.astype(float), epochs=30, learning_rate=0.02, sample_size=40)
    errs = logged_errors(capsys.readouterr().out, 30)
    assert errs[-1] < errs[0]
    p = net.predict(x)
    assert p.shape == (200, 1) and np.mean((p[:, 0] > 0.5) == y) > 0.9


def test_mse_regression_with_sgd_trains(capsys):
    np.random.seed(2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.3  # 1-D targets, one linear output unit
    net = tn.NN(layers=[tn.Layer(3, 1, activation='linear')], loss='mse', optimizer=tn.SGD())
    net.fit(x, y, epochs=40, learning_rate=1.0, sample_size=20)
    errs = logged_errors(capsys.readouterr().out, 40)
    assert errs[-1] < 0.1 * errs[0]
    assert net.predict(x).shape == (200, 1)


def test_include_logs_false_is_silent(capsys):
    np.random.seed(3)
    x, y = blobs(n_per_class=10)
    net = tn.NN([tn.Layer(2, 3, activation='softmax')], loss='ce', optimizer=tn.Adam())
    net.fit(x, np.eye(3)[y], epochs=2, learning_rate=0.01, sample_size=10, include_logs=False)
    assert capsys.readouterr().out == ""


def test_one_sgd_step_is_the_softmax_cross_entropy_gradient():
    """With the whole set as one batch, one step is W -= lr * X^T (softmax(XW + B) - Y) / n."""
    np.random.seed(4)
    x, y = blobs(n_per_class=20)
    Y = np.eye(3)[y]
    layer = tn.Layer(2, 3, activation='softmax')
    W0, B0 = layer.W.copy(), layer.B.copy()
    net = tn.NN([layer], loss='categorical_crossentropy', optimizer=tn.SGD())
    net.fit(x, Y, epochs=1, learning_rate=0.1, sample_size=len(x), include_logs=False)
    Z = x @ W0 + B0
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(layer.W, W0 - 0.1 * x.T @ (P - Y) / len(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.B, B0 - 0.1 * (P - Y).mean(axis=0, keepdims=True), rtol=1e-12)


def test_adam_first_step_moves_each_weight_by_about_the_learning_rate():
    """Bias correction makes Adam's first step lr * g / (|g| + eps), i.e. ~lr per weight."""
    opt = tn.Adam()
    assert (opt.b1, opt.b2, opt.epsilon) == (0.9, 0.999, 1e-8)
    w, b = np.zeros((2, 2)), np.zeros((1, 2))
    dw, db = np.array([[0.5, -2.0], [1e-3, 3.0]]), np.array([[1.0, -1.0]])
    n_w, n_b = opt.step(0.01, dw, db, w, b, 1)
    np.testing.assert_allclose(n_w, -0.01 * np.sign(dw), rtol=1e-4)
    np.testing.assert_allclose(n_b, -0.01 * np.sign(db), rtol=1e-6)


def test_layers_get_their_own_optimizer_copies_and_xavier_weights():
    np.random.seed(5)
    adam = tn.Adam()
    layers = [tn.Layer(400, 600, activation='relu'), tn.Layer(600, 10, activation='softmax')]
    tn.NN(layers, loss='categorical_crossentropy', optimizer=adam)
    assert layers[0].optimizer is not layers[1].optimizer and layers[0].optimizer is not adam
    W, B = layers[0].W, layers[0].B
    assert W.shape == (400, 600) and W.dtype == np.float64
    assert B.shape == (1, 600) and not B.any()
    assert W.std() == pytest.approx(np.sqrt(2 / 1000), rel=0.02)


def test_custom_kernel_initializer_is_used():
    layer = tn.Layer(3, 4, activation='relu', kernel_initializer=tn.UniformInitializer(3, 4))
    assert layer.W.shape == (3, 4) and layer.W.min() >= 0.0
