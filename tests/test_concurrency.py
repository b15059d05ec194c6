"""Threads and one model (issue 14, defect 2): what docs/reliability.md promises, attacked.

Each test switches threads as often as Python allows (``sys.setswitchinterval(1e-6)``), so a shared
buffer shows up as rows of another thread's batch, and compares against a serial run, bit for bit.
"""

from __future__ import annotations

import copy
import pickle
import sys
import threading

import numpy as np
import pytest
from helpers import assert_weights_equal

import jitnn


@pytest.fixture
def fast_switching():
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _model(seed=0, dropout=False):
    layers = [jitnn.Dense(48, activation="relu", input_dim=32)]
    layers += [jitnn.Dropout(0.2, seed=1)] if dropout else []
    layers += [jitnn.Dense(10, activation="softmax")]
    m = jitnn.Sequential(layers)
    m.compile(loss="sparse_categorical_crossentropy", optimizer=jitnn.optimizers.Adam(0.01),
              metrics=["accuracy"])
    m.build(32, seed=seed)
    return m


def _data(seed, n=256):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32)).astype("f4"), rng.integers(0, 10, n)


def _run_threads(targets):
    errors = []

    def guarded(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below, with the thread's traceback lost otherwise
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors


def test_predict_from_threads_equals_serial(fast_switching):
    m = _model(dropout=True)
    xs = [_data(i, 300)[0] for i in range(4)]
    ref = [m.predict(x, batch_size=16) for x in xs]
    wrong = []

    def work(i):
        for _ in range(10):
            wrong.append(not np.array_equal(m.predict(xs[i], batch_size=16 + i), ref[i]))

    _run_threads([lambda i=i: work(i) for i in range(4)])
    assert sum(wrong) == 0 and len(wrong) == 40


def test_predict_while_another_model_trains_equals_serial(fast_switching):
    """Threads predicting model A while a thread trains model B: A's outputs and B's trained weights are
    those of serial runs."""
    a, x, y = _model(0), *_data(1)
    b, b_alone = _model(1, dropout=True), _model(1, dropout=True)
    b_alone.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=3)
    ref = a.predict(x, batch_size=32)
    wrong = []

    def predicting():
        for _ in range(8):
            wrong.append(not np.array_equal(a.predict(x, batch_size=32), ref))

    _run_threads([predicting, predicting, lambda: b.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=3)])
    assert sum(wrong) == 0
    assert_weights_equal(b.get_weights(), b_alone.get_weights())
    assert b.optimizer.iterations == b_alone.optimizer.iterations


def test_predict_during_fit_of_the_same_model(fast_switching):
    """predict while the same model trains: training is unchanged (the weights equal a fit alone), and
    each prediction is that of one set of weights the fit passed through (before or after a whole step)."""
    x, y = _data(2)
    xp = x[:40]
    m, alone = _model(5), _model(5)
    alone.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=4)
    seen = [m.get_weights()]

    class Record(jitnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(self.model.get_weights())

    outputs, done = [], threading.Event()

    def predicting():
        while not done.is_set():
            outputs.append(m.predict(xp, batch_size=7))

    def training():
        try:
            m.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=4, callbacks=[Record()])
        finally:
            done.set()

    _run_threads([predicting, predicting, training])
    assert_weights_equal(m.get_weights(), alone.get_weights())
    probe = _model(5)
    possible = []
    for w in seen:
        probe.set_weights(w)
        possible.append(probe.predict(xp, batch_size=7))
    assert outputs
    for out in outputs:
        assert any(np.array_equal(out, p) for p in possible)


def test_two_fits_of_one_model_raise_and_leave_it_intact():
    m, x, y = _model(0), *_data(3)
    inside, release = threading.Event(), threading.Event()

    class Hold(jitnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                inside.set()
                release.wait(60)

    reference = _model(0)
    reference.fit(x, y, epochs=1, batch_size=64, verbose=0, seed=1)
    first = threading.Thread(target=m.fit, args=(x, y),
                             kwargs={"epochs": 1, "batch_size": 64, "verbose": 0, "seed": 1,
                                     "callbacks": [Hold()]})
    first.start()
    assert inside.wait(120)
    try:
        with pytest.raises(RuntimeError, match="already being trained by thread"):
            m.fit(x, y, epochs=1, verbose=0)
        for what, call in [("build", lambda: m.build(32)), ("compile", lambda: m.compile(loss="mse"))]:
            with pytest.raises(RuntimeError, match=f"cannot {what} model"):
                call()
    finally:
        release.set()
        first.join(120)
    assert_weights_equal(m.get_weights(), reference.get_weights())
    m.fit(x, y, epochs=1, verbose=0)  # free again once the first fit returned


def test_fit_inside_fit_raises():
    m, x, y = _model(0), *_data(3, 32)

    class Nested(jitnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.fit(x, y, verbose=0)

    with pytest.raises(RuntimeError, match="fit called inside fit"):
        m.fit(x, y, epochs=1, verbose=0, callbacks=[Nested()])
    m.fit(x, y, epochs=1, verbose=0)


def test_model_copies_and_pickles_after_threaded_use():
    """The lock and the per-thread copies are not state: deepcopy and pickle still work, and the copy
    predicts what the original does."""
    m, x, _ = _model(0), *_data(4, 50)
    _run_threads([lambda: m.predict(x)])
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        np.testing.assert_array_equal(twin.predict(x), m.predict(x))
        _run_threads([lambda twin=twin: twin.predict(x)])
