"""Convolution kernels (jitnn.kernels.conv) against PyTorch in float64, finite differences, and a one-thread run.

PyTorch is the independent reference: NHWC <-> NCHW permutes, explicit (possibly asymmetric) padding
through ``F.pad``, and autograd for dX, dW and db. Every case runs both forward algorithms (direct and
im2col + GEMM) and several patch-buffer chunkings (one image per chunk, and the whole batch at once).
"""

import itertools
import textwrap

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPE_NAMES, DTYPES, central_diff_at, run_threaded

from jitnn.kernels.conv import backprop_conv2d, conv2d, conv2d_geometry, conv2d_workspace, im2col
from jitnn.kernels.elementwise import LINEAR, RELU

MAX_THREADS = numba.config.NUMBA_NUM_THREADS

# (N, H, W, C, F, KH, KW, strides, dilation, padding)
CASES = [
    (2, 7, 9, 3, 5, 3, 3, (1, 1), (1, 1), "valid"),
    (1, 7, 9, 3, 5, 3, 3, (1, 1), (1, 1), "same"),
    (3, 8, 8, 1, 4, 3, 3, (2, 2), (1, 1), "same"),        # the first layer's C=1, even size, stride 2
    (2, 11, 6, 2, 3, 5, 2, (2, 3), (1, 1), "same"),       # odd pads (asymmetric), unequal strides
    (1, 9, 10, 4, 3, 3, 3, (1, 2), (2, 1), "valid"),      # dilation
    (2, 9, 9, 3, 2, 3, 2, (3, 1), (2, 3), "same"),        # dilation with same padding
    (2, 5, 7, 6, 7, 1, 1, (1, 1), (1, 1), "valid"),       # 1x1
    (2, 5, 7, 6, 7, 1, 1, (2, 2), (1, 1), "same"),        # strided 1x1
    (2, 5, 4, 3, 6, 5, 4, (1, 1), (1, 1), "valid"),       # kernel as large as the input: 1x1 output
    (1, 5, 4, 3, 6, 5, 4, (1, 1), (1, 1), "same"),        # ... and padded to keep the size
    (2, 6, 6, 5, 3, 3, 3, (1, 1), (1, 1), (2, 0, 1, 3)),  # explicit, asymmetric pads
    (1, 1, 1, 7, 3, 1, 1, (1, 1), (1, 1), "valid"),       # a 1x1 image
    (3, 13, 13, 32, 17, 3, 3, (1, 1), (1, 1), "valid"),   # the reference CNN's second layer, F off NR
]


def case_id(case):
    return "-".join(str(v).replace(" ", "") for v in case)


def make(case, dtype, seed=0):
    n, h, w, c, f, kh, kw, strides, dilation, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    wt = (rng.standard_normal((kh, kw, c, f)) / np.sqrt(kh * kw * c)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    oh, ow, pads = conv2d_geometry(h, w, kh, kw, strides, dilation, padding)
    dy = rng.standard_normal((n, oh, ow, f)).astype(dtype)
    return x, wt, b, dy, pads


def torch_conv(x, w, b, dy, strides, dilation, pads, relu=False):
    """(y, dX, dW, db) from PyTorch in float64, in jitnn's layouts."""
    # contiguous leaves: PyTorch's slow_conv2d refuses a permuted weight's gradient for some shapes (F=1)
    xt = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2).contiguous().requires_grad_()
    wt = torch.tensor(w, dtype=torch.float64).permute(3, 2, 0, 1).contiguous().requires_grad_()
    bt = torch.tensor(b, dtype=torch.float64).requires_grad_()
    top, bottom, left, right = pads
    z = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=strides, dilation=dilation)
    if relu:
        z = torch.relu(z)
    z.backward(torch.tensor(dy, dtype=torch.float64).permute(0, 3, 1, 2))
    return (z.detach().permute(0, 2, 3, 1).numpy(), xt.grad.permute(0, 2, 3, 1).numpy(),
            wt.grad.permute(2, 3, 1, 0).numpy(), bt.grad.numpy())


def tol(dtype, k):
    return (1e-12 if dtype == np.float64 else 2e-5) * max(np.sqrt(k), 1.0) * 10


def assert_close(got, ref, dtype, k):
    scale = max(np.abs(ref).max(initial=0.0), 1.0)
    np.testing.assert_allclose(got, ref, rtol=tol(dtype, k), atol=tol(dtype, k) * scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv2d_against_torch(case, dtype):
    x, w, b, dy, pads = make(case, dtype)
    strides, dilation = case[7], case[8]
    y_ref, dx_ref, dw_ref, db_ref = torch_conv(x, w, b, dy, strides, dilation, pads)
    n, kh, kw, c = x.shape[0], w.shape[0], w.shape[1], x.shape[3]
    k = kh * kw * c
    y = np.full(dy.shape, np.nan, dtype)
    for algorithm in ("direct", "gemm"):
        for chunk in (1, n):  # one image per chunk, and the whole batch in one
            cols = np.empty((chunk * dy.shape[1] * dy.shape[2], k), dtype)
            y[...] = np.nan
            out = conv2d(x, w, b, y, strides, dilation, pads, cols=cols, algorithm=algorithm)
            assert out is y
            assert_close(y, y_ref, dtype, k)
    for algorithm, chunk in itertools.product(("direct", "gemm"), (1, n)):  # dW tap by tap, or by GEMM
        cols = np.empty((chunk * dy.shape[1] * dy.shape[2], k), dtype)
        dx = np.full(x.shape, np.nan, dtype)
        dw = np.full(w.shape, np.nan, dtype)
        db = np.full(b.shape, np.nan, dtype)
        backprop_conv2d(x, w, dy, dx, dw, db, strides, dilation, pads, cols=cols, algorithm=algorithm)
        m = dy.shape[0] * dy.shape[1] * dy.shape[2]
        assert_close(dx, dx_ref, dtype, w.shape[3] * kh * kw)
        assert_close(dw, dw_ref, dtype, m)
        assert_close(db, db_ref, dtype, m)


def random_cases(count, seed):
    """Random valid geometries: sizes 1-9, kernels up to the input, strides and dilations 1-3, any padding."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        h, w = rng.integers(1, 10, 2)
        kh, kw = rng.integers(1, 5, 2)
        strides, dilation = tuple(map(int, rng.integers(1, 4, 2))), tuple(map(int, rng.integers(1, 4, 2)))
        padding = ["valid", "same", tuple(map(int, rng.integers(0, 3, 4)))][rng.integers(0, 3)]
        try:
            conv2d_geometry(h, w, kh, kw, strides, dilation, padding)
        except ValueError:
            continue  # the kernel does not fit: draw again
        cases.append((int(rng.integers(1, 4)), int(h), int(w), int(rng.integers(1, 6)), int(rng.integers(1, 20)),
                       int(kh), int(kw), strides, dilation, padding))
    return cases


@pytest.mark.parametrize("case", random_cases(12, seed=2026), ids=case_id)
def test_random_geometries_against_torch(case):
    test_conv2d_against_torch(case, np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("case", random_cases(200, seed=7), ids=case_id)
def test_many_random_geometries_against_torch(case):
    test_conv2d_against_torch(case, np.float64)


@pytest.mark.parametrize("algorithm", ["direct", "gemm"])
def test_fused_bias_relu_and_no_bias(algorithm):
    case = (2, 8, 7, 2, 19, 3, 3, (1, 1), (1, 1), "same")
    x, w, b, dy, pads = make(case, np.float64, seed=3)
    y_ref = torch_conv(x, w, b, dy, (1, 1), (1, 1), pads, relu=True)[0]
    y = np.empty(dy.shape)
    conv2d(x, w, b, y, (1, 1), (1, 1), pads, act=RELU, algorithm=algorithm)
    assert_close(y, y_ref, np.float64, 18)
    y_nob = torch_conv(x, w, np.zeros_like(b), dy, (1, 1), (1, 1), pads)[0]
    conv2d(x, w, None, y, (1, 1), (1, 1), pads, act=LINEAR, algorithm=algorithm)
    assert_close(y, y_nob, np.float64, 18)


def test_strided_input_and_contiguity_errors():
    """x and dx may be views of any strides; w, y, dy and dw must be C-contiguous (they are reshaped)."""
    case = (2, 7, 6, 3, 4, 3, 3, (1, 1), (1, 1), "same")
    x, w, b, dy, pads = make(case, np.float64, seed=6)
    y_ref, dx_ref, dw_ref, _ = torch_conv(x, w, b, dy, (1, 1), (1, 1), pads)
    big = np.zeros((2, 14, 6, 5))
    xv = big[:, ::2, :, 1:4]  # every other row, 3 of 5 channels
    xv[...] = x
    dxv = np.zeros((2, 14, 6, 5))[:, 1::2, :, :3]
    y = np.empty(dy.shape)
    for algorithm in ("direct", "gemm"):
        conv2d(xv, w, b, y, pads=pads, algorithm=algorithm)
        assert_close(y, y_ref, np.float64, 27)
    dw = np.empty(w.shape)
    backprop_conv2d(xv, w, dy, dxv, dw, None, pads=pads)
    assert_close(dxv, dx_ref, np.float64, 36)
    assert_close(dw, dw_ref, np.float64, 84)
    with pytest.raises(ValueError, match="y must be C-contiguous"):
        conv2d(x, w, b, np.empty(dy.shape[::-1]).T, pads=pads)
    with pytest.raises(ValueError, match="w must be C-contiguous"):
        conv2d(x, np.asfortranarray(w), b, y, pads=pads)
    with pytest.raises(ValueError, match=r"received: cols.shape=\(40, 27\)"):
        conv2d(x, w, b, y, pads=pads, cols=np.empty((40, 27)), algorithm="gemm")  # one image needs 42 rows
    with pytest.raises(ValueError, match=r"received: cols.shape=\(42, 26\)"):
        backprop_conv2d(x, w, dy, None, np.empty(w.shape), pads=pads, cols=np.empty((42, 26)))
    with pytest.raises(ValueError, match="dw must be C-contiguous"):
        backprop_conv2d(x, w, dy, None, np.empty(w.shape[::-1]).T, pads=pads)


def test_first_layer_skips_dx_and_db():
    case = (2, 6, 6, 1, 4, 3, 3, (1, 1), (1, 1), "valid")
    x, w, b, dy, pads = make(case, np.float64, seed=4)
    dw_ref = torch_conv(x, w, b, dy, (1, 1), (1, 1), pads)[2]
    dw = np.empty(w.shape)
    backprop_conv2d(x, w, dy, None, dw, None, (1, 1), (1, 1), pads)
    assert_close(dw, dw_ref, np.float64, 32)


def test_finite_differences():
    """dL/dx and dL/dw of L = Σ dy ⊙ conv(x, w) by central differences, no PyTorch involved."""
    case = (2, 5, 6, 2, 3, 3, 2, (2, 1), (1, 2), "same")
    x, w, b, dy, pads = make(case, np.float64, seed=5)
    strides, dilation = case[7], case[8]

    def loss(xv, wv):
        y = np.empty(dy.shape)
        conv2d(xv, wv, b, y, strides, dilation, pads, algorithm="gemm")
        return float((y * dy).sum())

    dx = np.empty(x.shape)
    dw = np.empty(w.shape)
    backprop_conv2d(x, w, dy, dx, dw, None, strides, dilation, pads)
    rng = np.random.default_rng(0)
    for arr, grad in ((x, dx), (w, dw)):
        at = [tuple(i) for i in rng.integers(0, arr.shape, size=(12, arr.ndim))]
        numeric = central_diff_at(lambda: loss(x, w), arr, at)
        np.testing.assert_allclose(numeric, [grad[i] for i in at], rtol=0, atol=1e-6)


def test_im2col_matches_numpy_patches():
    x = np.arange(2 * 5 * 4 * 3, dtype=np.float64).reshape(2, 5, 4, 3)
    oh, ow, (pt, pb, pl, pr) = conv2d_geometry(5, 4, 3, 2, (2, 1), (1, 2), "same")
    cols = np.full((2 * oh * ow, 3 * 2 * 3), np.nan)
    im2col(x, 0, 2, 3, 2, 2, 1, 1, 2, pt, pl, oh, ow, cols)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ref = np.stack([xp[:, i * 2 + a, j + 2 * bb, :] for i in range(oh) for j in range(ow)
                    for a in range(3) for bb in range(2)])
    ref = ref.reshape(oh * ow, 3 * 2, 2, 3).transpose(2, 0, 1, 3).reshape(2 * oh * ow, 18)
    np.testing.assert_array_equal(cols, ref)


def test_geometry_same_and_errors():
    assert conv2d_geometry(28, 28, 3, 3) == (26, 26, (0, 0, 0, 0))
    assert conv2d_geometry(28, 28, 3, 3, padding="same") == (28, 28, (1, 1, 1, 1))
    assert conv2d_geometry(7, 8, 4, 4, (2, 2), padding="same") == (4, 4, (1, 2, 1, 1))
    assert conv2d_geometry(6, 6, 3, 3, padding=(1, 2)) == (6, 8, (1, 1, 2, 2))
    with pytest.raises(ValueError, match="received: strides=0"):
        conv2d_geometry(5, 5, 3, 3, strides=(0, 1))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d_geometry(2, 5, 3, 3)
    with pytest.raises(ValueError, match="received: padding='full'"):
        conv2d_geometry(5, 5, 3, 3, padding="full")
    with pytest.raises(ValueError, match="received: algorithm='fft'"):
        conv2d(np.zeros((1, 3, 3, 1)), np.zeros((1, 1, 1, 1)), None, np.zeros((1, 3, 3, 1)), algorithm="fft")


def test_workspace_chunks_the_batch():
    cols = conv2d_workspace((256, 13, 13, 32), (3, 3, 32, 64), (11, 11), np.float32, chunk_bytes=1 << 20)
    assert cols.shape[1] == 288 and cols.shape[0] % 121 == 0 and cols.nbytes <= 1 << 20


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
def test_parallel_kernels_bitwise_equal_to_one_thread():
    """Forward (both algorithms) and backward with 3 threads really running equal a one-thread run."""
    script = textwrap.dedent("""
        import numpy as np, numba
        import jitnn
        from jitnn.kernels.conv import conv2d, backprop_conv2d, conv2d_geometry
        rng = np.random.default_rng(1)
        x = rng.standard_normal((5, 12, 11, 6)).astype(np.float32)
        w = rng.standard_normal((3, 3, 6, 20)).astype(np.float32)
        b = rng.standard_normal(20).astype(np.float32)
        oh, ow, pads = conv2d_geometry(12, 11, 3, 3, (1, 2), (1, 1), "same")
        dy = rng.standard_normal((5, oh, ow, 20)).astype(np.float32)
        out = {}
        for t in (1, 3):
            jitnn.set_num_threads(t)
            res = []
            for alg in ("direct", "gemm"):
                y = np.empty_like(dy)
                conv2d(x, w, b, y, (1, 2), (1, 1), pads, algorithm=alg)
                res.append(y)
            dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
            backprop_conv2d(x, w, dy, dx, dw, db, (1, 2), (1, 1), pads)
            out[t] = res + [dx, dw, db]
        for a, c in zip(out[1], out[3]):
            assert np.array_equal(a, c)
        print("ok")
    """)
    run_threaded(script)
