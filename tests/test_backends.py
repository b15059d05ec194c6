"""Every layer, loss and optimizer on every backend, against references that do not use the backend.

Register a layer in ``LAYERS`` (a loss in ``LOSSES``, an optimizer in test_optimizers.CASES) and it is
checked on the CPU and, marked ``cuda``, on the GPU (numba's simulator where there is none):
- layers: forward against the CPU float64 forward (itself checked against numpy in test_layers), and
  dX and every parameter gradient against central differences of the CPU float64 forward;
- losses: the mean and per-sample losses against a float64 numpy formula, the gradient against
  central differences of that formula;
- optimizers: three steps against the float64 reference updates of test_optimizers.
Shapes are tiny (the simulator runs one Python thread per CUDA thread) but odd: 5 rows, 3 and 4 columns.
A layer that takes images (or any per-sample shape but (D_IN,)) names its shape in ``INPUT_SHAPES``.
"""

import numpy as np
import pytest
from helpers import central_diff, tolerance
from scipy.special import expit, log_softmax, softmax
from test_optimizers import CASES as OPTIMIZER_CASES
from test_optimizers import random_problem, step_tolerance

from jitnn import backend, layers, losses
from jitnn.backend.cpu import CPU
from jitnn.cuda import runtime
from jitnn.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    LeakyReLU,
    MaxPooling2D,
    Reshape,
)

BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[
        pytest.mark.cuda, pytest.mark.skipif(not runtime.available(), reason="no CUDA device and no simulator")]),
]
N, D_IN = 5, 3

# name -> a new, unbuilt layer (the same settings every call: a fresh layer repeats its dropout mask)
LAYERS = {
    "dense_linear": lambda: Dense(4),
    "dense_relu": lambda: Dense(4, "relu", bias_initializer="glorot_uniform"),
    "dense_tanh_no_bias": lambda: Dense(4, "tanh", use_bias=False),
    "dense_gelu": lambda: Dense(4, "gelu", bias_initializer="glorot_uniform"),
    "dense_softmax": lambda: Dense(4, "softmax", bias_initializer="glorot_uniform"),
    "activation_sigmoid": lambda: Activation("sigmoid"),
    "activation_swish": lambda: Activation("swish"),
    "activation_softmax": lambda: Activation("softmax"),
    "dropout": lambda: Dropout(0.4, seed=3),
    "leaky_relu": lambda: LeakyReLU(0.2),
    "conv2d_same_stride2": lambda: Conv2D(3, (3, 2), strides=2, padding="same", activation="tanh",
                                          bias_initializer="glorot_uniform"),
    "conv2d_dilated_gemm": lambda: Conv2D(2, 2, dilation_rate=2, padding="same", use_bias=False),
    "conv2d_1x1_sigmoid": lambda: Conv2D(2, 1, activation="sigmoid"),
    "maxpool_same_overlap": lambda: MaxPooling2D(3, strides=2, padding="same"),
    "avgpool_stride1": lambda: AveragePooling2D((2, 3), strides=1),
    "global_avgpool": lambda: GlobalAveragePooling2D(),
    "batchnorm_images": lambda: BatchNormalization(momentum=0.9),
    "batchnorm_features": lambda: BatchNormalization(epsilon=0.01),
    "flatten_images": lambda: Flatten(),
    "reshape_inferred": lambda: Reshape((3, -1)),
}
# name -> per-sample input shape where it is not (D_IN,): images (H, W, C); 9 channels take the im2col path
INPUT_SHAPES = {
    "conv2d_same_stride2": (5, 4, 2), "conv2d_dilated_gemm": (3, 4, 9), "conv2d_1x1_sigmoid": (3, 2, 3),
    "maxpool_same_overlap": (5, 4, 2), "avgpool_stride1": (3, 5, 2), "global_avgpool": (3, 2, 2),
    "batchnorm_images": (2, 3, 4), "flatten_images": (2, 3, 2), "reshape_inferred": (2, 6),
}


def input_shape(name):
    return (N, *INPUT_SHAPES.get(name, (D_IN,)))


def fresh(name, ops, dtype, params=None):
    """LAYERS[name] on ``ops``, built for ``input_shape(name)`` from a fixed seed, buffers for N rows; ``params``
    (host arrays) replace its weights."""
    layer = LAYERS[name]()
    layer.to(ops)
    layer.build(input_shape(name)[1:], dtype, np.random.default_rng(0))
    layer.allocate(N)
    for p, v in zip(layer.params, params or []):
        ops.to_device(np.asarray(v, p.dtype), out=p)
    return layer


def test_every_layer_class_is_registered():
    """A new layer in jitnn.layers.__all__ gets its CPU and GPU checks here only once it is registered."""
    registered = {type(make()) for make in LAYERS.values()}
    missing = [name for name in layers.__all__ if name != "Layer" and getattr(layers, name) not in registered]
    assert not missing, f"register these layers in LAYERS: {missing}"


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_forward_and_gradients(device, name):
    ops = backend.get(device)
    rng = np.random.default_rng(1)
    shape = input_shape(name)
    x = rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)  # away from relu's kink
    params = [p.copy() for p in fresh(name, CPU, np.float64).params]
    layer = fresh(name, ops, np.float64, params)
    out = ops.to_host(layer.forward(ops.to_device(x), True))
    g = rng.normal(size=out.shape)
    dx = ops.to_host(layer.backward(ops.to_device(g), True))
    grads = [ops.to_host(d) for d in layer.grads]

    def value():
        ref = fresh(name, CPU, np.float64, params)
        return float(np.sum(ref.forward(x, True) * g))

    ref_out = fresh(name, CPU, np.float64, params).forward(x, True)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, central_diff(value, x), rtol=1e-6, atol=1e-8, err_msg="dX")
    for i, (p, d) in enumerate(zip(params, grads)):
        np.testing.assert_allclose(d, central_diff(value, p), rtol=1e-6, atol=1e-8, err_msg=f"param {i}")


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_float32_forward_matches_float64(device, name):
    ops = backend.get(device)
    x = np.random.default_rng(2).normal(size=input_shape(name))
    params = [p.copy() for p in fresh(name, CPU, np.float64).params]
    out = fresh(name, ops, np.float32, params).forward(ops.to_device(x.astype(np.float32)), True)
    ref = fresh(name, CPU, np.float64, params).forward(x, True)
    np.testing.assert_allclose(ops.to_host(out), ref, **tolerance(np.float32))


# --- losses: name -> (loss, fused?, make (pred, y), float64 reference of the mean loss) ------------------
D = 4


def _probs(rng):
    return softmax(rng.normal(size=(N, D)), axis=1)


def _clip(p, eps=losses.EPSILON):
    return np.clip(p, eps, 1 - eps)


LOSSES = {
    "mse": ("mse", False, lambda r: (r.normal(size=(N, D)), r.normal(size=(N, D))),
            lambda p, y: np.mean((p - y) ** 2)),
    "mae": ("mae", False, lambda r: (r.normal(size=(N, D)), r.normal(size=(N, D))),
            lambda p, y: np.mean(np.abs(p - y))),
    "bce": ("bce", False, lambda r: (r.uniform(0.05, 0.95, (N, D)), r.uniform(0, 1, (N, D))),
            lambda p, y: np.mean(-(y * np.log(_clip(p)) + (1 - y) * np.log(1 - _clip(p))))),
    "cce_labels": ("cce", False, lambda r: (_probs(r), r.integers(0, D, N)),
                   lambda p, y: np.mean(-np.log(_clip(p / p.sum(1, keepdims=True))[np.arange(N), y]))),
    "cce_onehot": ("cce", False, lambda r: (_probs(r), np.eye(D)[r.integers(0, D, N)]),
                   lambda p, y: np.mean(-np.sum(y * np.log(_clip(p / p.sum(1, keepdims=True))), axis=1))),
    "bce_logits": ("bce", True, lambda r: (r.normal(size=(N, D)) * 3, r.uniform(0, 1, (N, D))),
                   lambda z, y: np.mean(-(y * np.log(expit(z)) + (1 - y) * np.log(expit(-z))))),
    "cce_logits_labels": ("cce", True, lambda r: (r.normal(size=(N, D)) * 3, r.integers(0, D, N)),
                          lambda z, y: np.mean(-log_softmax(z, axis=1)[np.arange(N), y])),
    "cce_logits_onehot": ("cce", True, lambda r: (r.normal(size=(N, D)) * 3, np.eye(D)[r.integers(0, D, N)]),
                          lambda z, y: np.mean(-np.sum(y * log_softmax(z, axis=1), axis=1))),
}


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_value_and_gradient(device, name):
    ops = backend.get(device)
    ident, fused, make, ref = LOSSES[name]
    loss = losses.get(ident)
    ops.check_loss(loss)
    pred, y = make(np.random.default_rng(3))
    d_pred, d_y = ops.to_device(pred), ops.to_device(y)
    grad, rows, probs = ops.zeros((N, D), np.float64), ops.zeros(N, np.float64), ops.zeros((N, D), np.float64)
    if fused:
        loss.value_and_grad_from_logits(d_pred, d_y, probs, grad, rows, ops)
    else:
        loss.value_and_grad(d_pred, d_y, grad, rows, ops)
    np.testing.assert_allclose(ops.to_host(rows).mean(), ref(pred, y), rtol=1e-12)
    fd = central_diff(lambda: ref(pred, y), pred)
    np.testing.assert_allclose(ops.to_host(grad), fd, rtol=1e-6, atol=1e-9)
    if fused:
        act = expit(pred) if loss.from_logits_activation == "sigmoid" else softmax(pred, axis=1)
        np.testing.assert_allclose(ops.to_host(probs), act, rtol=1e-12)


# --- optimizers: test_optimizers.CASES, three steps, two arrays (a matrix and its bias) --------------------


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZER_CASES))
def test_optimizer_steps(device, dtype, name):
    ops = backend.get(device)
    make, ref, ref_kw, lr = OPTIMIZER_CASES[name]
    opt = make()
    opt.to(ops)
    shapes = [(6, 5), (5,)]
    params, grads = random_problem(shapes, dtype, 3)
    ref_w = [p.astype(np.float64) for p in params]
    state = [{} for _ in shapes]
    d_params = [ops.to_device(p) for p in params]
    for k, step_grads in enumerate(grads):
        opt.step(d_params, [ops.to_device(g) for g in step_grads])
        ref_w = [ref(w, g.astype(np.float64), s, k + 1, lr, **ref_kw) for w, g, s in zip(ref_w, step_grads, state)]
    for d, r in zip(d_params, ref_w):
        np.testing.assert_allclose(ops.to_host(d), r, **step_tolerance(dtype))
