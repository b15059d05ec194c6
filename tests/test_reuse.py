"""Careless reuse (issue 14, defect 10): refused with a message that says what to do, or copied.

A layer or optimizer object belongs to one model; metrics survive a save; compat keeps its optimizer
when the data's dtype changes.
"""

from __future__ import annotations

import copy
import gc
import json

import numpy as np
import pytest
from helpers import assert_weights_equal

import jitnn
from jitnn import compat, optimizers


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)), rng.integers(0, 2, n)


def test_a_layer_in_a_second_model_is_refused_and_the_first_keeps_its_weights():
    d = jitnn.Dense(4, input_dim=3)
    m1 = jitnn.Sequential([d])
    m1.build(3, seed=0)
    before = m1.get_weights()
    with pytest.raises(ValueError, match=r"layer \(Dense 3\u21924 linear\) already belongs to model .*new layer"):
        jitnn.Sequential([d])
    m2 = jitnn.Sequential()
    with pytest.raises(ValueError, match="already belongs"):
        m2.add(d)
    assert_weights_equal(m1.get_weights(), before)
    twin = jitnn.Sequential([copy.deepcopy(d)])  # a copy is a new layer with the same weights
    twin.build(3, seed=1)
    with pytest.raises(ValueError, match="already in the model"):
        jitnn.Sequential([jitnn.Dense(3, input_dim=3)] * 2)
    del m1
    gc.collect()
    jitnn.Sequential([d])  # its model is gone: the layer is free again


def test_one_optimizer_for_two_models_is_refused():
    x, y = _data()
    opt = jitnn.optimizers.Adam(0.1)
    a = jitnn.Sequential([jitnn.Dense(1, input_dim=3)])
    b = jitnn.Sequential([jitnn.Dense(1, input_dim=3)])
    a.compile(loss="mse", optimizer=opt)
    with pytest.raises(ValueError, match="optimizer .*already belongs to model .*own"):
        b.compile(loss="mse", optimizer=opt)
    b.compile(loss="mse", optimizer="adam")
    b.optimizer = opt  # assigned past compile: fit refuses it before any step
    with pytest.raises(ValueError, match="already belongs"):
        b.fit(x, y, verbose=0)
    assert opt.iterations == 0
    a.compile(loss="mse", optimizer=opt)  # the same model may compile again with its own optimizer
    a.fit(x, y, verbose=0)
    c = copy.deepcopy(a)  # the copy owns a copy of the optimizer
    c.fit(x, y, verbose=0)
    assert (a.optimizer.iterations, c.optimizer.iterations) == (1, 2)
    with pytest.raises(ValueError, match="already belongs"):
        b.compile(loss="mse", optimizer=c.optimizer)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_a_deep_copy_trains_its_own_optimizer_state(optimizer):
    """copy.deepcopy copies numpy views as arrays of their own: the copy's kernels once updated copied flat
    views of its moments while its ``state`` (what it saves) stayed at the copy's moment. The copy must
    train as the original does, moments included."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 5)).astype(np.float32), rng.integers(0, 3, 64)
    opt = optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd" else optimizer
    a = jitnn.Sequential([jitnn.Dense(4, "relu", input_dim=5), jitnn.Dense(3, "softmax")])
    a.compile(loss="sparse_categorical_crossentropy", optimizer=opt)
    a.build(5, seed=0)
    a.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    b = copy.deepcopy(a)
    for m in (a, b):
        m.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    assert_weights_equal(b.get_weights(), a.get_weights())
    sa, sb = a.optimizer.state_arrays(), b.optimizer.state_arrays()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sb[k], sa[k], err_msg=k)
    assert any(np.any(sb[k] != 0) for k in sb if k != "iterations")


def _classifier(metrics):
    m = jitnn.Sequential([jitnn.Dense(2, activation="softmax", input_dim=3)])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=metrics)
    return m


@pytest.mark.parametrize("metrics", [["accuracy"], ["acc", "accuracy"], [jitnn.metrics.accuracy]])
def test_evaluate_after_load_model_returns_the_metrics(tmp_path, metrics):
    x, y = _data()
    m = _classifier(metrics)
    m.fit(x, y, verbose=0, seed=0)
    loaded = jitnn.load_model(m.save(tmp_path / "m.npz"))
    assert loaded.evaluate(x, y) == m.evaluate(x, y)
    assert len(m.evaluate(x, y)) == 1 + len(metrics)


def test_a_custom_metric_is_left_out_with_a_warning(tmp_path):
    def hits(y_true, y_pred):
        return 0.5

    x, y = _data()
    m = _classifier(["accuracy", hits])
    m.fit(x, y, verbose=0)
    with pytest.warns(RuntimeWarning, match="'hits' is not a jitnn metric"):
        path = m.save(tmp_path / "m.npz")
    assert jitnn.load_model(path).evaluate(x, y) == m.evaluate(x, y)[:2]


def test_a_file_without_metrics_still_loads(tmp_path):
    """Files written before metrics were saved have no ``metrics`` field."""
    x, y = _data()
    m = _classifier(["accuracy"])
    m.build(3, seed=0)
    path = m.save(tmp_path / "m.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    record = json.loads(arrays["__architecture__"].tobytes())
    del record["config"]["metrics"]
    arrays["__architecture__"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert isinstance(jitnn.load_model(old).evaluate(x, y), float)


def test_compat_keeps_adam_when_the_dtype_changes():
    """Predicting (or fitting) float64 data after training on float32 used to rebuild the model and
    reset Adam; the trained model now takes the data cast to its dtype."""
    np.random.seed(0)
    nn = compat.NN([compat.Layer(3, 5, "relu"), compat.Layer(5, 2, "softmax")], "categorical_crossentropy",
                   compat.Adam())
    x, labels = _data(40)
    x32, y = x.astype(np.float32), np.eye(2, dtype=np.float32)[labels]
    nn.fit(x32, y, epochs=1, learning_rate=0.01, sample_size=10, include_logs=False)
    model, w = nn.model, nn.layers[0].W.copy()
    p64 = nn.predict(x)
    assert nn.model is model and model.optimizer.iterations == 4
    assert p64.dtype == np.float64
    np.testing.assert_array_equal(p64, nn.predict(x32).astype(np.float64))
    np.testing.assert_array_equal(nn.layers[0].W, w)
    nn.fit(x, y.astype(np.float64), epochs=1, learning_rate=0.01, sample_size=10, include_logs=False)
    assert nn.model is model and model.optimizer.iterations == 8
