"""Sparse matrices: ``CSRMatrix`` and ``COOMatrix``, validated containers around index and data arrays.

    a = CSRMatrix(data, indices, indptr, shape)    # or CSRMatrix.from_dense(x), .from_scipy(m)
    a @ b          # CSR @ dense (SpMM), parallel over rows      -> dense (m, n)
    x @ a          # dense @ CSR, parallel over rows of x        -> dense
    a @ v          # SpMV                                        -> dense vector
    a.T            # the transpose, as a new CSRMatrix (stable counting sort, sorted indices)
    a[i:j]         # a row slice: a view, O(rows) (a minibatch); a[idx] copies rows idx

The arithmetic lives in ``jitnn/kernels/sparse.py``; this module validates, picks kernels and allocates
outputs. The products layers call (``spmm``, ``spmm_t``, ``dense_spmm``, ``spmv``: no hidden copies,
no allocation with ``out=``) live with the dense ones in ``jitnn/linalg/sparse.py`` and are importable
from here too; the ``@`` operators call them after promoting dtypes as numpy does. Constructors share
``data`` when it has the right dtype and layout (scipy's convention) but copy the index arrays and keep
them read-only: kernels trust indices that were validated once, and an index changed afterwards
(through the caller's array) could make them read or write outside their arrays. A matrix never
modifies its arrays. Its own index arrays are private and frozen; ``indices``, ``indptr``, ``row`` and
``col`` return read-only views of them, which numpy refuses to make writeable (their base is not), and
``data``, the index arrays and ``shape`` cannot be reassigned (AttributeError): an ``indices`` made
writeable or a shorter ``data`` put in place sent products out of bounds (SIGSEGV, issue 14).
"""

from __future__ import annotations

import numpy as np

from jitnn.config import DEFAULT_DTYPE, FLOAT_DTYPES, launch, threads_for
from jitnn.kernels import sparse as _k
from jitnn.linalg.sparse import dense_spmm, register_csr_type, spmm, spmm_t, spmv
from jitnn.linalg.views import dense_out as _dense_out
from jitnn.linalg.views import finish as _finish
from jitnn.linalg.views import strided as _strided
from jitnn.linalg.views import view_in as _view_in

__all__ = ["COOMatrix", "CSRMatrix", "dense_spmm", "spmm", "spmm_t", "spmv"]

_FLOATS = tuple(np.dtype(name) for name in FLOAT_DTYPES)
_INDEXES = (np.dtype(np.int32), np.dtype(np.int64))
_I32_MAX = np.iinfo(np.int32).max


# --- checks and views -----------------------------------------------------------------------------


def _check_shape(shape):
    ok = isinstance(shape, tuple) and len(shape) == 2 and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape)
    if not ok:
        raise ValueError(f"shape must be a pair of non-negative ints, received: shape={shape!r}")
    return int(shape[0]), int(shape[1])


def _vector(name, x, dtypes, copy):
    """x as a 1-D contiguous native-order array of one of ``dtypes`` (copied only when needed)."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, received: {name}.ndim={x.ndim}")
    if x.dtype.newbyteorder("=") not in dtypes:
        names = " or ".join(d.name for d in dtypes)
        raise TypeError(f"{name} must be {names}, received: {name}.dtype={x.dtype}")
    x = x.astype(x.dtype.newbyteorder("="), copy=False)
    return x.copy() if copy else np.ascontiguousarray(x)


def _same_index_dtype(*arrays):
    if all(a.dtype == arrays[0].dtype for a in arrays):
        return arrays
    return tuple(a.astype(np.int64) for a in arrays)  # scipy's rule: one index dtype, the wider


def _index_dtype(*sizes):
    return np.dtype(np.int32) if max(sizes, default=0) <= _I32_MAX else np.dtype(np.int64)


def _counting_sort(keys, n_keys, ptr_dtype):
    """(ptr, perm): keys[perm] sorted stably, ptr[k] where key k starts (see kernels.counting_sort)."""
    work = keys.shape[0] + n_keys
    counts = np.empty((threads_for(work), n_keys), np.int64)
    ptr = np.empty(n_keys + 1, ptr_dtype)
    perm = np.empty(keys.shape[0], np.int64)
    launch(_k.counting_sort, work, keys, counts, ptr, perm)
    return ptr, perm


def _stable_order(keys, n_keys):
    """The permutation that sorts ``keys`` (each in [0, n_keys)) stably: a counting sort, or numpy's
    stable argsort when n_keys dwarfs len(keys) (a (1, 10**10) matrix: the counts would need 149 GiB)."""
    if n_keys > 4 * keys.shape[0] + 4096:
        return np.argsort(keys, kind="stable").astype(np.int64, copy=False)
    return _counting_sort(keys, n_keys, np.int64)[1]


def _check_index_fits(itype, shape, nnz):
    """Casting to int32 wraps silently: refuse it when a row, a column or an offset would not fit."""
    if np.dtype(itype) == np.int32 and max(shape[0], shape[1], nnz) > _I32_MAX:
        raise ValueError(f"a {shape} matrix with {nnz} entries needs int64 indices, received: "
                         f"index_dtype={np.dtype(itype)}")


def _frozen(a):
    """``a`` made read-only (the matrix owns it: a fresh copy or a kernel's output, or shared with a
    matrix that froze it already)."""
    a.flags.writeable = False
    return a


def _promote(a, x):
    """(a, x) converted to one float dtype, as numpy's result_type would (for the @ operators)."""
    if isinstance(x, (CSRMatrix, COOMatrix)):
        raise TypeError("sparse @ sparse is not supported; convert one operand with to_dense()")
    x = np.asarray(x)
    dt = np.result_type(a.dtype, x.dtype)
    if dt not in _FLOATS:
        raise TypeError(f"cannot multiply a {a.dtype} sparse matrix by a {x.dtype} array")
    return (a if a.dtype == dt else a.astype(dt)), (x if x.dtype == dt else x.astype(dt))


# --- the containers -------------------------------------------------------------------------------


def _read_only(cls, name):
    """The AttributeError for assigning ``cls.name``: the arrays were validated together, once."""
    return AttributeError(f"{cls.__name__}.{name} is read-only: the kernels trust the arrays validated when the "
                          f"matrix was built; build a new {cls.__name__} from changed arrays instead")


def _frozen_view(name):
    """A property returning a read-only view of the private frozen array ``_name``; assignment refused."""

    def get(self):
        return getattr(self, "_" + name).view()

    def refuse(self, value):
        raise _read_only(type(self), name)

    return property(get, refuse, doc=f"``{name}``, read-only (a view of the matrix's own frozen array)")


class _Sparse:
    """What CSR and COO share: shape, dtypes, nnz, load factor and the @ operators."""

    __array_ufunc__ = None  # ndarray @ sparse then defers to our __rmatmul__ instead of looping
    __slots__ = ("_data", "_order", "_shape")

    @property
    def data(self):
        """The stored values (shared with the array given to the constructor when no copy was needed)."""
        return self._data

    @data.setter
    def data(self, value):
        raise _read_only(type(self), "data")

    @property
    def shape(self):
        return self._shape

    @shape.setter
    def shape(self, value):
        raise _read_only(type(self), "shape")

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz(self):
        """Stored entries, duplicates and explicit zeros included (scipy's convention)."""
        return int(self.data.shape[0])

    @property
    def load_factor(self):
        """nnz / (rows * cols); 0.0 for a matrix with no elements."""
        size = self.shape[0] * self.shape[1]
        return self.nnz / size if size else 0.0

    def __matmul__(self, other):
        a, x = _promote(self, other)
        a = a.tocsr()
        if x.ndim == 1:
            return spmv(a, x)
        if x.ndim == 2:
            return spmm(a, x)
        raise ValueError(f"the dense operand must be 1-D or 2-D, received: shape={x.shape}")

    def __rmatmul__(self, other):
        a, x = _promote(self, other)
        a = a.tocsr()
        if x.ndim == 1:
            return dense_spmm(x.reshape(1, -1), a)[0]
        if x.ndim == 2:
            return dense_spmm(x, a)
        raise ValueError(f"the dense operand must be 1-D or 2-D, received: shape={x.shape}")

    def __repr__(self):
        m, n = self.shape
        return (f"{type(self).__name__}(shape=({m}, {n}), nnz={self.nnz}, dtype={self.dtype}, "
                f"index_dtype={self.index_dtype}, load_factor={self.load_factor:.4g})")


class CSRMatrix(_Sparse):
    """A compressed-sparse-row matrix: row i holds ``data[indptr[i]:indptr[i+1]]`` at columns
    ``indices[indptr[i]:indptr[i+1]]``. Validated on construction; ``ValueError`` says what and where."""

    __slots__ = ("_indices", "_indptr")
    indices = _frozen_view("indices")
    indptr = _frozen_view("indptr")

    def __init__(self, data, indices, indptr, shape, *, copy=False):
        m, n = _check_shape(shape)
        data = _vector("data", data, _FLOATS, copy)
        indices = _vector("indices", indices, _INDEXES, True)  # validated below, then never changed
        indptr = _vector("indptr", indptr, _INDEXES, True)
        indices, indptr = _same_index_dtype(indices, indptr)
        if indptr.shape[0] != m + 1:
            raise ValueError(f"indptr must have rows + 1 = {m + 1} entries, received: {indptr.shape[0]}")
        if indptr[0] != 0:
            raise ValueError(f"indptr must start at 0, received: indptr[0]={indptr[0]}")
        if data.shape[0] != indices.shape[0]:
            raise ValueError(f"data and indices must have the same length, received: {data.shape[0]} "
                             f"and {indices.shape[0]}")
        r = _k.first_decrease(indptr)
        if r >= 0:
            raise ValueError(f"indptr decreases at row {r}: indptr[{r}]={indptr[r]} > "
                             f"indptr[{r + 1}]={indptr[r + 1]}")
        if indptr[m] != data.shape[0]:
            raise ValueError(f"indptr ends at {indptr[m]} but there are {data.shape[0]} stored entries "
                             "(len(data))")
        p = _k.first_out_of_range(indices, n)
        if p >= 0:
            row = int(np.searchsorted(indptr, p, side="right")) - 1
            raise ValueError(f"indices[{p}]={indices[p]} (row {row}) is out of range [0, {n})")
        self._set(data, indices, indptr, (m, n), None)

    def _set(self, data, indices, indptr, shape, order):
        self._data, self._indices, self._indptr, self._shape = data, _frozen(indices), _frozen(indptr), shape
        self._order = order  # kernels.row_order's code once known: 0 canonical, 1 dups, 2 unsorted

    @classmethod
    def _trusted(cls, data, indices, indptr, shape, order=None):
        """A matrix from arrays a kernel just built: no validation (O(1))."""
        self = cls.__new__(cls)
        self._set(data, indices, indptr, shape, order)
        return self

    # construction and conversion

    @classmethod
    def from_dense(cls, x, dtype=None, index_dtype=None):
        """The nonzeros of a 2-D array-like (parallel, two passes over it). ``dtype`` defaults to x's
        float dtype, else jitnn's default; ``index_dtype`` to int32 where it fits."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"from_dense needs a 2-D array, received: shape={x.shape}")
        if dtype is None:
            dtype = x.dtype if x.dtype in _FLOATS else np.dtype(DEFAULT_DTYPE)
        dtype = np.dtype(dtype)
        if dtype not in _FLOATS:
            raise TypeError(f"dtype must be float32 or float64, received: dtype={dtype}")
        x = x.astype(dtype, copy=False)
        m, n = x.shape
        xf, rs, cs = _view_in(x)
        counts = np.empty(m, np.int64)
        launch(_k.dense_row_counts, m * n, xf, rs, cs, m, n, counts)
        nnz = int(counts.sum())
        itype = np.dtype(index_dtype) if index_dtype is not None else _index_dtype(m, n, nnz)
        if itype not in _INDEXES:
            raise TypeError(f"index_dtype must be int32 or int64, received: index_dtype={itype}")
        _check_index_fits(itype, (m, n), nnz)
        indptr = np.zeros(m + 1, itype)
        np.cumsum(counts, out=indptr[1:])
        indices, data = np.empty(nnz, itype), np.empty(nnz, dtype)
        launch(_k.dense_to_csr, m * n, xf, rs, cs, m, n, indptr, indices, data)
        return cls._trusted(data, indices, indptr, (m, n), 0)

    @classmethod
    def from_scipy(cls, m):
        """From any scipy.sparse matrix or array (CSR ones share their data; indices may be unsorted)."""
        import scipy.sparse as sp

        if not sp.issparse(m):
            raise TypeError(f"from_scipy needs a scipy.sparse matrix, received: {type(m).__name__}")
        m = m.tocsr()
        return cls(m.data, m.indices, m.indptr, m.shape)

    def to_scipy(self):
        """A ``scipy.sparse.csr_array`` over the same values (scipy may copy)."""
        import scipy.sparse as sp

        return sp.csr_array((self.data, self.indices, self.indptr), shape=self.shape)

    def to_dense(self, out=None):
        """The dense array (duplicates add), into ``out`` (any strides) when given."""
        m, n = self.shape
        target, back = _dense_out(out, (m, n), self.dtype, ())
        cf, rs, cs = _strided(target)
        launch(_k.csr_to_dense, m * n + self.nnz, self.indptr, self.indices, self.data, n, cf, rs, cs)
        return _finish(target, back)

    def tocsr(self):
        return self

    def tocoo(self):
        """The same entries as a COOMatrix (shares data and indices; builds the row array)."""
        rows = np.empty(self.nnz, self.index_dtype)
        launch(_k.csr_row_ids, self.nnz + self.shape[0], self.indptr, rows)
        return COOMatrix._trusted(self.data, rows, self.indices, self.shape)

    def astype(self, dtype, index_dtype=None):
        """A copy with data converted to ``dtype`` and, when given, indices to ``index_dtype``."""
        dtype, itype = np.dtype(dtype), np.dtype(index_dtype or self.index_dtype)
        if dtype not in _FLOATS:
            raise TypeError(f"dtype must be float32 or float64, received: dtype={dtype}")
        if itype not in _INDEXES:
            raise TypeError(f"index_dtype must be int32 or int64, received: index_dtype={itype}")
        _check_index_fits(itype, self.shape, self.nnz)
        return CSRMatrix._trusted(self.data.astype(dtype), self.indices.astype(itype),
                                  self.indptr.astype(itype), self.shape, self._order)

    def copy(self):
        return CSRMatrix._trusted(self.data.copy(), self.indices.copy(), self.indptr.copy(), self.shape,
                                  self._order)

    @property
    def index_dtype(self):
        return self.indices.dtype

    # structure

    @property
    def T(self):
        """The transpose as a new CSRMatrix (see ``transpose``)."""
        return self.transpose()

    def transpose(self):
        """Aᵀ in CSR: a stable, parallel counting sort of the entries by column, O(nnz + rows + cols).

        Column j of A becomes row j of Aᵀ with its entries in row order, so the result's indices come
        out sorted. ``spmm_t`` (Aᵀ @ B, the weight gradient) builds it this way too.
        """
        m, n = self.shape
        rows = np.empty(self.nnz, self.index_dtype)
        launch(_k.csr_row_ids, self.nnz + m, self.indptr, rows)
        itype = self.index_dtype if max(m, n, self.nnz) <= _I32_MAX else np.dtype(np.int64)
        ptr, perm = _counting_sort(self.indices, n, itype)
        return CSRMatrix._trusted(self.data[perm], rows[perm].astype(itype, copy=False), ptr, (n, m),
                                  None if self._order != 0 else 0)

    def _row_order(self):
        if self._order is None:
            self._order = int(_k.row_order(self.indptr, self.indices))
        return self._order

    @property
    def has_sorted_indices(self):
        """Every row's columns ascend (duplicates allowed)."""
        return self._row_order() <= 1

    @property
    def has_canonical_format(self):
        """Sorted indices and no duplicates: each (row, col) stored at most once."""
        return self._row_order() == 0

    def sorted_indices(self):
        """A copy whose rows list their columns in ascending order (self when already sorted)."""
        if self.has_sorted_indices:
            return self
        out = self.transpose().transpose()  # two stable counting sorts: by column, then by row
        out._order = None
        return out

    def sum_duplicates(self):
        """The canonical form: sorted indices, duplicates summed (self when already canonical).

        Returns a new matrix instead of changing this one in place (scipy's method mutates)."""
        if self.has_canonical_format:
            return self
        a = self.sorted_indices()
        m = self.shape[0]
        counts = np.empty(m, np.int64)
        launch(_k.count_unique, a.nnz + m, a.indptr, a.indices, counts)
        indptr = np.zeros(m + 1, self.index_dtype)
        np.cumsum(counts, out=indptr[1:])
        nnz = int(indptr[m])
        indices, data = np.empty(nnz, self.index_dtype), np.empty(nnz, self.dtype)
        launch(_k.sum_duplicates, a.nnz + m, a.indptr, a.indices, a.data, indptr, indices, data)
        return CSRMatrix._trusted(data, indices, indptr, self.shape, 0)

    # rows: minibatches

    def row_slice(self, start, stop):
        """Rows start..stop-1 (clipped like a Python slice) as a view: indices and data are shared,
        only the (stop - start + 1)-long indptr is new. The minibatch of a sequential epoch."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        stop = max(start, stop)
        lo, hi = self.indptr[start], self.indptr[stop]
        order = self._order if self._order in (0, 1) else None
        return CSRMatrix._trusted(self.data[lo:hi], self.indices[lo:hi], self.indptr[start:stop + 1] - lo,
                                  (stop - start, self.shape[1]), order)

    def take_rows(self, rows):
        """A new matrix of rows ``rows`` in that order (repeats allowed): a shuffled minibatch.
        O(len(rows) + the entries copied), copied in parallel."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.dtype.kind not in "iu" and rows.size):
            raise TypeError(f"rows must be a 1-D integer array, received: shape={rows.shape}, "
                            f"dtype={rows.dtype}")
        m = self.shape[0]
        if rows.dtype.kind == "u" and rows.size and rows.max() >= m:  # before the cast: 2**64-1 is -1 in int64
            bad = int(np.flatnonzero(rows >= m)[0])
            raise IndexError(f"rows[{bad}]={rows[bad]} is out of range for {m} rows")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < -m or rows.max() >= m):
            bad = int(np.flatnonzero((rows < -m) | (rows >= m))[0])
            raise IndexError(f"rows[{bad}]={rows[bad]} is out of range for {m} rows")
        rows = np.where(rows < 0, rows + m, rows)
        lengths = self.indptr[rows + 1].astype(np.int64) - self.indptr[rows]
        total = int(lengths.sum())
        itype = self.index_dtype if total <= _I32_MAX else np.dtype(np.int64)
        indptr = np.zeros(rows.shape[0] + 1, itype)
        np.cumsum(lengths, out=indptr[1:])
        indices, data = np.empty(total, itype), np.empty(total, self.dtype)
        launch(_k.take_rows, total + rows.shape[0], self.indptr, self.indices, self.data, rows, indptr,
               indices, data)
        order = self._order if self._order in (0, 1) else None
        return CSRMatrix._trusted(data, indices, indptr, (rows.shape[0], self.shape[1]), order)

    def __getitem__(self, key):
        """``a[i:j]`` is ``row_slice(i, j)``; ``a[idx]`` (integer array) is ``take_rows(idx)``."""
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise ValueError(f"row slices need step 1, received: step={key.step}")
            return self.row_slice(key.start, key.stop)
        return self.take_rows(key)


class COOMatrix(_Sparse):
    """A coordinate-format matrix: entry p is ``data[p]`` at (``row[p]``, ``col[p]``), in any order,
    duplicates allowed (they add). Products and most operations go through ``tocsr()``."""

    __slots__ = ("_col", "_row")
    row = _frozen_view("row")
    col = _frozen_view("col")

    def __init__(self, data, row, col, shape, *, copy=False):
        m, n = _check_shape(shape)
        data = _vector("data", data, _FLOATS, copy)
        row = _vector("row", row, _INDEXES, True)  # validated below, then never changed
        col = _vector("col", col, _INDEXES, True)
        row, col = _same_index_dtype(row, col)
        if not data.shape[0] == row.shape[0] == col.shape[0]:
            raise ValueError(f"data, row and col must have the same length, received: {data.shape[0]}, "
                             f"{row.shape[0]} and {col.shape[0]}")
        for name, values, size in (("row", row, m), ("col", col, n)):
            p = _k.first_out_of_range(values, size)
            if p >= 0:
                raise ValueError(f"{name}[{p}]={values[p]} is out of range [0, {size})")
        self._set(data, row, col, (m, n))

    def _set(self, data, row, col, shape):
        self._data, self._row, self._col, self._shape, self._order = data, _frozen(row), _frozen(col), shape, None

    @classmethod
    def _trusted(cls, data, row, col, shape):
        self = cls.__new__(cls)
        self._set(data, row, col, shape)
        return self

    @classmethod
    def from_dense(cls, x, dtype=None, index_dtype=None):
        """The nonzeros of a 2-D array-like, in row-major order."""
        return CSRMatrix.from_dense(x, dtype, index_dtype).tocoo()

    @classmethod
    def from_scipy(cls, m):
        """From any scipy.sparse matrix or array (duplicates are kept, as stored)."""
        import scipy.sparse as sp

        if not sp.issparse(m):
            raise TypeError(f"from_scipy needs a scipy.sparse matrix, received: {type(m).__name__}")
        m = m.tocoo()
        return cls(m.data, m.row, m.col, m.shape)

    def to_scipy(self):
        """A ``scipy.sparse.coo_array`` over the same entries."""
        import scipy.sparse as sp

        return sp.coo_array((self.data, (self.row, self.col)), shape=self.shape)

    def to_dense(self, out=None):
        """The dense array, duplicates added (a serial scatter: two entries may share an element)."""
        target, back = _dense_out(out, self.shape, self.dtype, ())
        target[...] = 0
        cf, rs, cs = _strided(target)
        _k.coo_to_dense(self.row, self.col, self.data, cf, rs, cs)
        return _finish(target, back)

    def tocsr(self):
        """CSR in canonical form: two stable counting sorts (by column, then by row) leave each row's
        columns ascending with duplicates adjacent, and duplicates are then summed in input order.
        O(nnz + rows + cols), parallel."""
        m, n = self.shape
        itype = _index_dtype(m, n, self.nnz) if self.index_dtype == np.int32 else self.index_dtype
        by_col = _stable_order(self.col, n)
        indptr, by_row = _counting_sort(self.row[by_col], m, itype)
        perm = by_col[by_row]
        a = CSRMatrix._trusted(self.data[perm], self.col[perm].astype(itype, copy=False), indptr, (m, n))
        return a.sum_duplicates()

    def tocoo(self):
        return self

    def sum_duplicates(self):
        """A canonical copy: entries in row-major order, each (row, col) once, duplicates summed."""
        return self.tocsr().tocoo()

    @property
    def T(self):
        """The transpose: row and col swapped, O(1), arrays shared."""
        return COOMatrix._trusted(self.data, self.col, self.row, (self.shape[1], self.shape[0]))

    def transpose(self):
        return self.T

    def astype(self, dtype, index_dtype=None):
        """A copy with data converted to ``dtype`` and, when given, indices to ``index_dtype``."""
        itype = np.dtype(index_dtype or self.index_dtype)
        _check_index_fits(itype, self.shape, self.nnz)
        return COOMatrix(self.data.astype(dtype), self.row.astype(itype), self.col.astype(itype), self.shape)

    def copy(self):
        return COOMatrix._trusted(self.data.copy(), self.row.copy(), self.col.copy(), self.shape)

    @property
    def index_dtype(self):
        return self.row.dtype


register_csr_type(CSRMatrix)  # the operand the products in jitnn.linalg.sparse accept
