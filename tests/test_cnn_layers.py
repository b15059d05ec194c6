"""Conv2D, pooling, BatchNormalization, Flatten and Reshape through the model, against PyTorch in float64.

Each case is a small Sequential ending in Flatten (+ Dense) under an MSE loss; one ``train_step`` gives
the loss and every parameter's gradient, which must equal PyTorch's for the same net (NCHW inside torch,
permuted at each conv/pool). A 1x1 probe Conv2D first makes the layer under test compute its dX: the
probe's weight gradient checks it. Finite differences check every parameter of one net with every layer.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import central_diff

import jitnn
from jitnn import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Flatten,
    GlobalAveragePooling2D,
    MaxPooling2D,
    Reshape,
    Sequential,
)
from jitnn.backend.cpu import CPU, CPUOps
from jitnn.backend.ops import Ops
from jitnn.kernels.pooling import pool_geometry

IMAGE_OPS = ("conv2d_workspace", "conv2d", "backprop_conv2d", "maxpool2d", "backprop_maxpool2d", "avgpool2d",
             "backprop_avgpool2d", "global_avgpool2d", "backprop_global_avgpool2d", "batchnorm_workspace",
             "batchnorm_train", "batchnorm_inference", "batchnorm_update_moving", "backprop_batchnorm")
TORCH_ACT = {"linear": lambda t: t, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def probe():
    return Conv2D(3, 1, use_bias=False)


# name -> (input shape, batch, layers); the layers are made fresh for every call
CASES = {
    "conv_direct_relu": ((7, 9, 1), 4, lambda: [Conv2D(3, 3, activation="relu"), Flatten(), Dense(4)]),
    "conv_gemm_same_stride2": ((8, 7, 3), 3, lambda: [Conv2D(11, 1), Conv2D(5, (3, 2), strides=2, padding="same",
                                                                           activation="tanh"), Flatten()]),
    "conv_dilated_same": ((9, 10, 2), 2, lambda: [probe(), Conv2D(4, 3, dilation_rate=2, padding="same"),
                                                   Flatten()]),
    "conv_1x1_no_bias_batch1": ((5, 6, 4), 1, lambda: [probe(), Conv2D(2, 1, use_bias=False, activation="sigmoid"),
                                                       Flatten()]),
    "conv_kernel_as_input": ((4, 5, 3), 3, lambda: [probe(), Conv2D(6, (4, 5)), Flatten()]),
    "conv_strided_valid_odd": ((11, 13, 9), 2, lambda: [Conv2D(7, (5, 3), strides=(3, 2), activation="relu"),
                                                        Flatten(), Dense(3)]),
    "maxpool_valid": ((8, 9, 2), 3, lambda: [probe(), MaxPooling2D(2), Flatten()]),
    "maxpool_same_overlap": ((7, 8, 2), 2, lambda: [probe(), MaxPooling2D(3, strides=2, padding="same"), Flatten()]),
    "avgpool_same": ((7, 5, 2), 2, lambda: [probe(), AveragePooling2D((2, 3), strides=1, padding="same"), Flatten()]),
    "avgpool_valid": ((6, 9, 1), 3, lambda: [probe(), AveragePooling2D(3), Flatten()]),
    "global_avgpool": ((5, 7, 4), 3, lambda: [probe(), GlobalAveragePooling2D(), Dense(2)]),
    "reshape": ((4, 6, 2), 2, lambda: [probe(), Reshape((6, -1)), Reshape((2, 6, 6)), Flatten()]),
    "batchnorm_conv": ((6, 5, 2), 4, lambda: [probe(), BatchNormalization(momentum=0.9), Flatten()]),
    "batchnorm_dense": ((12,), 6, lambda: [Dense(5), BatchNormalization(epsilon=0.01), Activation("relu"),
                                            Dense(3)]),
    "batchnorm_no_scale_center": ((5, 5, 3), 3, lambda: [probe(), BatchNormalization(center=False, scale=False),
                                                         Flatten()]),
}


def to_nchw(t):
    return t.permute(0, 3, 1, 2)


def to_nhwc(t):
    return t.permute(0, 2, 3, 1)


def torch_forward(layers, x, weights, training=True):
    """The jitnn net ``layers`` (built) in PyTorch, on NHWC tensor ``x`` with ``weights`` (leaf tensors,
    one list per layer in ``params`` order, then its state)."""
    t = x
    for layer, w in zip(layers, weights):
        kind = layer.kind
        if kind == "Conv2D":
            top, bottom, left, right = layer.pads
            z = F.conv2d(F.pad(to_nchw(t), (left, right, top, bottom)), w[0].permute(3, 2, 0, 1),
                         w[1] if layer.use_bias else None, stride=layer.strides, dilation=layer.dilation_rate)
            t = TORCH_ACT[layer.activation.name](to_nhwc(z))
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            h, wd = layer.input_shape[:2]
            oh, ow, top, left = pool_geometry(h, wd, layer.pool_size, layer.strides, layer.padding)
            bottom = max((oh - 1) * layer.strides[0] + layer.pool_size[0] - h, 0) - top
            right = max((ow - 1) * layer.strides[1] + layer.pool_size[1] - wd, 0) - left
            pad = (left, right, top, bottom)
            if kind == "MaxPooling2D":
                t = to_nhwc(F.max_pool2d(F.pad(to_nchw(t), pad, value=-np.inf), layer.pool_size, layer.strides))
            else:  # padded cells excluded from the mean: sum over the window / count of real cells
                s = F.avg_pool2d(F.pad(to_nchw(t), pad), layer.pool_size, layer.strides)
                ones = F.pad(torch.ones_like(to_nchw(t)[:1, :1]), pad)
                t = to_nhwc(s / F.avg_pool2d(ones, layer.pool_size, layer.strides))
        elif kind == "GlobalAveragePooling2D":
            t = t.mean(dim=(1, 2))
        elif kind in ("Flatten", "Reshape"):
            t = t.reshape(t.shape[0], *layer.output_shape)
        elif kind == "Dense":
            t = TORCH_ACT[layer.activation.name](t @ w[0] + (w[1] if layer.use_bias else 0))
        elif kind == "Activation":
            t = TORCH_ACT[layer.activation.name](t)
        elif kind == "BatchNormalization":
            c = layer.channels
            gamma = w[0] if layer.scale else None
            beta = w[int(layer.scale)] if layer.center else None
            mm, mv = w[-2].detach().clone(), w[-1].detach().clone()
            flat = t.reshape(-1, c)
            y = F.batch_norm(flat, mm, mv, gamma, beta, training=training, eps=layer.epsilon)
            t = y.reshape(t.shape)
        else:
            raise AssertionError(kind)
    return t


def make(name, dtype="float64", seed=0):
    shape, batch, factory = CASES[name]
    model = Sequential(factory(), dtype=dtype)
    model.build(shape, seed=seed)
    model.compile(loss="mse", optimizer="sgd")
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:  # random, not initial, biases and BN weights: every term matters
        for p in layer.params:
            if p.ndim == 1:
                p[...] = rng.uniform(0.5, 1.5, p.shape)
    x = rng.standard_normal((batch, *shape))
    y = rng.standard_normal((batch, model.output_dim))
    model.allocate(batch, y_like=y)
    return model, x, y


def torch_step(model, x, y):
    weights = [[torch.tensor(np.array(a), requires_grad=True) for a in (*layer.params, *layer.state)]
               for layer in model.layers]
    out = torch_forward(model.layers, torch.tensor(x), weights)
    loss = F.mse_loss(out, torch.tensor(y))
    loss.backward()
    grads = [[w.grad.numpy() for w in ws[:len(layer.params)]] for layer, ws in zip(model.layers, weights)]
    return float(loss.detach()), grads, weights


@pytest.mark.parametrize("name", list(CASES))
def test_forward_backward_against_torch(name):
    model, x, y = make(name)
    want_loss, want_grads, _ = torch_step(model, x, y)
    got_loss = model.train_step(x, y)
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for i, (layer, grads) in enumerate(zip(model.layers, want_grads)):
        for name_, got, want in zip(layer.param_names, layer.grads, grads):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"layer {i} {name_}")


@pytest.mark.parametrize("name", list(CASES))
def test_inference_against_torch(name):
    model, x, _ = make(name)
    model.train_step(x, np.zeros((x.shape[0], model.output_dim)))  # moves BN's moving statistics
    weights = [[torch.tensor(np.array(a)) for a in (*layer.params, *layer.state)] for layer in model.layers]
    want = torch_forward(model.layers, torch.tensor(x), weights, training=False).numpy()
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-10, atol=1e-12)


def test_every_parameter_against_finite_differences():
    model = Sequential([Conv2D(3, 3, padding="same", input_shape=(6, 5, 2)), BatchNormalization(momentum=0.5),
                        Activation("tanh"), MaxPooling2D(2, strides=1), Conv2D(4, 2, strides=2, activation="tanh"),
                        AveragePooling2D(2, padding="same"), Flatten(), Dense(3, activation="sigmoid")],
                       dtype="float64")
    model.build((6, 5, 2), seed=3)
    model.compile(loss="mse", optimizer="sgd")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((3, 6, 5, 2)), rng.standard_normal((3, 3))
    model.allocate(3, y_like=y)
    model.train_step(x, y)
    grads = [g.copy() for layer in model.layers for g in layer.grads]
    params = [p for layer in model.layers for p in layer.params]
    assert len(params) == 8
    for p, g in zip(params, grads):
        np.testing.assert_allclose(g, central_diff(lambda: model.train_step(x, y), p), rtol=1e-5, atol=1e-8)


def test_batchnorm_moving_statistics_follow_keras():
    model, x, y = make("batchnorm_conv")
    bn = model.layers[1]
    h = model.layers[0]
    mean0, var0 = np.array(bn.moving_mean), np.array(bn.moving_variance)
    model.train_step(x, y)
    feats = np.einsum("nhwc,cf->nhwf", x, np.asarray(h.W)[0, 0]).reshape(-1, 3)
    np.testing.assert_allclose(bn.moving_mean, 0.9 * mean0 + 0.1 * feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn.moving_variance, 0.9 * var0 + 0.1 * feats.var(0), rtol=1e-12)
    # inference uses them, training does not
    mm, mv = np.array(bn.moving_mean), np.array(bn.moving_variance)
    want = (feats - mm) / np.sqrt(mv + bn.epsilon) * np.asarray(bn.gamma) + np.asarray(bn.beta)
    np.testing.assert_allclose(model.predict(x), want.reshape(len(x), -1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fold_batchnorm_matches_unfolded(dtype):
    model = Sequential([Conv2D(8, 3, input_shape=(10, 10, 3)), BatchNormalization(), Activation("relu"),
                        MaxPooling2D(2), Conv2D(6, 3, padding="same", use_bias=False), BatchNormalization(),
                        Flatten(), Dense(5), BatchNormalization(), Dense(4, activation="softmax")], dtype=dtype)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 10, 10, 3)).astype(dtype)
    model.fit(x, rng.integers(0, 4, 40), epochs=2, batch_size=8, verbose=0, seed=0)
    folded = model.fold_batchnorm()
    assert [layer.kind for layer in folded.layers] == ["Conv2D", "MaxPooling2D", "Conv2D", "Flatten", "Dense",
                                                       "Dense"]
    assert folded.layers[0].activation.name == "relu"  # the Activation after the BN moved into the epilogue
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(folded.predict(x), model.predict(x), **tol)
    before = model.get_weights()
    folded.set_weights(folded.get_weights())
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fold_keeps_batchnorm_after_an_activation():
    model = Sequential([Dense(4, activation="relu", input_dim=3), BatchNormalization(), Dense(2)])
    model.build(3, seed=0)
    folded = model.fold_batchnorm()
    assert [layer.kind for layer in folded.layers] == ["Dense", "BatchNormalization", "Dense"]
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(folded.predict(x), model.predict(x))


def test_summary_before_fit_shows_shapes_and_counts():
    model = Sequential([Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)), MaxPooling2D(2),
                        Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dense(128, activation="relu"),
                        BatchNormalization(), Dense(10, activation="softmax")])
    text = model.summary(print_fn=lambda s: None)
    assert not model.built
    for shape, count in [("(N, 26, 26, 32)", 320), ("(N, 13, 13, 32)", 0), ("(N, 11, 11, 64)", 18496),
                         ("(N, 5, 5, 64)", 0), ("(N, 1600)", 0), ("(N, 128)", 204928), ("(N, 10)", 1290)]:
        assert any(shape in line and line.split()[-1] == f"{count:,}" for line in text.splitlines()), shape
    assert "Total params: 225,546" in text  # 225,034 + BN's 4 x 128
    model.build((28, 28, 1), seed=0)
    built = model.summary(print_fn=lambda s: None)
    # every row names its input size before building too (from the shapes the declared input gives)
    assert "Dense 1600\u2192128 relu" in built and "Dense 1600\u2192128 relu" in text
    assert "BatchNormalization 128" in text and "BatchNormalization 128" in built
    assert [line.split()[-2:] for line in built.splitlines()[2:-1]] == \
        [line.split()[-2:] for line in text.splitlines()[2:-1]]
    assert sum(w.size for w in model.get_weights()) == 225_546


@pytest.mark.parametrize("layers, shape, match", [
    (lambda: [Conv2D(2, 3), Dense(3)], (28, 28, 1), r"layer 1 \(Dense.*\(26, 26, 2\).*Flatten"),
    (lambda: [Dense(3), Conv2D(2, 3)], (5,), r"layer 1 \(Conv2D.*\(3,\).*height, width, channels"),
    (lambda: [Conv2D(2, 3), MaxPooling2D(2), Conv2D(2, 5)], (8, 8, 1), r"layer 2 \(Conv2D.*\(3, 3, 2\)"),
    (lambda: [Flatten(), Reshape((7, 7))], (4, 4, 3), r"layer 1 \(Reshape.*\(48,\).*\(7, 7\)"),
    (lambda: [MaxPooling2D(4)], (3, 8, 1), r"layer 0 \(MaxPooling2D.*\(3, 8, 1\)"),
])
def test_shapes_that_do_not_chain_name_the_layer_and_shapes(layers, shape, match):
    with pytest.raises(ValueError, match=match):
        Sequential(layers()).build(shape)


@pytest.mark.parametrize("make_layer, match", [
    (lambda: Conv2D(0, 3), "filters=0"),
    (lambda: Conv2D(2, (3, 0)), r"kernel_size=\(3, 0\)"),
    (lambda: Conv2D(2, 3, padding="full"), "padding='full'"),
    (lambda: Conv2D(2, 3, strides=2, dilation_rate=2), "not both"),
    (lambda: Conv2D(2, 5, input_shape=(3, 3, 1)), r"input_shape=\(3, 3, 1\)"),
    (lambda: MaxPooling2D(2, strides=0), "strides=0"),
    (lambda: BatchNormalization(momentum=1.5), "momentum=1.5"),
    (lambda: BatchNormalization(epsilon=0), "epsilon=0"),
    (lambda: Reshape((2, -1, -1)), "target_shape"),
    (lambda: Dense(3, input_shape=(4, 4)), "Flatten"),
])
def test_bad_arguments_are_refused_naming_the_value(make_layer, match):
    with pytest.raises(ValueError, match=match):
        make_layer()


def test_images_train_through_fit_and_predict_shapes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 6, 6, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(int)
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(6, 6, 1)), GlobalAveragePooling2D(),
                        Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=7, verbose=0, seed=0, validation_data=(x, y))
    assert model.predict(x).shape == (30, 2)
    with pytest.raises(ValueError, match=r"samples of shape \(36,\).*\(6, 6, 1\)"):
        model.predict(x.reshape(30, 36))


@pytest.mark.parametrize("make_layer", [lambda: Conv2D(2, 3), lambda: MaxPooling2D(), lambda: AveragePooling2D(),
                                        lambda: GlobalAveragePooling2D(), lambda: BatchNormalization()])
def test_a_device_without_the_ops_refuses_the_layer(make_layer):
    """A backend that lacks the image ops (as the CUDA one did before jitnn/cuda/conv.py) refuses the layer
    when it moves there, not half-way through training."""
    partial = type("PartialOps", (CPUOps,), {"name": "partial", **{n: getattr(Ops, n) for n in IMAGE_OPS}})()
    layer = make_layer()
    with pytest.raises(ValueError, match=f"{layer.kind} needs the ops .* device 'partial' does not implement"):
        layer.to(partial)
    assert layer.ops is CPU


def test_training_an_image_output_asks_for_a_flat_head():
    model = Sequential([Conv2D(2, 3, input_shape=(5, 5, 1))])
    model.compile(loss="mse", optimizer="sgd")
    with pytest.raises(ValueError, match=r"shape \(3, 3, 2\): end it with Flatten"):
        model.fit(np.zeros((4, 5, 5, 1)), np.zeros((4, 18)), verbose=0)
    assert model.predict(np.zeros((4, 5, 5, 1))).shape == (4, 3, 3, 2)


def test_flatten_and_reshape_keep_memory():
    x = np.arange(24.0).reshape(2, 2, 3, 2)
    model = Sequential([Reshape((3, 4)), Flatten()], dtype="float64")
    np.testing.assert_array_equal(model.predict(x), x.reshape(2, 12))
    assert jitnn.Flatten().compute_output_shape((2, 3, 2)) == (12,)


# --- saving -----------------------------------------------------------------------------------------

def every_layer_model():
    return Sequential([Conv2D(4, 3, padding="same", strides=1, dilation_rate=2, use_bias=False,
                              kernel_regularizer={"l2": 1e-4}, input_shape=(9, 8, 2)),
                       BatchNormalization(momentum=0.8, epsilon=1e-2), Activation("relu"),
                       MaxPooling2D(2, strides=1, padding="same"), Conv2D(5, (3, 2), strides=2, activation="tanh"),
                       AveragePooling2D((2, 1)), Reshape((-1, 5)), Reshape((2, 4, 5)), GlobalAveragePooling2D(),
                       Dense(6), BatchNormalization(center=False), Flatten(), Dense(3, activation="softmax")])


def test_save_load_round_trips_every_layer(tmp_path):
    model = every_layer_model()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 9, 8, 2)).astype(np.float32), rng.integers(0, 3, 16)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=0)
    path = model.save(tmp_path / "cnn")
    loaded = jitnn.load_model(path)
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    assert [a.get_config() for a in loaded.layers] == [b.get_config() for b in model.layers]
    for a, b in zip(loaded.get_weights(), model.get_weights()):  # moving statistics included
        np.testing.assert_array_equal(a, b)
    assert len(loaded.get_weights()) == len(model.get_weights()) == 14
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # training resumes identically: same optimizer state, same moving statistics
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=1)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=1)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = every_layer_model()
    fresh.build((9, 8, 2))
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.predict(x), jitnn.load_model(path).predict(x))


def hostile(tmp_path, model, edit=None, arrays=None):
    import json
    path = model.save(tmp_path / "m")
    with np.load(path) as f:
        members = {k: f[k] for k in f.files}
    record = json.loads(members["__architecture__"].tobytes())
    if edit:
        edit(record)
    members["__architecture__"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    members.update(arrays or {})
    bad = tmp_path / "bad.npz"
    np.savez(bad, **members)
    return bad


@pytest.mark.parametrize("what, edit, arrays, match", [
    ("kernel_size changed", lambda r: r["config"]["layers"][0]["config"].update(kernel_size=[5, 5]), None,
     r"layer0/kernel has shape \(3, 3, 2, 4\), the model expects \(5, 5, 2, 4\)"),
    ("filters as a string", lambda r: r["config"]["layers"][0]["config"].update(filters="4"), None, "wrong type"),
    ("strides zero", lambda r: r["config"]["layers"][4]["config"].update(strides=[0, 1]), None, "strides"),
    ("pool too large", lambda r: r["config"]["layers"][5]["config"].update(pool_size=[9, 9]), None,
     "invalid AveragePooling2D config"),
    ("input_shape disagrees", lambda r: r["config"].update(input_shape=[9, 8, 3]), None, "input_dim=144"),
    ("layer input_shape disagrees", lambda r: r["config"]["layers"][0]["config"].update(input_shape=[8, 9, 2]),
     None, "declares input_shape"),
    ("bad reshape", lambda r: r["config"]["layers"][6]["config"].update(target_shape=[7, -1]), None, "Reshape"),
    ("unknown field", lambda r: r["config"]["layers"][1]["config"].update(beta_initializer="zeros"), None,
     "unknown field"),
    ("moving variance missing", None, {"layer1/moving_variance": np.ones(5, np.float32)},
     r"layer1/moving_variance has shape \(5,\)"),
    ("negative moving variance", None, {"layer1/moving_variance": -np.ones(4, np.float32)}, "negative"),
    ("NaN moving mean", None, {"layer10/moving_mean": np.full(6, np.nan, np.float32)}, "NaN"),
])
def test_hostile_cnn_files_are_refused(tmp_path, what, edit, arrays, match):
    model = every_layer_model()
    model.build((9, 8, 2), seed=0)
    bad = hostile(tmp_path, model, edit, arrays)
    with pytest.raises(jitnn.ModelFileError, match=match):
        jitnn.load_model(bad)


def test_files_from_before_input_shape_still_load(tmp_path):
    model = Sequential([Dense(3, input_dim=4), BatchNormalization(), Dense(2)])
    model.build(4, seed=0)
    bad = hostile(tmp_path, model, lambda r: r["config"].pop("input_shape"))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(jitnn.load_model(bad).predict(x), model.predict(x))


# --- ONNX ---------------------------------------------------------------------------------------------

def test_onnx_export_of_every_cnn_layer_matches_predict(tmp_path):
    import onnx
    import onnxruntime as ort

    from jitnn import onnx as jonnx

    model = every_layer_model()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 9, 8, 2)).astype(np.float32)
    model.fit(x, rng.integers(0, 3, 12), epochs=1, batch_size=4, verbose=0, seed=0)  # moving stats move
    path = tmp_path / "cnn.onnx"
    jonnx.export(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["N", 9, 8, 2]
    for n in (1, 5):
        np.testing.assert_allclose(sess.run(["output"], {"input": x[:n]})[0], model.predict(x[:n]), rtol=2e-5,
                                   atol=2e-6)
    # float64: a valid graph (onnxruntime's CPU provider has no double Conv to run it)
    m64 = Sequential([Conv2D(2, 3, input_shape=(5, 5, 1)), BatchNormalization(), Flatten()], dtype="float64")
    m64.build((5, 5, 1), seed=0)
    onnx.checker.check_model(jonnx.to_onnx(m64), full_check=True)


def test_conv_kernels_draw_with_keras_receptive_field_fans():
    w = jitnn.initializers.get("glorot_uniform")((3, 3, 4, 32), np.random.default_rng(0), np.float64)
    limit = np.sqrt(6.0 / (3 * 3 * 4 + 3 * 3 * 32))  # fan_in = KH*KW*C, fan_out = KH*KW*F
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    h = jitnn.initializers.get("he_normal")((5, 5, 8, 400), np.random.default_rng(0), np.float64)
    assert h.std() == pytest.approx(np.sqrt(2.0 / (5 * 5 * 8)), rel=0.05)
