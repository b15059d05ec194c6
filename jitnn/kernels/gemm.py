"""Packed, cache-blocked GEMM in the BLIS structure: C = alpha * A @ B + beta * C, then an epilogue.

``a`` and ``b`` are op(A) and op(B) already (a transpose is a view), of any strides: packing reads
them element by element into contiguous panels, so every layout reaches the same micro-kernel.

    for jc in 0..N step NC:             (B panels for L3)
      for pc in 0..K step KC:           (shared dimension; never parallel: every step writes all of C)
        pack B[pc:pc+KC, jc:jc+NC] into NR-wide panels
        for ic in 0..M step MC:         prange: each thread its own rows of C
          pack A[ic:ic+MC, pc:pc+KC] into MR-tall panels (per-thread buffer, L2), or read it in place
          macro-kernel: for each NR panel, for each MR panel: micro-kernel, then write the tile

A packed panel pays for its copy (about a nanosecond an element) by being reused for every NR panel
of B. Where there are few (conv2's 64 output channels: two panels) or each thread would pack all of A
(the small-M path), the micro-kernel reads full MR panels of an A with unit-stride columns in place,
as BLIS's "sup" kernels do, and only the ragged rows are packed (``rows_in_place``).

When M fits in one MC block (a minibatch forward pass: M = 32..128), splitting rows leaves a thread
idle, so the N dimension is split instead, and each thread packs its own B columns: one parallel region
per call instead of one per KC step, which matters when the whole product takes ~100 microseconds.

The epilogue runs once per tile on the last KC step, while the tile is in L1:
``C = act(alpha * acc + beta * C + bias)``. ``bias`` of length 0 means no bias. Full tiles of a C with
unit-stride columns are written straight from the registers (``micro_kernel_c``); edge tiles go
through a small tile buffer. Matrix-vector and dot products (N == 1) take ``gemv_kernel`` instead.
"""

import numba
import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT
from jitnn.kernels.blocking import SHORT_ROWS
from jitnn.kernels.elementwise import LEAKY_RELU, LINEAR, RELU, activate_block, activate_scalar
from jitnn.kernels.micro import WIDE_ROW_PANELS, micro_kernel_c, short_kernel_c, wide_row_kernel_c
from jitnn.memory import aligned_empty, padded_to_line

# A row block is read in place instead of packed when B has at most this many NR panels (rows_in_place):
# A column-major A (a transposed activation, dW = X^T dZ) steps a whole column per k, row-major A one
# element. Paired A/B on 2 threads, float32, against packing: row-major 7744x288x64 1.43x, 1000x512x128
# 1.17x, 1000x256x256 (8 panels) 1.11x, 7744x64x288 (9) 1.07-1.08x, 1000x256x384 (12) 1.08x,
# 1000x784x512 (16) 1.06x, 1000x784x1024 and 1024^3 (32) 1.03x; column-major 512x1000x64T and
# 784x1000x64T (2) 0.99-1.02x, but 512x1000x96T (3) 0.96x, 512x1000x128T (4) 0.93x, 512x1000x256T (8)
# 0.93x, 784x1000x512T (16) 0.82-0.85x. (Before the slabs of slab_count, row-major at 16 panels had
# measured 0.96-0.98x.)
IN_PLACE_MAX_PANELS = 32
IN_PLACE_MAX_PANELS_COLUMN_MAJOR = 2
# Large M, more than two KC steps and at most this many NR panels of a B with unit-stride columns: each
# thread owns its rows for the whole call, B read in place (gemm_kernel). Paired A/B on 2 threads,
# float32: conv2's dW 288x7744x64T (31 KC steps) 1.17-1.25x, at batch 256 (121 steps) 1.19x; 64x784x10
# 1.67-1.71x. Not kept where it measured no gain: 4 panels (1000x512x128 and its dW, 0.97x), reading the
# wider B in place costs more than the regions saved; two KC steps or fewer (conv2's forward
# 7744x288x64, 0.91-1.10x; 1000x128x64 0.96x), too few regions saved.
ROWS_OWNED_MAX_PANELS = 2
# B read in place at a row stride that is a multiple of 2 KiB puts a KC-deep sliver's rows in at most 4 of
# the L1's 64 sets (4 KiB: 2), where they evict each other between the MR panels that reuse them: from
# this many MR panels of rows, such a B is packed (owned_tiles). Paired A/B against reading it in place,
# float32 on 2 threads: 64x784x512 1.03-1.07x, 60x784x512 1.16x, 64x784x1024 1.20-1.24x, 64x784x2048
# 1.21x, 128x784x1024 1.12x, float64 64x784x{256, 512} 1.11x; one thread 1.09-1.19x. A 1 KiB stride
# (64x784x256: 0.97-0.98x) and 3 MR panels (32x784x512: 0.98x) did not pay.
ALIASED_MIN_PANELS = 5
# Products of at most this many rows whose A, B and C have flat views take wide_rows for every full
# WIDE_ROW_PANELS-wide block of columns. Paired A/B against the short tile, float32: one row 1x1600x128
# 3.5x, 1x512x128 3.1x, 1x784x512 2.2x, 1x4096x4096 (2 threads) 1.5x; two rows 2x1600x128 2.5x and
# 2x784x512 1.3x but 2x1000x1000 (2 threads) 0.90x; three rows 0.83x at 3x784x512 and 3x2048x2048.
# Each row reads B once more, so from two rows on B's size decides, and one row never lost.
WIDE_MAX_ROWS = 1


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

    The loop order follows B's memory: row-major B is read row by row across the panels (walking
    down a 16-column strip with a 4 KiB row stride aliases in L1 and cost 4x more); column-major B
    (a transposed weight matrix) is read column by column, down each of the panel's NR columns.
    """
    full = min(jp_hi, n // nr)
    if b.strides[0] <= b.strides[1]:
        for jp in range(jp_lo, full):
            base = u(off + jp * k * nr)
            c0 = u(j0 + jp * nr)
            for j in range(nr):
                col = c0 + u(j)
                for p in range(k):
                    buf[base + u(p * nr + j)] = b[u(p0 + p), col]
    else:
        for p in range(k):
            r = u(p0 + p)
            for jp in range(jp_lo, full):
                o = u(off + (jp * k + p) * nr)
                c0 = u(j0 + jp * nr)
                for j in range(nr):
                    buf[o + u(j)] = b[r, c0 + u(j)]
    if full < jp_hi:  # the ragged last panel, zero-padded to NR columns
        cols = n - full * nr
        for p in range(k):
            o = off + (full * k + p) * nr
            for j in range(cols):
                buf[o + j] = b[p0 + p, j0 + full * nr + j]
            for j in range(cols, nr):
                buf[o + j] = 0


@njit(**JIT)
def write_tile(ct, nr, c, cflat, c_rs, r0, c0, mm, nn, alpha, beta, bias, act, act_param, last):
    """C[r0:r0+mm, c0:c0+nn] = alpha*tile + beta*C, then + bias and act() when ``last``.

    ``cflat``/``c_rs`` view C as one flat row-major buffer (row stride ``c_rs`` elements) when its
    columns are unit-stride (``c_rs < 0`` otherwise): the unit-stride loops vectorize. Every branch is
    taken once per tile, outside the element loops (a per-element branch chain cost ~5 ns an element).
    """
    if c_rs >= 0:
        for i in range(mm):
            o = u((r0 + i) * c_rs + c0)
            t = u(i * nr)
            if beta == 0:
                for j in range(nn):
                    cflat[o + u(j)] = alpha * ct[t + u(j)]
            elif beta == 1:
                for j in range(nn):
                    cflat[o + u(j)] += alpha * ct[t + u(j)]
            else:
                for j in range(nn):
                    cflat[o + u(j)] = alpha * ct[t + u(j)] + beta * cflat[o + u(j)]
            if last and bias.shape[0] > 0:
                for j in range(nn):
                    cflat[o + u(j)] += bias[c0 + j]
    else:
        for i in range(mm):
            r = u(r0 + i)
            for j in range(nn):
                v = alpha * ct[u(i * nr + j)]
                if beta != 0:
                    v += beta * c[r, u(c0 + j)]
                if last and bias.shape[0] > 0:
                    v += bias[c0 + j]
                c[r, u(c0 + j)] = v
    if last and act != LINEAR:
        activate_block(c, r0, c0, mm, nn, act, act_param)


@njit(**JIT)
def finish_tile(c, cflat, c_rs, r0, c0, mm, nn, bias, act, act_param):
    """The last KC step's epilogue on a tile already in C (unit-stride columns): + bias, then act()."""
    if bias.shape[0] > 0:
        for i in range(mm):
            o = u((r0 + i) * c_rs + c0)
            for j in range(nn):
                cflat[o + u(j)] += bias[c0 + j]
    if act != LINEAR:
        activate_block(c, r0, c0, mm, nn, act, act_param)


@njit(**JIT)
def macro_kernel(aflat, aoff, a_rs, a_cs, m_in_place, apack, m, k, mr, nr, bflat, bbuf, b_packed, boff, bstep, bs, jp_lo,
                 jp_hi, n, ct, c, cflat, c_rs, r0, c0, alpha, beta, bias, act, act_param, last):
    """C tiles for NR panels jp_lo..jp_hi (of a block n wide) x the MR panels of A's m rows (k deep).

    The first ``m_in_place`` rows (a multiple of MR) are read in place, A(i, p) of the block at
    ``aflat[aoff + i*a_rs + p*a_cs]`` (row- or column-major); the rest from packed panels in ``apack``.
    Panel jp of B starts at ``bsrc[boff + jp*bstep]`` with row stride ``bs``, ``bsrc`` being ``bbuf``
    where ``b_packed`` (bstep = k*NR and bs = NR) and B read in place, ``bflat``, otherwise (bstep = NR
    and bs = its row stride). (Both arrays are passed, not the one used: a read-only B and the packing
    buffer have different numba types, and each would compile its own copy of this function.) Full tiles
    of a C with unit-stride columns are written from the registers (``micro_kernel_c``); edge tiles and
    other layouts go through the ``ct`` buffer. Which path a tile takes never changes its arithmetic (the
    micro-kernel runs the same FMAs in the same order from packed or in-place A), so results stay bitwise
    independent of threads and of what was packed.
    """
    # Full tiles take the bias and a ReLU-family activation in registers (micro_kernel_c); the other
    # activations are a pass over the tile after its store (finish_tile).
    in_registers = act == LINEAR or act == RELU or act == LEAKY_RELU
    tile_bias = last and in_registers and bias.shape[0] > 0
    tile_act = act if last and in_registers else LINEAR
    after = last and not in_registers
    panels_in_place = m_in_place // mr
    one = ct.dtype.type(1.0)
    bsrc = bbuf if b_packed else bflat
    for jp in range(jp_lo, jp_hi):
        nn = min(nr, n - jp * nr)
        for ip in range((m + mr - 1) // mr):
            mm = min(mr, m - ip * mr)
            if ip < panels_in_place:
                asrc, a0, ars, acs = aflat, aoff + ip * mr * a_rs, a_rs, a_cs
            else:
                asrc, a0, ars, acs = apack, (ip - panels_in_place) * k * mr, 1, mr
            r = r0 + ip * mr
            col = c0 + jp * nr
            b0 = boff + jp * bstep
            # At most SHORT_ROWS ragged last rows (always from a packed panel) take the short tile, where a
            # full one would compute MR rows (M = 64: 4 rows, 1.05-1.10x). More ragged rows take the full
            # tile: two short tiles measured no faster (M = 32, 8 rows: 0.98x).
            short = mm <= SHORT_ROWS
            direct = c_rs >= 0 and nn == nr and mm == (SHORT_ROWS if short else mr)
            # One call site per tile kernel (each inlines a k loop per A layout): a tile that cannot go
            # straight into C is written to ``ct`` by the same kernel with alpha 1 and beta 0 (exact), and
            # write_tile applies alpha, beta and the epilogue from there.
            if direct:
                dst, d0, drs, al, be, tb, ta = cflat, r * c_rs + col, c_rs, alpha, beta, tile_bias, tile_act
            else:
                dst, d0, drs, al, be, tb, ta = ct, 0, nr, one, 0.0, False, LINEAR
            if short:
                short_kernel_c(k, asrc, a0, ars, acs, bsrc, b0, bs, dst, d0, drs, al, be, bias, col, tb, ta, act_param)
            else:
                micro_kernel_c(k, asrc, a0, ars, acs, bsrc, b0, bs, dst, d0, drs, al, be, bias, col, tb, ta, act_param)
            if not direct:
                write_tile(ct, nr, c, cflat, c_rs, r, col, mm, nn, alpha, beta, bias, act, act_param, last)
            elif after:
                finish_tile(c, cflat, c_rs, r, col, mm, nn, bias, act, act_param)


@njit(**JIT, inline="always")
def rows_in_place(m, mr, a_rs, a_cs, panels, small_m):
    """How many of a row block's m rows the micro-kernel reads straight from A (the rest are packed).

    All full MR panels when A has a flat view (``a_rs >= 0``: unit-stride rows or columns) and a packed
    panel would serve few tiles: a small-M product, or at most IN_PLACE_MAX_PANELS NR panels of B
    (IN_PLACE_MAX_PANELS_COLUMN_MAJOR for a column-major A, whose in-place reads stride a column a k step).
    Packing A costs about a nanosecond an element, and 64 columns of B (conv2's forward) use each element
    for only 128 FLOP, also about a nanosecond; with many panels the packed copy is reused and its
    contiguity wins.
    """
    limit = IN_PLACE_MAX_PANELS if a_cs == 1 else IN_PLACE_MAX_PANELS_COLUMN_MAJOR
    if a_rs < 0 or not (small_m or panels <= limit):
        return 0
    return m // mr * mr


@njit(**JIT)
def scale_row(c, i, beta, bias, act, act_param):
    """Row i of C = act(beta*C + bias)."""
    for j in range(c.shape[1]):
        v = beta * c[i, j] if beta != 0 else 0.0
        if bias.shape[0] > 0:
            v += bias[j]
        c[i, j] = activate_scalar(act, v, act_param)


@njit(**PJIT)
def scale_epilogue(c, beta, bias, act, act_param):
    """C = act(beta*C + bias), rows in parallel: the epilogue of a product computed elsewhere (the sparse
    products of jitnn.backend.cpu). gemm_kernel's own K == 0 case runs scale_row in its one prange."""
    for i in prange(c.shape[0]):
        scale_row(c, i, beta, bias, act, act_param)


@njit(**JIT, inline="always")
def kc_for(m, n, blocks):
    """The KC a problem uses: KC_SMALL where the parallel driver takes its small-M path (M <= MC, more
    than one NR panel), else KC. The serial driver follows the same rule, so a C tile sums its slabs
    in the same order whatever the thread count, and results are bitwise independent of threads."""
    _, nr, mc, kc, _, kc_small = blocks
    return kc_small if (m <= mc and n > nr) else kc


@njit(**JIT, inline="always")
def slab_count(k, kc):
    """How many KC slabs a K-deep product takes: slabs of ``kc``, the last one deeper where the rest
    would be a slab of at most kc/4 (K = 288 is one slab of 288, K = 784 three: 256, 256, 272). Each
    slab is one more read-modify-write pass over C and, on the large-M path, two more parallel regions,
    which a 16- or 32-deep slab does not repay; a sliver of B up to 1.25 KC deep still sits in L1
    (float32 320 x 32 x 4 B = 40 KiB of 48)."""
    count = max(1, (k + kc - 1) // kc)
    if count > 1 and k - (count - 1) * kc <= kc // 4:
        count -= 1
    return count


@njit(**JIT, inline="always")
def slab_depth(s, count, k, kc):
    """Depth of slab ``s`` of ``count`` (slab_count): ``kc``, the last one the rest of K."""
    return kc if s < count - 1 else k - s * kc


def deepest_slab_depth(k, kc):
    """The depth of the deepest of slab_count's slabs (the packing buffers' depth), in closed form: plain
    Python for the workspace's sizing, and ``deepest_slab`` in the kernels."""
    if k <= kc + kc // 4:
        return k  # one slab
    rem = k % kc
    return kc + rem if 0 < rem <= kc // 4 else kc


deepest_slab = njit(**JIT, inline="always")(deepest_slab_depth)


# A product of one row uses each element of B once: memory-bound, so threads (each streaming its own
# columns of B, which then stay in its core's cache from call to call) pay off at an eighth of the FLOPs
# a tiled product needs. float32, 2 threads against 1, back to back: 1x784x512 24 against 37 us,
# 1x4096x1024 357 against 823 us; below it 1x1600x128 (one wide block, so one task: 20 against 15 us)
# and 1x512x128 (9 against 6 us) stay on one thread.
ONE_ROW_WORK_FACTOR = 8


def product_work(m, n, k):
    """The work the thread rule (config.threads_for against PARALLEL_MIN_FLOPS) weighs for an M x K by
    K x N product: its FLOPs, times ONE_ROW_WORK_FACTOR for one row. Plain Python for gemm_into, and
    ``gemm_work`` in compiled code (the compiled training step)."""
    return 2 * m * n * k * (ONE_ROW_WORK_FACTOR if m == 1 else 1)


gemm_work = njit(**JIT, inline="always")(product_work)


def column_shares(m, n, nr, threads):
    """(tasks, columns per task) of the small-M path: C's NR panels split evenly over at most ``threads``
    tasks; for a product of at most WIDE_MAX_ROWS rows, in whole blocks of WIDE_ROW_PANELS panels, so
    that each column is computed by ``wide_rows`` or by a tile whatever the thread count (a tile's
    epilogue with alpha != 1 may round differently) and keeps its bits. Plain Python for the workspace's
    sizing, and ``column_split`` in the kernel."""
    unit = WIDE_ROW_PANELS if m <= WIDE_MAX_ROWS else 1
    units = ((n + nr - 1) // nr + unit - 1) // unit
    tasks = max(1, min(threads, units))
    return tasks, (units + tasks - 1) // tasks * unit * nr


column_split = njit(**JIT, inline="always")(column_shares)


@njit(**JIT)
def wide_rows(alpha, aflat, a_rs, a_cs, k, bflat, b_rs, beta, c, cflat, c_rs, bias, act, act_param, kc, i_lo, i_hi,
              j_lo, j_hi, width):
    """C[i_lo:i_hi, j_lo:j_hi] one row at a time, ``width`` = WIDE_ROW_PANELS NR panels at a time (j_hi - j_lo a
    multiple of it), A, B and C read and written in place (all three with a flat view): a product of
    WIDE_MAX_ROWS rows, a single sample's forward pass. The short tile computed SHORT_ROWS rows from a
    zero-padded panel there, each k step an FMA chain on two vectors, and streamed B two cache lines at a
    time: 1 x 1600 x 128 (a CNN's Dense layer on one image) took 42 us, 17 us here. The KC slabs and the
    epilogue are those of ``macro_kernel``'s tiles into C, so each element has the bits it has in any
    product on the same slabs (kc_for: every product of up to MC rows, and all of them where KC_SMALL
    equals KC).
    """
    in_registers = act == LINEAR or act == RELU or act == LEAKY_RELU
    nslabs = slab_count(k, kc)
    use_bias = in_registers and bias.shape[0] > 0
    one_row = np.int64(1)  # not a literal 1, which would compile finish_tile once more
    for slab in range(nslabs):  # outermost, as in owned_tiles: a slab of B is walked once across its rows
        pc = slab * kc
        kcur = slab_depth(slab, nslabs, k, kc)
        last = slab == nslabs - 1
        beta_k = beta if pc == 0 else 1.0
        tile_bias = np.bool_(last and use_bias)
        tile_act = act if last and in_registers else LINEAR
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi, width):
                wide_row_kernel_c(kcur, aflat, i * a_rs + pc * a_cs, a_rs, a_cs, bflat, pc * b_rs + j, b_rs, cflat,
                                  i * c_rs + j, c_rs, alpha, beta_k, bias, j, tile_bias, tile_act, act_param)
                if last and not in_registers:
                    finish_tile(c, cflat, c_rs, i, j, one_row, width, bias, act, act_param)


@njit(**JIT, inline="always")
def owned_tiles(alpha, a, aflat, a_rs, a_cs, b, bflat, b_rs, beta, c, cflat, c_rs, bias, act, act_param, blocks,
                i_lo, i_hi, j_lo, j_hi, apack, bbuf, boff, ct):
    """C[i_lo:i_hi, j_lo:j_hi] on the calling thread, every KC slab, in the BLIS loop order (NC block,
    KC slab, MC block): the serial driver (the whole of C), and the body of the parallel paths that
    give each thread its own tiles for the whole call (one parallel region per call).

    Full panels of a B with unit-stride columns are read in place where a packed panel would serve few
    tiles: M within one MC block (64x512x128: packing B cost about as much as using it), or at most
    ROWS_OWNED_MAX_PANELS panels over more than two KC slabs (the rows-owned path's rule; over two slabs,
    conv2's forward 7744x288x64, one thread, measured 0.93x in place); but not at a row stride whose
    rows share a few L1 sets (ALIASED_MIN_PANELS: 64x784x512 and wider). The other panels are packed into
    this thread's part of ``bbuf`` (from ``boff``), once per KC slab for all its row blocks. A's full MR
    panels are read in place where ``rows_in_place`` says so, the rest packed into ``apack``. The KC slabs
    are those of ``kc_for``, in order, so each tile has the same bits whichever thread computes it.
    """
    m, k = a.shape
    n = b.shape[1]
    mr, nr, mc, _, nc_max, _ = blocks
    kc_max = kc_for(m, n, blocks)
    zero = np.int64(0)  # np.int64(0), np.bool_(x): a literal argument would compile its callee once more
    b_in_place = b_rs >= 0 and (m <= mc or ((n + nr - 1) // nr <= ROWS_OWNED_MAX_PANELS and k > 2 * kc_max))
    if b_in_place and m >= ALIASED_MIN_PANELS * mr and b_rs * b.itemsize % 2048 == 0:
        b_in_place = False  # its rows would share a few L1 sets (ALIASED_MIN_PANELS)
    if i_hi - i_lo <= WIDE_MAX_ROWS and b_rs >= 0 and a_rs >= 0 and c_rs >= 0:
        width = WIDE_ROW_PANELS * nr
        j_wide = j_lo + (j_hi - j_lo) // width * width
        if j_wide > j_lo:  # the rest of the columns (less than a width) take the tiles below
            wide_rows(alpha, aflat, a_rs, a_cs, k, bflat, b_rs, beta, c, cflat, c_rs, bias, act, act_param, kc_max,
                      i_lo, i_hi, j_lo, j_wide, width)
            j_lo = j_wide
    for jc in range(j_lo, j_hi, nc_max):
        ncur = min(nc_max, j_hi - jc)
        npan = (ncur + nr - 1) // nr
        full = ncur // nr if b_in_place else 0
        nslabs = slab_count(k, kc_max)
        for slab in range(nslabs):
            pc = slab * kc_max
            kcur = slab_depth(slab, nslabs, k, kc_max)
            last = slab == nslabs - 1
            beta_k = beta if pc == 0 else 1.0
            off = boff - full * kcur * nr  # packed panels full..npan start at bbuf[boff]
            if full < npan:
                pack_b_panel(b, pc, kcur, jc, ncur, nr, bbuf, off, full, npan)
            for i0 in range(i_lo, i_hi, mc):
                mcur = min(mc, i_hi - i0)
                mi = rows_in_place(mcur, mr, a_rs, a_cs, npan, m <= mc)
                pack_a(a, i0 + mi, mcur - mi, pc, kcur, mr, apack)
                aoff = i0 * a_rs + pc * a_cs
                if full > 0:
                    macro_kernel(aflat, aoff, a_rs, a_cs, mi, apack, mcur, kcur, mr, nr, bflat, bbuf,
                                 np.bool_(False), pc * b_rs + jc, nr, b_rs, zero, full, ncur, ct, c, cflat, c_rs, i0,
                                 jc, alpha, beta_k, bias, act, act_param, last)
                if full < npan:
                    macro_kernel(aflat, aoff, a_rs, a_cs, mi, apack, mcur, kcur, mr, nr, bflat, bbuf,
                                 np.bool_(True), off, kcur * nr, nr, full, npan, ncur, ct, c, cflat, c_rs, i0, jc,
                                 alpha, beta_k, bias, act, act_param, last)


# What a task of gemm_kernel's parallel region does (run_task).
OWNED_COLUMNS, OWNED_ROWS, PACK_B, ROW_BLOCKS, SCALE_ROWS = 0, 1, 2, 3, 4


@njit(**JIT, inline="always")
def run_task(kind, t, tasks, plan, tid, alpha, a, aflat, a_rs, a_cs, b, bflat, b_rs, beta, c, cflat, c_rs, bias, act,
             act_param, blocks, abuf, bbuf, cbuf):
    """Task t of ``tasks`` in one of gemm_kernel's parallel regions, on thread ``tid``.

    ``plan = (jc, ncur, pc, kcur, share)``: the NC block and KC slab of a region that works on one (the
    large-M path), and how much each task takes:
    - OWNED_COLUMNS: ``share`` columns of C, every row, for the whole call (owned_tiles);
    - OWNED_ROWS: ``share`` MR panels of rows split evenly, every column, for the whole call;
    - PACK_B: ``share`` NR panels of the slab's B into the shared ``bbuf``;
    - ROW_BLOCKS: a block of ``share`` rows times the packed slab (from ``bbuf``);
    - SCALE_ROWS: C = act(beta*C + bias) on an even share of the rows (K == 0 or alpha == 0).
    """
    m, k = a.shape
    n = b.shape[1]
    mr, nr, _, kc_max, nc_max, _ = blocks
    jc, ncur, pc, kcur, share = plan
    zero = np.int64(0)  # np.int64(0), np.bool_(x): a literal argument would compile its callee once more
    npan = (ncur + nr - 1) // nr
    if kind == OWNED_COLUMNS or kind == OWNED_ROWS:
        if kind == OWNED_COLUMNS:
            i_lo, i_hi, j_lo, j_hi = zero, m, t * share, min(n, (t + 1) * share)
            kc = kc_for(m, n, blocks)
            bstride = deepest_slab(k, kc) * min(nc_max, share)
        else:
            i_lo, i_hi, j_lo, j_hi = t * share // tasks * mr, min(m, (t + 1) * share // tasks * mr), zero, n
            bstride = deepest_slab(k, kc_max) * nr
        owned_tiles(alpha, a, aflat, a_rs, a_cs, b, bflat, b_rs, beta, c, cflat, c_rs, bias, act, act_param, blocks,
                    i_lo, i_hi, j_lo, j_hi, abuf[tid], bbuf, tid * bstride, cbuf[tid])
    elif kind == SCALE_ROWS:
        for i in range(t * m // tasks, (t + 1) * m // tasks):
            scale_row(c, i, beta, bias, act, act_param)
    elif kind == PACK_B:
        pack_b_panel(b, pc, kcur, jc, ncur, nr, bbuf, zero, t * share, min(npan, (t + 1) * share))
    else:
        i0 = t * share
        mcur = min(share, m - i0)
        mi = rows_in_place(mcur, mr, a_rs, a_cs, npan, False)
        pack_a(a, i0 + mi, mcur - mi, pc, kcur, mr, abuf[tid])
        beta_k = beta if pc == 0 else 1.0  # not inline in the call: numba rejects that at 31 arguments
        macro_kernel(aflat, i0 * a_rs + pc * a_cs, a_rs, a_cs, mi, abuf[tid], mcur, kcur, mr, nr, bflat, bbuf,
                     np.bool_(True), zero, kcur * nr, nr, zero, npan, ncur, cbuf[tid], c, cflat, c_rs, i0, jc, alpha,
                     beta_k, bias, act, act_param, pc + kcur == k)


@njit(**PJIT)
def gemm_kernel(alpha, a, aflat, a_steps, b, bflat, b_rs, beta, c, cflat, c_rs, bias, act, act_param, blocks,
                threads, abuf, bbuf, cbuf):
    """C = act(alpha * a @ b + beta * C + bias) into ``c``; buffers sized by ``workspace_sizes``.

    ``bflat``/``b_rs`` and ``cflat``/``c_rs``: flat views of b and c when their columns are unit-stride
    (``*_rs`` = row stride in elements), else ``*_rs = -1``; ``aflat`` the same for a when its rows or
    its columns are unit-stride, ``a_steps = (a_rs, a_cs)`` with a[i, p] = aflat[i*a_rs + p*a_cs], else
    (-1, -1). (A pair, not two arguments: numba 0.68's dispatcher keeps two 200-byte objects per call of
    a function of exactly 20 arguments, which the allocation tests of tests/test_model.py caught.)
    ``threads`` is numba.get_num_threads(), read by the caller (reading it here defeats the disk cache).
    abuf: (thread slots, MC*KC) packed A blocks; bbuf: 1-D packed B; cbuf: (thread slots, MR*NR) tiles.
    """
    m, k = a.shape
    n = b.shape[1]
    mr, nr, mc, kc_max, nc_max, _ = blocks
    a_rs, a_cs = a_steps
    if m == 0 or n == 0:
        return
    zero = np.int64(0)  # np.int64(0), np.bool_(x): a literal argument would compile its callee once more
    scale_only = k == 0 or alpha == 0  # C = act(beta*C + bias); A and B are not read
    if scale_only and threads == 1:  # no parallel region: also the path a child forked after OpenMP use takes
        for i in range(m):
            scale_row(c, i, beta, bias, act, act_param)
        return
    npanels = (n + nr - 1) // nr
    # Large M: rows in blocks of at most MC, a multiple of the thread count so none idles.
    rounds = (m + mc * threads - 1) // (mc * threads)
    mc_eff = (m + rounds * threads - 1) // (rounds * threads)
    mc_eff = min(mc, (mc_eff + mr - 1) // mr * mr)
    nblocks = (m + mc_eff - 1) // mc_eff
    # One row block and one column panel (a conv's dW = cols^T dY: 9 x 43264 x 32): nothing to split, and
    # two parallel regions per KC step would only wait for an idle thread (169 steps measured 1.9 s on 2
    # threads under load against 3-40 ms serially). Same tiles, same order: same bits.
    if not scale_only and (threads == 1 or (nblocks < 2 and npanels < 2)):
        owned_tiles(alpha, a, aflat, a_rs, a_cs, b, bflat, b_rs, beta, c, cflat, c_rs, bias, act, act_param, blocks,
                    zero, m, zero, n, abuf[0], bbuf, zero, cbuf[0])
        return
    # The parallel regions, each a pass of the one prange below (run_task says what a task does): numba
    # compiles each prange into a gufunc of three libraries (body, wrapper, parallel wrapper), each
    # re-optimizing all the code it calls down to the micro-kernels, about 2 s of a cold compile each.
    kc_steps = slab_count(k, kc_max)
    jc, ncur, pc, kcur = zero, zero, zero, zero
    if scale_only:
        kind, passes, tasks, share = SCALE_ROWS, 1, threads, zero
    elif m <= mc and npanels > 1:
        # Small M (a minibatch): the N panels split across threads, each thread's for the whole call.
        # Each B panel serves only m/MR tiles, so packing it would cost as much as using it: B's full
        # panels are read in place when its columns are unit-stride, and so are A's (each thread would
        # pack all of A). One parallel region per call instead of two per KC step.
        kind, passes = OWNED_COLUMNS, 1
        tasks, share = column_split(m, n, nr, threads)
    elif b_rs >= 0 and npanels <= ROWS_OWNED_MAX_PANELS and k > 2 * kc_max:
        # Large M, many KC steps, few panels of a B with unit-stride columns (conv2's dW = colsᵀ·dY with
        # K = 7744): each thread owns an equal share of the MR panels of rows for the whole call, reading
        # A and B in place. One parallel region instead of two per KC step, each of which did ~50 us of
        # work.
        kind, passes, tasks, share = OWNED_ROWS, 1, threads, (m + mr - 1) // mr
    else:
        # Large M, BLIS's loops: for each NC block and KC slab, the threads pack the slab of B, then each
        # row block multiplies it.
        kind, passes, tasks, share = PACK_B, 2 * kc_steps * ((n + nc_max - 1) // nc_max), threads, zero
    for step in range(passes):
        if kind == PACK_B or kind == ROW_BLOCKS:
            jc = step // (2 * kc_steps) * nc_max
            slab = step // 2 % kc_steps
            pc = slab * kc_max
            ncur, kcur = min(nc_max, n - jc), slab_depth(slab, kc_steps, k, kc_max)
            if step % 2 == 0:
                kind, tasks, share = PACK_B, threads, ((ncur + nr - 1) // nr + threads - 1) // threads
            else:
                kind, tasks, share = ROW_BLOCKS, nblocks, mc_eff
        plan = (jc, ncur, pc, kcur, share)
        for t in prange(tasks):
            run_task(kind, t, tasks, plan, numba.get_thread_id(), alpha, a, aflat, a_rs, a_cs, b, bflat, b_rs, beta,
                     c, cflat, c_rs, bias, act, act_param, blocks, abuf, bbuf, cbuf)


@njit(**JIT)
def gemv_kernel(alpha, a, x, beta, c, bias, act, act_param, bias_per_row):
    """c[:, 0] = act(alpha * a @ x[:, 0] + beta * c[:, 0] + bias): one dot product per row of ``a``.

    The matrix-vector and dot products (N == 1; M == 1 reaches here transposed, with the bias indexed
    by row: ``bias_per_row``). No packing and no parallel region: each operand is read once, so the
    product runs at memory speed. The sum is kept in float64: a float32 running sum of 2**24 terms loses
    its last digits (the product is memory-bound, so the wider sum costs nothing measurable).
    """
    m, k = a.shape
    has_bias = bias.shape[0] > 0
    for i in range(m):
        s = 0.0
        for p in range(k):
            s += np.float64(a[u(i), u(p)]) * np.float64(x[u(p), 0])
        v = alpha * s
        if beta != 0:
            v += beta * c[i, 0]
        if has_bias:
            v += bias[i] if bias_per_row else bias[0]
        c[i, 0] = activate_scalar(act, v, act_param)


def workspace_sizes(m, n, k, blocks, threads):
    """(abuf per thread, bbuf total, cbuf per thread) element counts for gemm_kernel."""
    mr, nr, mc, kc_max, nc_max, kc_small = blocks
    kc = max(1, deepest_slab_depth(k, kc_max), deepest_slab_depth(k, kc_small))  # kc_for picks either KC
    a_size = (mc + mr - 1) // mr * mr * kc
    npanels = (n + nr - 1) // nr
    # Space for each thread id's share of the small-M path, at its widest (one row's or more rows' split),
    # so that the sizes hold for any M: the compiled step sizes its workspace once for every batch.
    share = max(column_shares(1, n, nr, threads)[1], column_shares(WIDE_MAX_ROWS + 1, n, nr, threads)[1])
    small = threads * kc * min(nc_max, share)
    large = kc * min(nc_max, npanels * nr)
    return a_size, max(small, large), mr * nr


def allocate_workspace(a_size, b_size, c_size, dtype, slots):
    """(abuf, bbuf, cbuf) for ``slots`` threads, every row starting on a cache line (jitnn.memory):
    packed panels are read with full-width vector loads, and a split load costs ~10% of the GEMM."""
    return (aligned_empty((slots, padded_to_line(a_size, dtype)), dtype), aligned_empty(b_size, dtype),
            aligned_empty((slots, padded_to_line(c_size, dtype)), dtype))
