"""Sequential: training, validation of inputs, NaN handling, allocation-free steps, save/load, callbacks,
predict/evaluate against numpy computations from the model's own outputs."""

import os
import re
import tracemalloc

import numpy as np
import pytest
from helpers import DTYPE_NAMES as DTYPES
from helpers import assert_weights_equal
from sklearn.datasets import make_classification

import jitnn.compiled_step
from jitnn import EarlyStopping, ModelCheckpoint, NonFiniteLossError, Sequential, load_model, optimizers
from jitnn.callbacks import Callback, ProgbarLogger
from jitnn.layers import Dense, Dropout

# ---------------------------------------------------------------- shared helpers


def classification(n=240, features=6, classes=3, seed=0):
    """A nearly separable problem: float features, int64 labels."""
    x, y = make_classification(n_samples=n, n_features=features, n_informative=4, n_redundant=0,
                               n_classes=classes, n_clusters_per_class=1, class_sep=2.0, random_state=seed)
    return x, y.astype(np.int64)


def classifier(features=6, classes=3, dtype="float32", optimizer=None, dropout=None, metrics=("accuracy",)):
    layers = [Dense(16, activation="relu", input_dim=features)]
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Dense(classes, activation="softmax"))
    model = Sequential(layers, dtype=dtype)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer or optimizers.Adam(0.01),
                  metrics=list(metrics))
    return model


def regression(n=128, features=4, seed=0):
    """y = x @ w + noise, 1-D."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    return x, x @ rng.normal(size=features) + 0.01 * rng.normal(size=n)


def regressor(features=4, dtype="float32", optimizer=None):
    model = Sequential([Dense(8, activation="tanh", input_dim=features), Dense(1)], dtype=dtype)
    model.compile(loss="mse", optimizer=optimizer or optimizers.Adam(0.01))
    return model


def weights_differ(a, b):
    return any(not np.array_equal(wa, wb) for wa, wb in zip(a, b))


def numpy_cce(probs, labels, eps=1e-7):
    return float(np.mean(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1 - eps))))


class Scripted(Callback):
    """Overwrites ``logs[key]`` with a scripted value each epoch (for callbacks after it) and keeps a
    copy of the weights at every epoch end."""

    def __init__(self, key=None, values=()):
        self.key, self.values, self.weights = key, list(values), []

    def on_epoch_end(self, epoch, logs=None):
        if self.key is not None:
            logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_learns_a_separable_problem(dtype):
    x, y = classification()
    model = classifier(dtype=dtype)
    hist = model.fit(x[:200], y[:200], epochs=15, batch_size=32, validation_data=(x[200:], y[200:]),
                     verbose=0, seed=0)
    h = hist.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 15 for v in h.values())
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["accuracy"][-1] > 0.85 and h["val_accuracy"][-1] > 0.8
    assert model.predict(x).dtype == np.dtype(dtype)
    assert all(w.dtype == np.dtype(dtype) for w in model.get_weights())


def test_same_seed_same_run_different_seed_differs():
    x, y = classification()

    def run(seed):
        model = classifier(dropout=0.2)
        hist = model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=seed)
        return model.get_weights(), hist.history

    (w1, h1), (w2, h2), (w3, h3) = run(7), run(7), run(8)
    assert_weights_equal(w1, w2)
    assert h1 == h2
    assert weights_differ(w1, w3)
    assert h1["loss"] != h3["loss"]


def test_unsupported_dtype_raises():
    with pytest.raises(ValueError, match="float32 or float64"):
        Sequential([Dense(2)], dtype="float16")


def test_integer_labels_and_one_hot_train_identically():
    x, y = classification()

    def run(targets):
        model = classifier(dtype="float64")
        hist = model.fit(x, targets, epochs=3, batch_size=16, verbose=0, seed=3)
        return model.get_weights(), hist.history["loss"]

    w_int, loss_int = run(y)
    w_hot, loss_hot = run(np.eye(3)[y])
    np.testing.assert_allclose(loss_int, loss_hot, rtol=1e-12)
    for a, b in zip(w_int, w_hot):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_binary_sigmoid_output_with_float_labels_trains():
    x, y = classification(classes=2)
    model = Sequential([Dense(8, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer=optimizers.Adam(0.02), metrics=["accuracy"])
    hist = model.fit(x, y.astype(np.float64), epochs=15, batch_size=32, verbose=0, seed=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.9
    p = model.predict(x)
    assert p.shape == (len(x), 1) and np.all((p > 0) & (p < 1))
    assert np.mean((p[:, 0] > 0.5) == y) > 0.9


def test_mse_regression_trains():
    x, y = regression()
    model = regressor()
    hist = model.fit(x, y, epochs=30, batch_size=16, verbose=0, seed=0)
    assert hist.history["loss"][-1] < 0.1 * hist.history["loss"][0]
    assert np.mean((model.predict(x)[:, 0] - y) ** 2) < 0.1 * np.var(y)


# ---------------------------------------------------------------- input validation, before any step


def _bad_fit_inputs():
    x, y = classification(n=40)
    nan_x = x.copy()
    nan_x[3, 2] = np.nan
    inf_x = x.copy()
    inf_x[5, 0] = np.inf
    bad_labels = y.copy()
    bad_labels[4] = 5
    neg_labels = y.copy()
    neg_labels[1] = -1
    nan_val = x[:10].copy()
    nan_val[0, 0] = np.nan
    ok = {"x": x, "y": y, "epochs": 2, "batch_size": 8}
    return {
        "nan-x": (dict(ok, x=nan_x), r"NaN.*row 3"),
        "inf-x": (dict(ok, x=inf_x), r"NaN/inf.*row 5"),
        "feature-count": (dict(ok, x=x[:, :5]), r"5 features.*expects 6"),
        "label-out-of-range": (dict(ok, y=bad_labels), r"label 5 at index 4 is out of range"),
        "negative-label": (dict(ok, y=neg_labels), r"label -1 at index 1"),
        "length-mismatch": (dict(ok, y=y[:-1]), r"different lengths: 40 samples vs 39"),
        "batch-size-0": (dict(ok, batch_size=0), r"batch_size"),
        "epochs-negative": (dict(ok, epochs=-1), r"epochs"),
        "epochs-float": (dict(ok, epochs=1.5), r"epochs"),
        "nan-validation-x": (dict(ok, validation_data=(nan_val, y[:10])), r"validation x.*NaN"),
    }


BAD_FIT = _bad_fit_inputs()


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_invalid_fit_inputs_raise_before_training(case):
    kwargs, match = BAD_FIT[case]
    model = classifier()
    model.build(6, seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        model.fit(verbose=0, seed=0, **kwargs)
    assert_weights_equal(model.get_weights(), before)
    assert model.optimizer.iterations == 0


# ---------------------------------------------------------------- non-finite loss


def record_steps(monkeypatch, model):
    """Patch the optimizer so every step first records a copy of all parameters."""
    copies = []
    step = model.optimizer.step

    def recording_step(params, grads, regularizers=None, on_param=None, **snapshots):
        copies.append([p.copy() for p in params])
        return step(params, grads, regularizers, on_param, **snapshots)

    monkeypatch.setattr(model.optimizer, "step", recording_step)
    return copies


@pytest.mark.parametrize("bad_call", [1, 2, 7])
def test_nan_loss_stops_and_keeps_last_good_weights(monkeypatch, bad_call):
    """The loss returns NaN at its ``bad_call``-th call (4 batches per epoch): training stops with an error
    naming the epoch and batch, and the weights are those that gave the last finite loss."""
    x, y = regression(n=32)
    model = regressor(dtype="float64")
    model.build(4, seed=0)
    initial = model.get_weights()
    calls = []
    value_and_grad = model.loss.value_and_grad

    def nan_at(*args):
        calls.append(1)
        loss = value_and_grad(*args)
        return float("nan") if len(calls) == bad_call else loss

    monkeypatch.setattr(model.loss, "value_and_grad", nan_at)
    copies = record_steps(monkeypatch, model)
    epoch, batch = (bad_call - 1) // 4 + 1, (bad_call - 1) % 4 + 1
    with pytest.raises(NonFiniteLossError, match=rf"loss became nan at epoch {epoch}, batch {batch} of 4"):
        model.fit(x, y, epochs=5, batch_size=8, verbose=0, seed=0)
    assert len(copies) == bad_call - 1
    expected = copies[-1] if copies else initial
    assert_weights_equal(model.get_weights(), expected)


def test_diverging_training_raises_with_finite_weights(monkeypatch):
    """A genuine blow-up: SGD with a huge learning rate on mse with large targets overflows float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)) * 10
    y = rng.normal(size=64) * 1e6
    model = regressor()
    model.compile(loss="mse", optimizer=optimizers.SGD(learning_rate=10.0))
    copies = record_steps(monkeypatch, model)
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf) at epoch \d+, batch \d+ of 8") as err:
        model.fit(x, y, epochs=20, batch_size=8, verbose=0, seed=0)
    assert "restored" in str(err.value)
    assert len(copies) >= 1, "the loss should stay finite for the first step"
    weights = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)
    assert_weights_equal(weights, copies[-1])


# ---------------------------------------------------------------- steady state allocates nothing

# Every batch-sized array of this model is at least 128 x 128 float32 = 64 KiB (input batch, hidden
# activations, logits, probabilities, their gradients) and every parameter gradient or optimizer moment at
# least 64 KiB, so one stray temporary of any of them exceeds ALLOC_BOUND. What stays under it are the Python
# objects a step makes and frees (array views, floats, argument tuples, dispatcher lookups): about 2-3 KiB.
ALLOC_BOUND = 32 * 1024
ALLOC_BATCH, ALLOC_FEATURES, ALLOC_HIDDEN, ALLOC_CLASSES = 128, 128, 256, 128


def warm_allocation_model(steps_per_epoch):
    """A model, trained one epoch (compiled kernels, built, buffers allocated), and its data."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps_per_epoch * ALLOC_BATCH, ALLOC_FEATURES)).astype(np.float32)
    y = rng.integers(0, ALLOC_CLASSES, size=len(x))
    model = Sequential([Dense(ALLOC_HIDDEN, activation="relu"), Dense(ALLOC_HIDDEN, activation="gelu"),
                        Dense(ALLOC_CLASSES, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=optimizers.Adam(1e-3), metrics=["accuracy"])
    jitnn.compiled_step.ENABLED = False  # these tests measure the layer-by-layer path: warm its buffers
    try:
        model.fit(x, y, epochs=1, batch_size=ALLOC_BATCH, verbose=0, seed=0)
    finally:
        jitnn.compiled_step.ENABLED = True
    return model, x, y


def traced_peak(fn):
    """(new bytes at the peak, new bytes still held, top allocation sites) while running ``fn``."""
    tracemalloc.start(25)
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        before = tracemalloc.take_snapshot()
        fn()
        current, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    top = "\n".join(str(s) for s in after.compare_to(before, "lineno")[:5])
    return peak - base, current - base, top


def test_train_step_and_optimizer_step_do_not_allocate():
    """Forward + loss + backward (``train_step``) and the optimizer step, on a batch already in place."""
    model, x, y = warm_allocation_model(steps_per_epoch=2)
    params = [p for layer in model.layers for p in layer.params]
    grads = [g for layer in model.layers for g in layer.grads]
    regs = [r for layer in model.layers for r in layer.regularizers]
    xb, yb = model.batch_buffers()[0][:ALLOC_BATCH], np.ascontiguousarray(y[:ALLOC_BATCH])
    xb[...] = x[:ALLOC_BATCH]
    losses_seen = []

    def steps():
        for _ in range(8):
            losses_seen.append(model.train_step(xb, yb))
            model.optimizer.step(params, grads, regs)

    peak, held, top = traced_peak(steps)
    assert np.all(np.isfinite(losses_seen)) and losses_seen[-1] < losses_seen[0]
    assert peak < ALLOC_BOUND, f"peak {peak} bytes of new allocations; top:\n{top}"
    assert held < 4 * 1024, f"{held} bytes still held after the steps; top:\n{top}"


def test_fit_loop_steady_state_does_not_allocate(monkeypatch):
    """The whole loop of ``fit`` (batching, step, NaN guard, optimizer, metrics) between two batches.

    The peak of new allocations is recorded for each interval from one ``train_step`` call to the next,
    which spans exactly one iteration of the batch loop; intervals touching the epoch's start are left out."""
    model, x, y = warm_allocation_model(steps_per_epoch=6)
    train_step = model.train_step
    peaks = []

    def measured(xb, yb):
        _, peak = tracemalloc.get_traced_memory()
        peaks.append(peak - measured.base)
        loss = train_step(xb, yb)
        tracemalloc.reset_peak()
        measured.base, _ = tracemalloc.get_traced_memory()
        return loss

    measured.base = 0
    monkeypatch.setattr(model, "train_step", measured)
    traced_peak(lambda: model.fit(x, y, epochs=1, batch_size=ALLOC_BATCH, verbose=0, seed=1))
    steady = peaks[1:]  # peaks[0] spans fit's own set-up
    assert len(steady) == 5
    assert max(steady) < ALLOC_BOUND, f"new bytes at the peak of each batch-loop iteration: {steady}"


# ---------------------------------------------------------------- save / load


def trained(epochs=1):
    x, y = classification()
    model = classifier()
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, seed=0)
    return model, x, y


def test_save_load_round_trip_continues_identically(tmp_path):
    model, x, y = trained()
    path = model.save(tmp_path / "model.npz")
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert_weights_equal(loaded.get_weights(), model.get_weights())
    assert loaded.optimizer.iterations == model.optimizer.iterations > 0
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=1)
    loaded.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=1)
    assert_weights_equal(loaded.get_weights(), model.get_weights())


def test_save_is_atomic(tmp_path, monkeypatch):
    model, _, _ = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    good, saved = path.read_bytes(), model.get_weights()
    model.layers[0].W[...] += 1.0  # the next save would write different weights

    def failing_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.npz"], "no temporary file may be left behind"
    monkeypatch.undo()
    assert_weights_equal(load_model(path).get_weights(), saved)


def _corrupt_files(good, tmp_path):
    """name -> path of a damaged copy of the model file ``good``."""
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    files = {
        "truncated": data[: len(data) // 2],
        "truncated-header": data[:20],
        "random-bytes": rng.integers(0, 256, size=len(data), dtype=np.uint8).tobytes(),
        "empty": b"",
    }
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.npz"
        out[name].write_bytes(content)
    variants = {
        "no-architecture": {k: v for k, v in arrays.items() if k != "__architecture__"},
        "shape-mismatch": dict(arrays, **{"layer0/kernel": np.zeros((6, 17), np.float32)}),
        "missing-weight": {k: v for k, v in arrays.items() if k != "layer1/bias"},
        "nan-weight": dict(arrays, **{"layer1/kernel": np.full_like(arrays["layer1/kernel"], np.nan)}),
        "bad-json": dict(arrays, __architecture__=np.frombuffer(b"{not json", np.uint8)),
    }
    for name, arrs in variants.items():
        out[name] = tmp_path / f"{name}.npz"
        np.savez(out[name], **arrs)
    return out


CORRUPTIONS = ["truncated", "truncated-header", "random-bytes", "empty", "no-architecture", "shape-mismatch",
               "missing-weight", "nan-weight", "bad-json"]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_file_raises_and_changes_nothing(tmp_path, corruption):
    model, x, _ = trained()
    good = tmp_path / "good.npz"
    model.save(good)
    bad = _corrupt_files(good, tmp_path)[corruption]
    with pytest.raises(ValueError):
        load_model(bad)
    other = classifier()
    other.build(6, seed=42)
    before, pred = other.get_weights(), other.predict(x)
    with pytest.raises(ValueError):
        other.load_weights(bad)
    assert_weights_equal(other.get_weights(), before)
    np.testing.assert_array_equal(other.predict(x), pred)
    other.load_weights(good)  # and a good file still loads
    assert_weights_equal(other.get_weights(), model.get_weights())


def test_load_weights_from_a_different_architecture_raises(tmp_path):
    model, _, _ = trained()
    model.save(tmp_path / "m.npz")
    other = Sequential([Dense(17, activation="relu"), Dense(3, activation="softmax")])
    other.build(6, seed=0)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"layer0/kernel has shape \(6, 16\), the model expects \(6, 17\)"):
        other.load_weights(tmp_path / "m.npz")
    assert_weights_equal(other.get_weights(), before)


# ---------------------------------------------------------------- callbacks


def test_early_stopping_restores_best_weights():
    x, y = classification()
    model = classifier()
    script = Scripted("val_loss", [1.0, 0.5, 0.7, 0.6, 0.55, 0.9, 0.9, 0.9])  # best at epoch 1, never beaten
    stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    hist = model.fit(x, y, epochs=8, batch_size=32, validation_data=(x, y), verbose=0, seed=0,
                     callbacks=[script, stop])
    ran = len(hist.history["loss"])
    assert ran < 8 and stop.stopped_epoch == ran - 1
    assert weights_differ(script.weights[1], script.weights[-1])
    assert_weights_equal(model.get_weights(), script.weights[1])


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_early_stopping_patience_counts_epochs_without_improvement(patience):
    """Keras' documented example: patience=3 and a loss that never improves after the first epoch run
    4 epochs; patience=0 (no waiting) and patience=1 both stop at the first epoch without improvement."""
    x, y = classification()
    model = classifier()
    script = Scripted("loss", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    stop = EarlyStopping(monitor="loss", patience=patience)
    hist = model.fit(x, y, epochs=8, batch_size=32, verbose=0, seed=0, callbacks=[script, stop])
    assert len(hist.history["loss"]) == 1 + max(patience, 1)
    assert_weights_equal(model.get_weights(), script.weights[-1])  # restore_best_weights=False


def test_early_stopping_on_a_real_plateau():
    """A learning rate so small that the loss improves by less than min_delta: training stops early."""
    x, y = classification()
    model = classifier(optimizer=optimizers.SGD(1e-9))
    stop = EarlyStopping(monitor="loss", patience=2, min_delta=1e-3)
    hist = model.fit(x, y, epochs=50, batch_size=32, verbose=0, seed=0, callbacks=[stop])
    assert len(hist.history["loss"]) <= 5 and stop.stopped_epoch is not None
    assert np.ptp(hist.history["loss"]) < 1e-3


def test_early_stopping_mode_max_on_accuracy():
    x, y = classification()
    model = classifier()
    script = Scripted("accuracy", [0.5, 0.9, 0.8, 0.7, 0.6, 0.5])
    stop = EarlyStopping(monitor="accuracy", patience=0, restore_best_weights=True)
    hist = model.fit(x, y, epochs=6, batch_size=32, verbose=0, seed=0, callbacks=[script, stop])
    assert len(hist.history["loss"]) == 3
    assert_weights_equal(model.get_weights(), script.weights[1])


def test_model_checkpoint_writes_loadable_files(tmp_path):
    x, y = classification()
    model = classifier()
    every = ModelCheckpoint(tmp_path / "every-{epoch:02d}.npz")
    script = Scripted("val_loss", [0.9, 1.5, 0.3])
    best = ModelCheckpoint(tmp_path / "best-{epoch}.npz", monitor="val_loss", save_best_only=True)
    model.fit(x, y, epochs=3, batch_size=32, validation_data=(x, y), verbose=0, seed=0,
              callbacks=[every, script, best])
    names = sorted(os.listdir(tmp_path))
    assert names == ["best-1.npz", "best-3.npz", "every-01.npz", "every-02.npz", "every-03.npz"]
    np.testing.assert_array_equal(load_model(tmp_path / "every-03.npz").predict(x), model.predict(x))
    assert_weights_equal(load_model(tmp_path / "every-01.npz").get_weights(), script.weights[0])


class HookLog(Callback):
    """Records every hook the loop calls, in order (the batch hooks through Keras' on_batch_* aliases)."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_callback_hooks_run_in_keras_order_with_running_logs():
    x, y = classification(n=50)
    model = classifier()
    log = HookLog()
    history = model.fit(x, y, epochs=2, batch_size=20, verbose=0, seed=0, callbacks=[log])
    kinds = [c[0] for c in log.calls]
    per_epoch = ["epoch_begin"] + ["batch_begin", "batch_end"] * 3 + ["epoch_end"]
    assert kinds == ["train_begin"] + per_epoch * 2 + ["train_end"]
    assert [c[1] for c in log.calls if c[0] == "batch_end"] == [0, 1, 2] * 2
    last_batch, epoch_end = log.calls[7], log.calls[8]
    assert last_batch[2] == pytest.approx(epoch_end[2])  # the running means after the last batch are the epoch's
    assert epoch_end[2]["loss"] == history.history["loss"][0]
    assert set(epoch_end[2]) == {"loss", "accuracy"}


@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_bar_is_a_callback(verbose, capsys):
    x, y = classification(n=50)
    model = classifier()
    history = model.fit(x, y, epochs=2, batch_size=20, verbose=verbose, seed=0)
    out = capsys.readouterr().out
    assert out.count("Epoch 1/2\n") == out.count("Epoch 2/2\n") == 1
    last = out.split("Epoch 2/2\n")[1].split("\r")[-1]
    assert re.fullmatch(r"3/3 \[=+\] - \d+\.\ds - loss: (\d\.\d{4}) - accuracy: \d\.\d{4}\n", last), last
    assert float(re.search(r"loss: (\d\.\d{4})", last)[1]) == pytest.approx(history.history["loss"][1], abs=1e-4)
    assert ("\r1/3 [" in out) == (verbose == 1)  # verbose=2: one line per epoch, no bar
    model.fit(x, y, epochs=1, batch_size=20, verbose=0)
    assert capsys.readouterr().out == ""
    bar = ProgbarLogger(verbose=2)
    model.fit(x, y, epochs=1, batch_size=20, verbose=0, callbacks=[bar])  # passed by hand, as in Keras
    assert capsys.readouterr().out.startswith("Epoch 1/1\n3/3 [")


def test_train_step_test_step_and_apply_gradients_are_one_fit_step():
    """fit's first step by hand: same loss, metric sums and weights as a fit of one batch."""
    x, y = classification(n=32)
    by_hand, fitted = classifier(dtype="float64"), classifier(dtype="float64")
    for m in (by_hand, fitted):
        m.build(6, seed=0)
    fitted.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    by_hand.allocate(32)
    yp = by_hand.prepare_targets(y, x)
    by_hand.reset_sums()
    loss = by_hand.train_step(x, yp)
    assert loss == pytest.approx(fitted.history.history["loss"][0], rel=1e-12)
    sums = by_hand.ops.to_host(by_hand.sums)
    assert sums[1] / 32 == pytest.approx(fitted.history.history["accuracy"][0], rel=1e-12)
    by_hand.apply_gradients()
    assert_weights_equal(by_hand.get_weights(), fitted.get_weights())
    by_hand.reset_sums()
    value = by_hand.test_step(x, yp)  # inference mode, nothing trained
    assert value == pytest.approx(by_hand.evaluate(x, y)[0], rel=1e-9)  # evaluate: from probabilities
    assert_weights_equal(by_hand.get_weights(), fitted.get_weights())


# ---------------------------------------------------------------- inference


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_in_batches_equals_one_batch(dtype):
    model, x, _ = trained()
    if dtype == "float64":
        model = classifier(dtype=dtype)
        model.build(6, seed=0)
    whole = model.predict(x, batch_size=len(x))
    for batch_size in (1, 7, 64):
        np.testing.assert_allclose(model.predict(x, batch_size=batch_size), whole,
                                   rtol=1e-6 if dtype == "float32" else 1e-14, atol=1e-7)
    assert whole.shape == (len(x), 3) and whole.dtype == np.dtype(dtype)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-5)


def test_evaluate_matches_numpy_from_predict():
    model, x, y = trained(epochs=2)
    loss, acc = model.evaluate(x, y)
    probs = model.predict(x).astype(np.float64)
    np.testing.assert_allclose(loss, numpy_cce(probs, y), rtol=1e-5)
    assert acc == pytest.approx(np.mean(probs.argmax(axis=1) == y))
    single = Sequential([Dense(3, activation="softmax")])
    single.compile(loss="categorical_crossentropy")
    single.build(6, seed=0)
    assert isinstance(single.evaluate(x, y), float)


def test_summary_lists_layers_and_parameter_counts():
    model = Sequential([Dense(8, activation="relu"), Dropout(0.5), Dense(3, activation="softmax")], name="net")
    model.build(4, seed=0)
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]
    assert '"net"' in text
    rows = [line for line in text.splitlines() if line.startswith("[")]
    assert len(rows) == 3
    assert re.search(r"Dense 4.8 relu\s+\(N, 8\)\s+40$", rows[0])  # 4*8 + 8
    assert re.search(r"Dropout 0.5\s+\(N, 8\)\s+0$", rows[1])
    assert re.search(r"Dense 8.3 softmax\s+\(N, 3\)\s+27$", rows[2])  # 8*3 + 3
    assert "Total params: 67" in text
