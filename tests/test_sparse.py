"""jitnn.sparse (CSRMatrix, COOMatrix, the products) and jitnn.kernels.sparse against scipy and numpy.

Every product is compared with scipy.sparse (or float64 numpy on the dense form) through
``check_close``, over float32/float64 data, int32/int64 indices, dense operands in C, F, strided and
reversed layouts, and shapes with empty rows, all-zero matrices and 0-sized dimensions. Each parallel
kernel is also run on one thread and must match the default thread count bitwise, and the kernels
whose work split is a parameter (chunks, column blocks, row blocks) must match across splits.
"""

import math
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import DTYPES, run_threaded
from hypothesis import given, settings
from hypothesis import strategies as st

import jitnn
from jitnn.kernels import sparse as K
from jitnn.sparse import COOMatrix, CSRMatrix, dense_spmm, spmm, spmm_t, spmv

ITYPES = [np.int32, np.int64]
LAYOUTS = ["C", "F", "view", "neg"]
THREADS = numba.config.NUMBA_NUM_THREADS


# --- helpers --------------------------------------------------------------------------------------


def make(m, n, density=0.1, dtype=np.float64, itype=np.int32, seed=0, unsorted=False, dups=False):
    """(CSRMatrix, scipy csr_array with the same stored entries). ``unsorted`` shuffles each row's
    entries; ``dups`` stores some (row, col) twice (scipy keeps them too, non-canonical)."""
    rng = np.random.default_rng(seed)
    s = sp.random_array((m, n), density=density, format="csr", dtype=np.float64, rng=rng)
    s.sort_indices()
    indptr, indices, data = s.indptr.astype(np.int64), s.indices.astype(np.int64), s.data.copy()
    if dups and s.nnz:
        pick = rng.choice(s.nnz, size=max(1, s.nnz // 3), replace=True)
        rows = np.repeat(np.arange(m), np.diff(indptr))
        rows = np.concatenate([rows, rows[pick]])
        cols = np.concatenate([indices, indices[pick]])
        vals = np.concatenate([data, rng.standard_normal(pick.size)])
        order = np.argsort(rows, kind="stable")
        rows, indices, data = rows[order], cols[order], vals[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))])
    if unsorted:
        for i in range(m):
            lo, hi = indptr[i], indptr[i + 1]
            p = rng.permutation(hi - lo) + lo
            indices[lo:hi], data[lo:hi] = indices[p], data[p]
    data = data.astype(dtype)
    a = CSRMatrix(data, indices.astype(itype), indptr.astype(itype), (m, n))
    return a, sp.csr_array((data, indices, indptr), shape=(m, n))


def dense_of(s):
    """scipy's dense form (duplicates summed), float64."""
    return np.asarray(s.toarray(), np.float64)


def layout(x, kind):
    """x's values in the named memory layout (a view for 'view' and 'neg')."""
    if kind == "C":
        return np.ascontiguousarray(x)
    if kind == "F":
        return np.asfortranarray(x)
    if kind == "view":
        big = np.zeros((2 * x.shape[0] + 1, 3 * x.shape[1] + 2), x.dtype)
        big[1::2, 2::3] = x
        return big[1::2, 2::3]
    if kind == "neg":
        return np.ascontiguousarray(x[::-1])[::-1]
    raise ValueError(kind)


def rand(shape, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def check_close(got, want, dtype, k):
    """``got`` (the dtype under test) against a float64 reference of K-term sums."""
    assert got.dtype == dtype
    tol = 64 * np.finfo(dtype).eps * math.sqrt(max(k, 1))
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


# --- construction and validation ------------------------------------------------------------------


def _csr(data=(1.0, 2.0, 3.0), indices=(0, 2, 1), indptr=(0, 2, 2, 3), shape=(3, 3), itype=np.int32):
    def arr(x):
        return x if isinstance(x, np.ndarray) else np.asarray(x, itype)

    return CSRMatrix(np.asarray(data), arr(indices), arr(indptr), shape)


BAD_CSR = [
    ({"shape": (3, -1)}, ValueError, r"shape must be a pair of non-negative ints, received: shape=\(3, -1\)"),
    ({"shape": [3, 3]}, ValueError, "shape must be a pair"),
    ({"shape": (3.0, 3)}, ValueError, "shape must be a pair"),
    ({"shape": (3, 3, 1)}, ValueError, "shape must be a pair"),
    ({"data": np.ones((3, 1))}, ValueError, r"data must be 1-D, received: data.ndim=2"),
    ({"data": np.array([1, 2, 3])}, TypeError, "data must be float32 or float64, received: data.dtype=int64"),
    ({"indices": np.array([0.0, 2.0, 1.0])}, TypeError,
     "indices must be int32 or int64, received: indices.dtype=float64"),
    ({"itype": np.uint32}, TypeError, "indices must be int32 or int64, received: indices.dtype=uint32"),
    ({"itype": np.int16}, TypeError, "indices must be int32 or int64, received: indices.dtype=int16"),
    ({"indptr": (0, 2, 3)}, ValueError, r"indptr must have rows \+ 1 = 4 entries, received: 3"),
    ({"indptr": (1, 2, 2, 3)}, ValueError, r"indptr must start at 0, received: indptr\[0\]=1"),
    ({"indices": (0, 2)}, ValueError, "data and indices must have the same length, received: 3 and 2"),
    ({"indptr": (0, 2, 1, 3)}, ValueError, r"indptr decreases at row 1: indptr\[1\]=2 > indptr\[2\]=1"),
    ({"indptr": (0, 2, 2, 2)}, ValueError, r"indptr ends at 2 but there are 3 stored entries"),
    ({"indices": (0, 3, 1)}, ValueError, r"indices\[1\]=3 \(row 0\) is out of range \[0, 3\)"),
    ({"indices": (0, 2, -1)}, ValueError, r"indices\[2\]=-1 \(row 2\) is out of range \[0, 3\)"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD_CSR, ids=[m[:40] for _, _, m in BAD_CSR])
def test_csr_validation_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _csr(**kwargs)


def test_csr_validation_names_the_row_where_indptr_decreases():
    indptr = np.arange(11)
    indptr[8] = 5  # indptr[7]=7 > indptr[8]=5
    with pytest.raises(ValueError, match=r"indptr decreases at row 7"):
        CSRMatrix(np.ones(10), np.zeros(10, np.int32), indptr, (10, 1))


BAD_COO = [
    ({"data": np.ones(2)}, ValueError, "data, row and col must have the same length, received: 2, 3 and 3"),
    ({"row": [0, 3, 1]}, ValueError, r"row\[1\]=3 is out of range \[0, 3\)"),
    ({"col": [0, 1, -2]}, ValueError, r"col\[2\]=-2 is out of range \[0, 4\)"),
    ({"row": np.array([0, 1, 2], np.uint64)}, TypeError, "row must be int32 or int64"),
    ({"data": np.ones(3, np.float16)}, TypeError, "data must be float32 or float64"),
    ({"shape": (-3, 4)}, ValueError, "shape must be a pair"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD_COO, ids=[m[:40] for _, _, m in BAD_COO])
def test_coo_validation_errors(kwargs, exc, match):
    args = {"data": np.ones(3), "row": [0, 1, 2], "col": [0, 1, 3], "shape": (3, 4)} | kwargs
    with pytest.raises(exc, match=match):
        COOMatrix(args["data"], args["row"], args["col"], args["shape"])


def test_construction_shares_data_unless_copy_owns_its_indices_and_widens_mixed_index_dtypes():
    data, indices, indptr = np.ones(3), np.array([0, 2, 1], np.int32), np.array([0, 2, 2, 3], np.int32)
    a = CSRMatrix(data, indices, indptr, (3, 3))
    assert a.data is data  # values cannot corrupt memory; indices can (issue 14): copied, read-only
    assert not np.shares_memory(a.indices, indices) and not np.shares_memory(a.indptr, indptr)
    assert not (a.indices.flags.writeable or a.indptr.flags.writeable)
    b = CSRMatrix(data, indices, indptr, (3, 3), copy=True)
    assert not np.shares_memory(b.data, data)
    c = CSRMatrix(data, indices, indptr.astype(np.int64), (3, 3))
    assert c.indices.dtype == c.indptr.dtype == np.int64
    big_endian = CSRMatrix(data.astype(">f8"), indices, indptr, (3, 3))
    assert big_endian.dtype == np.float64 and big_endian.dtype.isnative


def test_properties_and_repr():
    a, s = make(7, 5, 0.3, np.float32, np.int64, seed=3)
    assert a.shape == (7, 5) and a.nnz == s.nnz and a.dtype == np.float32 and a.index_dtype == np.int64
    assert a.load_factor == pytest.approx(s.nnz / 35)
    assert CSRMatrix.from_dense(np.zeros((0, 4))).load_factor == 0.0
    assert CSRMatrix.from_dense(np.zeros((3, 4))).load_factor == 0.0
    assert "CSRMatrix(shape=(7, 5)" in repr(a) and "load_factor" in repr(a)
    assert "COOMatrix(shape=(7, 5)" in repr(a.tocoo())


# --- conversions ----------------------------------------------------------------------------------

SHAPES = [(0, 0), (0, 5), (5, 0), (1, 1), (7, 13), (40, 3), (65, 129)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n", SHAPES)
def test_dense_round_trip(m, n, dtype):
    x = rand((m, n), dtype) * (np.random.default_rng(0).random((m, n)) < 0.2)
    x[: m // 2] = 0  # empty rows
    for kind in LAYOUTS:
        a = CSRMatrix.from_dense(layout(x, kind))
        assert a.dtype == dtype and a.nnz == np.count_nonzero(x) and a.has_canonical_format
        np.testing.assert_array_equal(a.to_dense(), x)
        out = layout(np.full((m, n), np.nan, dtype), kind)
        assert a.to_dense(out=out) is out
        np.testing.assert_array_equal(out, x)
    coo = COOMatrix.from_dense(x)
    np.testing.assert_array_equal(coo.to_dense(), x)


def test_from_dense_dtypes():
    assert CSRMatrix.from_dense(np.eye(3, dtype=np.int64)).dtype == np.dtype(jitnn.config.DEFAULT_DTYPE)
    assert CSRMatrix.from_dense([[0, 1.5]], dtype=np.float64).dtype == np.float64
    assert CSRMatrix.from_dense(np.eye(3), index_dtype=np.int64).index_dtype == np.int64
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        CSRMatrix.from_dense(np.eye(3), dtype=np.int32)
    with pytest.raises(TypeError, match="index_dtype must be int32 or int64"):
        CSRMatrix.from_dense(np.eye(3), index_dtype=np.int8)
    with pytest.raises(ValueError, match="from_dense needs a 2-D array"):
        CSRMatrix.from_dense(np.ones(3))


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_scipy_round_trip(fmt):
    _, s = make(30, 20, 0.2, seed=4, unsorted=True, dups=True)
    a = CSRMatrix.from_scipy(s.asformat(fmt))
    np.testing.assert_allclose(a.to_dense(), dense_of(s), atol=1e-12)
    np.testing.assert_allclose(a.to_scipy().toarray(), dense_of(s), atol=1e-12)
    c = COOMatrix.from_scipy(s.asformat(fmt))
    np.testing.assert_allclose(c.to_scipy().toarray(), dense_of(s), atol=1e-12)
    with pytest.raises(TypeError, match="from_scipy needs a scipy.sparse matrix"):
        CSRMatrix.from_scipy(np.eye(2))


def test_scipy_is_optional_at_runtime():
    code = textwrap.dedent("""
        import sys
        sys.modules["scipy"] = None  # any import of scipy now fails
        import numpy as np
        from jitnn.sparse import CSRMatrix, COOMatrix
        a = CSRMatrix.from_dense(np.eye(3, dtype=np.float32))
        assert np.allclose(a @ np.ones((3, 2), np.float32), 1) and np.allclose(a.T.to_dense(), np.eye(3))
        assert np.allclose(COOMatrix.from_dense(np.eye(2)).tocsr().to_dense(), np.eye(2))
        try:
            a.to_scipy()
        except ImportError:
            print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_coo_unsorted_duplicates_sum_like_scipy(dtype, itype):
    rng = np.random.default_rng(5)
    m, n, nnz = 9, 7, 60  # more entries than elements: many duplicates, in random order
    row, col = rng.integers(0, m, nnz).astype(itype), rng.integers(0, n, nnz).astype(itype)
    row[:5] = 3  # row 3 gets a run; rows with no entry stay empty
    data = rng.standard_normal(nnz).astype(dtype)
    c = COOMatrix(data, row, col, (m, n))
    ref = sp.coo_array((data.astype(np.float64), (row, col)), shape=(m, n)).tocsr()
    ref.sum_duplicates()
    a = c.tocsr()
    assert a.has_canonical_format and a.index_dtype == itype and a.dtype == dtype
    np.testing.assert_array_equal(a.indptr, ref.indptr)
    np.testing.assert_array_equal(a.indices, ref.indices)
    check_close(a.data, ref.data, dtype, nnz)
    check_close(c.to_dense(), ref.toarray(), dtype, nnz)
    check_close(c.sum_duplicates().to_dense(), ref.toarray(), dtype, nnz)
    check_close(c.T.to_dense(), ref.toarray().T, dtype, nnz)
    b = rand((n, 4), dtype)
    check_close(c @ b, ref @ b.astype(np.float64), dtype, nnz)


def test_coo_edge_cases():
    empty = COOMatrix(np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int32), (0, 3))
    assert empty.tocsr().shape == (0, 3) and empty.tocsr().nnz == 0
    zeros = COOMatrix(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), (4, 5))
    a = zeros.tocsr()
    np.testing.assert_array_equal(a.indptr, np.zeros(5))
    np.testing.assert_array_equal(zeros.to_dense(), np.zeros((4, 5)))
    c = COOMatrix(np.ones(2), [1, 1], [2, 2], (3, 3))
    assert c.astype(np.float32, np.int64).dtype == np.float32
    assert c.astype(np.float32, np.int64).index_dtype == np.int64
    np.testing.assert_array_equal(c.copy().to_dense(), c.to_dense())
    assert c.transpose().shape == (3, 3) and c.tocoo() is c


# --- structure: transpose, canonical form, astype, rows -------------------------------------------


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("unsorted, dups", [(False, False), (True, False), (True, True)])
def test_transpose(unsorted, dups, itype):
    a, s = make(37, 23, 0.15, itype=itype, seed=6, unsorted=unsorted, dups=dups)
    t = a.T
    assert t.shape == (23, 37) and t.nnz == a.nnz and t.index_dtype == itype
    assert t.has_sorted_indices
    np.testing.assert_array_equal(t.to_dense(), dense_of(s).T)
    np.testing.assert_array_equal(t.T.to_dense(), dense_of(s))
    assert t.has_canonical_format == (not dups)


def test_canonical_forms():
    a, s = make(30, 12, 0.3, seed=7, unsorted=True, dups=True)
    assert not a.has_sorted_indices and not a.has_canonical_format
    b = a.sorted_indices()
    assert b.has_sorted_indices and not b.has_canonical_format and b.nnz == a.nnz
    np.testing.assert_array_equal(b.to_dense(), a.to_dense())
    c = a.sum_duplicates()
    ref = s.copy()
    ref.sum_duplicates()
    assert c.has_canonical_format
    np.testing.assert_array_equal(c.indptr, ref.indptr)
    np.testing.assert_array_equal(c.indices, ref.indices)
    np.testing.assert_allclose(c.data, ref.data, rtol=1e-12)
    assert c.sum_duplicates() is c and c.sorted_indices() is c


def test_astype_and_copy():
    a, _ = make(10, 8, 0.3, np.float64, np.int32)
    b = a.astype(np.float32, np.int64)
    assert b.dtype == np.float32 and b.index_dtype == np.int64 and b.indptr.dtype == np.int64
    np.testing.assert_allclose(b.to_dense(), a.to_dense(), rtol=1e-6)
    assert not np.shares_memory(a.copy().data, a.data)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        a.astype(np.int64)
    with pytest.raises(TypeError, match="index_dtype must be int32 or int64"):
        a.astype(np.float32, np.uint8)


def test_row_slice_is_a_view_and_clips_like_python():
    a, s = make(20, 9, 0.3, seed=8)
    d = dense_of(s)
    for start, stop in [(0, 20), (3, 11), (15, 99), (-5, None), (7, 7), (12, 4), (None, 3)]:
        b = a[start:stop]
        np.testing.assert_array_equal(b.to_dense(), d[start:stop])
        assert b.indptr[0] == 0
    b = a.row_slice(4, 12)
    assert np.shares_memory(b.data, a.data) or b.nnz == 0
    with pytest.raises(ValueError, match="row slices need step 1"):
        a[::2]


def test_take_rows():
    a, s = make(20, 9, 0.3, seed=9, unsorted=True)
    d = dense_of(s)
    idx = np.array([5, 0, 19, 5, -1, 3])
    np.testing.assert_array_equal(a.take_rows(idx).to_dense(), d[idx])
    np.testing.assert_array_equal(a[[2, 2]].to_dense(), d[[2, 2]])
    assert a.take_rows([]).shape == (0, 9)
    with pytest.raises(IndexError, match=r"rows\[1\]=20 is out of range for 20 rows"):
        a.take_rows([1, 20])
    with pytest.raises(TypeError, match="rows must be a 1-D integer array"):
        a.take_rows([1.5])


# --- products -------------------------------------------------------------------------------------

PRODUCT_SHAPES = [(0, 5, 3), (5, 0, 3), (5, 3, 0), (1, 1, 1), (17, 13, 1), (17, 13, 7), (33, 70, 37)]


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k, n", PRODUCT_SHAPES)
def test_spmm(m, k, n, dtype, itype):
    a, s = make(m, k, 0.2, dtype, itype, seed=m + k + n, dups=True)
    b = rand((k, n), dtype)
    want = dense_of(s) @ b.astype(np.float64)
    for kind in LAYOUTS:
        check_close(a @ layout(b, kind), want, dtype, k)
        out = layout(np.full((m, n), np.nan, dtype), kind)
        assert spmm(a, layout(b, kind), out=out) is out
        check_close(out, want, dtype, k)


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k, n", PRODUCT_SHAPES + [(64, 70, 37), (65, 40, 9), (130, 50, 300)])
@pytest.mark.parametrize("unsorted", [False, True], ids=["sorted", "unsorted"])
def test_dense_spmm(m, k, n, dtype, itype, unsorted):
    a, s = make(k, n, 0.2, dtype, itype, seed=m + k + n, unsorted=unsorted)
    x = rand((m, k), dtype)
    x[x < -0.5] = 0  # zeros in X, as after a ReLU
    want = x.astype(np.float64) @ dense_of(s)
    for kind in LAYOUTS:
        check_close(layout(x, kind) @ a, want, dtype, k)
        out = layout(np.full((m, n), np.nan, dtype), kind)
        assert dense_spmm(layout(x, kind), a, out=out) is out
        check_close(out, want, dtype, k)


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k, n", PRODUCT_SHAPES)
def test_spmm_t(m, k, n, dtype, itype):
    a, s = make(m, k, 0.2, dtype, itype, seed=m * k + n, dups=True)
    b = rand((m, n), dtype)
    want = dense_of(s).T @ b.astype(np.float64)
    for kind in LAYOUTS:
        check_close(spmm_t(a, layout(b, kind)), want, dtype, m)
        out = layout(np.full((k, n), np.nan, dtype), kind)
        assert spmm_t(a, layout(b, kind), out=out) is out
        check_close(out, want, dtype, m)


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k", [(0, 4), (4, 0), (1, 1), (30, 17)])
def test_spmv_and_vector_products(m, k, dtype, itype):
    a, s = make(m, k, 0.3, dtype, itype, seed=m + k)
    x = rand(2 * k, dtype)[::2]  # strided
    check_close(a @ x, dense_of(s) @ x.astype(np.float64), dtype, k)
    out = np.full(m, np.nan, dtype)
    assert spmv(a, x, out=out) is out
    check_close(out, dense_of(s) @ x.astype(np.float64), dtype, k)
    y = rand(m, dtype)
    check_close(y @ a, y.astype(np.float64) @ dense_of(s), dtype, m)


@given(m=st.integers(0, 40), k=st.integers(0, 40), n=st.integers(0, 40), density=st.floats(0.0, 0.5),
       f64=st.booleans(), i64=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_products_random_shapes_and_densities(m, k, n, density, f64, i64, seed):
    dtype, itype = (np.float64 if f64 else np.float32), (np.int64 if i64 else np.int32)
    a, s = make(m, k, density, dtype, itype, seed=seed)
    d = dense_of(s)
    b, x, g = rand((k, n), dtype, seed), rand((n, m), dtype, seed + 1), rand((m, n), dtype, seed + 2)
    check_close(a @ b, d @ b.astype(np.float64), dtype, k)
    check_close(x @ a, x.astype(np.float64) @ d, dtype, m)
    check_close(spmm_t(a, g), d.T @ g.astype(np.float64), dtype, m)
    np.testing.assert_array_equal(a.T.to_dense(), d.T.astype(dtype))


def test_operator_promotion_and_errors():
    a, s = make(6, 5, 0.4, np.float32)
    b64 = rand((5, 3), np.float64)
    r = a @ b64
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, dense_of(s) @ b64, rtol=1e-6)
    assert (a @ np.ones((5, 2), np.int64)).dtype == np.float64
    assert (a @ np.ones((5, 2), np.bool_)).dtype == np.float32
    assert (np.ones((2, 6), np.float32) @ a).dtype == np.float32  # ndarray on the left defers to us
    with pytest.raises(TypeError, match="sparse @ sparse is not supported"):
        a @ a
    with pytest.raises(TypeError, match="cannot multiply a float32 sparse matrix by a complex128 array"):
        a @ np.ones((5, 2), np.complex128)
    with pytest.raises(ValueError, match="must be 1-D or 2-D"):
        a @ np.ones((5, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"shapes \(6, 5\) and \(4, 2\) not aligned: 5 \(dim 1\) != 4"):
        a @ np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"shapes \(2, 5\) and \(6, 5\) not aligned"):
        np.ones((2, 5), np.float32) @ a


def test_out_functions_are_strict():
    a, _ = make(6, 5, 0.4, np.float32)
    with pytest.raises(TypeError, match=r"b.dtype=float64 differs from the sparse matrix's float32"):
        spmm(a, np.ones((5, 2)))
    with pytest.raises(TypeError, match="a must be a CSRMatrix, received: COOMatrix"):
        spmm(a.tocoo(), np.ones((5, 2), np.float32))
    with pytest.raises(TypeError, match="b must be a numpy.ndarray, received: list"):
        spmm(a, [[1.0]])
    with pytest.raises(ValueError, match=r"out must have shape \(6, 2\) and dtype float32"):
        spmm(a, np.ones((5, 2), np.float32), out=np.empty((6, 3), np.float32))
    with pytest.raises(ValueError, match="out is read-only"):
        out = np.empty((6, 2), np.float32)
        out.flags.writeable = False
        spmm(a, np.ones((5, 2), np.float32), out=out)
    with pytest.raises(ValueError, match=r"shapes \(5, 6\) \(transposed\) and \(5, 2\) not aligned"):
        spmm_t(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"out must be a \(6,\) float32 array"):
        spmv(a, np.ones(5, np.float32), out=np.empty(5, np.float32))


def test_out_aliasing_an_input_is_still_correct():
    a = CSRMatrix.from_dense(np.eye(4, dtype=np.float32)[::-1].copy())
    b = rand((4, 4), np.float32)
    want = b[::-1].copy()
    assert spmm(a, b, out=b) is b
    np.testing.assert_array_equal(b, want)
    x = rand((4, 4), np.float32)
    want = x[:, ::-1].copy()
    assert dense_spmm(x, a, out=x) is x
    np.testing.assert_array_equal(x, want)
    v = rand(4, np.float32)
    want = v[::-1].copy()
    assert spmv(a, v, out=v) is v
    np.testing.assert_array_equal(v, want)


# --- parallel kernels: race-free and deterministic ------------------------------------------------
# In a fresh interpreter with a 3-thread pool and no serial cut-off (helpers.run_threaded): here the
# pool may hold one thread, and one thread would be compared with one thread.

PARALLEL_SCRIPT = """
import numba
import numpy as np
import jitnn
from jitnn.sparse import CSRMatrix, spmm_t
from test_sparse import check_close, dense_of, make, rand

a, s = make(700, 1300, 0.06, np.float32, np.int32, seed=11, unsorted=True, dups=True)
b, x, g = rand((1300, 130), np.float32), rand((64, 700), np.float32), rand((700, 130), np.float32)
v, x2 = rand(1300, np.float32), rand((300, 700), np.float32)
sa, d = a.sorted_indices(), a.to_dense()
idx = np.random.default_rng(0).permutation(700)


def arrays(c):
    return c.indptr, c.indices, c.data


products = {"a @ b": lambda: a @ b, "x @ a": lambda: x @ a, "x @ sorted a": lambda: x @ sa,
            "x2 @ a": lambda: x2 @ a, "spmm_t": lambda: spmm_t(a, g), "a @ v": lambda: a @ v}
conversions = {"to_dense": lambda: a.to_dense(), "T": lambda: arrays(a.T),
               "from_dense": lambda: arrays(CSRMatrix.from_dense(d)),
               "sum_duplicates": lambda: arrays(a.sum_duplicates()),
               "tocoo().tocsr()": lambda: arrays(a.tocoo().tocsr()), "take_rows": lambda: arrays(a.take_rows(idx))}
out = {}
for threads in (1, 3):
    jitnn.set_num_threads(threads)
    assert numba.get_num_threads() == threads
    out[threads] = {name: [np.array(r) for r in (fn() if name in conversions else (fn(),))]
                    for name, fn in {**products, **conversions}.items()}
for name in out[1]:
    for one, many in zip(out[1][name], out[3][name]):
        np.testing.assert_array_equal(one, many, err_msg=name)
    if name in products:
        assert np.isfinite(out[3][name][0]).all(), name
check_close(out[3]["spmm_t"][0], dense_of(s).T @ g.astype(np.float64), np.float32, 700)
print("ok")
"""


def test_parallel_products_and_conversions_match_one_thread():
    run_threaded(PARALLEL_SCRIPT)


@pytest.mark.parametrize("chunks", [1, 2, 3, 7])
def test_counting_sort_is_stable_for_any_chunk_count(chunks):
    keys = np.random.default_rng(2).integers(0, 50, 10_000).astype(np.int32)
    counts = np.empty((chunks, 50), np.int64)
    ptr, perm = np.empty(51, np.int64), np.empty(keys.size, np.int64)
    K.counting_sort(keys, counts, ptr, perm)
    np.testing.assert_array_equal(perm, np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(ptr, np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=50))]))


@pytest.mark.parametrize("rows, col_blocks", [(1, 1), (8, 1), (64, 1), (16, 3), (64, 2), (8, 40)])
def test_dense_spmm_kernel_bitwise_across_work_splits(rows, col_blocks):
    a, _ = make(300, 37, 0.1, np.float64, np.int64, seed=12)
    x = rand((70, 300), np.float64)
    ref = np.empty((70, 37))
    out = np.empty((70, 37))
    acc, xt = np.empty((THREADS, 64 * 37)), np.empty((THREADS, 256 * 64))
    K.dense_spmm(x.reshape(-1), 300, 1, 70, a.indptr, a.indices, a.data, 37, ref.reshape(-1), 37, 1, 64, 1,
                 256, acc, xt)
    K.dense_spmm(x.reshape(-1), 300, 1, 70, a.indptr, a.indices, a.data, 37, out.reshape(-1), 37, 1, rows,
                 col_blocks, 100, acc, xt)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("kind", ["F", "view"])
def test_strided_kernel_paths(kind):
    """The kernels' non-unit-stride loops (the wrappers copy such operands when rows are reused)."""
    from jitnn.linalg.views import strided

    a, s = make(30, 20, 0.3, np.float64, np.int64, seed=14, dups=True)
    d = dense_of(s)
    b, g = layout(rand((20, 9), np.float64), kind), layout(rand((30, 9), np.float64), kind)
    c, ct = layout(np.full((30, 9), np.nan), kind), layout(np.full((20, 9), np.nan), kind)
    (bf, brs, bcs), (cf, crs, ccs) = strided(b), strided(c)
    assert bcs != 1 and ccs != 1
    K.spmm(a.indptr, a.indices, a.data, bf, brs, bcs, 9, cf, crs, ccs)
    check_close(c, d @ b, np.float64, 20)
    t = a.T
    (gf, grs, gcs), (tf, trs, tcs) = strided(g), strided(ct)
    K.spmm(t.indptr, t.indices, t.data, gf, grs, gcs, 9, tf, trs, tcs)
    check_close(ct, d.T @ g, np.float64, 30)
