"""Sparse types under attack (issue 14, defect 7) and their properties against scipy (hypothesis).

Index arrays changed after construction, indices that do not fit int32, unsigned row ids, huge
shapes with few entries, read-only outputs; then arbitrary shapes, dtypes and special values
(NaN, inf, -0.0, subnormals, duplicates) against scipy.sparse. The crash-prone cases run in a
subprocess, so a regression shows as a failed test, not a dead interpreter.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitnn.sparse import COOMatrix, CSRMatrix, dense_spmm, spmm, spmv


def run(code):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True,
                          text=True,
                          timeout=600, env=env)


def test_indices_changed_after_construction_cannot_reach_the_kernels():
    """The caller's arrays changed after construction made .T and products read and write out of
    bounds (SIGSEGV). The matrix now owns read-only copies of its index arrays."""
    out = run("""
        import numpy as np, scipy.sparse as sp
        from jitnn.sparse import CSRMatrix, COOMatrix
        data, indices, indptr = np.ones(4), np.array([0, 3, 1, 2]), np.array([0, 2, 4])
        a = CSRMatrix(data, indices, indptr, (2, 4))
        c = COOMatrix(data, np.array([0, 0, 1, 1]), indices.copy(), (2, 4))
        ref = sp.csr_array((data, indices.copy(), indptr.copy()), shape=(2, 4)).toarray()
        indices[:] = 10**12; indptr[1] = 10**9        # the caller's arrays, not the matrix's
        for arr in (a.indices, a.indptr, c.row, c.col):
            try:
                arr[0] = 10**9
                raise SystemExit("an index array of the matrix is writeable")
            except ValueError:
                pass
        b = np.arange(8.0).reshape(4, 2)
        assert np.array_equal(a.T.to_dense(), ref.T)
        assert np.array_equal(a @ b, ref @ b) and np.array_equal(c @ b, ref @ b)
        assert np.array_equal(np.ones((3, 2)) @ a, np.ones((3, 2)) @ ref)
        print("ok")
    """)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])


def test_index_arrays_cannot_be_made_writeable_through_the_matrix():
    """The matrix's own index arrays were read-only but the owner could flip ``a.indices.flags.writeable``
    back to True, write an index past the end, and then products read out of bounds (SIGSEGV). The
    properties return views of frozen private arrays, which numpy refuses to make writeable."""
    out = run("""
        import numpy as np, scipy.sparse as sp
        from jitnn.sparse import CSRMatrix, COOMatrix
        data, indices, indptr = np.ones(4), np.array([0, 3, 1, 2]), np.array([0, 2, 4])
        a = CSRMatrix(data, indices, indptr, (2, 4))
        c = COOMatrix(data, np.array([0, 0, 1, 1]), indices.copy(), (2, 4))
        ref = sp.csr_array((data, indices, indptr), shape=(2, 4)).toarray()
        refused = 0
        for arr in (a.indices, a.indptr, c.row, c.col, a[0:1].indices, a.T.indptr, c.T.row, a.tocoo().col):
            try:
                arr.flags.writeable = True
                arr[0] = 10**9
            except ValueError:
                refused += 1
        b = np.arange(8.0).reshape(4, 2)
        assert np.array_equal(a @ b, ref @ b) and np.array_equal(c @ b, ref @ b)
        assert np.array_equal(a.T.to_dense(), ref.T) and np.array_equal(a @ np.ones(4), ref @ np.ones(4))
        print(refused)
    """)
    assert out.returncode == 0 and out.stdout.strip() == "8", (out.returncode, out.stdout, out.stderr[-2000:])


def test_arrays_and_shape_cannot_be_reassigned():
    """Putting a shorter ``data``, an out-of-range ``indices`` or a larger ``shape`` in place of the
    validated ones made products read and write out of bounds (SIGSEGV): assignment is refused with an
    AttributeError that says to build a new matrix, and the products still match scipy."""
    out = run("""
        import numpy as np, scipy.sparse as sp
        from jitnn.sparse import CSRMatrix, COOMatrix
        data, indices, indptr = np.ones(4), np.array([0, 3, 1, 2]), np.array([0, 2, 4])
        a = CSRMatrix(data, indices, indptr, (2, 4))
        c = COOMatrix(data, np.array([0, 0, 1, 1]), indices.copy(), (2, 4))
        ref = sp.csr_array((data, indices, indptr), shape=(2, 4)).toarray()
        attempts = [(a, "data", np.ones(1)), (a, "indices", np.full(4, 10**9)), (a, "indptr", np.array([0, 9, 99])),
                    (a, "shape", (10**6, 10**6)), (c, "data", np.ones(1)), (c, "row", np.full(4, 10**9)),
                    (c, "col", np.full(4, 10**9)), (c, "shape", (10**6, 10**6))]
        refused = 0
        for m, name, value in attempts:
            try:
                setattr(m, name, value)
            except AttributeError as e:
                assert "read-only" in str(e) and name in str(e), e
                refused += 1
        b = np.arange(8.0).reshape(4, 2)
        assert a.shape == c.shape == (2, 4)
        assert np.array_equal(a @ b, ref @ b) and np.array_equal(c @ b, ref @ b)
        assert np.array_equal(np.ones((3, 2)) @ a, np.ones((3, 2)) @ ref)
        print(refused)
    """)
    assert out.returncode == 0 and out.stdout.strip() == "8", (out.returncode, out.stdout, out.stderr[-2000:])


def test_int32_never_wraps_64_bit_indices():
    big = 2**31 + 5
    c = COOMatrix(np.ones(1), np.array([0]), np.array([big], np.int64), (1, big + 1))
    with pytest.raises(ValueError, match="needs int64 indices"):
        c.astype(np.float64, index_dtype=np.int32)
    csr = CSRMatrix(np.ones(1), np.array([big], np.int64), np.array([0, 1], np.int64), (1, big + 1))
    with pytest.raises(ValueError, match="needs int64 indices"):
        csr.astype(np.float64, index_dtype=np.int32)
    assert c.astype(np.float32).col[0] == big  # int64 kept


def test_an_unsigned_row_id_past_the_end_is_an_index_error():
    a = CSRMatrix.from_dense(np.arange(6.0).reshape(3, 2))
    for rows in (np.array([2**64 - 1], np.uint64), np.array([3], np.uint8), np.array([0, 2**63], np.uint64)):
        with pytest.raises(IndexError, match="out of range for 3 rows"):
            a.take_rows(rows)
    np.testing.assert_array_equal(a.take_rows(np.array([2, 0], np.uint64)).to_dense(), [[4, 5], [0, 1]])


def test_tocsr_of_a_very_wide_coo_allocates_by_its_entries():
    """(1, 10**10) with 3 entries: the column counting sort asked for 149 GiB; now O(nnz)."""
    out = run("""
        import resource, numpy as np
        from jitnn.sparse import COOMatrix
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        c = COOMatrix(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 0]), np.array([10**10 - 1, 5, 5]), (1, 10**10))
        a = c.tocsr()
        print(a.indices.tolist(), a.data.tolist(), a.indptr.tolist())
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "[5, 9999999999] [5.0, 1.0] [0, 2]"


def test_spmv_into_a_read_only_out_is_a_short_value_error():
    a = CSRMatrix.from_dense(np.eye(3))
    out = np.zeros(3)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="^out is read-only$"):
        spmv(a, np.ones(3), out=out)


# --- properties against scipy ----------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -1.5, np.nan, np.inf, -np.inf, 1e-310, 1e300, -1e-45]


@st.composite
def matrices(draw):
    """(CSRMatrix, the same entries as a float64 scipy csr_array): any shape (0 included), either float
    and index dtype, unsorted columns, duplicates, special values."""
    m, n = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    itype = draw(st.sampled_from([np.int32, np.int64]))
    nnz = draw(st.integers(0, 2 * m * n)) if m and n else 0
    rows = np.array(draw(st.lists(st.integers(0, m - 1), min_size=nnz, max_size=nnz)) if nnz else [], itype)
    cols = np.array(draw(st.lists(st.integers(0, n - 1), min_size=nnz, max_size=nnz)) if nnz else [], itype)
    vals = draw(st.lists(st.sampled_from(SPECIAL) | st.floats(-1e3, 1e3), min_size=nnz, max_size=nnz))
    with np.errstate(over="ignore"):  # 1e300 is inf in float32: a special value like any other
        data = np.array(vals, dtype) if nnz else np.zeros(0, dtype)
    return COOMatrix(data, rows, cols, (m, n)), sp.coo_array((data.astype(np.float64), (rows, cols)), shape=(m, n))


def dense_of(s):
    """scipy's dense form, duplicates added in stored order (what jitnn adds them in)."""
    out = np.zeros(s.shape)
    with np.errstate(invalid="ignore"):  # inf + -inf is NaN, as it must be
        for r, c, v in zip(s.row, s.col, s.data, strict=True):
            out[r, c] += v
    return out


def assert_matches(got, want, dtype):
    """Equal, NaN where NaN; within the dtype's rounding otherwise (sums may be reordered)."""
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want) & np.isfinite(got)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol * np.abs(want[finite]).max(initial=1))


PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(matrices())
def test_conversions_and_transpose_match_scipy(pair):
    c, s = pair
    want = dense_of(s).astype(c.dtype).astype(np.float64)
    a = c.tocsr()
    assert_matches(a.to_dense(), dense_of(s), c.dtype)
    assert_matches(c.to_dense(), dense_of(s), c.dtype)
    assert_matches(a.T.to_dense(), want.T if not np.isnan(want).any() else dense_of(s).T, c.dtype)
    assert a.has_canonical_format and a.nnz == len({(r, k) for r, k in zip(s.row, s.col, strict=True)})
    assert not a.indices.flags.writeable and not a.indptr.flags.writeable


@PROPS
@given(matrices(), st.integers(0, 5), st.sampled_from(["C", "F", "strided"]))
def test_products_match_scipy(pair, k, layout):
    c, s = pair
    a = c.tocsr()
    m, n = a.shape
    rng = np.random.default_rng(k)
    b = rng.standard_normal((n, k)).astype(a.dtype)
    x = rng.standard_normal((k, m)).astype(a.dtype)
    if layout == "F":
        b, x = np.asfortranarray(b), np.asfortranarray(x)
    elif layout == "strided":
        b, x = np.repeat(b, 2, axis=1)[:, ::2], np.repeat(x, 2, axis=0)[::2]
    dense = dense_of(s)  # scipy's entries, duplicates summed in float64
    with np.errstate(invalid="ignore", over="ignore"):
        assert_matches(spmm(a, b), dense @ b, a.dtype)
        assert_matches(dense_spmm(x, a), x.astype(np.float64) @ dense, a.dtype)
        v = b[:, 0].copy() if k else np.ones(n, a.dtype)
        assert_matches(spmv(a, v), dense @ v, a.dtype)


# --- bounds-checked kernels -----------------------------------------------------------------------


@pytest.mark.slow
def test_kernel_tests_pass_with_numba_boundscheck():
    """Every sparse, GEMM, conv, pooling, normalization and optimizer kernel test once more with
    NUMBA_BOUNDSCHECK=1 (an out-of-range index raises IndexError instead of reading past an array), in a
    fresh process: boundscheck is read when a kernel compiles, and the cache is kept apart so checked
    code never lands in the usual one. The last four files passed it in 6 minutes on the loaded
    2-core machine."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_BOUNDSCHECK="1", JITNN_CACHE_DIR=cache, PYTHONPATH=os.getcwd())
        os.chmod(cache, 0o700)
        tests = [os.path.join("tests", f) for f in ("test_sparse.py", "test_sparse_hostile.py", "test_gemm.py",
                                                    "test_conv_kernels.py", "test_pooling_kernels.py",
                                                    "test_normalization_kernels.py", "test_optimizers.py")]
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider",
                              *tests], check=False, capture_output=True, text=True, timeout=3600, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
