"""Ctrl-C during fit (issue 14, defect 8): the model keeps its last complete step, and says so.

A real SIGINT is sent from inside the optimizer's update (between two parameter arrays' kernels, where
the old loop left a half-applied step) and inside the forward pass; the state after the interrupt is
compared, bit for bit, with the states an uninterrupted run passed through.
"""

from __future__ import annotations

import os
import signal

import numba
import numpy as np
import pytest
from helpers import assert_weights_equal

import jitnn


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler, as in a script (the one jitnn's loop defers)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


class InterruptingAdam(jitnn.optimizers.Adam):
    """Adam that, at step ``at`` (1-based), interrupts between its first and second parameter arrays:
    with a real SIGINT (``how="signal"``, a Ctrl-C) or by raising KeyboardInterrupt itself."""

    def __init__(self, at, how):
        super().__init__(0.01)
        self.at, self.how, self.array = at, how, 0

    def update_array(self, w, g, bufs, lr, l1, l2, **snapshot):
        self.array += 1
        if self.iterations == self.at and self.array % 4 == 2:
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return super().update_array(w, g, bufs, lr, l1, l2, **snapshot)


def _model(optimizer):
    m = jitnn.Sequential([jitnn.Dense(16, activation="relu", input_dim=6), jitnn.Dense(3, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer)
    m.build(6, seed=0)
    return m


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype("f4"), rng.integers(0, 3, 64)


def _states():
    """The weights and optimizer state after each step of an uninterrupted fit (index 0: before any)."""
    x, y = _data()
    m = _model(jitnn.optimizers.Adam(0.01))
    states = [(m.get_weights(), {})]

    class Record(jitnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            states.append((self.model.get_weights(), self.model.optimizer.state_arrays()))

    m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1, callbacks=[Record()])
    return states


def _assert_state(m, state):
    weights, opt = state
    assert_weights_equal(m.get_weights(), weights)
    got = m.optimizer.state_arrays()
    assert sorted(got) == sorted(opt)
    for k in opt:
        np.testing.assert_array_equal(got[k], opt[k], err_msg=k)


@pytest.mark.parametrize("at", [1, 5, 11])
def test_ctrl_c_inside_the_update_finishes_that_step_then_stops(default_sigint, restore_num_threads, at):
    x, y = _data()
    states = _states()
    m = _model(InterruptingAdam(at, "signal"))
    threads = numba.get_num_threads()
    with pytest.warns(RuntimeWarning, match=rf"batch {(at - 1) % 8 + 1} of 8.*last complete step"), pytest.raises(KeyboardInterrupt):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    assert m.optimizer.iterations == at
    _assert_state(m, states[at])
    assert numba.get_num_threads() == threads == jitnn.get_num_threads()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # our handler is gone again


def test_keyboardinterrupt_raised_inside_the_update_puts_the_step_back(default_sigint):
    """Not a signal (code in the update raised it): the weights, moments and step counter of the step's
    start come back from the NaN guard's snapshot (jitnn.nan_guard keeps the moments too)."""
    x, y = _data()
    states = _states()
    m = _model(InterruptingAdam(4, "raise"))
    with pytest.warns(RuntimeWarning, match="batch 4 of 8.*weights and optimizer state are those of the last "
                                            "complete step"), pytest.raises(KeyboardInterrupt):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    assert m.optimizer.iterations == 3
    _assert_state(m, states[3])


def test_ctrl_c_in_the_forward_pass_finishes_that_step(default_sigint):
    x, y = _data()
    states = _states()
    m = _model(jitnn.optimizers.Adam(0.01))
    calls = [0]
    forward = m.layers[1].forward

    def interrupting_forward(a, training):
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(a, training)

    m.layers[1].forward = interrupting_forward
    with pytest.warns(RuntimeWarning, match="epoch 1, batch 6 of 8"), pytest.raises(KeyboardInterrupt):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    _assert_state(m, states[6])


def test_ctrl_c_in_a_callback_stops_at_once(default_sigint):
    x, y = _data()
    states = _states()
    m = _model(jitnn.optimizers.Adam(0.01))

    class CtrlC(jitnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.warns(RuntimeWarning, match="last complete step"), pytest.raises(KeyboardInterrupt):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1, callbacks=[CtrlC()])
    _assert_state(m, states[3])
    m.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=1)  # trains on from there


def test_a_users_sigint_handler_is_left_alone():
    seen = []
    before = signal.signal(signal.SIGINT, lambda *a: seen.append(1))
    try:
        m = _model(jitnn.optimizers.Adam(0.01))
        m.fit(*_data(), epochs=1, batch_size=32, verbose=0)
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == [1]
    finally:
        signal.signal(signal.SIGINT, before)
