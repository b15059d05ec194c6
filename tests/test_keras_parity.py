"""Keras's meaning for the data idioms of a ported script: sample/class weights (against PyTorch's
weighted losses), validation_split, initial_epoch, evaluate(return_dict=True), count_params,
Layer.get_weights/set_weights, and inputs given as lists, pandas objects and memory-mapped files."""

import io
import os
import re
import subprocess
import sys
import tracemalloc
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_weights_equal
from test_backends import BACKENDS

from jitnn import Sequential, backend, optimizers
from jitnn.callbacks import Callback
from jitnn.cuda import runtime
from jitnn.datasets import fashion_mnist, load_fashion_mnist
from jitnn.layers import Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten, LeakyReLU
from jitnn.validation import as_features

FROZEN = 1e-30  # a learning rate whose steps vanish in float32 rounding: the weights stay as built


def problem(n=60, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    return x, rng.integers(0, classes, n), rng.uniform(0.0, 3.0, n)


def model_for(features=5, classes=3, lr=0.05, dtype="float32", loss="sparse_categorical_crossentropy",
              activation="softmax", device="cpu"):
    model = Sequential([Dense(7, activation="relu", input_dim=features), Dense(classes, activation=activation)],
                       dtype=dtype, device=device)
    model.compile(loss=loss, optimizer=optimizers.SGD(lr), metrics=["accuracy"] if classes > 1 else None)
    return model


# ---------------------------------------------------------------- the row-weighting op

@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (13, 10)])
def test_weight_rows_scales_rows_and_returns_weighted_mean(device, dtype, shape):
    ops = backend.get(device)
    rng = np.random.default_rng(shape[0])
    grad = rng.normal(size=shape).astype(dtype)
    rows = rng.uniform(size=shape[0]).astype(ops.row_dtype or dtype)
    w = rng.uniform(0, 4, shape[0])
    d_grad, d_rows = ops.to_device(grad.copy()), ops.to_device(rows.copy())
    value = ops.weight_rows(d_grad, d_rows, ops.to_device(w))
    tol = {"rtol": 1e-6} if dtype == np.float32 else {"rtol": 1e-13}
    np.testing.assert_allclose(ops.to_host(d_grad), grad.astype(np.float64) * w[:, None], **tol)
    np.testing.assert_allclose(ops.to_host(d_rows), rows * w, **tol)
    if value is not None:  # the CPU computes the batch value on the host
        np.testing.assert_allclose(value, np.sum(rows.astype(np.float64) * w) / shape[0], **tol)


# ---------------------------------------------------------------- weighted training step vs PyTorch

def torch_weighted_step(params, x, y, w, kind):
    """Keras' sum_over_batch_size weighted loss and its gradients, by PyTorch autograd in float64."""
    t = [torch.tensor(p.astype(np.float64), requires_grad=True) for p in params]
    h = torch.relu(torch.tensor(x, dtype=torch.float64) @ t[0] + t[1])
    z = h @ t[2] + t[3]
    if kind == "xent":
        rows = torch.nn.functional.cross_entropy(z, torch.tensor(y), reduction="none")
    else:
        rows = ((z - torch.tensor(y, dtype=torch.float64)) ** 2).mean(dim=1)
    loss = (torch.tensor(w) * rows).sum() / x.shape[0]
    loss.backward()
    return float(loss.detach()), [p.grad.numpy() for p in t]


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("kind", ["xent", "mse"])
def test_weighted_train_step_matches_torch(device, kind):
    x, labels, w = problem(n=11)
    x = x.astype(np.float64)
    if kind == "xent":
        model, y = model_for(dtype="float64", device=device), labels
    else:
        model = model_for(dtype="float64", loss="mse", activation="linear", classes=2, device=device)
        y = np.random.default_rng(1).normal(size=(11, 2))
    model.build(5, seed=3)
    params = model.get_weights()
    ops = model.ops
    y = model.prepare_targets(y, x)
    model.allocate(11, y_like=y)
    model.reset_sums()
    value = model.train_step(ops.to_device(x), ops.to_device(y), ops.to_device(w))
    ref_loss, ref_grads = torch_weighted_step(params, x, labels if kind == "xent" else y, w, kind)
    grads = [ops.to_host(g) for layer in model.layers for g in layer.grads]
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12, err_msg=f"gradient {i}")
    if value is not None:
        assert value == pytest.approx(ref_loss, rel=1e-12)
    assert ops.to_host(model.sums)[0] == pytest.approx(ref_loss * 11, rel=1e-12)  # the epoch's loss sum


# ---------------------------------------------------------------- fit(sample_weight / class_weight)

def test_fit_reported_loss_is_the_weighted_mean_over_all_rows():
    """With a zero learning rate the epoch's loss is Σ wᵢ·lᵢ / N over the whole set (Keras weighs each
    batch's sum_over_batch_size loss by its rows), which evaluate(sample_weight=) reproduces."""
    x, y, w = problem(n=50)
    model = model_for(lr=FROZEN)
    hist = model.fit(x, y, epochs=1, batch_size=16, sample_weight=w, verbose=0, seed=0)
    expected = model.evaluate(x, y, sample_weight=w)[0]
    probs = model.predict(x).astype(np.float64)
    by_hand = np.sum(w * -np.log(probs[np.arange(50), y])) / 50
    assert expected == pytest.approx(by_hand, rel=1e-5)
    assert hist.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert hist.history["loss"][0] != pytest.approx(model.evaluate(x, y)[0], rel=1e-3)


def test_doubled_sample_weights_equal_a_doubled_learning_rate_with_sgd():
    x, y, _ = problem()
    a, b = model_for(lr=0.05), model_for(lr=0.1)
    ha = a.fit(x, y, epochs=2, batch_size=8, sample_weight=np.full(60, 2.0), verbose=0, seed=4)
    hb = b.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert ha.history["loss"][0] == pytest.approx(2 * hb.history["loss"][0], rel=1e-5)


def test_class_weight_is_sample_weight_by_label():
    x, y, _ = problem()
    a, b = model_for(), model_for()
    ha = a.fit(x, y, epochs=2, batch_size=8, class_weight={0: 1.0, 1: 5.0}, verbose=0, seed=2)
    hb = b.fit(x, y, epochs=2, batch_size=8, sample_weight=np.where(y == 1, 5.0, 1.0), verbose=0, seed=2)
    assert_weights_equal(a.get_weights(), b.get_weights())
    assert ha.history == hb.history
    onehot = np.eye(3, dtype=np.float32)[y]  # one-hot targets: the label is the argmax
    c = model_for(loss="categorical_crossentropy")
    c.fit(x, onehot, epochs=2, batch_size=8, class_weight={0: 1.0, 1: 5.0}, verbose=0, seed=2)
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_allclose(wa, wc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"class_weight": {3: 1.0}}, r"class_weight\[3\]"),
    ({"class_weight": {-1: 1.0}}, r"class_weight\[-1\]"),
    ({"class_weight": {"a": 1.0}}, r"class_weight\['a'\]"),
    ({"class_weight": {0: -2.0}}, r"class_weight\[0\]=-2.0"),
    ({"class_weight": {0: float("nan")}}, r"class_weight\[0\]=nan"),
    ({"sample_weight": np.ones(59)}, r"shape \(60,\), received: shape=\(59,\)"),
    ({"sample_weight": -np.ones(60)}, r"sample_weight\[0\]=-1.0"),
    ({"sample_weight": np.ones(60), "class_weight": {0: 1.0}}, "not both"),
])
def test_bad_weights_are_rejected_naming_the_value(kwargs, message):
    x, y, _ = problem()
    with pytest.raises(ValueError, match=message):
        model_for().fit(x, y, verbose=0, **kwargs)


def test_class_weight_must_be_a_dict():
    x, y, _ = problem()
    with pytest.raises(TypeError, match="received: list"):
        model_for().fit(x, y, verbose=0, class_weight=[1.0, 2.0, 3.0])


# ---------------------------------------------------------------- validation_split

def test_validation_split_holds_out_the_last_rows_before_shuffling():
    x, y, w = problem(n=50)
    model = model_for(lr=FROZEN)
    hist = model.fit(x, y, epochs=1, batch_size=8, validation_split=0.1, sample_weight=w, verbose=0, seed=0)
    split = 45  # floor(50 * 0.9), as Keras
    val = model.evaluate(x[split:], y[split:], sample_weight=w[split:], return_dict=True)
    train = model.evaluate(x[:split], y[:split], sample_weight=w[:split])[0]
    assert hist.history["val_loss"][0] == pytest.approx(val["loss"], rel=1e-6)
    assert hist.history["val_accuracy"][0] == pytest.approx(val["accuracy"])
    assert hist.history["loss"][0] == pytest.approx(train, rel=1e-5)


def test_validation_data_wins_over_validation_split():
    x, y, _ = problem(n=40)
    hist = model_for(lr=FROZEN).fit(x, y, epochs=1, validation_split=0.5, validation_data=(x[:7], y[:7]),
                                 verbose=0, seed=0)
    model = model_for(lr=FROZEN)
    model.fit(x, y, epochs=0, seed=0, verbose=0)
    assert hist.history["val_loss"][0] == pytest.approx(model.evaluate(x[:7], y[:7])[0], rel=1e-6)


@pytest.mark.parametrize("split", [1.0, -0.1, 1.5, True, "0.1"])
def test_validation_split_out_of_range(split):
    x, y, _ = problem()
    with pytest.raises(ValueError, match="validation_split"):
        model_for().fit(x, y, validation_split=split, verbose=0)


def test_validation_split_that_leaves_a_side_empty():
    x, y, _ = problem(n=5)
    with pytest.raises(ValueError, match="5 samples"):
        model_for().fit(x, y, validation_split=1e-17, verbose=0)  # floor(5 * (1 - 1e-17)) = 5: no validation rows
    with pytest.raises(ValueError, match="1 samples"):
        model_for().fit(x[:1], y[:1], validation_split=0.5, verbose=0)  # no training rows


# ---------------------------------------------------------------- initial_epoch

class Epochs(Callback):
    def __init__(self):
        super().__init__()
        self.begun, self.ended = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.ended.append(epoch)


def test_initial_epoch_numbers_epochs_as_keras():
    x, y, _ = problem()
    seen = Epochs()
    out = io.StringIO()
    with redirect_stdout(out):
        hist = model_for().fit(x, y, epochs=5, initial_epoch=3, callbacks=[seen], verbose=2, seed=0)
    assert seen.begun == seen.ended == hist.epoch == [3, 4]
    assert len(hist.history["loss"]) == 2
    assert "Epoch 4/5" in out.getvalue() and "Epoch 5/5" in out.getvalue()
    assert "Epoch 3/5" not in out.getvalue()


def test_initial_epoch_at_or_past_epochs_trains_nothing():
    x, y, _ = problem()
    model = model_for()
    model.build(5, seed=0)
    before = model.get_weights()
    hist = model.fit(x, y, epochs=2, initial_epoch=2, verbose=0)
    assert hist.epoch == [] and hist.history == {}
    assert_weights_equal(before, model.get_weights())
    with pytest.raises(ValueError, match="initial_epoch=-1"):
        model.fit(x, y, initial_epoch=-1, verbose=0)


# ---------------------------------------------------------------- evaluate, count_params

def test_evaluate_return_dict_has_history_keys():
    x, y, _ = problem()
    model = model_for()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    values = model.evaluate(x, y)
    assert model.evaluate(x, y, return_dict=True) == {"loss": values[0], "accuracy": values[1]}
    reg = model_for(classes=1, loss="mse", activation="linear")
    reg.fit(x, y.astype(np.float32), epochs=1, verbose=0, seed=0)
    assert reg.evaluate(x, y.astype(np.float32), return_dict=True) == {"loss": reg.evaluate(x, y.astype(np.float32))}


def test_count_params_counts_every_weight():
    model = Sequential([Dense(512, activation="relu", input_dim=784), Dropout(0.2), Dense(10)])
    assert model.count_params() == 784 * 512 + 512 + 512 * 10 + 10  # from the declared input, unbuilt
    assert not model.built and model.layers[0].get_weights() == []
    model.build(784)
    assert model.count_params() == 784 * 512 + 512 + 512 * 10 + 10 == sum(w.size for w in model.get_weights())
    undeclared = Sequential([Dense(512), Dense(10)])
    with pytest.raises(ValueError, match="declares no input"):
        undeclared.count_params()


def test_count_params_includes_moving_statistics_built_or_not():
    # Keras counts non-trainable weights: BatchNormalization's 4 x channels (gamma, beta, mean, variance)
    model = Sequential([Conv2D(8, 3, input_shape=(12, 12, 3)), BatchNormalization(), Flatten(), Dense(4)])
    expected = (3 * 3 * 3 * 8 + 8) + 4 * 8 + (10 * 10 * 8 * 4 + 4)
    assert model.count_params() == expected and not model.built
    model.build((12, 12, 3), seed=0)
    assert model.count_params() == expected == sum(w.size for w in model.get_weights())


def test_summary_before_build_names_the_declared_input():
    model = Sequential([Dense(512, activation="relu", input_shape=(784,)), Dropout(0.2),
                        Dense(10, activation="softmax")])
    text = model.summary(print_fn=lambda s: None)
    assert "Dense 784\u2192512 relu" in text and "Dense 512\u219210 softmax" in text
    assert "Total params: 407,050" in text and not model.built


# ---------------------------------------------------------------- Layer.get_weights / set_weights

@pytest.mark.parametrize("device", BACKENDS)
def test_layer_weights_round_trip_as_numpy_copies(device):
    model = Sequential([Dense(4, activation="relu", input_dim=3), Dropout(0.5), Activation("tanh"),
                        LeakyReLU(), Dense(2)], device=device)
    model.build(3, seed=0)
    dense = model.layers[0]
    w, b = dense.get_weights()
    assert isinstance(w, np.ndarray) and w.shape == (3, 4) and b.shape == (4,)
    w[...] = 7.0  # a copy: the layer is unchanged
    assert not np.any(dense.get_weights()[0] == 7.0)
    new = [np.arange(12.0).reshape(3, 4), np.ones(4)]
    dense.set_weights(new)
    got = dense.get_weights()
    assert got[0].dtype == np.float32
    np.testing.assert_array_equal(got[0], new[0])
    np.testing.assert_array_equal(model.get_weights()[0], new[0])
    for layer in model.layers[1:4]:
        assert layer.get_weights() == []
        layer.set_weights([])


def test_layer_set_weights_validates_before_writing_anything():
    model = Sequential([Dense(4, input_dim=3), Dropout(0.1)])
    model.build(3, seed=0)
    dense = model.layers[0]
    before = dense.get_weights()
    with pytest.raises(ValueError, match="received: 1"):
        dense.set_weights([np.zeros((3, 4))])
    with pytest.raises(ValueError, match=r"weight 1 .* shape \(4,\), received: shape=\(5,\)"):
        dense.set_weights([np.zeros((3, 4)), np.zeros(5)])
    with pytest.raises(ValueError, match="weight 1 .* finite"):
        dense.set_weights([np.zeros((3, 4)), np.array([0, 0, np.nan, 0])])
    assert_weights_equal(before, dense.get_weights())
    with pytest.raises(ValueError, match="0 weight arrays, received: 1"):
        model.layers[1].set_weights([np.zeros(1)])


# ---------------------------------------------------------------- inputs: lists, pandas, memmaps

def test_lists_and_pandas_train_as_the_numpy_arrays():
    x, y, w = problem()
    ref = model_for()
    ref.fit(x, y, epochs=1, batch_size=8, sample_weight=w, verbose=0, seed=5)
    for xs, ys, ws in [(x.tolist(), y.tolist(), w.tolist()),
                       (pd.DataFrame(x, columns=list("abcde")), pd.Series(y), pd.Series(w))]:
        model = model_for()
        model.fit(xs, ys, epochs=1, batch_size=8, sample_weight=ws, verbose=0, seed=5)
        assert_weights_equal(ref.get_weights(), model.get_weights())
        np.testing.assert_array_equal(model.predict(xs), ref.predict(x))
        assert model.evaluate(xs, ys) == ref.evaluate(x, y)


def test_pandas_series_is_one_feature_and_mixed_frames_are_rejected():
    one = Sequential([Dense(1, input_dim=1)])
    one.compile(loss="mse", optimizer="sgd")
    s = pd.Series(np.linspace(0, 1, 9))
    one.fit(s, s * 2, epochs=1, verbose=0, seed=0)
    assert one.predict(s).shape == (9, 1)
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    with pytest.raises(TypeError, match="must hold real numbers"):
        one.predict(frame)


def traced_peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_float32_memmap_trains_without_a_full_copy(tmp_path):
    n, d = 40_000, 50  # 8 MB on disk
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(n, d)).astype(np.float32))
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = rng.integers(0, 3, n)
    assert np.shares_memory(as_features(x, np.float32), x)
    model = model_for(features=d)
    # the same fit once first: it compiles (a long fit takes the compiled step, whose compiler allocates
    # tens of MB) and sizes the buffers, so the traced fit shows only what training a memmap costs
    model.fit(x, y, epochs=1, batch_size=256, validation_split=0.1, verbose=0, seed=0)
    peak = traced_peak(lambda: model.fit(x, y, epochs=1, batch_size=256, validation_split=0.1, verbose=0))
    assert peak < x.nbytes / 4, f"fit on a memmap traced {peak} bytes for a {x.nbytes}-byte file"
    peak = traced_peak(lambda: model.predict(x, batch_size=512))
    assert peak < x.nbytes / 4 + n * 3 * 4  # the (n, 3) result is the only large allocation


def test_float64_memmap_is_converted_once_to_the_model_dtype(tmp_path):
    n, d = 20_000, 50
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(n, d)))
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    out = []
    peak = traced_peak(lambda: out.append(as_features(x, np.float32)))
    assert out[0].dtype == np.float32 and not np.shares_memory(out[0], x)
    assert peak < 1.25 * n * d * 4  # one float32 copy, no float64 intermediate
    np.testing.assert_array_equal(out[0], np.asarray(x, np.float32))


# ---------------------------------------------------------------- the ported Keras example

def test_keras_style_fashion_mnist_load_data():
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    flat, _ = load_fashion_mnist()
    np.testing.assert_array_equal(x_train.reshape(60000, 784) / np.float32(255), flat[0])
    np.testing.assert_array_equal(y_train, flat[1])


def test_ported_keras_mnist_mlp_trains_on_a_slice():
    """examples/keras_mnist_mlp.py, Keras's script with its imports changed, on its first 600 rows."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, KERAS_MNIST_ROWS="600", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, str(root / "examples" / "keras_mnist_mlp.py")], env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "600 train samples" in text and "600 test samples" in text
    assert "Total params: 669,706" in text  # 784*512 + 512 + 512*512 + 512 + 512*10 + 10, as Keras prints
    losses = [float(v) for v in re.findall(r"- loss: ([\d.]+) - accuracy", text)]
    val = re.findall(r"val_loss: [\d.]+ - val_accuracy", text)
    assert len(losses) == len(val) == 20 and losses[-1] < 0.6 * losses[0]
    accuracy = float(re.search(r"Test accuracy: ([\d.]+)", text).group(1))
    assert accuracy > 0.6  # 540 training rows of Fashion-MNIST: ten classes, chance is 0.1


@pytest.mark.cuda
@pytest.mark.skipif(not runtime.available(), reason="no CUDA device and no simulator")
def test_weighted_fit_on_the_gpu_matches_the_cpu():
    """The loop gathers each batch's weights on the device (gather_items) like its rows."""
    x, y, w = problem(n=23)
    runs = []
    for device in ("cpu", "cuda"):
        model = model_for(dtype="float64", device=device)
        hist = model.fit(x, y, epochs=2, batch_size=8, sample_weight=w, validation_split=0.2, verbose=0, seed=6)
        runs.append((model.get_weights(), hist.history))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(runs[0][1][key], runs[1][1][key], rtol=1e-10)
