"""The GEMM micro-kernel: an MR x NR tile of C held in vector registers across the whole k loop.

``micro_kernel(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct)`` computes, for i < MR and j < NR,

    ct[i*NR + j] = sum_{p < kc} ap[a0 + i*a_rs + p*a_cs] * bp[b0 + p*bs + j]

A is a packed MR-wide panel (``a_rs = 1, a_cs = MR``), or MR rows of A read in place, the BLIS "sup"
case where a packed panel would serve too few tiles to repay its copy: row-major A has ``a_cs = 1``,
column-major A ``a_rs = 1``. B comes from any
array whose NR columns are contiguous at row stride ``bs`` (a packed NR-wide panel has ``bs == NR``).
MR and NR come from ``blocking.BLOCKS``.

Why an intrinsic: numba builds with LLVM's SLP vectorizer switched off (``NUMBA_SLP_VECTORIZE=0``),
so a tile written as MR*NR scalar locals stays scalar (measured: 10 GFLOP/s on one Zen 3 core, 13% of
peak), and a tile kept in an array goes through memory on every step. Here we emit the LLVM IR
ourselves: NR/VL vector accumulators per row as loop phis, one ``<VL x T>`` load per vector of B,
one broadcast of A per row, and ``llvm.fma`` per accumulator, which x86 lowers to
``vbroadcastss`` + ``vfmadd231ps ymm`` (see ``docs/architecture.md`` for the listing).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from jitnn.kernels.blocking import BLOCKS, SHORT_ROWS, VECTOR_BYTES
from jitnn.kernels.elementwise import LEAKY_RELU, RELU


def _k_loop(builder, name, kc, ap_ptr, a0, a_step, a_rows, bp_ptr, b0, bs, mr, nv, vec, width, fma):
    """One k loop over the tile; returns its final accumulators (the builder is left after the loop).

    Row i of A's current column is ``ap_ptr[pa + a_rows[i]]``, and ``pa`` advances by ``a_step`` per k
    step: a packed panel has constants ``a_rows[i] = i`` and ``a_step = MR``; A in place has
    ``a_rows[i] = i * a_rs`` and ``a_step = a_cs``.
    """
    i64 = ir.IntType(64)
    vl = vec.count
    zero_vec = ir.Constant(vec, [ir.Constant(vec.element, 0.0)] * vl)
    undef_vec = ir.Constant(vec, ir.Undefined)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), vl), [0] * vl)

    entry = builder.block
    header = builder.append_basic_block(f"{name}.header")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(header)

    builder.position_at_end(header)
    p = builder.phi(i64, "p")
    pa = builder.phi(i64, "pa")
    pb = builder.phi(i64, "pb")
    acc = [[builder.phi(vec, f"c{i}_{v}") for v in range(nv)] for i in range(mr)]
    p.add_incoming(ir.Constant(i64, 0), entry)
    pa.add_incoming(a0, entry)
    pb.add_incoming(b0, entry)
    for row in acc:
        for c in row:
            c.add_incoming(zero_vec, entry)
    builder.cbranch(builder.icmp_signed("<", p, kc), body, done)

    builder.position_at_end(body)
    bvals = []
    for v in range(nv):
        ptr = builder.gep(bp_ptr, [builder.add(pb, ir.Constant(i64, v * vl))], inbounds=True)
        ld = builder.load(builder.bitcast(ptr, vec.as_pointer()))
        ld.align = width  # packed panels are element-aligned only
        bvals.append(ld)
    new_acc = []
    for i in range(mr):
        a = builder.load(builder.gep(ap_ptr, [builder.add(pa, a_rows[i])], inbounds=True))
        splat = builder.shuffle_vector(builder.insert_element(undef_vec, a, ir.Constant(i64, 0)),
                                       undef_vec, splat_mask)
        new_acc.append([builder.call(fma, [splat, bvals[v], acc[i][v]]) for v in range(nv)])
    latch = builder.block
    p.add_incoming(builder.add(p, ir.Constant(i64, 1)), latch)
    pa.add_incoming(builder.add(pa, a_step), latch)
    pb.add_incoming(builder.add(pb, bs), latch)
    for i in range(mr):
        for v in range(nv):
            acc[i][v].add_incoming(new_acc[i][v], latch)
    builder.branch(header)
    builder.position_at_end(done)
    return acc


def _emit(context, builder, sig, args, mr: int, nr: int, direct: bool = False, panel: int = 0,
          in_place_only: bool = False):
    """The k loop; then the tile goes to ``ct`` (``direct`` False) or straight into C (True).

    Two copies of the loop, chosen once per tile: a packed panel (``a_rs = 1, a_cs = MR``) with its
    offsets and step as constants, as the kernel was before A could be read in place (a step held in a
    register measured 2-3% slower on 2 threads), and A in place with MR row offsets hoisted out of the
    loop. Both run the same FMAs in the same order, so a tile's bits do not depend on where its A was
    read from.
    """
    kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct = args[:9]
    arr_t = sig.args[1]
    elt = context.get_data_type(arr_t.dtype)
    vl = VECTOR_BYTES // (4 if arr_t.dtype == types.float32 else 8)
    nv = nr // vl
    vec = ir.VectorType(elt, vl)
    i64 = ir.IntType(64)
    width = elt.get_abi_size(context.target_data)

    ap_ptr = context.make_array(sig.args[1])(context, builder, ap).data
    bp_ptr = context.make_array(sig.args[5])(context, builder, bp).data
    ct_ptr = context.make_array(sig.args[8])(context, builder, ct).data
    kc = context.cast(builder, kc, sig.args[0], types.int64)
    a0 = context.cast(builder, a0, sig.args[2], types.int64)
    a_rs = context.cast(builder, a_rs, sig.args[3], types.int64)
    a_cs = context.cast(builder, a_cs, sig.args[4], types.int64)
    b0 = context.cast(builder, b0, sig.args[6], types.int64)
    bs = context.cast(builder, bs, sig.args[7], types.int64)

    suffix = f"v{vl}f{8 * width}"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.{suffix}")
    loop = (kc, ap_ptr, a0)
    tail = (bp_ptr, b0, bs, mr, nv, vec, width, fma)
    if in_place_only:  # the wide row: one loop fewer to compile
        acc = _k_loop(builder, "micro.in_place", *loop, a_cs, [builder.mul(a_rs, ir.Constant(i64, i)) for i in range(mr)],
                      *tail)
        _store_to_c(context, builder, sig, args, acc, ct_ptr, vec, width)
        return context.get_dummy_value()
    panel = panel or mr  # rows of a packed panel: the short tile reads the first rows of an MR panel
    packed = builder.and_(builder.icmp_signed("==", a_rs, ir.Constant(i64, 1)),
                          builder.icmp_signed("==", a_cs, ir.Constant(i64, panel)))
    with builder.if_else(packed) as (then, otherwise):
        with then:
            acc_packed = _k_loop(builder, "micro.packed", *loop, ir.Constant(i64, panel),
                                 [ir.Constant(i64, i) for i in range(mr)], *tail)
            from_packed = builder.block
        with otherwise:
            acc_rows = _k_loop(builder, "micro.in_place", *loop, a_cs,
                               [builder.mul(a_rs, ir.Constant(i64, i)) for i in range(mr)], *tail)
            from_rows = builder.block
    acc = []
    for row_p, row_r in zip(acc_packed, acc_rows):
        merged = []
        for a, b in zip(row_p, row_r):
            phi = builder.phi(vec)
            phi.add_incoming(a, from_packed)
            phi.add_incoming(b, from_rows)
            merged.append(phi)
        acc.append(merged)

    if direct:
        _store_to_c(context, builder, sig, args, acc, ct_ptr, vec, width)
        return context.get_dummy_value()
    for i in range(mr):
        for v in range(nv):
            ptr = builder.gep(ct_ptr, [ir.Constant(i64, i * nr + v * vl)], inbounds=True)
            st = builder.store(acc[i][v], builder.bitcast(ptr, vec.as_pointer()))
            st.align = width
    return context.get_dummy_value()


def _splat(builder, vec, x):
    undef = ir.Constant(vec, ir.Undefined)
    one = builder.insert_element(undef, x, ir.Constant(ir.IntType(64), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count))


def _store_to_c(context, builder, sig, args, acc, c_ptr, vec, width):
    """C[c0 + i*c_rs + j] = act(alpha*acc + beta*C + bias[col0 + j]), from the registers.

    C is read only when beta != 0: a select, not a branch, keeps beta == 0 from reading NaN/inf out of
    C into the result. The epilogue (``use_bias``, ``act`` of LINEAR/RELU/LEAKY_RELU) is applied to the
    registers before the one store: as a second pass over the tile in C, bias + ReLU cost 3.3 ms of an
    8.9 ms 1000x784x512 float32 product on 2 threads. Each step is the separate IEEE operation the
    pass did (no contraction), so the bits are the same. ReLU is ``x < 0 ? 0 : x`` (NaN passes through).
    """
    i64 = ir.IntType(64)
    c0 = context.cast(builder, args[9], sig.args[9], types.int64)
    c_rs = context.cast(builder, args[10], sig.args[10], types.int64)
    elt_t = sig.args[1].dtype
    alpha_s = context.cast(builder, args[11], sig.args[11], elt_t)
    beta_s = context.cast(builder, args[12], sig.args[12], elt_t)
    alpha = _splat(builder, vec, alpha_s)
    beta = _splat(builder, vec, beta_s)
    beta_zero = builder.fcmp_ordered("==", beta_s, ir.Constant(beta_s.type, 0.0))
    vl = vec.count
    zero = ir.Constant(vec, [ir.Constant(vec.element, 0.0)] * vl)
    use_bias = builder.icmp_signed("!=", context.cast(builder, args[15], sig.args[15], types.int64),
                                   ir.Constant(i64, 0))
    act = context.cast(builder, args[16], sig.args[16], types.int64)
    relu = builder.icmp_signed("==", act, ir.Constant(i64, RELU))
    leaky = builder.icmp_signed("==", act, ir.Constant(i64, LEAKY_RELU))
    slope = _splat(builder, vec, context.cast(builder, args[17], sig.args[17], elt_t))
    bias_ptr = context.make_array(sig.args[13])(context, builder, args[13]).data
    col0 = context.cast(builder, args[14], sig.args[14], types.int64)
    # The bias row is read only when used: its array may be empty.
    before = builder.block
    with builder.if_then(use_bias):
        loaded = []
        for v in range(len(acc[0])):
            ptr = builder.gep(bias_ptr, [builder.add(col0, ir.Constant(i64, v * vl))], inbounds=True)
            ld = builder.load(builder.bitcast(ptr, vec.as_pointer()))
            ld.align = width
            loaded.append(ld)
        then_end = builder.block
    bias = []
    for ld in loaded:
        phi = builder.phi(vec)
        phi.add_incoming(ld, then_end)
        phi.add_incoming(zero, before)
        bias.append(phi)
    # The raw sum (alpha 1, beta 0, no epilogue: a tile bound for the tile buffer, and most backward
    # products) is stored as it is: the general path's load of C and selects cost 4-7% at K = 64.
    alpha_one = builder.fcmp_ordered("==", alpha_s, ir.Constant(alpha_s.type, 1.0))
    plain = builder.and_(builder.and_(beta_zero, alpha_one),
                         builder.not_(builder.or_(use_bias, builder.or_(relu, leaky))))
    with builder.if_else(plain) as (raw, general):
        with raw:
            _store_rows(builder, acc, c_ptr, c0, c_rs, vec, width, lambda a, old, v: a, load=False)
        with general:
            def epilogue(a, old, v):
                scaled = builder.fmul(alpha, a)
                mixed = builder.call(builder.module.get_global(f"llvm.fma.v{vl}f{8 * width}"), [beta, old, scaled])
                out = builder.select(beta_zero, scaled, mixed)
                out = builder.select(use_bias, builder.fadd(out, bias[v]), out)
                negative = builder.fcmp_ordered("<", out, zero)
                out = builder.select(relu, builder.select(negative, zero, out), out)
                return builder.select(leaky, builder.select(negative, builder.fmul(out, slope), out), out)
            _store_rows(builder, acc, c_ptr, c0, c_rs, vec, width, epilogue, load=True)


def _store_rows(builder, acc, c_ptr, c0, c_rs, vec, width, value, load):
    """C's vector v of row i (at ``c0 + i*c_rs + v*VL``) = value(acc[i][v], its old value or None, v)."""
    i64 = ir.IntType(64)
    row = c0
    for acc_row in acc:
        for v, a in enumerate(acc_row):
            ptr = builder.bitcast(builder.gep(c_ptr, [builder.add(row, ir.Constant(i64, v * vec.count))],
                                              inbounds=True), vec.as_pointer())
            old = None
            if load:
                old = builder.load(ptr)
                old.align = width
            st = builder.store(value(a, old, v), ptr)
            st.align = width
        row = builder.add(row, c_rs)


def _tile_kernels(rows_for, name, panels=1, in_place_only=False):
    """The pair (tile into ``ct``, tile into C) of intrinsics whose register tile has ``rows_for(MR)``
    rows of ``panels`` NR-wide panels of columns, reading packed panels of MR rows (or A in place; only
    in place for the tile into C with ``in_place_only``)."""

    def typed(ap, bp, out):
        return isinstance(ap, types.Array) and ap.dtype in (types.float32, types.float64) \
            and bp.dtype == ap.dtype and out.dtype == ap.dtype

    def tile(typingctx, kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct):
        if not typed(ap, bp, ct):
            return None
        mr, nr = BLOCKS[str(ap.dtype)][:2]
        sig = types.void(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct)

        def codegen(context, builder, signature, args):
            return _emit(context, builder, signature, args, rows_for(mr), nr * panels, panel=mr)

        return sig, codegen

    def tile_c(typingctx, kc, ap, a0, a_rs, a_cs, bp, b0, bs, c, c0, c_rs, alpha, beta, bias, col0, use_bias, act,
               act_param):
        if not typed(ap, bp, c) or not isinstance(alpha, types.Float) or not isinstance(beta, types.Float) \
                or not isinstance(bias, types.Array) or bias.dtype != ap.dtype:
            return None
        mr, nr = BLOCKS[str(ap.dtype)][:2]
        sig = types.void(kc, ap, a0, a_rs, a_cs, bp, b0, bs, c, c0, c_rs, alpha, beta, bias, col0, use_bias, act,
                         act_param)

        def codegen(context, builder, signature, args):
            return _emit(context, builder, signature, args, rows_for(mr), nr * panels, direct=True, panel=mr,
                         in_place_only=in_place_only)

        return sig, codegen

    tile.__name__, tile_c.__name__ = name, name + "_c"
    return intrinsic(tile), intrinsic(tile_c)


# ``micro_kernel(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct)``: the MR x NR register tile for ap's dtype into
# ``ct`` (A's strides as in the module docstring). ``micro_kernel_c(kc, ap, a0, a_rs, a_cs, bp, b0, bs, c, c0,
# c_rs, alpha, beta, bias, col0, use_bias, act, act_param)``: the same tile written straight into a full
# MR x NR tile of C, ``c[c0 + i*c_rs + j] = act(alpha*tile[i, j] + beta*c[...] + bias[col0 + j])`` (``c``
# flat, its rows ``c_rs`` apart; no tile buffer round trip). ``use_bias`` false: no bias (``bias`` may be
# empty). ``act`` is LINEAR, RELU or LEAKY_RELU (slope ``act_param``); callers apply other activations.
micro_kernel, micro_kernel_c = _tile_kernels(lambda mr: mr, "micro_kernel")
# The same for SHORT_ROWS rows (``short_kernel``, ``short_kernel_c``): the ragged last rows of C (M = 64 is
# five panels of 12 and 4 rows), which a full tile over a zero-padded panel computed 3 times over and wrote
# through the tile buffer. Each element's sum runs the same FMAs in the same order in either kernel.
short_kernel, short_kernel_c = _tile_kernels(lambda mr: SHORT_ROWS, "short_kernel")
# One row of WIDE_ROW_PANELS NR panels (``wide_row_kernel_c``, into C only): a product of one row (one
# sample's forward pass, kernels.gemm.wide_rows), where the short tile computes SHORT_ROWS rows over a
# zero-padded panel and streams B two cache lines at a time. Eight vector accumulators keep both FMA
# pipes busy (four cycles of latency) for one row, and each k step reads a whole 128-float stretch of
# B's row. Each element's sum runs the same FMAs in the same order as in the other tiles.
WIDE_ROW_PANELS = 4
_, wide_row_kernel_c = _tile_kernels(lambda mr: 1, "wide_row_kernel", panels=WIDE_ROW_PANELS, in_place_only=True)
