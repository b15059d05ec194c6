"""BatchNormalization kernels (jitnn.kernels.normalization) against PyTorch's batch_norm in float64,
finite differences, folding into a convolution, and thread-count independence."""

import textwrap

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPE_NAMES, DTYPES, run_threaded

from jitnn.kernels.conv import conv2d, conv2d_geometry
from jitnn.kernels.normalization import (
    STAT_BLOCKS,
    backprop_batchnorm,
    batchnorm_inference,
    batchnorm_stats,
    batchnorm_train,
    batchnorm_update_moving,
    batchnorm_workspace,
    fold_batchnorm,
)

SHAPES = [(2, 1), (2, 3), (7, 5), (STAT_BLOCKS - 1, 4), (STAT_BLOCKS + 1, 3), (1000, 17), (3 * 11 * 11, 32)]


def rtol(dtype):
    return 1e-11 if dtype == np.float64 else 2e-5


def buffers(ch, dtype):
    return {name: np.full(ch, np.nan, dtype) for name in ("mean", "var", "scale", "shift")}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_training_forward_backward_and_moving_against_torch(shape, dtype):
    rows, ch = shape
    rng = np.random.default_rng(rows * 31 + ch)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)  # |mean| > std: two-pass matters
    gamma = rng.uniform(0.5, 2, ch).astype(dtype)
    beta = rng.standard_normal(ch).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    eps, momentum = 1e-3, 0.9
    moving_mean = rng.standard_normal(ch).astype(dtype)
    moving_var = rng.uniform(0.5, 2, ch).astype(dtype)

    xt = torch.tensor(x, dtype=torch.float64).requires_grad_()
    gt = torch.tensor(gamma, dtype=torch.float64).requires_grad_()
    bt = torch.tensor(beta, dtype=torch.float64).requires_grad_()
    rm = torch.tensor(moving_mean, dtype=torch.float64)
    rv = torch.tensor(moving_var, dtype=torch.float64)
    yt = F.batch_norm(xt, rm, rv, gt, bt, training=True, momentum=1 - momentum, eps=eps)
    yt.backward(torch.tensor(dy, dtype=torch.float64))

    b = buffers(ch, dtype)
    part = batchnorm_workspace(ch)
    y = np.full(shape, np.nan, dtype)
    batchnorm_train(x, gamma, beta, eps, y, b["mean"], b["var"], b["scale"], b["shift"], part)
    r = rtol(dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=r * 10, atol=r * 10)
    np.testing.assert_allclose(b["mean"], x.astype(np.float64).mean(0), rtol=r, atol=r * 5)
    np.testing.assert_allclose(b["var"], x.astype(np.float64).var(0), rtol=r * 10, atol=r * 10)

    dx, dg, db = np.full(shape, np.nan, dtype), np.full(ch, np.nan, dtype), np.full(ch, np.nan, dtype)
    backprop_batchnorm(dy, x, gamma, b["mean"], b["var"], eps, dx, dg, db, part)
    scale = np.sqrt(rows) * 10
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=r * scale, atol=r * scale)
    np.testing.assert_allclose(dg, gt.grad.numpy(), rtol=r * scale, atol=r * scale)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=r * scale, atol=r * scale)

    mm, mv = moving_mean.copy(), moving_var.copy()
    batchnorm_update_moving(mm, mv, b["mean"], b["var"], momentum, rows)  # PyTorch: unbiased variance
    if rows > 1:
        np.testing.assert_allclose(mm, rm.numpy(), rtol=r * 10, atol=r * 10)
        np.testing.assert_allclose(mv, rv.numpy(), rtol=r * 10, atol=r * 10)
    mm, mv = moving_mean.copy(), moving_var.copy()
    batchnorm_update_moving(mm, mv, b["mean"], b["var"], momentum)  # Keras: biased variance
    np.testing.assert_allclose(mv, momentum * moving_var + (1 - momentum) * x.astype(np.float64).var(0),
                               rtol=r * 10, atol=r * 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_inference_against_torch_and_in_place(dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 6)).astype(dtype)
    gamma, beta, mean = (rng.standard_normal(6).astype(dtype) for _ in range(3))
    var = rng.uniform(0.1, 3, 6).astype(dtype)
    ref = F.batch_norm(torch.tensor(x, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64),
                       torch.tensor(var, dtype=torch.float64), torch.tensor(gamma, dtype=torch.float64),
                       torch.tensor(beta, dtype=torch.float64), training=False, eps=1e-5).numpy()
    b = buffers(6, dtype)
    y = batchnorm_inference(x, gamma, beta, mean, var, 1e-5, x, b["scale"], b["shift"])  # in place
    assert y is x
    np.testing.assert_allclose(x, ref, rtol=rtol(dtype) * 10, atol=rtol(dtype) * 10)


def test_strided_and_fortran_inputs_give_the_same_bits():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((301, 6))
    dy = rng.standard_normal((301, 6))
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    xv = np.zeros((301, 12))[:, ::2]
    xv[...] = x
    outs = []
    for xin, dyin in ((x, dy), (xv, np.asfortranarray(dy))):
        b, part = buffers(6, np.float64), batchnorm_workspace(6)
        y, dx, dg, db = np.empty_like(xin), np.asfortranarray(np.empty_like(x)), np.empty(6), np.empty(6)
        batchnorm_train(xin, gamma, beta, 1e-3, y, b["mean"], b["var"], b["scale"], b["shift"], part)
        backprop_batchnorm(dyin, xin, gamma, b["mean"], b["var"], 1e-3, dx, dg, db, part)
        outs.append([y, dx, dg, db, b["mean"], b["var"]])
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c)


def test_single_row_normalizes_to_beta_with_zero_input_gradient():
    """One row (batch 1 of a Dense layer): var = 0, so y = beta and dx = 0 (PyTorch refuses this case)."""
    x, dy = np.array([[3.0, -2.0]]), np.array([[0.5, 4.0]])
    gamma, beta = np.array([2.0, 3.0]), np.array([0.25, -1.0])
    b, part = buffers(2, np.float64), batchnorm_workspace(2)
    y, dx, dg, db = np.empty((1, 2)), np.empty((1, 2)), np.empty(2), np.empty(2)
    batchnorm_train(x, gamma, beta, 1e-3, y, b["mean"], b["var"], b["scale"], b["shift"], part)
    backprop_batchnorm(dy, x, gamma, b["mean"], b["var"], 1e-3, dx, dg, db, part)
    np.testing.assert_array_equal(y, beta[None])
    np.testing.assert_array_equal(dx, 0 * dx)
    np.testing.assert_array_equal(db, dy[0])
    np.testing.assert_array_equal(dg, 0 * dg)


def test_variance_is_stable_for_a_large_mean():
    """Σx² - n·mean² would lose every digit of this float32 variance; the two-pass sum keeps them."""
    x = (1e4 + np.random.default_rng(0).standard_normal((4096, 3))).astype(np.float32)
    mean, var = np.empty(3, np.float32), np.empty(3, np.float32)
    batchnorm_stats(x, mean, var, batchnorm_workspace(3))
    np.testing.assert_allclose(var, x.astype(np.float64).var(0), rtol=1e-4)


def test_finite_differences():
    """d/dx, d/dgamma, d/dbeta of L = Σ dy ⊙ BN(x) by central differences (batch statistics)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    dy = rng.standard_normal((9, 3))
    part = batchnorm_workspace(3)

    def loss():
        b = buffers(3, np.float64)
        y = np.empty_like(x)
        batchnorm_train(x, gamma, beta, 1e-3, y, b["mean"], b["var"], b["scale"], b["shift"], part)
        return float((y * dy).sum()), b

    _, b = loss()
    dx, dg, db = np.empty_like(x), np.empty(3), np.empty(3)
    backprop_batchnorm(dy, x, gamma, b["mean"], b["var"], 1e-3, dx, dg, db, part)
    for arr, grad in ((x, dx), (gamma, dg), (beta, db)):
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + 1e-6
            up = loss()[0]
            arr[idx] = old - 1e-6
            down = loss()[0]
            arr[idx] = old
            assert abs((up - down) / 2e-6 - grad[idx]) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("bias", [True, False])
def test_fold_batchnorm_into_a_convolution(dtype, bias):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 7, 6, 3)).astype(dtype)
    w = rng.standard_normal((3, 3, 3, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype) if bias else None
    gamma, beta, mean = (rng.standard_normal(5).astype(dtype) for _ in range(3))
    var = rng.uniform(0.1, 3, 5).astype(dtype)
    oh, ow, pads = conv2d_geometry(7, 6, 3, 3, padding="same")
    z = np.empty((2, oh, ow, 5), dtype)
    conv2d(x, w, b, z, pads=pads)
    buf = buffers(5, dtype)
    ref = batchnorm_inference(z.reshape(-1, 5), gamma, beta, mean, var, 1e-3, np.empty((z.size // 5, 5), dtype),
                              buf["scale"], buf["shift"])
    w2, b2 = fold_batchnorm(w, b, gamma, beta, mean, var, 1e-3)
    assert w2.dtype == dtype and b2.dtype == dtype and w2.shape == w.shape and b2.shape == (5,)
    y = np.empty_like(z)
    conv2d(x, w2, b2, y, pads=pads)
    np.testing.assert_allclose(y.reshape(-1, 5), ref, rtol=rtol(dtype) * 10, atol=rtol(dtype) * 50)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
def test_parallel_kernels_bitwise_equal_to_one_thread():
    script = textwrap.dedent("""
        import numpy as np
        import jitnn
        from jitnn.kernels.normalization import batchnorm_train, backprop_batchnorm, batchnorm_workspace
        rng = np.random.default_rng(1)
        x = rng.standard_normal((5003, 7)).astype(np.float32)
        dy = rng.standard_normal((5003, 7)).astype(np.float32)
        g, b = rng.standard_normal(7).astype(np.float32), rng.standard_normal(7).astype(np.float32)
        out = {}
        for t in (1, 3):
            jitnn.set_num_threads(t)
            bufs = [np.empty(7, np.float32) for _ in range(7)]
            part = batchnorm_workspace(7)
            y, dx = np.empty_like(x), np.empty_like(x)
            batchnorm_train(x, g, b, 1e-3, y, bufs[0], bufs[1], bufs[2], bufs[3], part)
            backprop_batchnorm(dy, x, g, bufs[0], bufs[1], 1e-3, dx, bufs[4], bufs[5], part)
            out[t] = [y, dx] + bufs[:6]
        assert all(np.array_equal(p, q) for p, q in zip(out[1], out[3]))
        print("ok")
    """)
    run_threaded(script)
