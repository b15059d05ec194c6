"""Sparse kernels: CSR products and conversions over raw ``(indptr, indices, data)`` arrays.

A CSR matrix A (m x k) is three 1-D arrays: row i stores ``data[indptr[i]:indptr[i+1]]`` at the
columns ``indices[indptr[i]:indptr[i+1]]``. Index arrays are int32 or int64, data float32 or float64.
Duplicate columns in a row add (scipy's convention); sorted indices are needed only where a
docstring says so.

A dense operand travels as ``(flat, rs, cs)``: a 1-D view of its memory from element (0, 0) and its
row and column strides in elements, so X[i, j] is ``flat[i*rs + j*cs]``. C order, F order and strided
views reach one compiled function per (float, index) dtype pair; ``cs == 1`` selects unit-stride loops
that LLVM vectorizes, tested once per row, never per element. Offsets go through ``u()`` (uint64) so
numba drops its negative-index wraparound check.

Parallel kernels are race-free by ownership: a thread writes only its own output rows, its own
(rows x columns) block of the output, or its own chunk's counters. Aᵀ @ B, whose rows of A would
scatter into shared rows of the result, is ``counting_sort`` (a transposed copy), then ``spmm``.
Each output element is summed in the same order whatever the thread count, so results are bitwise
equal to a one-thread run (the tests check this). Outputs and scratch are passed in, and every
kernel overwrites its output completely.
"""

import numba
from numba import njit, prange

from jitnn.config import JIT, PJIT
from jitnn.kernels.gemm import u

# --- products -------------------------------------------------------------------------------------


@njit(**JIT)
def spmm_row(lo, hi, indices, data, b, b_rs, b_cs, n, c, o, c_cs):
    """c[o + j*c_cs] = sum_{lo <= p < hi} data[p] * B[indices[p], j] for j < n: one row of A @ B.

    Unit stride: four stored entries per pass over the row, so the row of C is loaded and stored once
    per four rows of B (5 loads and 1 store per 4 vector FMAs instead of 2 and 1 per FMA: the pass is
    load/store-bound; 8192^2 @ 8192x256: 1.9-2.1x the one-entry loop at 1-10% density, 1.3x at 0.1%).
    """
    if b_cs == 1 and c_cs == 1:
        ou = u(o)
        for j in range(n):
            c[ou + u(j)] = 0
        p = lo
        while p + 4 <= hi:
            a0, a1, a2, a3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            r0 = u(indices[p] * b_rs)
            r1 = u(indices[p + 1] * b_rs)
            r2 = u(indices[p + 2] * b_rs)
            r3 = u(indices[p + 3] * b_rs)
            for j in range(n):
                jj = u(j)
                c[ou + jj] += a0 * b[r0 + jj] + a1 * b[r1 + jj] + a2 * b[r2 + jj] + a3 * b[r3 + jj]
            p += 4
        for q in range(p, hi):
            a = data[q]
            r = u(indices[q] * b_rs)
            for j in range(n):
                c[ou + u(j)] += a * b[r + u(j)]
    else:
        for j in range(n):
            c[u(o + j * c_cs)] = 0
        for p in range(lo, hi):
            a = data[p]
            r = indices[p] * b_rs
            for j in range(n):
                c[u(o + j * c_cs)] += a * b[u(r + j * b_cs)]


@njit(**PJIT)
def spmm(indptr, indices, data, b, b_rs, b_cs, n, c, c_rs, c_cs):
    """C = A @ B: A CSR (m x k), B dense (k x n), C dense (m x n). Parallel over rows of C.

    C[i, :] = sum_p data[p] * B[indices[p], :] for p in row i: each row of C stays in L1 while
    the rows of B it needs stream through. Call it under ``numba.set_parallel_chunksize`` (the wrapper
    does; inside the kernel that call defeats the disk cache) to deal rows out dynamically.
    """
    m = indptr.shape[0] - 1
    for i in prange(m):
        spmm_row(indptr[i], indptr[i + 1], indices, data, b, b_rs, b_cs, n, c, i * c_rs, c_cs)


@njit(**JIT)
def lower_bound(indices, lo, hi, value):
    """The first p in [lo, hi) with indices[p] >= value (hi if none), for sorted indices[lo:hi]."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**PJIT)
def dense_spmm(x, x_rs, x_cs, m, indptr, indices, data, n, c, c_rs, c_cs, rows, col_blocks, kc, acc, xt):
    """C = X @ A: X dense (m x k), A CSR (k x n), C dense (m x n).

    C[i, :] = sum_p X[i, p] * A[p, :]. The tasks are blocks of ``rows`` rows of C times
    ``col_blocks`` ranges of its columns, and a task writes only its own block, so there is no race
    and no transposed copy of A. A minibatch is one or two row blocks, too few for the threads, so
    they split the columns instead: with sorted indices, a task finds its columns in each row of A by
    binary search and touches only its own stored entries (``col_blocks`` must be 1 for unsorted A).

    Scattering one product per stored entry into a row of C does not vectorize (one thread, a 64 x 784
    batch through a 784 x 512 layer at 5%: 1.6 ms, against 0.25 ms here), so a task computes its
    block transposed: a stored A[p, j] adds A[p, j] * X[i0:i0+rows, p] to row j of ``acc[tid]``
    (columns x rows), a unit-stride axpy read from ``xt[tid]``, a (kc x rows) slab of X packed
    transposed; then acc is transposed into C. Each stored entry costs its index, value and loop
    setup once per block, so long blocks pay even though a 64-row accumulator of a 512-wide layer
    (128 KiB) lives in L2: 8, 16, 32, 64 rows measured 0.92, 0.63, 0.37, 0.28 ms for the shape above.
    Scratch: acc (thread slots, rows * columns per block), xt (thread slots, kc * rows).
    """
    k = indptr.shape[0] - 1
    nrb = (m + rows - 1) // rows
    cw = (n + col_blocks - 1) // col_blocks
    for task in prange(nrb * col_blocks):
        tid = numba.get_thread_id()
        a = acc[tid]
        t = xt[tid]
        i0 = (task // col_blocks) * rows
        rr = min(rows, m - i0)
        j0 = (task % col_blocks) * cw
        w = max(0, min(cw, n - j0))
        for q in range(w * rr):
            a[u(q)] = 0
        for p0 in range(0, k, kc):
            kk = min(kc, k - p0)
            for r in range(rr):
                xo = (i0 + r) * x_rs + p0 * x_cs
                for p in range(kk):
                    t[u(p * rr + r)] = x[u(xo + p * x_cs)]
            for p in range(kk):
                lo = indptr[p0 + p]
                hi = indptr[p0 + p + 1]
                if col_blocks > 1:
                    lo = lower_bound(indices, lo, hi, j0)
                    hi = lower_bound(indices, lo, hi, j0 + w)
                to = u(p * rr)
                for q in range(lo, hi):
                    v = data[q]
                    o = u((indices[q] - j0) * rr)
                    for r in range(rr):
                        a[o + u(r)] += v * t[to + u(r)]
        for r in range(rr):
            co = (i0 + r) * c_rs + j0 * c_cs
            for j in range(w):
                c[u(co + j * c_cs)] = a[u(j * rr + r)]


@njit(**PJIT)
def spmv(indptr, indices, data, x, x_s, y, y_s):
    """y = A @ x: A CSR (m x k), x and y dense vectors (strides x_s, y_s). Parallel over rows."""
    m = indptr.shape[0] - 1
    for i in prange(m):
        s = y.dtype.type(0)
        for p in range(indptr[i], indptr[i + 1]):
            s += data[p] * x[u(indices[p] * x_s)]
        y[u(i * y_s)] = s


# --- conversions ----------------------------------------------------------------------------------


@njit(**PJIT)
def csr_to_dense(indptr, indices, data, n, c, c_rs, c_cs):
    """C = A as a dense m x n array (duplicates add). Parallel over rows."""
    m = indptr.shape[0] - 1
    for i in prange(m):
        o = i * c_rs
        for j in range(n):
            c[u(o + j * c_cs)] = 0
        for p in range(indptr[i], indptr[i + 1]):
            c[u(o + indices[p] * c_cs)] += data[p]


@njit(**PJIT)
def dense_row_counts(x, x_rs, x_cs, m, n, counts):
    """counts[i] = number of nonzeros in row i of X (pass 1 of dense -> CSR). Parallel over rows."""
    for i in prange(m):
        s = 0
        for j in range(n):
            if x[u(i * x_rs + j * x_cs)] != 0:
                s += 1
        counts[i] = s


@njit(**PJIT)
def dense_to_csr(x, x_rs, x_cs, m, n, indptr, indices, data):
    """Fill indices and data from X's nonzeros, row by row (pass 2; ``indptr`` from the counts)."""
    for i in prange(m):
        q = indptr[i]
        for j in range(n):
            v = x[u(i * x_rs + j * x_cs)]
            if v != 0:
                indices[q] = j
                data[q] = v
                q += 1


@njit(**PJIT)
def csr_row_ids(indptr, rows):
    """rows[p] = the row of stored entry p (CSR -> COO row array). Parallel over rows."""
    m = indptr.shape[0] - 1
    for i in prange(m):
        for p in range(indptr[i], indptr[i + 1]):
            rows[p] = i


@njit(**PJIT)
def counting_sort(keys, counts, ptr, perm):
    """Stable counting sort: ``keys[perm]`` is sorted, equal keys keep their order; ``ptr[k]`` is
    where key k starts in ``perm`` (``ptr[n_keys]`` = len(keys)). The engine of COO -> CSR and of the
    CSR transpose, O(len(keys) + n_keys).

    ``counts`` (chunks x n_keys, int64 scratch) splits ``keys`` into contiguous chunks, one histogram
    each (a row per chunk, so threads never share a cache line). The serial prefix sum walks keys in
    order and chunks in order within a key, so chunk c's entries of key k land after chunk c-1's: the
    result is the serial stable order for any number of chunks and threads.
    """
    chunks, n_keys = counts.shape
    n = keys.shape[0]
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        for k in range(n_keys):
            counts[c, k] = 0
        for p in range(c * step, min(n, (c + 1) * step)):
            counts[c, keys[p]] += 1
    running = 0
    for k in range(n_keys):
        ptr[k] = running
        for c in range(chunks):
            t = counts[c, k]
            counts[c, k] = running
            running += t
    ptr[n_keys] = running
    for c in prange(chunks):
        for p in range(c * step, min(n, (c + 1) * step)):
            k = keys[p]
            d = counts[c, k]
            perm[d] = p
            counts[c, k] = d + 1


@njit(**PJIT)
def count_unique(indptr, indices, counts):
    """counts[i] = distinct columns in row i, for rows with sorted indices. Parallel over rows."""
    m = indptr.shape[0] - 1
    for i in prange(m):
        s = 0
        for p in range(indptr[i], indptr[i + 1]):
            if p == indptr[i] or indices[p] != indices[p - 1]:
                s += 1
        counts[i] = s


@njit(**PJIT)
def sum_duplicates(indptr, indices, data, out_indptr, out_indices, out_data):
    """Merge runs of equal columns in sorted rows, summing in stored order (``out_indptr`` from
    ``count_unique``). Parallel over rows."""
    m = indptr.shape[0] - 1
    for i in prange(m):
        q = out_indptr[i] - 1
        for p in range(indptr[i], indptr[i + 1]):
            if p == indptr[i] or indices[p] != indices[p - 1]:
                q += 1
                out_indices[q] = indices[p]
                out_data[q] = data[p]
            else:
                out_data[q] += data[p]


@njit(**PJIT)
def take_rows(indptr, indices, data, rows, out_indptr, out_indices, out_data):
    """Copy rows ``rows`` of A into a new CSR whose ``out_indptr`` the caller filled (a minibatch)."""
    for r in prange(rows.shape[0]):
        src = indptr[rows[r]]
        dst = out_indptr[r]
        for q in range(out_indptr[r + 1] - dst):
            out_indices[dst + q] = indices[src + q]
            out_data[dst + q] = data[src + q]


@njit(**JIT)
def coo_to_dense(row, col, data, c, c_rs, c_cs):
    """C += the COO entries (duplicates add). Serial: two entries may hit one element."""
    for p in range(data.shape[0]):
        c[u(row[p] * c_rs + col[p] * c_cs)] += data[p]


# --- validation -----------------------------------------------------------------------------------


@njit(**JIT)
def first_decrease(indptr):
    """The first row r with indptr[r] > indptr[r + 1], or -1."""
    for r in range(indptr.shape[0] - 1):
        if indptr[r] > indptr[r + 1]:
            return r
    return -1


@njit(**JIT)
def first_out_of_range(values, n):
    """The first position p with values[p] outside [0, n), or -1."""
    for p in range(values.shape[0]):
        if values[p] < 0 or values[p] >= n:
            return p
    return -1


@njit(**JIT)
def row_order(indptr, indices):
    """0: every row strictly increasing (canonical); 1: sorted, with duplicates; 2: some row unsorted."""
    state = 0
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i] + 1, indptr[i + 1]):
            if indices[p] < indices[p - 1]:
                return 2
            if indices[p] == indices[p - 1]:
                state = 1
    return state
