"""Callback constructors refuse bad arguments at once, naming them (issue 14, defect 11)."""

import numpy as np
import pytest

from jitnn import Dense, EarlyStopping, ModelCheckpoint, Sequential, load_model


@pytest.mark.parametrize("filepath", ["m-{foo}.npz", "m-{}.npz", "m-{0}.npz", "m-{epoch.real}.npz",
                                      "m-{epoch[0]}.npz", "m-{val_acc}.npz", "m-{val_nope}.npz"])
def test_model_checkpoint_refuses_a_field_it_cannot_fill(filepath):
    with pytest.raises(ValueError, match=r"filepath field \{.*\} is not a key ModelCheckpoint can fill"):
        ModelCheckpoint(filepath)


def test_model_checkpoint_refuses_a_broken_format_and_wrong_types():
    with pytest.raises(ValueError, match="not a valid format string"):
        ModelCheckpoint("m-{epoch.npz")
    with pytest.raises(TypeError, match="filepath must be a str or path, received: filepath=3"):
        ModelCheckpoint(3)
    with pytest.raises(TypeError, match="save_best_only must be a bool"):
        ModelCheckpoint("m.npz", save_best_only="yes")
    with pytest.raises(TypeError, match="monitor must be a log key"):
        ModelCheckpoint("m.npz", monitor=None)


def test_model_checkpoint_fills_every_field_it_accepts(tmp_path):
    path = tmp_path / "m-{epoch:02d}-{loss:.3f}-{val_loss:.3f}-{accuracy:.2f}-{val_accuracy:.2f}.npz"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.integers(0, 2, 16)
    model = Sequential([Dense(2, activation="softmax", input_dim=3)])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=[ModelCheckpoint(path)], verbose=0)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert len(saved) == 2 and saved[0].startswith("m-01-") and saved[1].startswith("m-02-")
    load_model(tmp_path / saved[1])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"patience": "3"}, TypeError, "patience must be an int, received: patience='3'"),
    ({"patience": 2.5}, TypeError, "patience must be an int, received: patience=2.5"),
    ({"patience": True}, TypeError, "patience must be an int, received: patience=True"),
    ({"patience": -1}, ValueError, "patience must be >= 0, received: patience=-1"),
    ({"min_delta": "0.1"}, TypeError, "min_delta must be a finite number, received: min_delta='0.1'"),
    ({"min_delta": float("nan")}, TypeError, "min_delta must be a finite number"),
    ({"monitor": 3}, TypeError, "monitor must be a log key"),
    ({"mode": "up"}, ValueError, "mode must be 'min', 'max' or 'auto'"),
    ({"restore_best_weights": "no"}, TypeError, "restore_best_weights must be a bool"),
])
def test_early_stopping_refuses_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        EarlyStopping(**kwargs)


def test_early_stopping_accepts_numpy_ints():
    assert EarlyStopping(patience=np.int64(3)).patience == 3
