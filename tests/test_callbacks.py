"""The Keras callbacks beyond History/EarlyStopping/ModelCheckpoint, in real fit runs where the hook
is epoch-level: each learning rate against a run that sets the same rates by hand, the CSV against
history, and the stops against scripted monitors."""

import csv
import math
import re

import numpy as np
import pytest
from test_model import Scripted, assert_weights_equal, classification, classifier

from jitnn import NonFiniteLossError, Sequential, compiled_step, optimizers
from jitnn.callbacks import (
    CSVLogger,
    LambdaCallback,
    LearningRateScheduler,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from jitnn.layers import Dense


class RecordLR(Scripted):
    """Scripted, plus the learning rate the optimizer holds at each epoch end."""

    def __init__(self, key=None, values=()):
        super().__init__(key, values)
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.rates.append(self.model.optimizer.current_learning_rate())


def full_batch_sgd(lr=0.1):
    """A deterministic run: full batch, no shuffle, plain SGD, so epochs can be replayed one by one."""
    model = classifier(optimizer=optimizers.SGD(lr))
    model.build(6, seed=0)
    return model


def test_learning_rate_scheduler_sets_each_epochs_rate():
    x, y = classification(n=60)
    schedule = [0.3, 0.1, 0.05, 0.01]
    model, rec = full_batch_sgd(), RecordLR()
    history = model.fit(x, y, epochs=4, batch_size=60, shuffle=False, verbose=0,
                        callbacks=[rec, LearningRateScheduler(lambda epoch: schedule[epoch])])
    assert rec.rates == pytest.approx(schedule)
    assert model.optimizer.learning_rate == pytest.approx(schedule[-1])  # not the rate of a fifth epoch
    # the same run, one epoch per fit with the rate set by hand: the same weights at every epoch
    by_hand = full_batch_sgd()
    for epoch, lr in enumerate(schedule):
        by_hand.optimizer.learning_rate = lr
        by_hand.fit(x, y, epochs=1, batch_size=60, shuffle=False, verbose=0)
        assert_weights_equal(by_hand.get_weights(), rec.weights[epoch])
    assert len(history.history["loss"]) == 4


def test_learning_rate_scheduler_two_arguments_and_epoch_begin():
    model = full_batch_sgd(0.2)
    x, y = classification(n=30)
    rec = RecordLR()
    sched = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    model.fit(x, y, epochs=3, batch_size=30, verbose=0, callbacks=[rec, sched])
    assert rec.rates == pytest.approx([0.1, 0.05, 0.025])
    # a loop that also calls on_epoch_begin does not apply the schedule twice
    sched.set_model(model)
    sched.on_train_begin()
    sched.on_epoch_begin(0)
    assert model.optimizer.learning_rate == pytest.approx(0.0125)
    sched.on_epoch_begin(3)  # another epoch than the pre-applied one: undone, then applied
    assert model.optimizer.learning_rate == pytest.approx(0.0125)


@pytest.mark.parametrize("bad", [lambda e: 0.0, lambda e: float("nan"), lambda e: "0.1"])
def test_learning_rate_scheduler_rejects_bad_rates(bad):
    x, y = classification(n=30)
    with pytest.raises(ValueError, match="schedule"):
        full_batch_sgd().fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(bad)])
    with pytest.raises(TypeError, match="callable"):
        LearningRateScheduler(0.1)


def test_scheduler_refuses_an_optimizer_schedule():
    model = classifier(optimizer=optimizers.SGD(optimizers.StepDecay(0.1)))
    x, y = classification(n=30)
    with pytest.raises(TypeError, match="schedule"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda e: 0.1)])


def test_reduce_lr_on_plateau_follows_keras_rules():
    x, y = classification(n=30)
    #         epoch:   0    1    2    3    4    5    6    7    8    9
    scores = [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.8, 0.85, 0.86, 0.87]
    reduce = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1, min_delta=0.0,
                               min_lr=0.02)
    rec = RecordLR()
    model = full_batch_sgd(0.1)
    model.fit(x, y, epochs=10, batch_size=30, verbose=0, callbacks=[Scripted("score", scores), reduce, rec])
    # Keras' rules: 2 and 3 without gain -> halve after 3; the cooldown ends at 4, which counts as the
    # first epoch of the new wait; 5 -> halve; 6 improves; 7, 8 -> halve, clamped to min_lr.
    assert rec.rates == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02, 0.02])


def test_reduce_lr_on_plateau_validates_and_warns():
    for kw, match in [({"factor": 1.0}, "factor"), ({"factor": 0}, "factor"), ({"patience": -1}, "patience"),
                      ({"cooldown": 1.5}, "cooldown"), ({"min_lr": -1}, "min_lr"), ({"mode": "up"}, "mode")]:
        with pytest.raises(ValueError, match=match):
            ReduceLROnPlateau(**kw)
    x, y = classification(n=30)
    with pytest.warns(UserWarning, match="val_loss"):
        full_batch_sgd().fit(x, y, epochs=1, verbose=0, callbacks=[ReduceLROnPlateau()])


def test_csv_logger_writes_the_history(tmp_path):
    x, y = classification(n=90)
    path = tmp_path / "log.csv"
    model = classifier()
    history = model.fit(x[:60], y[:60], epochs=3, validation_data=(x[60:], y[60:]), verbose=0, seed=0,
                        callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    for epoch, row in enumerate(rows[1:]):
        assert int(row[0]) == epoch
        for key, value in zip(rows[0][1:], row[1:]):
            assert float(value) == history.history[key][epoch]  # repr: no digits lost
    model.fit(x[:60], y[:60], epochs=2, verbose=0, callbacks=[CSVLogger(path, separator=";", append=True)])
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 6 and lines[4].startswith("0;") and lines[4].count(";") == 2


def test_csv_logger_validates():
    with pytest.raises(ValueError, match="separator"):
        CSVLogger("x.csv", separator=";;")


def test_terminate_on_nan_stops_at_epoch_end():
    x, y = classification(n=30)
    model = full_batch_sgd()
    history = model.fit(x, y, epochs=5, verbose=0,
                        callbacks=[Scripted("loss", [0.5, math.inf, 0.4, 0.3, 0.2]), TerminateOnNaN()])
    assert len(history.epoch) == 2


@pytest.mark.parametrize("hook", ["on_train_batch_end", "on_batch_end"])
def test_terminate_on_nan_at_batch_end(hook, capsys):
    model = Sequential([Dense(2)])
    cb = TerminateOnNaN()
    cb.set_model(model)
    getattr(cb, hook)(3, {"loss": 0.1})
    assert not model.stop_training
    getattr(cb, hook)(4, {"loss": float("nan")})
    assert model.stop_training and "Batch 4" in capsys.readouterr().out


def test_lambda_callback_in_fit_and_batch_hooks():
    x, y = classification(n=30)
    seen = []
    cb = LambdaCallback(on_train_begin=lambda logs: seen.append("begin"),
                        on_epoch_end=lambda epoch, logs: seen.append((epoch, round(logs["loss"], 9))),
                        on_train_end=lambda logs: seen.append("end"),
                        on_batch_end=lambda batch, logs: seen.append(("batch", batch)),
                        on_train_batch_begin=lambda batch, logs: seen.append(("train_batch", batch)))
    history = classifier().fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    epochs = [(e, round(v, 9)) for e, v in enumerate(history.history["loss"])]
    no_batches = [s for s in seen if not (isinstance(s, tuple) and "batch" in str(s[0]))]
    assert no_batches == ["begin", *epochs, "end"]
    seen.clear()
    cb.on_train_batch_begin(0)
    cb.on_train_batch_end(0)
    cb.on_epoch_begin(0)  # not given: nothing
    assert seen == [("train_batch", 0), ("batch", 0)]


def test_lambda_callback_rejects_non_callables():
    with pytest.raises(TypeError, match="on_epoch_end"):
        LambdaCallback(on_epoch_end=3)


def diverging_regression(lr, rows=256):
    """A real divergence: SGD at too large a learning rate on targets near 100 overflows float32 (lr=30:
    a loss of inf about ten steps in; lr=1e38: an inf weight in the first update)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 3)).astype(np.float32)
    y = (x @ np.array([1.0, 2.0, 3.0], np.float32) + 100)[:, None]
    model = Sequential([Dense(1, input_dim=3)])
    model.compile(loss="mse", optimizer=optimizers.SGD(lr))
    model.build(3, seed=0)
    return model, x, y


@pytest.mark.parametrize("batch_size, path", [(16, "layers"), (1, "compiled")])
def test_terminate_on_nan_ends_a_real_diverging_fit(batch_size, path, capsys, monkeypatch):
    # each path chosen outright: whether a 32-step fit compiles depends on what this process compiled before
    monkeypatch.setattr(compiled_step, "ENABLED", path == "compiled")
    monkeypatch.setattr(compiled_step, "MIN_STEPS", 0)
    epochs = 2
    model, x, y = diverging_regression(30)
    with pytest.raises(NonFiniteLossError):  # without the callback: the NaN guard's error
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=False)
    model, x, y = diverging_regression(30)
    with pytest.warns(RuntimeWarning, match="loss became inf .* restored; TerminateOnNaN"):
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=False,
                            callbacks=[TerminateOnNaN()])
    out = capsys.readouterr().out
    assert model.stop_training and history.epoch == [0] and not math.isfinite(history.history["loss"][0])
    assert out.count("Invalid loss, terminating training") == 1
    bad = int(re.search(r"Batch (\d+): Invalid loss", out).group(1))  # 0-based, as Keras numbers batches
    assert bad >= 5 and model.step_path.startswith(path)
    # the weights are those that produced the last finite loss (batch bad - 1's): the same model trained
    # on the batches before that one
    reference, _, _ = diverging_regression(30)
    good_rows = (bad - 1) * batch_size
    reference.fit(x[:good_rows], y[:good_rows], epochs=1, batch_size=batch_size, verbose=0, shuffle=False)
    assert_weights_equal(model.get_weights(), reference.get_weights())
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_terminate_on_nan_after_an_update_that_overflows_a_weight():
    model, x, y = diverging_regression(1e38)  # the first update's weights are inf; its loss was finite
    start = model.get_weights()
    with pytest.warns(RuntimeWarning, match="a weight became NaN or inf .* TerminateOnNaN"):
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False,
                            callbacks=[TerminateOnNaN()])
    assert history.epoch == [0] and model.stop_training
    for w, w0 in zip(model.get_weights(), start):
        np.testing.assert_array_equal(w, w0)
