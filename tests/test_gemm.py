"""jitnn.gemm, jitnn.matmul and the micro-kernel against float64 numpy.

Every product goes through ``check_gemm``, which compares with ``reference`` (float64 numpy, BLAS
semantics: alpha == 0 reads neither A nor B, beta == 0 never reads C) under a tolerance scaled by
dtype and K. Shapes sit off every multiple of MR, NR, MC and KC and reach both driver paths (M <= MC:
N split across threads; M > MC: M split in blocks) with K under, on and past KC (several slabs);
``test_shape_table_reaches_every_path`` keeps the table honest when ``BLOCKS`` changes.
"""

import math
import os
import re
import subprocess
import sys
import textwrap

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest
from helpers import DTYPE_NAMES, DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from scipy.special import expit

import jitnn
from jitnn.kernels import gemm as gemm_kernels
from jitnn.kernels.blocking import BLOCKS, SHORT_ROWS, VECTOR_BYTES
from jitnn.kernels.gemm import (
    ALIASED_MIN_PANELS,
    IN_PLACE_MAX_PANELS,
    IN_PLACE_MAX_PANELS_COLUMN_MAJOR,
    ROWS_OWNED_MAX_PANELS,
    WIDE_MAX_ROWS,
    column_shares,
    deepest_slab_depth,
    workspace_sizes,
)
from jitnn.kernels.micro import WIDE_ROW_PANELS, micro_kernel, micro_kernel_c, short_kernel

LAYOUTS = ["C", "F", "view", "neg", "negF"]
ACTIVATIONS = [("linear", 0.0), ("relu", 0.0), ("leaky_relu", 0.1), ("leaky_relu", -0.5), ("sigmoid", 0.0),
               ("tanh", 0.0), ("swish", 0.0), ("silu", 0.0), ("gelu", 0.0)]
MAX_THREADS = numba.config.NUMBA_NUM_THREADS
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# (M, N, K), off every multiple of MR, NR, MC and KC. The MC and KC boundary shapes are derived from
# BLOCKS (f32 and f64 rows differ), so the table follows a retuning; the primes sit past every block.
_MCS = sorted({blk[2] for blk in BLOCKS.values()})
_KCS = sorted({blk[3] for blk in BLOCKS.values()} | {blk[5] for blk in BLOCKS.values()})
_M_PAST = max(_MCS) + 13  # past MC for every dtype and off every MR (205 while MC <= 192)
_N_PAST = max(blk[4] for blk in BLOCKS.values()) + 3  # past NC
# Three slabs for every dtype, the last shallow (585 while KC is 256: 256, 256, 73): past the KC/4 under
# which a remainder joins the slab before it (kernels.gemm.slab_count).
K_MULTI = 2 * max(_KCS) + max(_KCS) // 4 + 9
SHAPES = [
    (0, 5, 7), (5, 0, 7), (5, 7, 0), (0, 0, 0), (0, 17, 0),   # empty products
    (1, 1, 1), (1, 17, 7), (17, 1, 7), (7, 17, 1),           # ones in each dimension
    (5, 7, 3), (6, 16, 8), (7, 17, 97),                      # under, on and past one register tile
    (1, 521, K_MULTI), (521, 1, K_MULTI),                    # row and column vectors, several slabs
    (_M_PAST, 263, K_MULTI),                                 # large-M path, ragged last slab
    (17, 149, 2 * max(_KCS) + 1),                            # small-M path, three slabs
    (521, 17, 5),                                            # tall
    (5, _N_PAST, 3), (_M_PAST, _N_PAST, 3),                  # N > NC on both paths
]
SHAPES += [(97, 97, kc) for kc in _KCS]                      # K == KC
SHAPES += [(17, 149, kc + 1) for kc in _KCS]                 # K == KC + 1: one slab, KC + 1 deep
SHAPES += [(_M_PAST, 97, 2 * kc + kc // 4) for kc in _KCS]   # large-M path, the remainder in a deeper last slab
SHAPES += [(263, 97, 2 * kc) for kc in _KCS]                 # K a multiple of KC
SHAPES += [(mc + d, 33, 5) for mc in _MCS for d in (-1, 0, 1)]  # M just under, on, past MC
SHAPES += [(SHORT_ROWS, 64, K_MULTI), (64, 64, K_MULTI)]  # ragged rows: one short tile
SHAPES += [(_M_PAST // mr * mr + mr + SHORT_ROWS, 64, 17) for mr in sorted({blk[0] for blk in BLOCKS.values()})]
ALIASED = (64, 512, K_MULTI)  # small M of >= ALIASED_MIN_PANELS panels, B's rows 2 or 4 KiB apart: B packed
SHAPES += [ALIASED]
_NR_MAX = max(blk[1] for blk in BLOCKS.values())
SHAPES += [(_M_PAST, (IN_PLACE_MAX_PANELS + 1) * _NR_MAX + 5, 17)]  # large M, A packed in every layout
# One shape per driver path, both with several slabs and K off a multiple of KC.
PATH_SHAPES = [(17, 97, K_MULTI), (max(_MCS) + 5, 37, K_MULTI)]
PATH_IDS = ["small_m", "large_m"]


def shape_id(shape):
    return "x".join(map(str, shape))


@pytest.fixture(autouse=True, scope="module")
def single_threaded_numpy_blas():
    """The float64 references run numpy's BLAS on one thread.

    OpenBLAS workers spin-wait after each threaded call and starve numba's workers: on 2 cores a
    17x97x521 jitnn.gemm right after a numpy product of that size took ~5 ms instead of ~0.1 ms.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (dev extra)
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# --- reference and comparison ---------------------------------------------------------------------------

def activate(x, act, param):
    """The activation in float64 numpy (NaN passes through every one)."""
    if act == "linear":
        return x
    if act == "relu":
        return np.maximum(x, 0.0)
    if act == "leaky_relu":
        return np.where(x > 0, x, x * param)
    if act == "sigmoid":
        return expit(x)
    if act == "tanh":
        return np.tanh(x)
    if act in ("swish", "silu"):
        return x * expit(x)
    if act == "gelu":
        return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    raise ValueError(act)


def reference(a, b, c, alpha=1.0, beta=0.0, ta=False, tb=False, bias=None, act="linear", param=0.0):
    """act(alpha*op(A)@op(B) + beta*C + bias) in float64; A, B unread when alpha == 0, C when beta == 0."""
    opa = np.asarray(a, np.float64).T if ta else np.asarray(a, np.float64)
    opb = np.asarray(b, np.float64).T if tb else np.asarray(b, np.float64)
    x = np.zeros((opa.shape[0], opb.shape[1]))
    if alpha != 0:
        x += alpha * (opa @ opb)
    if c is not None and beta != 0:
        x += beta * np.asarray(c, np.float64)
    if bias is not None:
        x += np.asarray(bias, np.float64)
    return activate(x, act, param)


def rtol_for(dtype, k):
    """Relative tolerance for a K-term dot product: ~1e-5*sqrt(K) for float32, ~1e-14*sqrt(K) for float64."""
    return 64 * np.finfo(dtype).eps * math.sqrt(max(k, 1))


def assert_gemm_close(got, a, b, c, alpha=1.0, beta=0.0, ta=False, tb=False, bias=None, act="linear",
                      param=0.0):
    """``got`` matches ``reference``; atol is relative to the largest |term| (the pre-activation magnitude)."""
    ref = reference(a, b, c, alpha, beta, ta, tb, bias, act, param)
    mag = reference(np.abs(a), np.abs(b), None if c is None else np.abs(c), abs(alpha), abs(beta), ta, tb,
                    None if bias is None else np.abs(bias))
    scale = mag[np.isfinite(mag)].max(initial=np.finfo(got.dtype).tiny)
    k = (a.shape[0] if ta else a.shape[1])
    rtol = rtol_for(got.dtype, k)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


def check_gemm(a, b, c=None, alpha=1.0, beta=0.0, ta=False, tb=False, bias=None, act="linear", param=0.0):
    """Run jitnn.gemm and check the result, the returned object, and that A, B and bias are untouched."""
    saved = [None if x is None else x.copy() for x in (a, b, bias)]
    c0 = None if c is None else c.copy()
    out = jitnn.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=ta, trans_b=tb, bias=bias, activation=act,
                     activation_param=param)
    if c is None:
        assert out.dtype == a.dtype and out.flags.c_contiguous
    else:
        assert out is c
    for before, after in zip(saved, (a, b, bias)):
        if before is not None:
            np.testing.assert_array_equal(after, before)
    assert_gemm_close(out, a, b, c0, alpha, beta, ta, tb, bias, act, param)
    return out


# --- operands ------------------------------------------------------------------------------------------

def make_operand(rng, shape, dtype, layout="C", low=-1.0, high=1.0):
    """A ``shape`` array of ``dtype`` in ``layout``.

    C, F; ``view``: x[::2, 1::3] of a bigger array; ``neg``: x[::-1] of a C array (negative row stride,
    unit column stride); ``negF``: x[::-1, ::-1] of an F array (both strides negative).
    """
    r, c = shape
    if layout == "C":
        return rng.uniform(low, high, (r, c)).astype(dtype)
    if layout == "F":
        return np.asfortranarray(rng.uniform(low, high, (r, c)).astype(dtype))
    if layout == "view":
        x = rng.uniform(low, high, (2 * r, 3 * c + 1)).astype(dtype)[::2, 1::3]
    elif layout == "neg":
        x = rng.uniform(low, high, (r, c)).astype(dtype)[::-1]
    elif layout == "negF":
        x = np.asfortranarray(rng.uniform(low, high, (r, c)).astype(dtype))[::-1, ::-1]
    else:
        raise ValueError(layout)
    return x


def make_strided(rng, shape, dtype, order, row_step, col_step):
    """A ``shape`` view with the given steps (negative ones included) into a bigger ``order`` array."""
    r, c = shape
    parent = np.asarray(rng.uniform(-1, 1, (r * abs(row_step) + 1, c * abs(col_step) + 1)), dtype, order=order)
    return parent[::row_step, ::col_step][:r, :c]


def operands(rng, m, n, k, dtype, ta=False, tb=False, la="C", lb="C"):
    a = make_operand(rng, (k, m) if ta else (m, k), dtype, la)
    b = make_operand(rng, (n, k) if tb else (k, n), dtype, lb)
    return a, b


def test_shape_table_reaches_every_path():
    for dtype, (mr, nr, mc, kc, nc, _kc_small) in BLOCKS.items():
        live = [(m, n, k) for m, n, k in SHAPES if m and n and k]
        assert any(m <= mc and n > nr for m, n, k in live), f"{dtype}: no small-M (N split) shape"
        assert any(m > mc for m, n, k in live), f"{dtype}: no large-M (M split) shape"
        assert any(k < kc for m, n, k in live) and any(k == kc for m, n, k in live)
        assert any(k > kc and k % kc for m, n, k in live), f"{dtype}: no ragged multi-slab K"
        assert any(k > kc and k % kc == 0 for m, n, k in live), f"{dtype}: no exact multi-slab K"
        assert any(n > nc for m, n, k in live if m <= mc) and any(n > nc for m, n, k in live if m > mc)
        assert any(m % mr and n % nr and m > mc for m, n, k in live)
        for m, n, k in PATH_SHAPES:
            assert k > kc and k % kc
        assert PATH_SHAPES[0][0] <= mc < PATH_SHAPES[1][0] and PATH_SHAPES[0][1] > nr
        # large-M blocks whose A is read in place (few NR panels) and packed (many)
        assert any(m > mc and 0 < -(-n // nr) <= IN_PLACE_MAX_PANELS for m, n, k in live)
        # a small-M B whose row stride aliases in L1 (packed although its columns are unit-stride)
        item = np.dtype(dtype).itemsize
        assert any(ALIASED_MIN_PANELS * mr <= m <= mc and n * item % 2048 == 0 for m, n, k in live)
        assert any(m > mc and IN_PLACE_MAX_PANELS < -(-n // nr) <= nc // nr for m, n, k in live)
        # panels that a row-major A is read in place for and a column-major A packed
        assert any(m > mc and IN_PLACE_MAX_PANELS_COLUMN_MAJOR < -(-n // nr) <= IN_PLACE_MAX_PANELS
                   for m, n, k in live)
        # ragged last rows that take one short tile, written from its registers (N a multiple of NR)
        assert any(m % mr == SHORT_ROWS and n % nr == 0 and m <= mc for m, n, k in live)
        assert any(m % mr == SHORT_ROWS and n % nr == 0 and m > mc for m, n, k in live)
        m, n, k = ROWS_OWNED  # the path where each thread owns its rows for the whole call
        assert m > mc and m % mr and 0 < -(-n // nr) <= ROWS_OWNED_MAX_PANELS and n % nr and k > 2 * kc
        # one row, wide blocks of columns (wide_rows) and a ragged rest for the tiles
        assert any(m <= WIDE_MAX_ROWS and n > WIDE_ROW_PANELS * nr and n % (WIDE_ROW_PANELS * nr) % nr
                   for m, n, k in live)


# --- shapes, transposes, layouts -----------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("tb", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("ta", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_gemm_shapes(dtype, ta, tb, shape):
    m, n, k = shape
    rng = np.random.default_rng(sum(shape))
    a, b = operands(rng, m, n, k, dtype, ta, tb)
    check_gemm(a, b, ta=ta, tb=tb)
    c = make_operand(rng, (m, n), dtype)
    check_gemm(a, b, c, alpha=-0.75, beta=0.5, ta=ta, tb=tb)


@pytest.mark.parametrize("lb", LAYOUTS)
@pytest.mark.parametrize("la", LAYOUTS)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)], ids=["AB", "AtBt"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_gemm_layouts(dtype, ta, tb, la, lb):
    """Every layout pair, plain and transposed (a transposed C operand is an F one, and the other way
    round; mixed transposes are in test_gemm_shapes and test_gemm_random)."""
    rng = np.random.default_rng(7)
    for m, n, k in PATH_SHAPES + [(7, 17, 5)]:
        a, b = operands(rng, m, n, k, dtype, ta, tb, la, lb)
        check_gemm(a, b, ta=ta, tb=tb)


def test_operand_layouts_are_what_they_claim():
    rng = np.random.default_rng(0)
    views = {lay: make_operand(rng, (5, 7), np.float32, lay) for lay in LAYOUTS}
    assert views["C"].flags.c_contiguous and views["F"].flags.f_contiguous
    assert views["view"].shape == (5, 7) and views["view"].strides == (2 * 22 * 4, 3 * 4)
    assert views["neg"].strides == (-7 * 4, 4)
    assert views["negF"].strides == (-4, -5 * 4)


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
@pytest.mark.parametrize("lc", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_c_layouts_write_only_the_view(dtype, lc, beta):
    rng = np.random.default_rng(3)
    for m, n, k in PATH_SHAPES + [(7, 17, 5)]:
        a, b = operands(rng, m, n, k, dtype)
        if lc == "view":
            parent = np.full((2 * m, 3 * n + 1), 123.0, dtype)
            c = parent[::2, 1::3]
            c[...] = rng.uniform(-1, 1, c.shape)
        else:
            c = make_operand(rng, (m, n), dtype, lc)
        parent_before = c.base.copy() if lc == "view" else None
        out = check_gemm(a, b, c, alpha=1.5, beta=beta, bias=rng.uniform(-1, 1, n).astype(dtype), act="tanh")
        if lc == "view":
            expected = parent_before.copy()
            expected[::2, 1::3] = out
            np.testing.assert_array_equal(c.base, expected)


DIM = st.one_of(st.integers(0, 24), st.sampled_from(sorted({mc + d for mc in _MCS for d in (-1, 0, 1)} | {97, 263})))
KDIM = st.one_of(st.integers(0, 24), st.sampled_from(sorted({kc + d for kc in _KCS for d in (-1, 0, 1)}
                                                              | {kc + kc // 4 + d for kc in _KCS for d in (0, 1)}
                                                              | {K_MULTI})))
STRIDES = st.tuples(st.sampled_from("CF"), st.sampled_from([1, 2, 3, -1, -2]), st.sampled_from([1, 2, -1, -3]))
SCALARS = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.5, -0.5]), st.floats(-3, 3, width=32))


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(DTYPES), m=DIM, n=DIM, k=KDIM, ta=st.booleans(), tb=st.booleans(),
       sa=STRIDES, sb=STRIDES, sc=st.none() | STRIDES, alpha=SCALARS, beta=SCALARS, with_bias=st.booleans(),
       act=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2 ** 32 - 1))
def test_gemm_random(dtype, m, n, k, ta, tb, sa, sb, sc, alpha, beta, with_bias, act, seed):
    rng = np.random.default_rng(seed)
    a = make_strided(rng, (k, m) if ta else (m, k), dtype, *sa)
    b = make_strided(rng, (n, k) if tb else (k, n), dtype, *sb)
    c = None if sc is None else make_strided(rng, (m, n), dtype, *sc)
    bias = rng.uniform(-1, 1, n).astype(dtype) if with_bias else None
    check_gemm(a, b, c, alpha=alpha, beta=beta, ta=ta, tb=tb, bias=bias, act=act[0], param=act[1])


@pytest.mark.parametrize("swap", ["a", "b", "ab"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_non_native_byte_order_operands(dtype, swap):
    """Byte-swapped A or B (read from a big-endian file) are floats too: accepted, result native."""
    rng = np.random.default_rng(0)
    a, b = operands(rng, 17, 23, K_MULTI, dtype)
    swapped = np.dtype(dtype).newbyteorder(">" if np.little_endian else "<")
    got = jitnn.gemm(a.astype(swapped) if "a" in swap else a, b.astype(swapped) if "b" in swap else b)
    assert got.dtype == dtype and got.dtype.isnative
    assert_gemm_close(got, a, b, None)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_read_only_operands_and_bias(dtype):
    """A, B and bias are only read: read-only arrays (np.matmul accepts them) work on both paths."""
    rng = np.random.default_rng(16)
    for m, n, k in PATH_SHAPES:
        a, b = operands(rng, m, n, k, dtype)
        bias = rng.uniform(-1, 1, n).astype(dtype)
        for x in (a, b, bias):
            x.flags.writeable = False
        check_gemm(a, b, make_operand(rng, (m, n), dtype), beta=0.5, bias=bias, act="sigmoid")


# --- alpha and beta ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", PATH_SHAPES + [(17, 33, 0)], ids=PATH_IDS + ["k0"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_alpha_zero_reads_neither_a_nor_b(dtype, shape):
    m, n, k = shape
    rng = np.random.default_rng(1)
    a = np.full((m, k), np.nan, dtype)
    b = np.full((k, n), np.inf, dtype)
    c = make_operand(rng, (m, n), dtype)
    c0 = c.copy()
    np.testing.assert_array_equal(jitnn.gemm(a, b, alpha=0.0), np.zeros((m, n), dtype))
    np.testing.assert_array_equal(jitnn.gemm(a, b, c, alpha=0.0, beta=0.5), c0 * dtype(0.5))
    bias = rng.uniform(-1, 1, n).astype(dtype)
    c[...] = c0
    check_gemm(a, b, c, alpha=0.0, beta=-2.0, bias=bias, act="gelu")


@pytest.mark.parametrize("shape", PATH_SHAPES + [(7, 17, 5)] + [(97, 97, kc) for kc in _KCS],
                         ids=PATH_IDS + ["tile"] + [f"k{kc}" for kc in _KCS])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_beta_zero_overwrites_nan_and_inf_in_c(dtype, shape):
    m, n, k = shape
    rng = np.random.default_rng(2)
    a, b = operands(rng, m, n, k, dtype)
    c = np.full((m, n), np.nan, dtype)
    c[::2] = np.inf
    out = check_gemm(a, b, c, beta=0.0)
    assert np.isfinite(out).all()
    c[...] = np.nan
    assert np.isfinite(check_gemm(a, b, c, alpha=2.0, beta=0.0, bias=np.ones(n, dtype), act="relu")).all()


@pytest.mark.parametrize("alpha,beta", [(2.5, 0.0), (1.0, 1.0), (1.0, -0.5), (2.5, -0.5), (-1.0, 1.0),
                                        (0.5, 2.0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_alpha_beta(dtype, alpha, beta):
    rng = np.random.default_rng(4)
    for m, n, k in PATH_SHAPES + [(7, 17, 5)] + [(97, 97, kc) for kc in _KCS] + [(263, 97, 2 * kc) for kc in _KCS]:
        a, b = operands(rng, m, n, k, dtype)
        check_gemm(a, b, make_operand(rng, (m, n), dtype), alpha=alpha, beta=beta)


def test_beta_is_ignored_without_c():
    rng = np.random.default_rng(5)
    a, b = operands(rng, 17, 19, 300, np.float64)
    assert_gemm_close(jitnn.gemm(a, b, beta=5.0), a, b, None)


# --- epilogue: bias and activation ---------------------------------------------------------------------

@pytest.mark.parametrize("with_c", [False, True], ids=["no_c", "beta"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("act,param", ACTIVATIONS, ids=[f"{a}{p or ''}" for a, p in ACTIVATIONS])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_epilogue(dtype, act, param, with_bias, with_c):
    """Bias once, activation once, after the last KC slab, on both paths (and on the K == 0 path)."""
    rng = np.random.default_rng(6)
    for m, n, k in PATH_SHAPES + [(17, 33, 0)]:
        a, b = operands(rng, m, n, k, dtype)
        c = make_operand(rng, (m, n), dtype, low=-2, high=2) if with_c else None
        bias = rng.uniform(-2, 2, n).astype(dtype) if with_bias else None
        alpha = 3.0 / math.sqrt(max(k, 1))  # pre-activations of order 1-3: both signs, not all saturated
        check_gemm(a, b, c, alpha=alpha, beta=0.5, bias=bias, act=act, param=param)


@pytest.mark.parametrize("shape", PATH_SHAPES, ids=PATH_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_nan_passes_through_relu(dtype, shape):
    m, n, k = shape
    rng = np.random.default_rng(8)
    a, b = operands(rng, m, n, k, dtype)
    a[3, 5] = np.nan
    out = check_gemm(a, b, act="relu")
    assert np.isnan(out[3]).all()
    rest = np.delete(out, 3, axis=0)
    assert np.isfinite(rest).all() and (rest >= 0).all() and (rest == 0).any()
    # The alpha == 0 epilogue path: NaN from beta*C.
    c = np.full((m, n), -1.0, dtype)
    c[1, 2] = np.nan
    out = jitnn.gemm(a, b, c, alpha=0.0, beta=1.0, activation="relu")
    assert np.isnan(out[1, 2]) and np.isnan(out).sum() == 1 and (np.nan_to_num(out) == 0).all()


# --- c overlapping a or b ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [17, K_MULTI])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_c_overlapping_operands(dtype, size):
    rng = np.random.default_rng(9)
    x0, y0 = operands(rng, size, size, size, dtype)
    bias = rng.uniform(-1, 1, size).astype(dtype)
    cases = [
        ("c=a", lambda x, y: jitnn.gemm(x, y, c=x), lambda x, y: reference(x, y, None)),
        ("c=b", lambda x, y: jitnn.gemm(x, y, c=y), lambda x, y: reference(x, y, None)),
        ("c=a=b", lambda x, y: jitnn.gemm(x, x, c=x), lambda x, y: reference(x, x, None)),
        ("c=a, beta", lambda x, y: jitnn.gemm(x, y, c=x, beta=0.5, alpha=-1.0),
         lambda x, y: reference(x, y, x, -1.0, 0.5)),
        ("c=a.T, trans", lambda x, y: jitnn.gemm(x, y, c=x.T, trans_a=True, beta=1.0, bias=bias,
                                                 activation="tanh"),
         lambda x, y: reference(x, y, x.T, 1.0, 1.0, True, False, bias, "tanh")),
    ]
    for name, run, expect in cases:
        x, y = x0.copy(), y0.copy()
        ref = expect(x0, y0)
        out = run(x, y)
        rtol = rtol_for(dtype, size)
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * size, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_c_partially_overlapping_a(dtype):
    rng = np.random.default_rng(10)
    big = make_operand(rng, (151, 149), dtype)
    a, c = big[:-2], big[2:]  # c is a's rows shifted by two: 147 of 149 rows shared
    b = make_operand(rng, (149, 149), dtype)
    a0, c0 = a.copy(), c.copy()
    out = jitnn.gemm(a, b, c, beta=0.5)
    assert out is c
    assert_gemm_close(c, a0, b, c0, 1.0, 0.5)


# --- matmul --------------------------------------------------------------------------------------------

MATMUL_SHAPES = [((17, 300), (300, 23)), ((300,), (300, 23)), ((17, 300), (300,)), ((300,), (300,)),
                 ((1, 1), (1, 1)), ((0, 3), (3, 4)), ((3,), (3, 0)), ((149, 5), (5, 97))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_matmul_matches_numpy(dtype, shapes):
    rng = np.random.default_rng(11)
    a = rng.uniform(-1, 1, shapes[0]).astype(dtype)
    b = rng.uniform(-1, 1, shapes[1]).astype(dtype)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    k = shapes[0][-1]
    rtol = rtol_for(dtype, k)
    got = jitnn.matmul(a, b)
    assert np.shape(got) == expected.shape and got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * k)
    out = np.full(expected.shape, np.nan, dtype)
    assert jitnn.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * k)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_matmul_strided_operands_and_out(dtype):
    rng = np.random.default_rng(12)
    a = make_operand(rng, (37, 300), dtype, "view")
    v = rng.uniform(-1, 1, 600).astype(dtype)[::-2]
    out = np.zeros((2, 37 * 2), dtype)[1, ::2]
    jitnn.matmul(a, v, out=out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ v, rtol=rtol_for(dtype, 300), atol=1e-3)
    out2 = np.empty((300, 300), dtype)[::-1]
    assert jitnn.matmul(a.T, a, out=out2) is out2
    np.testing.assert_allclose(out2, a.T.astype(np.float64) @ a, rtol=rtol_for(dtype, 37), atol=1e-3)


@pytest.mark.parametrize("args,exc,match", [
    (([[1.0]], np.ones((1, 1))), TypeError, "a must be a numpy.ndarray"),
    ((np.ones((1, 1)), 2.0), TypeError, "b must be a numpy.ndarray"),
    ((np.ones((2, 2, 2)), np.ones(2)), ValueError, r"1-D or 2-D .*a\.shape=\(2, 2, 2\)"),
    ((np.ones(2), np.array(3.0)), ValueError, r"b\.shape=\(\)"),
    ((np.ones((2, 3)), np.ones(4)), ValueError, r"a\.shape=\(2, 3\), b\.shape=\(4,\)"),
    ((np.ones(3), np.ones((4, 2))), ValueError, "inner dimensions"),
    ((np.ones(3, np.float32), np.ones(3)), TypeError, "share a dtype"),
    ((np.ones(3, np.int64), np.ones(3, np.int64)), TypeError, "float32 or float64"),
], ids=["a_list", "b_scalar", "a_3d", "b_0d", "inner", "inner_1d", "dtype_mismatch", "int"])
def test_matmul_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        jitnn.matmul(*args)


def test_matmul_out_errors():
    a, b = np.ones((2, 3)), np.ones((3, 4))
    with pytest.raises(ValueError, match=r"out must be an array of shape \(2, 4\), received: \(4, 2\)"):
        jitnn.matmul(a, b, out=np.empty((4, 2)))
    with pytest.raises(ValueError, match="received: list"):
        jitnn.matmul(a, b, out=[[0.0] * 4] * 2)
    with pytest.raises(TypeError, match="c must have the dtype"):
        jitnn.matmul(a, b, out=np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="inner dimensions differ"):
        jitnn.matmul(a, np.ones((2, 4)), out=np.empty((2, 4)))


# --- errors --------------------------------------------------------------------------------------------

def _f64(*shape):
    return np.ones(shape)


def _read_only(x):
    x.flags.writeable = False
    return x


GEMM_ERRORS = [
    ("a_list", lambda: jitnn.gemm([[1.0]], _f64(1, 1)), TypeError, "a must be a numpy.ndarray, received: list"),
    ("b_none", lambda: jitnn.gemm(_f64(1, 1), None), TypeError, "b must be a numpy.ndarray, received: NoneType"),
    ("a_1d", lambda: jitnn.gemm(_f64(3), _f64(3, 1)), ValueError, r"a must be 2-D, received: a\.ndim=1"),
    ("b_3d", lambda: jitnn.gemm(_f64(3, 3), _f64(3, 1, 1)), ValueError, r"b must be 2-D.*\(3, 1, 1\)"),
    ("a_int", lambda: jitnn.gemm(np.ones((2, 2), np.int32), _f64(2, 2)), TypeError, r"a\.dtype=int32"),
    ("b_f16", lambda: jitnn.gemm(_f64(2, 2), np.ones((2, 2), np.float16)), TypeError, r"b\.dtype=float16"),
    ("b_complex", lambda: jitnn.gemm(_f64(2, 2), np.ones((2, 2), complex)), TypeError, "float32 or float64"),
    ("ab_dtype", lambda: jitnn.gemm(np.ones((2, 2), np.float32), _f64(2, 2)), TypeError,
     r"share a dtype.*a\.dtype=float32, b\.dtype=float64"),
    ("inner", lambda: jitnn.gemm(_f64(2, 3), _f64(4, 5)), ValueError,
     r"inner dimensions differ: op\(a\) is 2x3 and op\(b\) is 4x5"),
    ("inner_trans", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), trans_a=True), ValueError,
     r"op\(a\) is 3x2 .*trans_a=True"),
    ("c_list", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), c=[[0.0] * 5] * 2), TypeError, "c must be a numpy"),
    ("c_shape", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), c=_f64(5, 2)), ValueError,
     r"c must have shape \(2, 5\).*received: \(5, 2\)"),
    ("c_dtype", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), c=np.ones((2, 5), np.float32)), TypeError,
     r"c must have the dtype.*c\.dtype=float32"),
    ("c_read_only", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), c=_read_only(_f64(2, 5))), ValueError,
     "c is read-only"),
    ("c_byte_order", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), c=np.ones((2, 5), ">f8")), TypeError,
     "c must"),
    ("bias_shape", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), bias=_f64(2)), ValueError,
     r"bias must have shape \(5,\), received: \(2,\)"),
    ("bias_2d", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), bias=_f64(1, 5)), ValueError,
     r"bias must have shape \(5,\), received: \(1, 5\)"),
    ("bias_dtype", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), bias=np.ones(5, np.float32)), TypeError,
     "bias must have dtype float64, received: float32"),
    ("activation", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), activation="softmax"), ValueError,
     "unknown activation 'softmax'"),
    ("alpha_str", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), alpha="2"), TypeError,
     "alpha must be a real number, received: alpha='2'"),
    ("beta_none", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), c=_f64(2, 5), beta=None), TypeError,
     "beta must be a real number, received: beta=None"),
    ("param_str", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 5), activation="leaky_relu", activation_param="x"),
     TypeError, "activation_param must be a real number, received: activation_param='x'"),
    ("alpha_complex", lambda: jitnn.gemm(_f64(2, 3), _f64(3, 1), alpha=1j), TypeError, "alpha=1j"),
]


@pytest.mark.parametrize("run,exc,match", [e[1:] for e in GEMM_ERRORS], ids=[e[0] for e in GEMM_ERRORS])
def test_gemm_errors(run, exc, match):
    with pytest.raises(exc, match=match):
        run()


@pytest.mark.parametrize("kwargs", [{"activation": "softmax"}, {"bias": np.ones(3)},
                                    {"bias": np.ones(5, np.float32)}], ids=["activation", "bias", "bias_dtype"])
@pytest.mark.parametrize("overlap", [False, True], ids=["separate", "c=a"])
def test_rejected_call_leaves_c_untouched(kwargs, overlap):
    x = np.random.default_rng(13).uniform(-1, 1, (5, 5))
    c = x if overlap else x.copy()
    before = c.copy()
    with pytest.raises((ValueError, TypeError)):
        jitnn.gemm(x, np.ones((5, 5)), c, beta=0.5, **kwargs)
    np.testing.assert_array_equal(c, before)


def test_set_num_threads_round_trip_and_errors(restore_num_threads):
    for n in range(1, MAX_THREADS + 1):
        jitnn.set_num_threads(n)
        assert jitnn.get_num_threads() == n
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive int"):
            jitnn.set_num_threads(bad)
    for bad in (2.0, True, "2", None):
        with pytest.raises(ValueError, match="positive int"):
            jitnn.set_num_threads(bad)
    with pytest.raises(ValueError, match=f"exceeds NUMBA_NUM_THREADS={MAX_THREADS}"):
        jitnn.set_num_threads(MAX_THREADS + 1)
    assert jitnn.get_num_threads() == MAX_THREADS  # a rejected call changes nothing


# --- threads -------------------------------------------------------------------------------------------

# Large M, one or two NR panels (29 columns on AVX-512, 13 on AVX2: ragged for every dtype), more than two KC
# steps: each thread owns its rows
ROWS_OWNED = (_M_PAST, 2 * min(blk[1] for blk in BLOCKS.values()) - 3, 2 * max(_KCS) + 9)
THREAD_SHAPES = PATH_SHAPES + [(5, 8209, 3), (max(_MCS), 200, 2 * max(_KCS) + 1), (521, 263, K_MULTI), (7, 17, 5),
                               ROWS_OWNED, (7, 3, 2 * max(_KCS) + 9), (64, 64, K_MULTI), ALIASED,
                               (1, 4103, K_MULTI)]  # one row (wide_rows), enough FLOPs for threads


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
@pytest.mark.parametrize("lb", ["C", "F"], ids=["B_in_place", "B_packed"])
@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_parallel_is_bitwise_equal_to_one_thread(dtype, shape, lb, restore_num_threads):
    """Each C tile is summed by one thread in one order, whatever the thread count.

    On the small-M path B with unit-stride columns is read in place and any other B is packed per
    thread, so both layouts are run.
    """
    m, n, k = shape
    rng = np.random.default_rng(14)
    a, b = operands(rng, m, n, k, dtype, lb=lb)
    c = make_operand(rng, (m, n), dtype)
    bias = rng.uniform(-1, 1, n).astype(dtype)
    results = {}
    for threads in [1] + list(range(2, MAX_THREADS + 1)):
        jitnn.set_num_threads(threads)
        results[threads] = (jitnn.gemm(a, b), jitnn.gemm(a, b, c.copy(), alpha=0.7, beta=-0.5, bias=bias,
                                                         activation="gelu"))
    assert_gemm_close(results[1][0], a, b, None)
    assert_gemm_close(results[1][1], a, b, c, 0.7, -0.5, bias=bias, act="gelu")
    for threads, (plain, fused) in results.items():
        assert np.array_equal(plain, results[1][0]), f"{threads} threads differ from 1 on plain gemm"
        assert np.array_equal(fused, results[1][1]), f"{threads} threads differ from 1 on fused gemm"


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
@pytest.mark.parametrize("epilogue", ["plain", "bias_relu", "accumulate", "alpha_beta_gelu"])
@pytest.mark.parametrize("k", [5, K_MULTI])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_one_row_has_the_bits_it_has_in_any_product(dtype, k, epilogue, restore_num_threads):
    """A single row (one sample's forward pass) takes ``wide_rows`` for every full block of
    WIDE_ROW_PANELS NR panels, and the tiles for the rest. Each element runs the same FMAs in the same
    KC slabs as in any other product on those slabs, so with alpha 1 (every layer's product: plain, with
    bias and ReLU, or accumulating into C) a row computed alone is bit for bit the row of a product of 2,
    SHORT_ROWS or MR + 1 rows, and of past-MC rows (the large-M path) where its KC equals the small-M
    path's KC_SMALL (AVX-512; AVX2's float32 row has 512 and 256). (With alpha != 1 a tile bound for the tile buffer rounds
    alpha*sum + beta*C its own way, so there only the thread count must not matter.) An A without a
    flat row view takes the tiles, with the same bits."""
    mr, nr, _, kc, _, kc_small = BLOCKS[np.dtype(dtype).name]
    n = 2 * WIDE_ROW_PANELS * nr + nr + 3  # two wide blocks, a full NR panel and a ragged one
    rng = np.random.default_rng(31)
    a = make_operand(rng, (_M_PAST, k), dtype)
    b = make_operand(rng, (k, n), dtype)
    c = make_operand(rng, (_M_PAST, n), dtype)
    bias = rng.uniform(-1, 1, n).astype(dtype)
    kwargs = {"plain": {}, "bias_relu": {"bias": bias, "activation": "relu"},
              "accumulate": {"beta": 1.0, "bias": bias, "activation": "relu"},
              "alpha_beta_gelu": {"alpha": 0.7, "beta": -0.5, "bias": bias, "activation": "gelu"}}[epilogue]

    def product(rows, a_rows=None):
        out = c[:rows].copy() if "beta" in kwargs else None
        return jitnn.gemm(a[:rows] if a_rows is None else a_rows, b, out, **kwargs)

    rows_alone = {}
    for threads in sorted({1, MAX_THREADS}):
        jitnn.set_num_threads(threads)
        alone = rows_alone[threads] = product(1)
        assert_gemm_close(alone, a[:1], b, c[:1], kwargs.get("alpha", 1.0), kwargs.get("beta", 0.0),
                          bias=kwargs.get("bias"), act=kwargs.get("activation", "linear"))
        if "alpha" not in kwargs:
            for rows in (2, SHORT_ROWS, mr + 1) + ((_M_PAST,) if kc == kc_small else ()):
                np.testing.assert_array_equal(product(rows)[:1], alone, err_msg=f"{rows} rows, {threads} threads")
            a_strided = make_strided(rng, (1, k), dtype, "C", 1, 2)  # no flat view: the tiles
            a_strided[...] = a[:1]
            np.testing.assert_array_equal(product(1, a_strided), alone)
    np.testing.assert_array_equal(rows_alone[MAX_THREADS], rows_alone[1])


IN_PLACE_SHAPES = [(17, 97, K_MULTI), (_M_PAST, 37, K_MULTI), (_M_PAST, 263, K_MULTI), (521, 17, 5), (7, 40, 3),
                   ROWS_OWNED]


@pytest.mark.parametrize("row_step", [2, -1], ids=["rows_apart", "negative_rows"])
@pytest.mark.parametrize("shape", IN_PLACE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_reading_a_in_place_changes_no_bit(dtype, shape, row_step, restore_num_threads):
    """Full MR panels of an A with unit-stride rows or columns are read in place (small M, or few NR
    panels of B: ``rows_in_place``) and the ragged rows packed; any other A is packed whole. The
    micro-kernel runs the same FMAs in the same order either way, so C-order, F-order, strided and
    doubly strided (packed) copies of one A give the same bits on every thread count: a few panels, many
    panels (packed), small M, ragged rows."""
    m, n, k = shape
    rng = np.random.default_rng(21)
    a = make_operand(rng, (m, k), dtype, "C")
    b = make_operand(rng, (k, n), dtype, "C")
    bias = rng.uniform(-1, 1, n).astype(dtype)
    strided = make_strided(rng, (m, k), dtype, "C", row_step, 1)  # unit-stride columns, then a's values
    strided[...] = a
    strided_f = make_strided(rng, (k, m), dtype, "C", row_step, 1).T  # unit-stride rows
    strided_f[...] = a
    packed_only = make_strided(rng, (m, k), dtype, "C", 2, 3)  # neither: always packed
    packed_only[...] = a
    copies = {"C": a, "F": np.asfortranarray(a), "strided": strided, "strided_f": strided_f,
              "packed": packed_only}
    assert strided.strides[1] == a.itemsize and not strided.flags.c_contiguous
    results = {}
    for threads in sorted({1, MAX_THREADS}):
        jitnn.set_num_threads(threads)
        for name, x in copies.items():
            results[threads, name] = jitnn.gemm(x, b, bias=bias, activation="relu")
    first = results[1, "C"]
    assert_gemm_close(first, a, b, None, bias=bias, act="relu")
    for key, out in results.items():
        assert np.array_equal(out, first), f"{key} differs from one thread reading a C-order A"


def test_thread_counts_below_the_pool_size():
    """With NUMBA_NUM_THREADS=4 (more than the active count) every count 1..4 gives the same bits."""
    script = textwrap.dedent("""
        import numba, numpy as np, jitnn
        assert numba.config.NUMBA_NUM_THREADS == 4
        rng = np.random.default_rng(0)
        for dtype in (np.float32, np.float64):
            for m, n, k in [(17, 203, 1100), (5, 40, 7), (149, 97, 1100), (300, 33, 521)]:
                a = rng.uniform(-1, 1, (m, k)).astype(dtype)
                b = rng.uniform(-1, 1, (k, n)).astype(dtype)
                ref = a.astype(np.float64) @ b
                outs = []
                for t in (1, 2, 3, 4, 3, 2):
                    jitnn.set_num_threads(t)
                    outs.append(jitnn.gemm(a, b))
                for t, out in zip((1, 2, 3, 4, 3, 2), outs):
                    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * k, err_msg=f"{m, n, k} {t}")
                    assert np.array_equal(out, outs[0]), (dtype, m, n, k, t)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_NUM_THREADS="4", OPENBLAS_NUM_THREADS="1")
    env.pop("JITNN_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# --- workspace reuse -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_workspace_reuse_growing_then_shrinking(dtype, restore_num_threads):
    rng = np.random.default_rng(15)
    # ... and one row after many with the same N and K: one row splits columns in wider shares
    # (kernels.gemm.column_shares), and the sizes must hold for both
    sequence = [(5, 7, 3), (17, 97, 263), (149, 263, 521), (300, 530, 1100), (149, 263, 521), (17, 97, 263),
                (7, 17, 1), (1, 1, 1), (5, 7, 3), (64, 4103, K_MULTI), (1, 4103, K_MULTI)]
    for threads in sorted({MAX_THREADS, 1}, reverse=True) + [MAX_THREADS]:
        jitnn.set_num_threads(threads)
        for m, n, k in sequence:
            a, b = operands(rng, m, n, k, dtype)
            check_gemm(a, b, bias=rng.uniform(-1, 1, n).astype(dtype), act="relu")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_workspace_sizes_hold_for_any_number_of_rows(dtype):
    """The compiled step sizes its workspace once for a batch of ``cap`` rows and runs smaller batches in
    it (a last batch of one row): the packing space must cover every thread id's widest share, the one
    row's (whole wide blocks) as well as more rows' (NR panels)."""
    blocks = BLOCKS[np.dtype(dtype).name]
    nr, nc = blocks[1], blocks[4]
    for threads in (1, 2, 3, 8):
        for n in (nr + 1, 3 * nr, 5 * nr + 3, 129 * nr - 25, nc + 7):
            sizes = {m: workspace_sizes(m, n, K_MULTI, blocks, threads) for m in (1, 2, 64, 1000)}
            assert len(set(sizes.values())) == 1, sizes
            kc = max(deepest_slab_depth(K_MULTI, blocks[3]), deepest_slab_depth(K_MULTI, blocks[5]))
            for m in (1, 2):
                tasks, share = column_shares(m, n, nr, threads)
                assert tasks <= threads and tasks * share >= n
                assert sizes[m][1] >= threads * kc * min(nc, share)


# --- matrix-vector and dot products (no packing) ---------------------------------------------------------

@pytest.mark.parametrize("lb", ["C", "F", "view", "neg"])
@pytest.mark.parametrize("mnk", [(1, 97, 263), (97, 1, 263), (1, 1, 521), (263, 1, 1), (1, 1, 0)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_vector_products_with_epilogue(dtype, mnk, lb):
    """M == 1 or N == 1 (both forms of the vector path, and 1 x N with row-major B through the tiles):
    alpha, beta, bias and an activation, against float64."""
    m, n, k = mnk
    rng = np.random.default_rng(m * 1000 + n)
    a, b = operands(rng, m, n, k, dtype, la="view", lb=lb)
    c = make_operand(rng, (m, n), dtype, "view")
    bias = rng.uniform(-1, 1, n).astype(dtype)
    check_gemm(a, b, c, alpha=-0.7, beta=0.3, bias=bias, act="leaky_relu", param=0.1)
    check_gemm(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_long_dot_product_is_accurate(dtype):
    """A (1 x 2**20) @ (2**20 x 1) dot of positive terms: within a few float32 ulps of the float64 sum
    (a float32 running sum drifts by ~1e-4 relative here)."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, (1, 2**20)).astype(dtype)
    b = rng.uniform(0, 1, (2**20, 1)).astype(dtype)
    got = jitnn.matmul(a, b)[0, 0]
    want = a[0].astype(np.float64) @ b[:, 0].astype(np.float64)
    rtol = 4 * np.finfo(np.float32).eps if dtype == np.float32 else rtol_for(dtype, 2**20)
    assert abs(got - want) <= rtol * want


@pytest.mark.parametrize("la, lb", [("C", "C"), ("F", "F"), ("view", "view")])
def test_row_times_column_takes_the_dot_path(la, lb, monkeypatch):
    """A (1 x K) @ (K x 1) product goes to the dot kernel once, never through the packed tiles (40x slower
    than numpy at K = 2**24 before, issue 14): a spy on kernels.gemm.gemv_kernel sees the call, whatever
    the layout of the operands."""
    calls = []
    gemv = gemm_kernels.gemv_kernel

    def spy(alpha, a, x, *rest):
        calls.append((a.shape, x.shape))
        return gemv(alpha, a, x, *rest)

    monkeypatch.setattr(gemm_kernels, "gemv_kernel", spy)
    rng = np.random.default_rng(5)
    a, b = operands(rng, 1, 1, 4099, np.float64, la=la, lb=lb)
    got = jitnn.matmul(a, b)
    assert calls == [((1, 4099), (4099, 1))]
    np.testing.assert_allclose(got, a @ b, rtol=1e-13)


# --- the micro-kernel alone ----------------------------------------------------------------------------

@njit(cache=False)
def micro_tile(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct):
    micro_kernel(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct)


@njit(cache=False)
def short_tile(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct):
    short_kernel(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct)


@pytest.mark.parametrize("short", [False, True], ids=["MR_rows", "short"])
@pytest.mark.parametrize("a_layout", ["packed", "rows", "columns"])
@pytest.mark.parametrize("extra", [0, 5], ids=["bs=NR", "bs>NR"])
@pytest.mark.parametrize("kc", sorted({0, 1, 7, 256} | set(_KCS)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_micro_kernel(dtype, kc, extra, a_layout, short):
    """ct[i*NR + j] = sum_p ap[a0 + i*a_rs + p*a_cs] * bp[b0 + p*bs + j], every ct element overwritten,
    for a packed panel (a_rs = 1, a_cs = MR) and A read in place, row-major (a_cs = 1) or column-major
    (a_rs = 1); the short tile computes the first SHORT_ROWS rows, bit for bit as the full one does."""
    mr, nr = BLOCKS[np.dtype(dtype).name][:2]
    bs = nr + extra
    a0, b0 = 3, 11
    rng = np.random.default_rng(kc)
    a_rs, a_cs = {"packed": (1, mr), "rows": (kc + 5, 1), "columns": (1, mr + 3)}[a_layout]
    ap = rng.uniform(-1, 1, a0 + (mr - 1) * a_rs + max(kc - 1, 0) * a_cs + 3).astype(dtype)
    bp = rng.uniform(-1, 1, b0 + kc * bs + 2).astype(dtype)
    ct = np.full(mr * nr + 1, np.nan, dtype)
    micro_tile(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct)
    rows = mr
    if short:
        full = ct.copy()
        rows = SHORT_ROWS
        ct = np.full(rows * nr + 1, np.nan, dtype)
        short_tile(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct)
        np.testing.assert_array_equal(ct[:rows * nr], full[:rows * nr])
    apanel = ap[a0 + np.arange(rows)[None, :] * a_rs + np.arange(kc)[:, None] * a_cs].astype(np.float64)
    bpanel = bp[b0 + np.arange(kc)[:, None] * bs + np.arange(nr)].astype(np.float64)
    expected = apanel.T @ bpanel
    rtol = rtol_for(dtype, kc)
    np.testing.assert_allclose(ct[:rows * nr].reshape(rows, nr), expected, rtol=rtol, atol=rtol * max(kc, 1))
    assert np.isnan(ct[rows * nr]), "wrote past the tile"


def _host_has_avx2_fma():
    features = llvm.get_host_cpu_features()
    return bool(features.get("avx2")) and bool(features.get("fma"))


@pytest.mark.skipif(not _host_has_avx2_fma(), reason="host CPU lacks AVX2/FMA")
@pytest.mark.skipif(numba.config.CPU_NAME not in (None, "host"), reason="NUMBA_CPU_NAME overrides the host")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_micro_kernel_assembly_uses_packed_fma(dtype):
    """Every accumulator is one packed FMA per k step: ymm on AVX2, zmm where the AVX-512 table is used."""
    mr, nr = BLOCKS[np.dtype(dtype).name][:2]
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    reg = "zmm" if VECTOR_BYTES == 64 else "ymm"
    z = np.zeros(mr * nr * 2, dtype)
    micro_tile(1, z, 0, 1, mr, z, 0, nr, z)
    nbt = numba.from_dtype(dtype)
    sig = next(s for s in micro_tile.signatures if s[1].dtype == nbt)
    asm = micro_tile.inspect_asm(sig)
    suffix = "ps" if dtype == np.float32 else "pd"
    fmas = re.findall(rf"vfmadd\d+{suffix}\s+[^\n]*%{reg}", asm)
    assert len(fmas) >= mr * nr // lanes, f"expected >= {mr * nr // lanes} {reg} FMAs, found {len(fmas)}"


@njit(cache=False)
def micro_direct(kc, ap, mr, bp, bs, c, c0, c_rs, alpha, beta, bias=None, col0=0, act=0, act_param=0.0):
    if bias is None:
        micro_kernel_c(kc, ap, 0, 1, mr, bp, 0, bs, c, c0, c_rs, alpha, beta, ap[:0], 0, False, 0, 0.0)
    else:
        micro_kernel_c(kc, ap, 0, 1, mr, bp, 0, bs, c, c0, c_rs, alpha, beta, bias, col0, True, act, act_param)


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
@pytest.mark.parametrize("kc", [0, 1, 37])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_micro_kernel_writes_c_directly(dtype, kc, beta):
    """micro_kernel_c writes alpha*tile + beta*C into exactly one MR x NR tile of a wider C; with
    beta == 0 the NaN already in C does not reach the result, and nothing outside the tile changes."""
    mr, nr = BLOCKS[np.dtype(dtype).name][:2]
    rng = np.random.default_rng(kc)
    ap = rng.uniform(-1, 1, kc * mr + 1).astype(dtype)
    bp = rng.uniform(-1, 1, kc * nr + 1).astype(dtype)
    c = rng.uniform(-1, 1, (mr + 3, nr + 5)).astype(dtype)
    if beta == 0:
        c[1:1 + mr, 2:2 + nr] = np.nan
    before = c.copy()
    micro_direct(kc, ap, mr, bp, nr, c.reshape(-1), c.shape[1] + 2, c.shape[1], dtype(1.5), dtype(beta))
    tile = ap[:kc * mr].reshape(kc, mr).T.astype(np.float64) @ bp[:kc * nr].reshape(kc, nr).astype(np.float64)
    old = before[1:1 + mr, 2:2 + nr].astype(np.float64)
    want = 1.5 * tile + (beta * old if beta != 0 else 0.0)
    rtol = rtol_for(dtype, kc)
    np.testing.assert_allclose(c[1:1 + mr, 2:2 + nr], want, rtol=rtol, atol=rtol * max(kc, 1))
    outside = np.ones(c.shape, bool)
    outside[1:1 + mr, 2:2 + nr] = False
    np.testing.assert_array_equal(c[outside], before[outside])


@pytest.mark.parametrize("act", ["linear", "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_micro_kernel_applies_bias_and_relu_in_registers(dtype, act):
    """The register epilogue: act(alpha*tile + beta*C + bias[col0:col0+NR]) with ReLU's NaN passing
    through, bit for bit what a separate pass over the stored tile computes."""
    mr, nr = BLOCKS[np.dtype(dtype).name][:2]
    rng = np.random.default_rng(3)
    kc = 19
    ap = rng.uniform(-1, 1, kc * mr).astype(dtype)
    bp = rng.uniform(-1, 1, kc * nr).astype(dtype)
    bias = rng.uniform(-1, 1, nr + 7).astype(dtype)
    ap[:mr] = np.nan if act == "relu" else ap[:mr]  # row 0 of the tile NaN: ReLU must keep it
    c = rng.uniform(-1, 1, (mr, nr)).astype(dtype)
    plain = c.copy()
    micro_direct(kc, ap, mr, bp, nr, plain.reshape(-1), 0, nr, dtype(1.5), dtype(-0.5))
    want = plain + bias[5:5 + nr]
    if act == "relu":
        want = np.where(want < 0, dtype(0), want)
    elif act == "leaky_relu":
        want = np.where(want < 0, want * dtype(0.1), want)
    code = {"linear": 0, "relu": 1, "leaky_relu": 2}[act]
    micro_direct(kc, ap, mr, bp, nr, c.reshape(-1), 0, nr, dtype(1.5), dtype(-0.5), bias, 5, code, 0.1)
    np.testing.assert_array_equal(c, want)
    if act == "relu":
        assert np.isnan(c[0]).all()



def test_slabs_cover_k_in_order_and_the_deepest_is_what_the_workspace_holds():
    from jitnn.kernels.gemm import deepest_slab_depth, slab_count, slab_depth

    for kc in sorted(set(_KCS) | {4, 8}):
        for k in range(4 * kc + 3):
            count = slab_count.py_func(k, kc)
            depths = [slab_depth.py_func(s, count, k, kc) for s in range(count)]
            assert sum(depths) == k and all(d == kc for d in depths[:-1])
            assert depths[-1] > kc // 4 or count == 1  # a shallow remainder joins the slab before it
            assert depths[-1] <= kc + kc // 4
            assert deepest_slab_depth(k, kc) == max(depths)
