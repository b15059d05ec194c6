"""The CUDA backend against independent references (numpy in float64) and against the CPU backend.

Without a GPU these run under numba's CUDA simulator (tests/conftest.py switches it on), one Python
thread per CUDA thread, so the shapes are tiny, but chosen to cross tile edges: 65 and 66 cut the
64-wide small tile, 129 and 130 the 128-wide large one, K = 17 and 9 leave partial k-steps. On a real
GPU the same tests run unchanged. ``test_every_kernel_compiles_for_sm90`` lowers each kernel through
the real CUDA compiler (NVVM), which the simulator never exercises.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import tolerance

import jitnn
from jitnn import Dense, Dropout, NonFiniteLossError, Sequential
from jitnn import optimizers as O
from jitnn.kernels import losses as KL
from jitnn.kernels.elementwise import CODES, activate_scalar, derivative_scalar

cudart = pytest.importorskip("jitnn.cuda.runtime")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not cudart.available(), reason="no CUDA device and no simulator")]

if cudart.available():
    from jitnn.backend.cuda import CUDA
    from jitnn.cuda import kernels as K
    from jitnn.cuda.gemm import TILES, matmul
    from jitnn.cuda.runtime import cuda

RNG = np.random.default_rng(7)


def tol(dtype):
    return tolerance(dtype, float32=(2e-5, 2e-5), float64=(1e-12, 1e-12))


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


# --- GEMM ----------------------------------------------------------------------------------------------


def _operands(m, k, n, ta, tb, dtype, order="C"):
    a = RNG.standard_normal((k, m) if ta else (m, k)).astype(dtype, order=order)
    b = RNG.standard_normal((n, k) if tb else (k, n)).astype(dtype, order=order)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    return a, b, ref


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m,k,n", [(65, 17, 66), (1, 1, 1), (3, 0, 5), (0, 4, 3)])
def test_gemm_small_tile_matches_numpy(m, k, n, ta, tb):
    a, b, ref = _operands(m, k, n, ta, tb, np.float32)
    np.testing.assert_allclose(matmul(a, b, trans_a=ta, trans_b=tb, tile="small"), ref, **tol(np.float32))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False)])
def test_gemm_large_tile_edges_match_numpy(ta, tb):
    a, b, ref = _operands(129, 9, 130, ta, tb, np.float32)
    np.testing.assert_allclose(matmul(a, b, trans_a=ta, trans_b=tb, tile="large"), ref, **tol(np.float32))


def test_gemm_float64_fortran_order_and_strided_views():
    a, b, ref = _operands(33, 20, 7, False, True, np.float64, order="F")
    np.testing.assert_allclose(matmul(a, b, trans_b=True), ref, **tol(np.float64))
    big = RNG.standard_normal((40, 30))
    view = big[::2, 1::3]  # strided: copied to a contiguous device array
    np.testing.assert_allclose(matmul(view, big[:10, :7]), view @ big[:10, :7], rtol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu"])
def test_gemm_epilogue_alpha_beta_bias_activation(activation):
    a, b, ref = _operands(66, 5, 65, False, False, np.float64)
    c0 = RNG.standard_normal(ref.shape)
    bias = RNG.standard_normal(ref.shape[1])
    out = matmul(a, b, c0.copy(), alpha=0.5, beta=-2.0, bias=bias, activation=activation)
    z = 0.5 * ref - 2.0 * c0 + bias
    expect = np.vectorize(lambda v: activate_scalar(CODES[activation], v, 0.0))(z)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


def test_gemm_device_arrays_stay_on_device():
    a, b, ref = _operands(9, 4, 6, False, False, np.float32)
    out = matmul(dev(a), dev(b))
    assert not isinstance(out, np.ndarray)
    np.testing.assert_allclose(out.copy_to_host(), ref, **tol(np.float32))


def test_gemm_rejects_bad_input():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        matmul(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="float32 or both float64"):
        matmul(a, np.ones((4, 2), np.float64))
    with pytest.raises(ValueError, match="activation"):
        matmul(a, np.ones((4, 2), np.float32), activation="nope")
    with pytest.raises(ValueError, match="2-D"):
        matmul(np.ones(4, np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="numpy or CUDA"):
        matmul([[1.0]], np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="tile"):
        matmul(a, np.ones((4, 2), np.float32), tile="huge")
    assert set(TILES) == {"small", "large"}


# --- elementwise, rows, reductions ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(CODES) - {"silu"}))
def test_activation_and_backprop_match_cpu_scalars(name):
    code, param = CODES[name], 0.1
    z = RNG.standard_normal((7, 5))
    a = np.vectorize(lambda v: activate_scalar(code, v, param))(z)
    da = RNG.standard_normal(z.shape)
    out, dz = dev(np.zeros_like(z)), dev(np.zeros_like(z))
    K.launch(K.activate, z.size, dev(z), out, code, param)
    np.testing.assert_allclose(out.copy_to_host(), a, rtol=1e-12)
    K.launch(K.backprop_activation, z.size, dev(da), dev(z), dev(a), code, param, dz)
    expect = da * np.vectorize(lambda zz, aa: derivative_scalar(code, zz, aa, param))(z, a)
    np.testing.assert_allclose(dz.copy_to_host(), expect, rtol=1e-12, atol=1e-15)


def test_softmax_rows_and_backprop():
    z = RNG.standard_normal((6, 4)) * 30  # large logits: the max must be subtracted
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    out = dev(np.zeros_like(z))
    K.launch(K.softmax_rows, 6, dev(z), out)
    np.testing.assert_allclose(out.copy_to_host(), p, rtol=1e-12, atol=1e-300)
    dp = RNG.standard_normal(z.shape)
    dz = dev(np.zeros_like(z))
    K.launch(K.backprop_softmax_rows, 6, dev(p), dev(dp), dz)
    np.testing.assert_allclose(dz.copy_to_host(), p * (dp - (dp * p).sum(1, keepdims=True)), rtol=1e-10)


@pytest.mark.parametrize("shape", [(37, 3), (1, 40), (5, 33)])
def test_column_sums_and_accumulate(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    out = dev(np.zeros(shape[1], np.float32))
    K.launch_column_sums(dev(x), out)
    np.testing.assert_allclose(out.copy_to_host(), x.astype(np.float64).sum(0), rtol=1e-5, atol=1e-5)
    v = RNG.standard_normal(300)
    acc = dev(np.array([1.0, 2.0]))
    K.launch_accumulate(dev(v), 299, acc, 1)
    np.testing.assert_allclose(acc.copy_to_host(), [1.0, 2.0 + v[:299].sum()], rtol=1e-12)


def test_dropout_mask_equals_cpu_layer():
    layer = Dropout(0.3, seed=5)
    layer.build(9, np.float32, np.random.default_rng(0))
    layer.allocate(4)
    x = RNG.standard_normal((4, 9)).astype(np.float32)
    cpu = layer.forward(x, training=True).copy()
    gpu = Dropout(0.3, seed=5)
    gpu.to(CUDA)
    gpu.build(9, np.float32, np.random.default_rng(0))
    gpu.allocate(4)
    out = gpu.forward(dev(x), True).copy_to_host()
    np.testing.assert_array_equal(out == 0, cpu == 0)  # the same units dropped
    np.testing.assert_allclose(out, cpu, rtol=1e-6)


def test_gather_rows_and_items():
    src = RNG.standard_normal((10, 3))
    order = RNG.permutation(10)
    dst, lab = dev(np.zeros((4, 3))), dev(np.zeros(4, np.int64))
    CUDA.gather_rows(dev(src), dev(order), 5, 4, dst)
    CUDA.gather_rows(dev(np.arange(10) * 3), dev(order), 5, 4, lab)
    np.testing.assert_array_equal(dst.copy_to_host(), src[order[5:9]])
    np.testing.assert_array_equal(lab.copy_to_host(), order[5:9] * 3)


# --- losses: the device kernels against the CPU kernels (themselves tested against numpy) -----------


def _loss_cases():
    n, d = 5, 4
    z = RNG.standard_normal((n, d))
    p = RNG.uniform(0.01, 1.0, (n, d))
    y = RNG.uniform(0, 1, (n, d))
    lab = RNG.integers(0, d, n)
    eps = (1e-7,)
    return [
        ("mse", (p, y), ()), ("mae", (p, y), ()), ("bce_probs", (p, y), eps), ("xent_probs_int", (p, lab), eps),
        ("xent_probs_dense", (p, y), eps), ("sigmoid_bce_logits", (z, y), ()), ("softmax_xent_int", (z, lab), ()),
        ("softmax_xent_dense", (z, y), ()),
    ]


@pytest.mark.parametrize("case", _loss_cases(), ids=lambda c: c[0])
def test_loss_kernels_match_cpu(case):
    """The device kernel takes the CPU driver's arguments (scales come from the shapes on both)."""
    name, (pred, y), scalars = case
    n = pred.shape[0]
    fused = name.startswith(("sigmoid", "softmax"))
    grad, rows = np.zeros_like(pred), np.zeros(n)
    probs = np.zeros_like(pred)
    cpu_kernel = getattr(KL, name)
    mean = cpu_kernel(pred, y, probs, grad, rows) if fused else cpu_kernel(pred, y, grad, rows, *scalars)
    dgrad, drows, dprobs = dev(np.zeros_like(pred)), dev(np.zeros(n)), dev(np.zeros_like(pred))
    args = (dev(pred), dev(y), dprobs, dgrad, drows) if fused else (dev(pred), dev(y), dgrad, drows)
    K.launch(getattr(K, name), n, *args, *scalars)
    np.testing.assert_allclose(drows.copy_to_host(), rows, rtol=1e-12)
    np.testing.assert_allclose(drows.copy_to_host().mean(), mean, rtol=1e-12)
    np.testing.assert_allclose(dgrad.copy_to_host(), grad, rtol=1e-12, atol=1e-15)
    if fused:
        np.testing.assert_allclose(dprobs.copy_to_host(), probs, rtol=1e-12)


# --- optimizers: one device step against the CPU optimizer's step -------------------------------------


@pytest.mark.parametrize("make", [
    lambda: O.SGD(0.1), lambda: O.SGD(0.1, momentum=0.9), lambda: O.SGD(0.1, momentum=0.9, nesterov=True),
    lambda: O.Adagrad(0.1), lambda: O.RMSprop(0.01), lambda: O.Adam(0.01), lambda: O.AMSGrad(0.01),
    lambda: O.AdamW(0.01, weight_decay=0.1),
], ids=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "amsgrad", "adamw"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_steps_match_cpu(make, dtype):
    w0 = [RNG.standard_normal((6, 5)).astype(dtype), RNG.standard_normal(5).astype(dtype)]
    grads = [[RNG.standard_normal(w.shape).astype(dtype) for w in w0] for _ in range(3)]
    regs = [(0.01, 0.02), (0.0, 0.0)]
    cpu_opt, gpu_opt = make(), make()
    gpu_opt.to(CUDA)
    cpu_w = [w.copy() for w in w0]
    dev_w = [dev(w) for w in w0]
    for g in grads:
        cpu_opt.step(cpu_w, g, regs)
        gpu_opt.step(dev_w, [dev(x) for x in g], regs)
    assert gpu_opt.iterations == cpu_opt.iterations == 3
    for c, d in zip(cpu_w, dev_w):
        np.testing.assert_allclose(d.copy_to_host(), c, **tol(dtype))
    for key, arr in cpu_opt.state_arrays().items():
        np.testing.assert_allclose(gpu_opt.state_arrays()[key], arr, **tol(dtype))


# --- the model on the device -----------------------------------------------------------------------


def _data(n=20, d=6, classes=3):
    x = RNG.standard_normal((n, d)).astype(np.float32)
    return x, RNG.integers(0, classes, n)


def _pair(layers, loss, optimizer="adam", metrics=("accuracy",), dtype="float32"):
    models = []
    for device in ("cpu", "cuda"):
        m = Sequential(layers(), device=device, dtype=dtype)
        m.compile(loss, optimizer, list(metrics))
        models.append(m)
    return models


@pytest.mark.parametrize("config", ["softmax_dropout", "sigmoid_bce", "mse_gelu"])
def test_training_on_device_matches_cpu(config):
    x, labels = _data()
    if config == "softmax_dropout":
        layers = lambda: [Dense(5, "relu"), Dropout(0.25), Dense(3, "softmax")]
        y, loss, metrics = labels, "categorical_crossentropy", ("accuracy",)
    elif config == "sigmoid_bce":
        layers = lambda: [Dense(4, "tanh"), Dense(2, "sigmoid")]
        y, loss, metrics = (RNG.random((20, 2)) > 0.5).astype(np.float32), "bce", ("binary_accuracy",)
    else:
        layers = lambda: [Dense(4, "gelu"), Dense(1)]
        y, loss, metrics = RNG.standard_normal(20).astype(np.float32), "mse", ("mae",)
    cpu, gpu = _pair(layers, loss, "adam", metrics)
    hc = cpu.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
    hg = gpu.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
    assert hg.history.keys() == hc.history.keys()
    for key in hc.history:
        np.testing.assert_allclose(hg.history[key], hc.history[key], rtol=1e-5, atol=1e-6)
    for wc, wg in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(wg, wc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-5, atol=1e-6)
    assert gpu.evaluate(x, y) == pytest.approx(cpu.evaluate(x, y), rel=1e-5)


def test_to_moves_weights_both_ways_and_save_reads_the_device(tmp_path):
    x, y = _data()
    model = Sequential([Dense(4, "relu"), Dense(3, "softmax")])
    model.compile("cce", "sgd")
    model.fit(x, y, epochs=1, batch_size=10, seed=0, verbose=0)
    before = model.predict(x)
    assert model.to("cuda") is model
    np.testing.assert_allclose(model.predict(x), before, rtol=1e-5, atol=1e-6)
    model.fit(x, y, epochs=1, batch_size=10, seed=1, verbose=0)
    on_device = model.predict(x)
    model.save(tmp_path / "m.npz")  # reads the device weights back first
    np.testing.assert_allclose(jitnn.load_model(tmp_path / "m.npz").predict(x), on_device, rtol=1e-5, atol=1e-6)
    zeros = [np.zeros_like(w) for w in model.get_weights()]
    model.set_weights(zeros)  # host write goes to the device too
    np.testing.assert_allclose(model.predict(x), np.full((20, 3), 1 / 3), rtol=1e-6)
    model.to("cpu")
    np.testing.assert_allclose(model.predict(x), np.full((20, 3), 1 / 3), rtol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator's numpy sees the overflow
def test_nonfinite_loss_on_device_restores_weights():
    x, y = _data()
    x[7] = 3e38  # overflows the float32 logits: the loss turns NaN in the first batch
    model = Sequential([Dense(4), Dense(3, "softmax")], device="cuda")
    model.compile("cce", "sgd")
    model.build(6, seed=0)
    good = model.get_weights()
    with pytest.raises(NonFiniteLossError, match="device='cuda'"):
        model.fit(x, y, epochs=1, batch_size=20, verbose=0)
    for w, g in zip(model.get_weights(), good):
        np.testing.assert_array_equal(w, g)


def test_device_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        Sequential([Dense(2)], device="tpu")
    model = Sequential([Dense(2)], device="cuda")
    with pytest.raises(ValueError, match="metrics accuracy"):  # at compile, not half-way through fit
        model.compile("mse", "adam", [lambda y, p: 0.0])
    cpu = Sequential([Dense(2)])
    cpu.compile("mse", "adam", [lambda y, p: 0.0])
    with pytest.raises(ValueError, match="metrics accuracy"):
        cpu.to("cuda")
    assert cpu.device == "cpu"  # a refused move changes nothing

    class Huber(jitnn.losses.Loss):  # names a kernel no backend has
        kernels = ("huber",)

    class Lion(O.Optimizer):  # a family without an update on any backend
        kernel = "lion_update"

    for device in ("cpu", "cuda"):
        m = Sequential([Dense(2)], device=device)
        with pytest.raises(ValueError, match=r"\['huber'\].*lacks"):
            m.compile(Huber(), "adam")
        with pytest.raises(ValueError, match="Lion has no update kernel"):
            m.compile("mse", Lion())
        assert m.loss is None and m.optimizer is None  # nothing half-set
    from jitnn.sparse import CSRMatrix

    with pytest.raises(ValueError, match="CPU only"):
        model.predict(CSRMatrix.from_dense(np.ones((2, 3), np.float32)))
    monkeypatch.setattr(cudart, "cuda", None)
    with pytest.raises(cudart.CudaUnavailableError, match="pip install"):
        Sequential([Dense(2)], device="cuda")
    monkeypatch.setattr(cudart, "cuda", cuda)
    monkeypatch.setattr(cudart, "available", lambda: False)
    with pytest.raises(cudart.CudaUnavailableError, match="device='cpu'"):
        Sequential([Dense(2)]).to("cuda")


def test_profile_on_device_times_layers_with_events():
    x, y = _data()
    model = Sequential([Dense(4, "relu"), Dense(3, "softmax")], device="cuda")
    model.compile("cce", "adam")
    with jitnn.profile() as prof:
        model.fit(x, y, epochs=1, batch_size=10, seed=0, verbose=0)
    rows = {(r.layer, r.phase): r for r in prof.table()}
    for key in [(0, "forward"), (1, "forward"), (0, "backward"), (1, "backward"), (0, "update"),
                (1, "update"), (None, "loss"), (None, "batching")]:
        assert rows[key].calls == 2 and rows[key].ns > 0, key


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="a real GPU compiles in every test")
def test_every_kernel_compiles_for_sm90():
    """Lower every kernel through numba's CUDA target and NVVM (no GPU needed); skipped without NVVM."""
    probe = "from numba import cuda\ndef k(a):\n    a[0] = 1\ncuda.compile_ptx(k, 'void(float32[:])', cc=(9, 0))"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, check=False).returncode:
        pytest.skip("no CUDA compiler: NVVM and NVRTC come with the dev extra, numba-cuda[cu13] or a CUDA toolkit")
    run = subprocess.run([sys.executable, "-m", "jitnn.cuda.ptx", "--cc", "9.0"], env=env, capture_output=True, check=False,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    table = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()[1:]}
    assert len(table) == 27 + 6 + 19  # kernels.py, the GEMMs, conv/pooling/normalization.py
    assert int(table["gemm_small_nn_float32"][2]) == 0  # the 4x4 register tile stays in registers
