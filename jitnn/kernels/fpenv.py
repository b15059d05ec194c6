"""The x86 floating-point environment (MXCSR) on every numba thread: flush denormals to zero in training.

An FMA with a denormal operand or result takes a microcode assist: measured here 50-120x slower in the
GEMM and 12x in an elementwise update (docs/conv.md, ``perf/bench_conv.py --denormals``). Training makes
denormals as a matter of course (weights and Adam moments decaying toward 0, products of small
activations and small gradients), which is what slows PyTorch's CPU training 3x from epoch 4 on a CNN.
FTZ (bit 15: a denormal result is written as 0) and DAZ (bit 6: a denormal operand is read as 0) remove
the assists; values below 1.2e-38 (float32) are far below anything a network resolves.

Numba has no API for MXCSR: two intrinsics emit ``llvm.x86.sse.stmxcsr``/``ldmxcsr``, and
``set_mxcsr_bits`` runs one ``prange`` iteration per thread (the OpenMP layer's static schedule gives
each thread one; the calling thread takes part too). On other architectures ``SUPPORTED`` is False and
nothing here is compiled.
"""

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitnn.config import JIT, PJIT

SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")
FTZ_DAZ = 0x8040  # MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero)


def _mxcsr_call(builder, name, slot):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8))]), name)
    builder.call(fn, [builder.bitcast(slot, ir.PointerType(ir.IntType(8)))])


@intrinsic
def stmxcsr(typingctx):
    """This thread's MXCSR register."""
    def codegen(context, builder, sig, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.load(slot)
    return types.int32(), codegen


@intrinsic
def ldmxcsr(typingctx, value):
    """Load ``value`` (int32) into this thread's MXCSR register."""
    def codegen(context, builder, sig, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(args[0], slot)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()
    return types.void(types.int32), codegen


@njit(**JIT)
def get_mxcsr():
    """The calling thread's MXCSR."""
    return stmxcsr()


@njit(**JIT)
def set_mxcsr(value):
    """Load ``value`` into the calling thread's MXCSR."""
    ldmxcsr(np.int32(value))


@njit(**PJIT)
def set_mxcsr_bits(bits, on, threads, out):
    """Set (``on``) or clear ``bits`` of MXCSR on each of ``threads`` threads (numba's current count);
    out[thread id] = that thread's MXCSR afterwards (``out`` sized NUMBA_NUM_THREADS)."""
    for _ in prange(threads):
        csr = stmxcsr()
        csr = (csr | bits) if on else (csr & ~bits)
        ldmxcsr(np.int32(csr))
        out[numba.get_thread_id()] = stmxcsr()
