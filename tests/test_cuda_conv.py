"""The CUDA convolution, pooling and batch-norm ops against the CPU ops (jitnn.backend.cpu).

The CPU ops are checked against PyTorch in test_conv_kernels, test_pooling_kernels and
test_normalization_kernels; here each CUDA op must give the CPU's results on the same inputs (both
devices run the same algorithm and add in the same order). Under numba's simulator one Python thread
runs per CUDA thread, so the shapes are tiny, but odd: primes, batch 1, 1x1 and input-sized kernels,
stride 2, "same" padding with its odd pixel, dilation, both conv algorithms, chunks of one image.
"""

import numpy as np
import pytest
from helpers import DTYPE_NAMES, DTYPES, tolerance

from jitnn import BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D, Sequential, activations
from jitnn.backend.cpu import CPU
from jitnn.kernels import conv as KC
from jitnn.kernels.conv import conv2d_geometry
from jitnn.kernels.pooling import pool_geometry

cudart = pytest.importorskip("jitnn.cuda.runtime")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not cudart.available(), reason="no CUDA device and no simulator")]

if cudart.available():
    from jitnn.backend.cuda import CUDA
    from jitnn.cuda import conv as CC



def tol(dtype):
    return tolerance(dtype, float32=(2e-5, 2e-5), float64=(1e-12, 1e-13))


def on_gpu(fn, *arrays):
    """``fn`` applied to device copies of ``arrays`` (None stays None); the device arrays are returned."""
    dev = [None if a is None else CUDA.to_device(a) for a in arrays]
    fn(*dev)
    return dev


def host(a):
    return CUDA.to_host(a)


# --- convolution ----------------------------------------------------------------------------------------
# (x shape (N, H, W, C), kernel (KH, KW, F), strides, dilation, padding, activation, bias, algorithm)
CONV_CASES = {
    "direct_same_stride2": ((2, 5, 6, 3), (3, 2, 4), (2, 2), (1, 1), "same", "relu", True, "auto"),
    "direct_dilated_batch1": ((1, 7, 5, 1), (3, 3, 2), (1, 1), (2, 1), "same", "tanh", False, "auto"),
    "gemm_valid_odd": ((2, 5, 4, 9), (2, 3, 3), (1, 1), (1, 1), "valid", "linear", True, "auto"),
    "gemm_1x1_stride2": ((1, 5, 3, 2), (1, 1, 5), (2, 2), (1, 1), "same", "sigmoid", True, "gemm"),
    "gemm_kernel_as_input": ((2, 3, 4, 2), (3, 4, 3), (1, 1), (1, 1), "valid", "linear", False, "gemm"),
    "direct_stride_3_2": ((1, 7, 6, 2), (3, 2, 3), (3, 2), (1, 1), "valid", "linear", True, "direct"),
}


def conv_problem(case, dtype, seed=0):
    xs, (kh, kw, f), strides, dil, padding, act, use_bias, algorithm = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((kh, kw, xs[3], f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if use_bias else None
    oh, ow, pads = conv2d_geometry(xs[1], xs[2], kh, kw, strides, dil, padding)
    return x, w, b, (xs[0], oh, ow, f), (strides, dil, pads), activations.get(act), algorithm


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_forward_matches_cpu(case, dtype):
    x, w, b, yshape, geo, act, algorithm = conv_problem(case, dtype)
    code = act.code if act.in_epilogue else 0
    ref = np.empty(yshape, dtype)
    KC.conv2d(x, w, b, ref, *geo, code, act.param, None, algorithm)
    dx, dw, db = on_gpu(lambda *_: None, x, w, b)
    y = CUDA.alloc(yshape, dtype)
    CC.conv2d(dx, dw, db, y, *geo, code, act.param, None, algorithm)
    np.testing.assert_allclose(host(y), ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", ["direct_same_stride2", "gemm_valid_odd", "direct_dilated_batch1",
                                  "gemm_kernel_as_input"])
def test_backprop_conv2d_matches_cpu(case, dtype, one_image_chunks=False):
    """dW, db and dX through the ops, with the patch buffer from conv2d_workspace (the batch in one chunk)
    or, ``one_image_chunks``, a buffer of one image's patches (dW then accumulates with beta = 1)."""
    x, w, _, yshape, geo, _, _ = conv_problem(case, dtype, seed=1)
    g = np.random.default_rng(2).standard_normal(yshape).astype(dtype)
    ref_dx, ref_dw, ref_db = np.empty_like(x), np.empty_like(w), np.empty(w.shape[3], dtype)
    CPU.backprop_conv2d(x, w, g, ref_dx, ref_dw, ref_db, *geo, None)
    rows, k = yshape[1] * yshape[2], w.shape[0] * w.shape[1] * w.shape[2]
    cols = CUDA.alloc((rows, k), dtype) if one_image_chunks else CUDA.conv2d_workspace(x.shape, w.shape, yshape[1:3],
                                                                                        dtype)
    d_x, d_w, d_g = on_gpu(lambda *_: None, x, w, g)
    dx, dw, db = CUDA.alloc(x.shape, dtype), CUDA.alloc(w.shape, dtype), CUDA.alloc(w.shape[3], dtype)
    CUDA.backprop_conv2d(d_x, d_w, d_g, dx, dw, db, *geo, cols)
    np.testing.assert_allclose(host(dw), ref_dw, **tol(dtype))
    np.testing.assert_allclose(host(db), ref_db, **tol(dtype))
    np.testing.assert_allclose(host(dx), ref_dx, **tol(dtype))


def test_backprop_conv2d_in_chunks_of_one_image():
    test_backprop_conv2d_matches_cpu("gemm_valid_odd", np.float64, one_image_chunks=True)


def test_backprop_conv2d_first_layer_skips_dx_and_db():
    x, w, _, yshape, geo, _, _ = conv_problem("gemm_1x1_stride2", np.float64, seed=3)
    g = np.random.default_rng(4).standard_normal(yshape)
    ref_dw = np.empty_like(w)
    CPU.backprop_conv2d(x, w, g, None, ref_dw, None, *geo, None)
    d_x, d_w, d_g = on_gpu(lambda *_: None, x, w, g)
    dw = CUDA.alloc(w.shape, np.float64)
    CUDA.backprop_conv2d(d_x, d_w, d_g, None, dw, None, *geo, None)
    np.testing.assert_allclose(host(dw), ref_dw, **tol(np.float64))


def test_conv2d_rejects_a_patch_buffer_too_small():
    x, w, b, yshape, geo, _, _ = conv_problem("gemm_valid_odd", np.float64)
    cols = CUDA.alloc((3, 18), np.float64)
    with pytest.raises(ValueError, match=r"cols must be a \(8\*images, 54\).*received: cols.shape=\(3, 18\)"):
        CUDA.conv2d(*on_gpu(lambda *_: None, x, w, b), CUDA.alloc(yshape, np.float64), *geo, None, cols)


# --- pooling ---------------------------------------------------------------------------------------------
# (x shape, pool, strides, padding)
POOL_CASES = {
    "valid_2x2": ((2, 4, 5, 3), (2, 2), (2, 2), "valid"),
    "same_overlap": ((1, 5, 6, 2), (3, 3), (2, 2), "same"),
    "same_stride1_rect": ((2, 3, 5, 1), (2, 3), (1, 1), "same"),
    "window_as_input": ((1, 3, 4, 2), (3, 4), (1, 1), "valid"),
}


def pool_problem(case, dtype, seed=0):
    xs, pool, strides, padding = POOL_CASES[case]
    # small integers: many ties, so the argmax tie-breaking (the first maximum) is exercised
    x = np.random.default_rng(seed).integers(-3, 4, xs).astype(dtype)
    oh, ow, pt, pl = pool_geometry(xs[1], xs[2], pool, strides, padding)
    return x, pool, strides, (pt, pl), (xs[0], oh, ow, xs[3])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_maxpool2d_and_backprop_match_cpu(case, dtype):
    x, pool, strides, pads, yshape = pool_problem(case, dtype)
    x[0, 0, 0, 0] = np.nan  # a NaN wins its windows, on both devices
    y, am = np.empty(yshape, dtype), np.empty(yshape, np.int32)
    CPU.maxpool2d(x, pool, strides, pads, y, am)
    (dx_,) = on_gpu(lambda *_: None, x)
    dy, dam = CUDA.alloc(yshape, dtype), CUDA.alloc(yshape, np.int32)
    CUDA.maxpool2d(dx_, pool, strides, pads, dy, dam)
    np.testing.assert_array_equal(host(dam), am)
    np.testing.assert_array_equal(host(dy), y)
    g = np.random.default_rng(1).standard_normal(yshape).astype(dtype)
    ref = np.empty_like(x)
    CPU.backprop_maxpool2d(g, am, pool, strides, pads, ref)
    dgrad = CUDA.alloc(x.shape, dtype)
    CUDA.backprop_maxpool2d(CUDA.to_device(g), dam, pool, strides, pads, dgrad)
    np.testing.assert_allclose(host(dgrad), ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_avgpool2d_and_backprop_match_cpu(case, dtype):
    x, pool, strides, pads, yshape = pool_problem(case, dtype, seed=2)
    x += np.random.default_rng(3).standard_normal(x.shape).astype(dtype)
    y = np.empty(yshape, dtype)
    CPU.avgpool2d(x, pool, strides, pads, y)
    dy = CUDA.alloc(yshape, dtype)
    CUDA.avgpool2d(CUDA.to_device(x), pool, strides, pads, dy)
    np.testing.assert_allclose(host(dy), y, **tol(dtype))
    g = np.random.default_rng(4).standard_normal(yshape).astype(dtype)
    ref = np.empty_like(x)
    CPU.backprop_avgpool2d(g, pool, strides, pads, ref)
    dgrad = CUDA.alloc(x.shape, dtype)
    CUDA.backprop_avgpool2d(CUDA.to_device(g), pool, strides, pads, dgrad)
    np.testing.assert_allclose(host(dgrad), ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("shape", [(3, 2, 5, 4), (1, 1, 1, 3)])
def test_global_avgpool2d_and_backprop_match_cpu(shape, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    y = np.empty((shape[0], shape[3]), dtype)
    CPU.global_avgpool2d(x, y)
    dy = CUDA.alloc(y.shape, dtype)
    CUDA.global_avgpool2d(CUDA.to_device(x), dy)
    np.testing.assert_allclose(host(dy), y, **tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    ref = np.empty_like(x)
    CPU.backprop_global_avgpool2d(g, ref)
    dgrad = CUDA.alloc(shape, dtype)
    CUDA.backprop_global_avgpool2d(CUDA.to_device(g), dgrad)
    np.testing.assert_allclose(host(dgrad), ref, **tol(dtype))


# --- batch normalization ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("rows,channels", [(7, 3), (131, 2), (1, 5)])
def test_batchnorm_train_update_backprop_and_inference_match_cpu(rows, channels, dtype):
    """The statistics and the parameter gradients are sums in the CPU's fixed block order: the same bits
    in float64. 131 rows leave the last of the 64 blocks short, 7 and 1 leave most blocks empty."""
    rng = np.random.default_rng(rows)
    x = (rng.standard_normal((rows, channels)) * 3 + 5).astype(dtype)
    gamma, beta = rng.standard_normal(channels).astype(dtype), rng.standard_normal(channels).astype(dtype)
    g = rng.standard_normal((rows, channels)).astype(dtype)
    eps, momentum = 1e-3, 0.9

    def run(ops):
        d = [ops.to_device(a) for a in (x, gamma, beta, g)]
        dx_, dgam, dbet, dg = d
        stats = [ops.zeros(channels, dtype) for _ in range(4)]
        moving = [ops.to_device(rng_moving.copy()) for rng_moving in (m0, v0)]
        y, partial = ops.alloc((rows, channels), dtype), ops.batchnorm_workspace(channels)
        ops.batchnorm_train(dx_, dgam, dbet, eps, y, *stats, partial)
        ops.batchnorm_update_moving(*moving, stats[0], stats[1], momentum)
        grads = [ops.alloc((rows, channels), dtype), ops.alloc(channels, dtype), ops.alloc(channels, dtype)]
        ops.backprop_batchnorm(dg, dx_, dgam, stats[0], stats[1], eps, *grads, partial)
        y_inf = ops.alloc((rows, channels), dtype)
        ops.batchnorm_inference(dx_, dgam, dbet, *moving, eps, y_inf, stats[2], stats[3])
        return [ops.to_host(a) for a in (y, *stats[:2], *moving, *grads, y_inf)]

    m0, v0 = rng.standard_normal(channels).astype(dtype), rng.uniform(0.5, 2, channels).astype(dtype)
    names = ["y", "mean", "var", "moving_mean", "moving_var", "dx", "dgamma", "dbeta", "y_inference"]
    for name, got, ref in zip(names, run(CUDA), run(CPU)):
        if dtype == np.float64 and name in ("mean", "var", "dbeta"):
            np.testing.assert_array_equal(got, ref, err_msg=name)
        else:
            np.testing.assert_allclose(got, ref, **tol(dtype), err_msg=name)


# --- a CNN trained on either device -----------------------------------------------------------------------------


def test_cnn_fit_on_the_gpu_matches_the_cpu():
    """Conv2D -> MaxPooling2D -> BatchNormalization -> Flatten -> Dense: two Adam steps from the same
    seed, images gathered on the device from the resident training set; weights, moving statistics,
    losses and predictions as the CPU's (float64; Adam's g / sqrt(v) turns a last-bit difference in a
    near-zero gradient into a relative 1e-9 in the step, hence not 1e-12)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, 6, 5, 2))
    y = rng.integers(0, 3, 8)
    runs = []
    for device in ("cpu", "cuda"):
        model = Sequential([Conv2D(3, 3, padding="same", activation="relu", input_shape=(6, 5, 2)),
                            MaxPooling2D(2), BatchNormalization(momentum=0.8), Flatten(), Dense(3, "softmax")],
                           dtype="float64", device=device)
        model.compile("sparse_categorical_crossentropy", "adam", ["accuracy"])
        hist = model.fit(x, y, epochs=1, batch_size=4, seed=2, verbose=0)
        runs.append((model.get_weights(), [model.ops.to_host(s) for s in model.layers[2].state],
                     hist.history, model.predict(x)))
    (wc, sc, hc, pc), (wg, sg, hg, pg) = runs
    for a, b in zip(wc + sc, wg + sg):
        np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-10)
    for key in hc:
        np.testing.assert_allclose(hg[key], hc[key], rtol=1e-10)
    np.testing.assert_allclose(pg, pc, rtol=1e-7, atol=1e-10)
