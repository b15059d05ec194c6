"""Packed, cache-blocked GEMM in the BLIS structure: C = alpha * A @ B + beta * C, then an epilogue.

``a`` and ``b`` are op(A) and op(B) already (a transpose is a view), of any strides: packing reads
them element by element into contiguous panels, so every layout reaches the same micro-kernel.

    for jc in 0..N step NC:             (B panels for L3)
      for pc in 0..K step KC:           (shared dimension; never parallel: every step writes all of C)
        pack B[pc:pc+KC, jc:jc+NC] into NR-wide panels
        for ic in 0..M step MC:         prange: each thread its own rows of C
          pack A[ic:ic+MC, pc:pc+KC] into MR-tall panels (per-thread buffer, L2)
          macro-kernel: for each NR panel, for each MR panel: micro-kernel, then write the tile

When M fits in one MC block (a minibatch forward pass: M = 32..128), splitting rows leaves a thread
idle, so the N dimension is split instead, and each thread packs its own B columns: one parallel region
per call instead of one per KC step, which matters when the whole product takes ~100 microseconds.

The epilogue runs once per tile on the last KC step, while the tile is in L1:
``C = act(alpha * acc + beta * C + bias)``. ``bias`` of length 0 means no bias.
"""

import numba
import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT
from jitnn.kernels.elementwise import LINEAR, activate_block, activate_scalar
from jitnn.kernels.micro import micro_kernel


@njit(**JIT, inline="always")
def u(i):
    """An index as uint64: numba then skips the negative-index wraparound check."""
    return np.uint64(i)


@njit(**JIT)
def pack_a(a, i0, m, p0, k, mr, buf):
    """buf[(ip*k + p)*mr + i] = a[i0 + ip*mr + i, p0 + p], rows past m zero-filled.

    Indices are cast to unsigned so numba drops its negative-index wraparound: 2-3x faster packing.
    """
    full = m // mr
    for ip in range(full):
        r0 = u(i0 + ip * mr)
        base = ip * k * mr
        for p in range(k):
            o = u(base + p * mr)
            col = u(p0 + p)
            for i in range(mr):
                buf[o + u(i)] = a[r0 + u(i), col]
    rows = m - full * mr
    if rows > 0:
        base = full * k * mr
        for p in range(k):
            o = base + p * mr
            for i in range(rows):
                buf[o + i] = a[i0 + full * mr + i, p0 + p]
            for i in range(rows, mr):
                buf[o + i] = 0


@njit(**JIT)
def pack_b(b, p0, k, j0, n, nr, buf, off):
    """buf[off + (jp*k + p)*nr + j] = b[p0 + p, j0 + jp*nr + j], columns past n zero-filled."""
    for jp in range((n + nr - 1) // nr):
        pack_b_panel(b, p0, k, j0, n, nr, buf, off, jp, jp + 1)


@njit(**JIT)
def pack_b_panel(b, p0, k, j0, n, nr, buf, off, jp_lo, jp_hi):
    """Panels jp_lo..jp_hi of pack_b (the unit of parallel packing).

    Row-outer: each row of B is read left to right across the panels. Panel-outer order walks down
    a 16-column strip with the row stride, which for 4 KiB rows aliases in L1 and costs 4x more.
    """
    full = min(jp_hi, n // nr)
    for p in range(k):
        r = u(p0 + p)
        for jp in range(jp_lo, full):
            o = u(off + (jp * k + p) * nr)
            c0 = u(j0 + jp * nr)
            for j in range(nr):
                buf[o + u(j)] = b[r, c0 + u(j)]
        if full < jp_hi:  # the ragged last panel
            cols = n - full * nr
            o = off + (full * k + p) * nr
            for j in range(cols):
                buf[o + j] = b[p0 + p, j0 + full * nr + j]
            for j in range(cols, nr):
                buf[o + j] = 0


@njit(**JIT)
def write_tile(ct, nr, c, r0, c0, mm, nn, alpha, beta, bias, act, act_param, last):
    """C[r0:r0+mm, c0:c0+nn] = alpha*tile + beta*C, then + bias and act() when ``last``.

    Every branch is taken once per tile, outside the element loops (a per-element branch chain
    cost ~5 ns an element, 40% of the macro-kernel's time).
    """
    if beta == 0:
        for i in range(mm):
            r = u(r0 + i)
            for j in range(nn):
                c[r, u(c0 + j)] = alpha * ct[u(i * nr + j)]
    elif beta == 1:
        for i in range(mm):
            r = u(r0 + i)
            for j in range(nn):
                c[r, u(c0 + j)] += alpha * ct[u(i * nr + j)]
    else:
        for i in range(mm):
            for j in range(nn):
                c[r0 + i, c0 + j] = alpha * ct[i * nr + j] + beta * c[r0 + i, c0 + j]
    if last:
        if bias.shape[0] > 0:
            for i in range(mm):
                for j in range(nn):
                    c[r0 + i, c0 + j] += bias[c0 + j]
        if act != LINEAR:
            activate_block(c, r0, c0, mm, nn, act, act_param)


@njit(**JIT)
def macro_kernel(apack, aoff, m, bpack, boff, n, k, mr, nr, ct,
                 c, r0, c0, alpha, beta, bias, act, act_param, last):
    """C[r0:r0+m, c0:c0+n] from packed A (m x k) and packed B (k x n): tile by tile."""
    for jp in range((n + nr - 1) // nr):
        nn = min(nr, n - jp * nr)
        for ip in range((m + mr - 1) // mr):
            mm = min(mr, m - ip * mr)
            micro_kernel(k, apack, aoff + ip * k * mr, bpack, boff + jp * k * nr, nr, ct)
            write_tile(ct, nr, c, r0 + ip * mr, c0 + jp * nr, mm, nn, alpha, beta, bias, act,
                       act_param, last)


@njit(**PJIT)
def scale_epilogue(c, beta, bias, act, act_param):
    """C = act(beta*C + bias): the whole GEMM when K == 0 or alpha == 0 (A and B are not read)."""
    m, n = c.shape
    for i in prange(m):
        for j in range(n):
            v = beta * c[i, j] if beta != 0 else 0.0
            if bias.shape[0] > 0:
                v += bias[j]
            c[i, j] = activate_scalar(act, v, act_param)


@njit(**PJIT)
def gemm_kernel(alpha, a, b, beta, c, bias, act, act_param, blocks, threads, abuf, bbuf, cbuf):
    """C = act(alpha * a @ b + beta * C + bias) into ``c``; buffers from ``workspace_sizes``.

    ``threads`` is numba.get_num_threads() (read by the caller: reading it here defeats the disk cache).
    abuf: (thread slots, MC*KC) packed A blocks; bbuf: 1-D packed B; cbuf: (thread slots, MR*NR) tiles.
    """
    m, k = a.shape
    n = b.shape[1]
    mr, nr, mc, kc_max, nc_max = blocks
    if m == 0 or n == 0:
        return
    if k == 0 or alpha == 0:
        scale_epilogue(c, beta, bias, act, act_param)
        return
    npanels = (n + nr - 1) // nr
    if m <= mc and threads > 1 and npanels > 1:
        # Small M: split the N panels across threads; each packs its own B, all of A.
        tasks = min(threads, npanels)
        per = (npanels + tasks - 1) // tasks
        bstride = min(kc_max, k) * min(nc_max, per * nr)
        for t in prange(tasks):
            tid = numba.get_thread_id()
            j_lo = t * per * nr
            j_hi = min(n, (t + 1) * per * nr)
            for jc in range(j_lo, j_hi, nc_max):
                ncur = min(nc_max, j_hi - jc)
                for pc in range(0, k, kc_max):
                    kcur = min(kc_max, k - pc)
                    pack_a(a, 0, m, pc, kcur, mr, abuf[tid])
                    pack_b(b, pc, kcur, jc, ncur, nr, bbuf, tid * bstride)
                    macro_kernel(abuf[tid], 0, m, bbuf, tid * bstride, ncur, kcur, mr, nr, cbuf[tid],
                                 c, 0, jc, alpha, beta if pc == 0 else 1.0, bias, act, act_param,
                                 pc + kcur == k)
        return
    # Large M: split rows in blocks of at most MC, a multiple of the thread count so none idles.
    rounds = (m + mc * threads - 1) // (mc * threads)
    mc_eff = (m + rounds * threads - 1) // (rounds * threads)
    mc_eff = min(mc, (mc_eff + mr - 1) // mr * mr)
    nblocks = (m + mc_eff - 1) // mc_eff
    for jc in range(0, n, nc_max):
        ncur = min(nc_max, n - jc)
        for pc in range(0, k, kc_max):
            kcur = min(kc_max, k - pc)
            npan = (ncur + nr - 1) // nr
            chunk = (npan + threads - 1) // threads
            for t in prange(threads):
                pack_b_panel(b, pc, kcur, jc, ncur, nr, bbuf, 0, t * chunk, min(npan, (t + 1) * chunk))
            for ib in prange(nblocks):
                tid = numba.get_thread_id()
                i0 = ib * mc_eff
                mcur = min(mc_eff, m - i0)
                pack_a(a, i0, mcur, pc, kcur, mr, abuf[tid])
                macro_kernel(abuf[tid], 0, mcur, bbuf, 0, ncur, kcur, mr, nr, cbuf[tid],
                             c, i0, jc, alpha, beta if pc == 0 else 1.0, bias, act, act_param,
                             pc + kcur == k)


def workspace_sizes(m, n, k, blocks, threads):
    """(abuf per thread, bbuf total, cbuf per thread) element counts for gemm_kernel."""
    mr, nr, mc, kc_max, nc_max = blocks
    kc = min(kc_max, max(k, 1))
    a_size = (mc + mr - 1) // mr * mr * kc
    npanels = (n + nr - 1) // nr
    per = (npanels + threads - 1) // threads
    small = threads * kc * min(nc_max, per * nr)
    large = kc * min(nc_max, npanels * nr)
    return a_size, max(small, large), mr * nr
