"""Layers (Dense, Activation, Dropout) against float64 numpy references, central finite differences and
PyTorch autograd (a whole model's gradients after ``Sequential.train_step``)."""

import itertools

import numpy as np
import pytest
from helpers import DTYPES, central_diff, tolerance
from scipy.special import expit, softmax

from jitnn import activations, load_model, losses, optimizers
from jitnn.layers import Activation, Dense, Dropout, LeakyReLU
from jitnn.model import Sequential

ACTIVATIONS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "swish", "gelu", "softmax"]
FD_TOL = {"rtol": 1e-5, "atol": 1e-8}
KINK_MARGIN = 0.05  # |pre-activation| kept above this, so +-FD_EPS never crosses relu's kink at 0


# ---------------------------------------------------------------- float64 references


def ref_activation(name, z):
    """f(z) in float64 numpy/scipy, written independently of jitnn's kernels."""
    z = np.asarray(z, np.float64)
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)  # jitnn's default slope (Keras uses 0.3, PyTorch 0.01)
    if name == "sigmoid":
        return expit(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "swish":
        return z * expit(z)
    if name == "gelu":  # tanh approximation (Hendrycks & Gimpel 2016, eq. in section 2)
        return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))
    if name == "softmax":
        return softmax(z, axis=1)
    raise AssertionError(name)


def tol(dtype):
    return tolerance(dtype)


def built(layer, input_dim, batch, dtype=np.float64, seed=0):
    layer.build(input_dim, dtype, np.random.default_rng(seed))
    layer.allocate(batch)
    return layer


def inputs_off_kinks(preactivation, shape, rng):
    """Random inputs whose pre-activations all keep KINK_MARGIN away from 0 (redrawn until they do)."""
    for _ in range(1000):
        x = rng.normal(size=shape)
        if np.min(np.abs(preactivation(x))) > KINK_MARGIN:
            return x
    raise AssertionError("could not draw inputs away from the kink")


def check_gradients(layer, x, wrt, rng, **backward_kwargs):
    """Compare backward's dX and the layer's parameter gradients with central differences of
    L = sum(forward(x) * R), for a random R. ``wrt``: {name: (array perturbed in place, analytic grad)}."""
    out = layer.forward(x, True)
    r = rng.normal(size=out.shape)

    def loss():
        return float(np.sum(layer.forward(x, True) * r))

    loss()  # the layer's caches hold this forward for backward
    dx = layer.backward(r, need_input_grad=True, **backward_kwargs)
    analytic = {"x": np.array(dx, copy=True)}
    analytic.update({name: np.array(grad(), copy=True) for name, (_, grad) in wrt.items()})
    numeric = {"x": central_diff(loss, x)}
    numeric.update({name: central_diff(loss, arr) for name, (arr, _) in wrt.items()})
    for name, grad in analytic.items():
        np.testing.assert_allclose(grad, numeric[name], **FD_TOL, err_msg=f"d/d{name}")


# ---------------------------------------------------------------- Dense


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_gradients_match_finite_differences(activation, use_bias):
    rng = np.random.default_rng(1)
    layer = built(Dense(5, activation=activation, use_bias=use_bias), input_dim=4, batch=3)
    layer.b[...] = rng.normal(size=layer.b.shape) if use_bias else 0.0
    x = inputs_off_kinks(lambda x: x @ layer.W + layer.b, (3, 4), rng)
    wrt = {"W": (layer.W, lambda: layer.dW)}
    if use_bias:
        wrt["b"] = (layer.b, lambda: layer.db)
    check_gradients(layer, x, wrt, rng)


@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "softmax"])
def test_dense_emitting_logits_passes_gradient_through(activation):
    """With emit_logits (the loss fused the activation) forward returns Z and the incoming gradient is
    dL/dZ: the activation's derivative is not applied."""
    rng = np.random.default_rng(2)
    layer = built(Dense(5, activation=activation), input_dim=4, batch=7)
    layer.emit_logits = True
    layer.b[...] = rng.normal(size=5)
    x = rng.normal(size=(7, 4))
    g = rng.normal(size=(7, 5))
    np.testing.assert_allclose(layer.forward(x, True), x @ layer.W + layer.b, **tol(np.float64))
    dx = layer.backward(g, True)
    np.testing.assert_allclose(dx, g @ layer.W.T, **tol(np.float64))
    np.testing.assert_allclose(layer.dW, x.T @ g, **tol(np.float64))
    np.testing.assert_allclose(layer.db, g.sum(axis=0), **tol(np.float64))


def test_dense_backward_without_input_grad_returns_none():
    rng = np.random.default_rng(3)
    layer = built(Dense(3, activation="tanh"), input_dim=2, batch=4)
    x = rng.normal(size=(4, 2))
    layer.forward(x, True)
    assert layer.backward(rng.normal(size=(4, 3)), need_input_grad=False) is None
    assert np.all(np.isfinite(layer.dW)) and np.any(layer.dW != 0)


FORWARD_SHAPES = list(itertools.product((1, 7, 33), (3, 13), (1, 5, 17)))  # batch, input_dim, units


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch,input_dim,units", FORWARD_SHAPES)
def test_dense_forward_matches_numpy(batch, input_dim, units, activation, dtype):
    rng = np.random.default_rng(batch * 1000 + input_dim * 10 + units)
    layer = built(Dense(units, activation=activation), input_dim, batch, dtype)
    layer.b[...] = rng.normal(size=units)
    x = rng.normal(size=(batch, input_dim)).astype(dtype)
    out = layer.forward(x, False)
    assert out.shape == (batch, units) and out.dtype == dtype
    w, b = layer.W.astype(np.float64), layer.b.astype(np.float64)
    expected = ref_activation(activation, x.astype(np.float64) @ w + b)
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_dense_forward_smaller_batch_than_allocated_uses_a_prefix():
    rng = np.random.default_rng(4)
    layer = built(Dense(6, activation="relu"), input_dim=5, batch=33)
    x = rng.normal(size=(4, 5))
    np.testing.assert_allclose(layer.forward(x, False), ref_activation("relu", x @ layer.W), **tol(np.float64))


@pytest.mark.parametrize("units", [0, -1, 3.5, True, "4", None])
def test_dense_rejects_bad_units(units):
    with pytest.raises(ValueError, match="units"):
        Dense(units)


@pytest.mark.parametrize("activation", ["nope", "ReLU6", "soft_max"])
def test_unknown_activation_raises(activation):
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(3, activation=activation)
    with pytest.raises(ValueError, match="unknown activation"):
        Activation(activation)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 2.0])
def test_leaky_relu_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="alpha"):
        activations.LeakyReLU(alpha)
    with pytest.raises(ValueError, match="alpha"):
        Dense(3, activation={"name": "leaky_relu", "alpha": alpha})


def test_leaky_relu_custom_alpha_forward():
    rng = np.random.default_rng(5)
    layer = built(Dense(4, activation=activations.LeakyReLU(0.2)), input_dim=3, batch=6)
    x = rng.normal(size=(6, 3))
    z = x @ layer.W
    np.testing.assert_allclose(layer.forward(x, False), np.where(z > 0, z, 0.2 * z), **tol(np.float64))


def test_dense_declared_input_dim_mismatch_raises():
    with pytest.raises(ValueError, match="input_dim"):
        Dense(3, input_dim=4).build(5, np.float64, np.random.default_rng(0))


# ---------------------------------------------------------------- Activation layer


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_layer_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(6)
    layer = built(Activation(activation), input_dim=5, batch=4)
    x = inputs_off_kinks(lambda x: x, (4, 5), rng)
    check_gradients(layer, x, {}, rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_layer_forward_matches_numpy(activation, dtype):
    rng = np.random.default_rng(7)
    layer = built(Activation(activation), input_dim=17, batch=7, dtype=dtype)
    x = (3 * rng.normal(size=(7, 17))).astype(dtype)
    out = layer.forward(x, False)
    assert out.shape == x.shape and out.dtype == dtype
    np.testing.assert_allclose(out, ref_activation(activation, x), **tol(dtype))


# ---------------------------------------------------------------- LeakyReLU layer (its gradients: test_backends)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_leaky_relu_layer_matches_numpy_and_round_trips(dtype, tmp_path):
    rng = np.random.default_rng(11)
    layer = built(LeakyReLU(0.2), input_dim=13, batch=7, dtype=dtype)
    x = rng.normal(size=(7, 13)).astype(dtype)
    np.testing.assert_allclose(layer.forward(x, True), np.where(x > 0, x, 0.2 * x), **tol(dtype))
    g = rng.normal(size=x.shape).astype(dtype)
    np.testing.assert_allclose(layer.backward(g, True), np.where(x > 0, g, 0.2 * g), **tol(dtype))
    assert LeakyReLU().negative_slope == 0.3  # Keras 3's default
    with pytest.raises(ValueError, match="received: negative_slope=1.5"):
        LeakyReLU(1.5)
    model = Sequential([Dense(4, input_dim=3), LeakyReLU(0.1), Dense(2)])
    model.compile("mse", "sgd")
    model.build(3, seed=0)
    xs = rng.normal(size=(5, 3))
    path = model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(load_model(path).predict(xs), model.predict(xs))


# ---------------------------------------------------------------- Dropout


def dropout_run(rate, shape=(200, 50), seed=None, rng_seed=0, dtype=np.float64, x=None):
    """A built Dropout, its input (no zeros in it) and its training output (copied)."""
    layer = built(Dropout(rate, seed=seed), shape[1], shape[0], dtype, rng_seed)
    if x is None:
        x = (np.random.default_rng(8).uniform(0.5, 1.5, size=shape)).astype(dtype)
    return layer, x, np.array(layer.forward(x, True), copy=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_zeroes_about_rate_and_scales_kept(rate, dtype):
    _, x, out = dropout_run(rate, dtype=dtype)
    n = x.size
    dropped = np.count_nonzero(out == 0)
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(dropped - n * rate) < 6 * sigma, (dropped, n * rate)  # binomial, 6 sigma: never flaky
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - rate), **tol(dtype))
    assert out.dtype == dtype


def test_dropout_backward_uses_the_forward_mask():
    rate = 0.3
    layer, x, out = dropout_run(rate)
    grad = np.random.default_rng(9).normal(size=x.shape)
    dx = layer.backward(grad, True)
    kept = out != 0
    np.testing.assert_allclose(dx, np.where(kept, grad / (1 - rate), 0.0), **tol(np.float64))
    np.testing.assert_allclose(out, np.where(kept, x / (1 - rate), 0.0), **tol(np.float64))


def test_dropout_inference_is_identity():
    layer, x, _ = dropout_run(0.5)
    assert layer.forward(x, False) is x
    g = np.ones_like(x)
    assert layer.backward(g, True) is g


def test_dropout_rate_zero_is_identity_in_training():
    layer, x, out = dropout_run(0.0)
    assert layer.forward(x, True) is x
    np.testing.assert_array_equal(out, x)


def test_dropout_same_seed_same_mask_different_steps_differ():
    _, _, a = dropout_run(0.5, seed=123, rng_seed=0)
    _, _, b = dropout_run(0.5, seed=123, rng_seed=99)  # explicit seed wins over the build rng
    np.testing.assert_array_equal(a == 0, b == 0)
    _, _, c = dropout_run(0.5, rng_seed=5)
    _, _, d = dropout_run(0.5, rng_seed=5)  # no seed: drawn from the build rng
    np.testing.assert_array_equal(c == 0, d == 0)
    _, _, e = dropout_run(0.5, seed=124)
    assert np.any((a == 0) != (e == 0))
    layer, x, first = dropout_run(0.5, seed=123)
    second = layer.forward(x, True)
    assert np.any((first == 0) != (second == 0)), "each training step must draw a new mask"


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5", None, float("nan")])
def test_dropout_invalid_rate(rate):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        Dropout(rate)


# ---------------------------------------------------------------- a whole model against PyTorch autograd

try:
    import torch
except ImportError:  # the rest of the file runs without it
    torch = None

TORCH_ACT = {
    "linear": lambda z: z,
    "relu": lambda z: torch.relu(z),
    "tanh": lambda z: torch.tanh(z),
    "sigmoid": lambda z: torch.sigmoid(z),
    "softmax": lambda z: torch.softmax(z, dim=1),
}

# (name, layer specs, loss, target kind). A spec is ("dense", units, activation) or ("act", name).
MODEL_CASES = [
    ("mse-tanh-sigmoid", [("dense", 6, "tanh"), ("dense", 4, "relu"), ("dense", 3, "sigmoid")], "mse", "float"),
    ("mse-linear-out", [("dense", 5, "relu"), ("dense", 2, "linear")], "mse", "float"),
    ("cce-fused-int", [("dense", 6, "relu"), ("dense", 5, "tanh"), ("dense", 4, "softmax")],
     "categorical_crossentropy", "int"),
    ("cce-fused-onehot", [("dense", 6, "tanh"), ("dense", 4, "softmax")], "categorical_crossentropy", "onehot"),
    ("cce-unfused-activation-layer", [("dense", 6, "relu"), ("dense", 4), ("act", "softmax")],
     "categorical_crossentropy", "int"),
    ("bce-fused-sigmoid", [("dense", 5, "relu"), ("dense", 2, "sigmoid")], "binary_crossentropy", "binary"),
]


def make_layer(spec):
    if spec[0] == "act":
        return Activation(spec[1])
    return Dense(spec[1], activation=spec[2] if len(spec) > 2 else None)


def make_targets(kind, n, d, rng):
    if kind == "float":
        return rng.normal(size=(n, d))
    if kind == "binary":
        return rng.integers(0, 2, size=(n, d)).astype(np.float64)
    labels = rng.integers(0, d, size=n)
    return labels if kind == "int" else np.eye(d)[labels]


def torch_loss(loss, out, y, kind):
    """The loss on the model's (post-activation) output, as torch computes it."""
    if loss == "mse":
        return torch.mean((out - y) ** 2)
    if loss == "binary_crossentropy":
        return torch.nn.functional.binary_cross_entropy(out, y)
    onehot = torch.nn.functional.one_hot(y, out.shape[1]).double() if kind == "int" else y
    return -(onehot * torch.log(out)).sum(dim=1).mean()


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("name,specs,loss,kind", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_gradients_match_torch(name, specs, loss, kind):
    rng = np.random.default_rng(10)
    n, d_in = 7, 3
    model = Sequential([make_layer(s) for s in specs], dtype="float64")
    model.compile(loss=loss, optimizer=optimizers.SGD(0.1))
    model.build(d_in, seed=0)
    model.allocate(n)
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    for layer in dense:
        layer.b[...] = 0.1 * rng.normal(size=layer.b.shape)
    x = rng.normal(size=(n, d_in))
    y = make_targets(kind, n, model.output_dim, rng)
    y_model = losses.get(loss).prepare_targets(y, model.output_dim, np.float64)

    params = [(torch.tensor(layer.W, requires_grad=True), torch.tensor(layer.b, requires_grad=True))
              for layer in dense]
    h, it = torch.tensor(x), iter(params)
    for layer in model.layers:
        if isinstance(layer, Dense):
            w, b = next(it)
            h = TORCH_ACT[layer.activation.name](h @ w + b)
        else:
            h = TORCH_ACT[layer.activation.name](h)
    ref = torch_loss(loss, h, torch.tensor(y), kind)
    ref.backward()

    value = model.train_step(x, y_model)
    np.testing.assert_allclose(value, ref.item(), rtol=1e-10)
    for i, (layer, (w, b)) in enumerate(zip(dense, params)):
        np.testing.assert_allclose(layer.dW, w.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=f"dW of Dense {i}")
        np.testing.assert_allclose(layer.db, b.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=f"db of Dense {i}")
