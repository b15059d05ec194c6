"""Pooling kernels (jitnn.kernels.pooling) against PyTorch in float64, and against a one-thread run.

Keras "same" padding can be asymmetric and excludes padded cells from both the max and the average's
count, which PyTorch's pooling arguments cannot express: the reference pads explicitly (-inf for max,
0 for sums) and divides the average by a pooled mask of real cells, then lets autograd differentiate.
"""

import textwrap

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import DTYPE_NAMES, DTYPES, run_threaded

from jitnn.kernels.pooling import (
    avgpool2d,
    backprop_avgpool2d,
    backprop_global_avgpool2d,
    backprop_maxpool2d,
    global_avgpool2d,
    maxpool2d,
    pool_geometry,
)

# (N, H, W, C, pool, strides, padding)
CASES = [
    (2, 8, 8, 3, (2, 2), None, "valid"),       # the reference CNN's MaxPool 2
    (1, 7, 9, 2, (2, 2), None, "valid"),       # odd sizes: the last row/column dropped
    (2, 7, 9, 2, (2, 2), None, "same"),        # ... or padded at the bottom/right
    (2, 9, 8, 3, (3, 3), (2, 2), "valid"),     # overlapping windows
    (1, 9, 8, 3, (3, 2), (1, 2), "same"),      # overlapping, asymmetric padding
    (3, 5, 6, 1, (5, 6), None, "valid"),       # window as large as the input
    (2, 5, 6, 4, (2, 3), (3, 1), "same"),      # stride larger than the window
    (1, 1, 1, 5, (1, 1), None, "valid"),
]


def case_id(case):
    return "-".join(str(v).replace(" ", "") for v in case)


def geometry(case):
    _, h, w, _, pool, strides, padding = case
    return pool, pool if strides is None else strides, pool_geometry(h, w, pool, strides, padding)


def torch_pool(x, dy, pool, strides, oh, ow, pt, pl, kind):
    """(y, dx) by PyTorch in float64 with explicit padding that excludes padded cells."""
    h, w = x.shape[1], x.shape[2]
    pb = max((oh - 1) * strides[0] + pool[0] - h - pt, 0)
    pr = max((ow - 1) * strides[1] + pool[1] - w - pl, 0)
    xt = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()
    if kind == "max":
        y = F.max_pool2d(F.pad(xt, (pl, pr, pt, pb), value=-np.inf), pool, strides)
    else:
        ones = torch.ones_like(xt[:1, :1])
        count = F.avg_pool2d(F.pad(ones, (pl, pr, pt, pb)), pool, strides)
        y = F.avg_pool2d(F.pad(xt, (pl, pr, pt, pb)), pool, strides) / count
    y = y[:, :, :oh, :ow]
    y.backward(torch.tensor(dy, dtype=torch.float64).permute(0, 3, 1, 2))
    return y.detach().permute(0, 2, 3, 1).numpy(), xt.grad.permute(0, 2, 3, 1).numpy()


def rtol(dtype):
    return 1e-13 if dtype == np.float64 else 1e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_max_and_average_pooling_against_torch(case, dtype):
    n, h, w, c = case[:4]
    pool, strides, (oh, ow, pt, pl) = geometry(case)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    dy = rng.standard_normal((n, oh, ow, c)).astype(dtype)
    for kind in ("max", "avg"):
        y_ref, dx_ref = torch_pool(x, dy, pool, strides, oh, ow, pt, pl, kind)
        y = np.full((n, oh, ow, c), np.nan, dtype)
        dx = np.full(x.shape, np.nan, dtype)
        if kind == "max":
            arg = np.full(y.shape, -1, np.int32)
            maxpool2d(x, *pool, *strides, pt, pl, y, arg)
            np.testing.assert_array_equal(y, y_ref.astype(dtype))  # a max is exact
            np.testing.assert_array_equal(x.reshape(n, h * w, c)[np.arange(n)[:, None, None, None], arg,
                                                                  np.arange(c)], y)
            backprop_maxpool2d(dy, arg, *pool, *strides, pt, pl, dx)
        else:
            avgpool2d(x, *pool, *strides, pt, pl, y)
            backprop_avgpool2d(dy, *pool, *strides, pt, pl, dx)
        np.testing.assert_allclose(y, y_ref, rtol=rtol(dtype), atol=rtol(dtype) * 10)
        np.testing.assert_allclose(dx, dx_ref, rtol=rtol(dtype), atol=rtol(dtype) * 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_strided_views_and_fortran_order(dtype):
    """The kernels index 4-D arrays directly: views and F-order arrays in and out give the same results."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 8, 3)).astype(dtype)
    oh, ow, pt, pl = pool_geometry(9, 8, (3, 2), (2, 2), "same")
    dy = rng.standard_normal((2, oh, ow, 3)).astype(dtype)
    xv = np.zeros((2, 9, 16, 5), dtype)[:, :, ::2, 1:4]
    xv[...] = x
    dyf = np.asfortranarray(dy)
    outs = []
    for xin, dyin, layout in ((x, dy, "C"), (xv, dyf, "F")):
        y = np.empty(dy.shape, dtype, order=layout)
        arg = np.empty(dy.shape, np.int64, order=layout)
        dx = np.zeros((2, 9, 8, 6), dtype)[..., ::2] if layout == "F" else np.empty(x.shape, dtype)
        maxpool2d(xin, 3, 2, 2, 2, pt, pl, y, arg)
        backprop_maxpool2d(dyin, arg, 3, 2, 2, 2, pt, pl, dx)
        ya = np.empty(dy.shape, dtype, order=layout)
        dxa = np.empty(x.shape, dtype, order=layout)
        avgpool2d(xin, 3, 2, 2, 2, pt, pl, ya)
        backprop_avgpool2d(dyin, 3, 2, 2, 2, pt, pl, dxa)
        outs.append([y, arg, dx.copy(), ya, dxa])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_maxpool_nan_propagates_and_first_maximum_wins():
    x = np.array([[[[1.0], [3.0]], [[3.0], [np.nan]]]])  # (1, 2, 2, 1)
    y = np.empty((1, 1, 1, 1))
    arg = np.empty((1, 1, 1, 1), np.int64)
    maxpool2d(x, 2, 2, 2, 2, 0, 0, y, arg)
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 3
    x[0, 1, 1, 0] = 0.0
    maxpool2d(x, 2, 2, 2, 2, 0, 0, y, arg)
    assert y[0, 0, 0, 0] == 3.0 and arg[0, 0, 0, 0] == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_global_average_pooling(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 7, 4)).astype(dtype)
    dy = rng.standard_normal((3, 4)).astype(dtype)
    xt = torch.tensor(x, dtype=torch.float64).requires_grad_()
    yt = xt.mean(dim=(1, 2))
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    y = np.empty((3, 4), dtype)
    dx = np.empty_like(x)
    global_avgpool2d(x, y)
    backprop_global_avgpool2d(dy, dx)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol(dtype) * 10, atol=rtol(dtype) * 10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol(dtype), atol=rtol(dtype))


def test_geometry_and_errors():
    assert pool_geometry(26, 26, (2, 2)) == (13, 13, 0, 0)
    assert pool_geometry(11, 11, (2, 2)) == (5, 5, 0, 0)
    assert pool_geometry(11, 11, (2, 2), padding="same") == (6, 6, 0, 0)
    assert pool_geometry(8, 8, (3, 3), (1, 1), "same") == (8, 8, 1, 1)
    with pytest.raises(ValueError, match="received: pool_size=0"):
        pool_geometry(4, 4, (0, 2))
    with pytest.raises(ValueError, match="exceeds the input"):
        pool_geometry(2, 4, (3, 3))
    with pytest.raises(ValueError, match="received: padding='full'"):
        pool_geometry(4, 4, (2, 2), padding="full")


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
def test_parallel_kernels_bitwise_equal_to_one_thread():
    script = textwrap.dedent("""
        import numpy as np
        import jitnn
        from jitnn.kernels.pooling import (maxpool2d, backprop_maxpool2d, avgpool2d, backprop_avgpool2d,
                                           global_avgpool2d, backprop_global_avgpool2d, pool_geometry)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((3, 13, 12, 5)).astype(np.float32)
        oh, ow, pt, pl = pool_geometry(13, 12, (3, 3), (2, 2), "same")
        dy = rng.standard_normal((3, oh, ow, 5)).astype(np.float32)
        out = {}
        for t in (1, 3):
            jitnn.set_num_threads(t)
            y, a, dx = np.empty_like(dy), np.empty(dy.shape, np.int32), np.empty_like(x)
            maxpool2d(x, 3, 3, 2, 2, pt, pl, y, a)
            backprop_maxpool2d(dy, a, 3, 3, 2, 2, pt, pl, dx)
            y2, dx2 = np.empty_like(dy), np.empty_like(x)
            avgpool2d(x, 3, 3, 2, 2, pt, pl, y2)
            backprop_avgpool2d(dy, 3, 3, 2, 2, pt, pl, dx2)
            g, dg = np.empty((3, 5), np.float32), np.empty_like(x)
            global_avgpool2d(x, g)
            backprop_global_avgpool2d(g, dg)
            out[t] = [y, a, dx, y2, dx2, g, dg]
        assert all(np.array_equal(p, q) for p, q in zip(out[1], out[3]))
        print("ok")
    """)
    run_threaded(script)
