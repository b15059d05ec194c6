"""Losses, their fused kernels and metrics, against float64 numpy/scipy references and finite differences."""

import numpy as np
import pytest
from helpers import DTYPES, fd_grad, run_threaded, tolerance
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, log_expit, log_softmax, logsumexp, softmax

from jitnn import losses, metrics
from jitnn.kernels import losses as KL
from jitnn.kernels import reductions as K

SHAPES = [(n, d) for n in (1, 7, 33) for d in (1, 3, 10)]
EPS = 1e-7


# ---------------------------------------------------------------- float64 references


def ref_mse(p, y):
    return np.mean(np.mean((p - y) ** 2, axis=1))


def ref_mae(p, y):
    return np.mean(np.mean(np.abs(p - y), axis=1))


def ref_bce(p, y):
    pc = np.clip(p, EPS, 1 - EPS)
    return np.mean(np.mean(-(y * np.log(pc) + (1 - y) * np.log1p(-pc)), axis=1))


def ref_cce_probs(p, y):
    """Keras: rows renormalized to sum 1, clipped, then -Σ y log q."""
    q = np.clip(p / p.sum(axis=1, keepdims=True), EPS, 1 - EPS)
    return np.mean(-(y * np.log(q)).sum(axis=1))


def ref_bce_logits(z, y):
    return np.mean(np.mean(-(y * log_expit(z) + (1 - y) * log_expit(-z)), axis=1))


def ref_cce_logits(z, y):
    return np.mean(-(y * log_softmax(z, axis=1)).sum(axis=1))


def ref_cce_logits_int(z, labels):
    return np.mean(logsumexp(z, axis=1) - z[np.arange(len(labels)), labels])


def onehot(labels, d):
    y = np.zeros((len(labels), d))
    y[np.arange(len(labels)), labels] = 1.0
    return y


def tol(dtype):
    return tolerance(dtype, float32=(3e-5, 1e-7), float64=(1e-9, 1e-12))


# ---------------------------------------------------------------- test cases, shared by all tests
# Each case: (loss id, fused?, make prediction/logits, make targets, float64 reference of (x, y2d)).
# Targets come back as (what the loss takes, the 2-D float64 form the reference takes).


def _normal(rng, n, d):
    return rng.normal(size=(n, d))


def _probs(rng, n, d):
    return rng.uniform(0.05, 0.95, size=(n, d))


def _positive_rows(rng, n, d):
    return rng.uniform(0.1, 1.0, size=(n, d))  # not normalized: exercises Keras' renormalization


def _logits(rng, n, d):
    return 3 * rng.normal(size=(n, d))


def _t_dense(rng, n, d):
    y = rng.normal(size=(n, d))
    return y, y


def _t_soft(rng, n, d):
    y = rng.uniform(0, 1, size=(n, d))
    return y, y


def _t_labels(rng, n, d):
    lab = rng.integers(0, d, size=n)
    return lab, onehot(lab, d)


CASES = {
    "mse": ("mse", False, _normal, _t_dense, ref_mse),
    "mae": ("mae", False, _normal, _t_dense, ref_mae),
    "bce": ("bce", False, _probs, _t_soft, ref_bce),
    "cce_int": ("cce", False, _positive_rows, _t_labels, ref_cce_probs),
    "cce_dense": ("cce", False, _positive_rows, _t_soft, ref_cce_probs),
    "sigmoid_bce": ("bce", True, _logits, _t_soft, ref_bce_logits),
    "softmax_cce_int": ("cce", True, _logits, _t_labels, ref_cce_logits),
    "softmax_cce_dense": ("cce", True, _logits, _t_soft, ref_cce_logits),  # unnormalized rows: p Σy - y
}


def run_loss(loss, fused, x, y):
    """Call the training path with fresh buffers; returns (mean loss, grad, probs or None, row_loss)."""
    grad = np.full_like(x, np.nan)
    row = np.full(x.shape[0], np.nan)
    if fused:
        probs = np.full_like(x, np.nan)
        value = loss.value_and_grad_from_logits(x, y, probs, grad, row)
        return value, grad, probs, row
    return loss.value_and_grad(x, y, grad, row), grad, None, row


def make_case(name, shape, dtype, seed=0):
    ident, fused, make_x, make_y, ref = CASES[name]
    rng = np.random.default_rng(seed)
    x = make_x(rng, *shape).astype(dtype)
    y, y_ref = make_y(rng, *shape)
    if y.dtype.kind == "f":
        y = y.astype(dtype)
        y_ref = y.astype(np.float64)
    return losses.get(ident), fused, x, y, y_ref, ref


# ---------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(CASES))
def test_value_matches_reference(name, shape, dtype):
    loss, fused, x, y, y_ref, ref = make_case(name, shape, dtype)
    value, grad, probs, row = run_loss(loss, fused, x, y)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(value, ref(x64, y_ref), **tol(dtype))
    assert value == pytest.approx(row.mean(), rel=1e-12)  # row_loss holds the per-sample losses
    assert np.all(np.isfinite(grad))
    if fused:
        act = expit(x64) if loss.from_logits_activation == "sigmoid" else softmax(x64, axis=1)
        np.testing.assert_allclose(probs, act, **tol(dtype))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_finite_differences(name, shape):
    loss, fused, x, y, y_ref, ref = make_case(name, shape, np.float64, seed=1)
    _, grad, _, _ = run_loss(loss, fused, x, y)
    np.testing.assert_allclose(grad, fd_grad(lambda v: ref(v, y_ref), x), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("targets", ["labels", "soft"])
def test_fused_softmax_xent_matches_fd_of_composition(shape, targets):
    """dL/dz of the fused kernel = finite differences of CCE(softmax(z)) on probabilities."""
    rng = np.random.default_rng(2)
    z = _logits(rng, *shape)
    y, y_ref = (_t_labels if targets == "labels" else _t_soft)(rng, *shape)
    loss = losses.get("categorical_crossentropy")
    _, dz, probs, _ = run_loss(loss, True, z, y)
    def composed(v):
        return ref_cce_probs(softmax(v, axis=1), y_ref)

    np.testing.assert_allclose(dz, fd_grad(composed, z), rtol=1e-5, atol=1e-8)
    # the unfused jitnn path (CCE on probabilities, then the softmax backward) agrees as well
    dp = np.empty_like(z)
    loss.value_and_grad(probs, y, dp, np.empty(shape[0]))
    dz2 = np.empty_like(z)
    K.backprop_softmax_rows(probs, dp, dz2)
    np.testing.assert_allclose(dz2, dz, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_sigmoid_bce_matches_fd_of_composition(shape):
    rng = np.random.default_rng(3)
    z = _logits(rng, *shape)
    y, y_ref = _t_soft(rng, *shape)
    _, dz, _, _ = run_loss(losses.get("bce"), True, z, y)
    np.testing.assert_allclose(dz, fd_grad(lambda v: ref_bce(expit(v), y_ref), z), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fused", [False, True])
def test_int_labels_and_onehot_agree(dtype, fused):
    rng = np.random.default_rng(4)
    x = (_logits if fused else _positive_rows)(rng, 33, 10).astype(dtype)
    for labels in (rng.integers(0, 10, 33), rng.integers(0, 10, 33).astype(np.int32)):
        loss = losses.CategoricalCrossentropy()
        v1, g1, p1, r1 = run_loss(loss, fused, x, labels)
        v2, g2, p2, r2 = run_loss(loss, fused, x, onehot(labels, 10).astype(dtype))
        np.testing.assert_allclose(v1, v2, rtol=1e-12)
        np.testing.assert_allclose(r1, r2, rtol=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-12)
        if fused:
            np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_are_stable(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    labels = np.array([1, 0, 2])
    n = 3
    value, dz, probs, row = run_loss(losses.get("cce"), True, z, labels)
    np.testing.assert_allclose(row, [2e4, 2e4 + np.log(2), np.log(3)], rtol=1e-9)
    assert value == pytest.approx(row.mean())
    p = softmax(z.astype(np.float64), axis=1)
    np.testing.assert_allclose(dz, (p - onehot(labels, 3)) / n, **tol(dtype))
    np.testing.assert_allclose(probs, p, **tol(dtype))
    v2, dz2, _, _ = run_loss(losses.get("cce"), True, z, onehot(labels, 3).astype(dtype))
    assert v2 == pytest.approx(value) and np.allclose(dz2, dz)

    y = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.5]], dtype=dtype)
    value, dz, probs, row = run_loss(losses.get("bce"), True, z, y)
    zz = z.astype(np.float64)
    expected = np.maximum(zz, 0) - zz * y + np.log1p(np.exp(-np.abs(zz)))
    np.testing.assert_allclose(row, expected.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(dz, (expit(zz) - y) / 9, **tol(dtype))
    assert np.all(np.isfinite(dz)) and np.all(np.isfinite(probs)) and np.isfinite(value)


def test_clipped_probabilities():
    """Saturated probabilities give a finite loss (-log eps) and, where the clip is active, zero gradient."""
    bce = losses.BinaryCrossentropy()
    p = np.array([[0.0, 1.0, 0.5]])
    y = np.array([[1.0, 0.0, 1.0]])
    value, grad, _, row = run_loss(bce, False, p, y)
    assert row[0] == pytest.approx((2 * -np.log(EPS) + np.log(2)) / 3)
    np.testing.assert_array_equal(grad[0, :2], 0.0)
    assert grad[0, 2] == pytest.approx(-2 / 3)
    value = losses.get("cce")(np.array([1]), np.array([[1.0, 0.0]]))
    assert value == pytest.approx(-np.log(EPS)) and np.isfinite(value)


def test_mae_subgradient_is_zero_at_equality():
    p = np.array([[1.0, 2.0, 3.0]])
    _, grad, _, _ = run_loss(losses.get("mae"), False, p, np.array([[1.0, 1.0, 4.0]]))
    np.testing.assert_array_equal(grad, [[0.0, 1 / 3, -1 / 3]])


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 20),
    d=st.integers(2, 12),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
    seed=st.integers(0, 2**31),
)
def test_fused_softmax_xent_property(n, d, scale, seed):
    """Loss ≥ 0, equals the reference, and each gradient row sums to 0 (softmax rows sum to 1)."""
    rng = np.random.default_rng(seed)
    z = scale * rng.normal(size=(n, d))
    labels = rng.integers(0, d, size=n)
    value, dz, _, row = run_loss(losses.get("cce"), True, z, labels)
    assert np.all(row >= 0)
    np.testing.assert_allclose(value, ref_cce_logits_int(z, labels), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-14)


# ---------------------------------------------------------------- the other kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 10), (5, 64), (200, 130)])
def test_column_sums(shape, dtype):
    x = np.random.default_rng(5).normal(size=shape).astype(dtype)
    out = np.full(shape[1], np.nan, dtype=dtype)
    K.column_sums(x, out)
    close = {"rtol": 1e-5, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(out, x.astype(np.float64).sum(axis=0), **close)
    out_t = np.empty(shape[0], dtype=dtype)
    K.column_sums(x.T, out_t)  # any strides
    np.testing.assert_allclose(out_t, x.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_rows_and_backprop(shape, dtype):
    rng = np.random.default_rng(6)
    z = _logits(rng, *shape).astype(dtype)
    out = np.empty_like(z)
    K.softmax_rows(z, out)
    np.testing.assert_allclose(out, softmax(z.astype(np.float64), axis=1), **tol(dtype))
    if dtype == np.float64:
        w = rng.normal(size=shape)  # d/dz Σ w ⊙ softmax(z)
        dz = np.empty_like(z)
        K.backprop_softmax_rows(out, w, dz)
        expected = fd_grad(lambda v: np.sum(w * softmax(v, axis=1)), z)
        np.testing.assert_allclose(dz, expected, rtol=1e-5, atol=1e-9)
    inplace = z.copy()
    K.softmax_rows(inplace, inplace)  # layers call it in place: each element is read before it is written
    # not bitwise: with aliased rows LLVM takes the scalar path, so the row sum is added in another order
    np.testing.assert_allclose(inplace, out, rtol=8 * np.finfo(dtype).eps, atol=0)
    huge = np.array([[1e4, -1e4, 1e4]], dtype=dtype)
    out = np.empty_like(huge)
    K.softmax_rows(huge, out)
    np.testing.assert_allclose(out, [[0.5, 0.0, 0.5]])


@pytest.mark.parametrize("dtype", DTYPES + [np.int64])
def test_nonfinite_count(dtype):
    x = np.zeros((9, 5), dtype=dtype)
    assert K.nonfinite_count(x) == 0
    assert K.nonfinite_count(x[:, 1]) == 0
    if dtype == np.int64:
        return
    x[0, 0] = np.nan
    x[3, 4] = np.inf
    x[8, 2] = -np.inf
    x[8, 3] = np.nan
    assert K.nonfinite_count(x) == 4
    assert K.nonfinite_count(x.T) == 4  # non-contiguous
    assert K.nonfinite_count(x[:, 0]) == 1  # 1-D, strided
    assert K.nonfinite_count(np.array([np.nan], dtype=dtype)) == 1


def test_nan_propagates_through_losses():
    """fastmath must not assume finite values: a NaN input yields a NaN loss that nonfinite_count sees."""
    z = np.random.default_rng(7).normal(size=(4, 3))
    z[2, 1] = np.nan
    y = np.zeros((4, 3))
    labels = np.array([0, 1, 2, 0])
    probs_path = [("mse", False, y), ("mae", False, y), ("bce", False, y)]
    probs_path += [("cce", False, labels), ("cce", False, y)]
    fused_path = [("cce", True, labels), ("cce", True, y), ("bce", True, y)]
    for ident, fused, target in probs_path + fused_path:
        value, grad, _, row = run_loss(losses.get(ident), fused, z, target)
        assert np.isnan(value), ident
        assert K.nonfinite_count(row) >= 1 and K.nonfinite_count(grad) >= 1
    # unchecked out-of-range labels poison the loss rather than reading out of bounds
    value, _, _, row = run_loss(losses.get("cce"), True, np.zeros((2, 3)), np.array([0, 3]))
    assert np.isnan(value) and np.isnan(row[1]) and not np.isnan(row[0])
    value, _, _, _ = run_loss(losses.get("cce"), False, np.full((2, 3), 1 / 3), np.array([-1, 0]))
    assert np.isnan(value)


PARALLEL_CASES = [
    ("mse", lambda x, y, g, r: KL.mse(x, y, g, r)),
    ("softmax_xent_int", lambda x, y, g, r: KL.softmax_xent_int(x, y, np.empty_like(x), g, r)),
    ("softmax_xent_dense", lambda x, y, g, r: KL.softmax_xent_dense(x, y, np.empty_like(x), g, r)),
    ("sigmoid_bce_logits", lambda x, y, g, r: KL.sigmoid_bce_logits(x, y, np.empty_like(x), g, r)),
    ("xent_probs_dense", lambda x, y, g, r: KL.xent_probs_dense(np.abs(x) + 0.1, y, g, r, EPS)),
]


def test_parallel_equals_serial():
    """Rows are independent and the final mean is a fixed-order serial sum, so the result is BITWISE
    identical for 1 thread and for 3 (no tolerance), in a fresh interpreter with a 3-thread pool."""
    run_threaded("""
import numba
import numpy as np
from helpers import DTYPES
from jitnn.kernels import reductions as K
from test_losses import PARALLEL_CASES

for dtype in DTYPES:
    for name, kernel in PARALLEL_CASES:
        rng = np.random.default_rng(8)
        x = rng.normal(size=(257, 130)).astype(dtype)
        y = rng.integers(0, 130, 257) if name == "softmax_xent_int" else rng.uniform(size=x.shape).astype(dtype)

        def once():
            g = np.empty_like(x)
            r = np.empty(257)
            v = kernel(x, y, g, r)
            s = np.empty(130, dtype=dtype)
            K.column_sums(g, s)
            return v, g, r, s, K.nonfinite_count(g)

        out = {}
        for threads in (1, 3):
            numba.set_num_threads(threads)
            out[threads] = once()
        assert out[1][0] == out[3][0], (name, dtype)
        for a, b in zip(out[1][1:], out[3][1:]):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {dtype.__name__}")
print("ok")
""")


# ---------------------------------------------------------------- the Loss API


def test_get_and_config_round_trip():
    for ident, cls in [
        ("mse", losses.MeanSquaredError),
        ("mean_squared_error", losses.MeanSquaredError),
        ("mae", losses.MeanAbsoluteError),
        ("mean_absolute_error", losses.MeanAbsoluteError),
        ("bce", losses.BinaryCrossentropy),
        ("binary_crossentropy", losses.BinaryCrossentropy),
        ("cce", losses.CategoricalCrossentropy),
        ("categorical_crossentropy", losses.CategoricalCrossentropy),
        ("sparse_categorical_crossentropy", losses.CategoricalCrossentropy),
    ]:
        loss = losses.get(ident)
        assert type(loss) is cls
        again = losses.get(loss.get_config())
        assert type(again) is cls and again.get_config() == loss.get_config()
    inst = losses.BinaryCrossentropy(epsilon=1e-5)
    assert losses.get(inst) is inst and losses.get(inst.get_config()).epsilon == 1e-5
    assert losses.get("cce").from_logits_activation == "softmax"
    assert losses.get("bce").from_logits_activation == "sigmoid"
    assert losses.get("mse").from_logits_activation is None
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid names: .*categorical_crossentropy"):
        losses.get("hinge")
    with pytest.raises(ValueError, match=r"Received|received: epsilon=0"):
        losses.BinaryCrossentropy(epsilon=0)
    with pytest.raises(TypeError, match="fuses with no activation"):
        a = np.zeros((2, 2))
        losses.get("mse").value_and_grad_from_logits(a, a, a.copy(), a.copy(), np.zeros(2))


def test_call_converts_and_reshapes():
    p = np.array([0.2, 0.7, 0.9], dtype=np.float32)
    y = [0, 1, 1]
    p64, y64 = p.astype(np.float64)[:, None], np.array(y, float)[:, None]
    assert losses.get("mse")(y, p) == pytest.approx(ref_mse(p64, y64))
    assert losses.get("bce")(np.array(y, dtype=bool), p) == pytest.approx(ref_bce(p64, y64), rel=1e-6)
    probs = softmax(np.random.default_rng(9).normal(size=(4, 3)), axis=1)
    labels = np.array([0, 2, 1, 1])
    expected = ref_cce_logits_int(np.log(probs), labels)
    assert losses.get("cce")(labels, probs) == pytest.approx(expected)
    assert losses.get("cce")(labels.astype(float), probs) == pytest.approx(expected)  # integral floats
    assert losses.get("cce")(labels[:, None], probs) == pytest.approx(expected)  # a column of labels
    assert losses.get("cce")(onehot(labels, 3), probs) == pytest.approx(expected)
    # a 1-D target for D == 1 on the training path
    x = np.array([[0.5], [1.5]])
    value = losses.get("mae").value_and_grad(x, np.array([0.0, 1.0]), np.empty_like(x), np.empty(2))
    assert value == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        losses.get("mse").value_and_grad(x, x, np.empty((2, 2)), np.empty(2))
    with pytest.raises(ValueError, match="at least N=2"):
        losses.get("mse").value_and_grad(x, x, np.empty_like(x), np.empty(1))


def test_check_targets_errors():
    ok = np.array([0, 9, 3])
    losses.check_targets("cce", ok, 10)
    losses.check_targets("cce", ok.astype(np.float32), 10)
    losses.check_targets("cce", onehot(ok, 10), 10)
    losses.check_targets("bce", np.array([0.0, 1.0, 0.5]), 1)
    losses.check_targets("mse", np.ones((3, 2)), 2)
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        losses.check_targets("mse", np.array([[1.0], [np.nan]]), 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        losses.check_targets("cce", np.array([1.0, np.inf]), 10)
    with pytest.raises(ValueError, match="NaN or infinite"):
        losses.check_targets("cce", np.array([[0.0, 1.0], [np.nan, 0.0]]), 2)
    with pytest.raises(ValueError, match=r"label 12 at index 2 is out of range \[0, 10\)"):
        losses.check_targets("sparse_categorical_crossentropy", np.array([0, 1, 12, 3, 11]), 10)
    with pytest.raises(ValueError, match=r"label -1 at index 1 is out of range"):
        losses.check_targets("cce", np.array([0, -1], dtype=np.int32), 10)
    with pytest.raises(ValueError, match=r"shape \(N, 10\), one column per class, received shape \(3, 9\)"):
        losses.check_targets("cce", np.ones((3, 9)), 10)
    with pytest.raises(ValueError, match=r"not integer class labels: y\[1\] = 1.5"):
        losses.check_targets("cce", np.array([1.0, 1.5]), 10)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        losses.check_targets("bce", np.array([0.0, 1.2]), 1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        losses.check_targets(losses.BinaryCrossentropy(), np.array([[-0.1, 0.5]]), 2)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        losses.check_targets("mse", np.ones((4, 2)), 3)
    with pytest.raises(ValueError, match="numeric"):
        losses.check_targets("mse", np.array(["a", "b"]), 1)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.check_targets("nope", ok, 10)
    prepared = losses.get("cce").prepare_targets(ok.astype(np.float64), 10, np.float32)
    assert prepared.dtype == np.int64
    prepared = losses.get("bce").prepare_targets(np.array([0, 1]), 1, np.float32)
    assert prepared.dtype == np.float32 and prepared.shape == (2, 1)


# ---------------------------------------------------------------- metrics


def test_accuracy():
    rng = np.random.default_rng(10)
    pred = rng.normal(size=(33, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 33)
    expected = np.mean(pred.argmax(axis=1) == labels)
    assert metrics.accuracy(labels, pred) == pytest.approx(expected)
    assert metrics.accuracy(labels.astype(np.int32)[:, None], pred) == pytest.approx(expected)
    assert metrics.accuracy(onehot(labels, 10), pred) == pytest.approx(expected)
    assert metrics.accuracy(np.arange(10) % 10, np.eye(10)) == 1.0
    p1 = np.array([[0.2], [0.7], [0.51], [0.5]])
    assert metrics.accuracy(np.array([0, 1, 0, 1]), p1) == 0.5  # one output: threshold 0.5, 0.5 counts as 0
    assert metrics.accuracy(np.array([[0.0], [1.0], [1.0], [0.0]]), p1) == 1.0
    assert metrics.binary_accuracy(np.array([[1, 0], [0, 0]]), np.array([[0.9, 0.1], [0.8, 0.3]])) == 0.75
    with pytest.raises(ValueError, match="3 labels for 33"):
        metrics.accuracy(labels[:3], pred)


def test_metric_get_and_regression_metrics():
    rng = np.random.default_rng(11)
    p, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    assert metrics.get("acc") is metrics.accuracy and metrics.get("accuracy") is metrics.accuracy
    assert metrics.get("mse")(y, p) == pytest.approx(ref_mse(p, y))
    assert metrics.get("mae")(y, p) == pytest.approx(ref_mae(p, y))
    assert metrics.get("mean_squared_error") is metrics.mse
    def f(yt, yp):
        return 0.0

    assert metrics.get(f) is f
    with pytest.raises(ValueError, match="unknown metric 'f1'; valid names: acc, accuracy"):
        metrics.get("f1")

