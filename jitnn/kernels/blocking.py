"""GEMM block sizes: data, one table per instruction set, one row per dtype (as BLIS keeps them).

The table is chosen once, at import, from the host CPU that numba compiles for (``ISA``):

``avx512`` (tuned on Intel Xeon Emerald Rapids: 32 zmm registers, two 512-bit FMA pipes; 48 KiB L1d
and 2 MiB L2 per core):

- MR x NR is the register tile. float32: 12 x 32 = 24 zmm accumulators (12 rows x two 16-lane
  vectors), 2 zmm for the row of B and 1 for the broadcast of A: 27 of 32 registers, 24 FMAs per
  2 loads and 12 broadcasts. float64 has 8 lanes per zmm, so 12 x 16 keeps the same 24 accumulators.
- KC: the micro-panel of B (KC x NR) stays in L1 while the MR panels of A stream past it from L2:
  float32 256 x 32 x 4 B = 32 KiB, float64 256 x 16 x 8 B = 32 KiB, of 48 KiB.
- MC: the packed MC x KC block of A is reused for every NR panel of B, so it lives in L2:
  float32 192 x 256 x 4 B = 192 KiB, float64 96 x 256 x 8 = 192 KiB of 2 MiB (bigger blocks measured
  no faster and make the small-M path, M <= MC, split columns up to a larger M).
- NC: the packed KC x NC panel of B is shared by both cores from L3.

``avx2`` (tuned on AMD EPYC Zen 3: 16 ymm registers, two 256-bit FMA pipes; 32 KiB L1d, 512 KiB L2):

- float32 6 x 16 = 12 ymm accumulators, 2 ymm for B and 1 for the broadcast: 15 of 16 registers.
  float64 6 x 8 keeps the same 12 accumulators.
- float32 KC 512: each KC step is one more read-modify-write pass over C, and Zen 3's L2 feeds the
  32 KiB B sliver fast enough (1000x784x512 109 vs 93 GFLOP/s at KC 256); float64 keeps 256.
- MC: float32 144 x 512 x 4 B = 288 KiB, float64 72 x 256 x 8 B = 144 KiB, of 512 KiB.

KC_SMALL is the KC of the small-M path, which reads B in place at its own row stride instead of from
a packed panel; there a 256-deep sliver stays in L1 where a 512-deep one does not.
"""

import llvmlite.binding as llvm
import numba
import numpy as np

# isa -> (vector bytes, {dtype name -> (MR, NR, MC, KC, NC, KC_SMALL)}). MC is a multiple of MR, NC of NR.
TABLES = {
    "avx512": (64, {
        "float32": (12, 32, 192, 256, 4096, 256),
        "float64": (12, 16, 96, 256, 4096, 256),
    }),
    "avx2": (32, {
        "float32": (6, 16, 144, 512, 4080, 256),
        "float64": (6, 8, 72, 256, 4080, 256),
    }),
}


def host_isa() -> str:
    """``avx512`` when numba compiles for a host CPU with AVX-512F, else ``avx2``.

    With ``NUMBA_CPU_NAME`` set (a portable build, e.g. ``generic``) the target may lack AVX-512, so
    the 256-bit table is used: on a CPU without AVX2 LLVM splits its vectors, slower but correct.
    """
    if numba.config.CPU_NAME not in (None, "host"):
        return "avx2"
    llvm.initialize_native_target()
    return "avx512" if llvm.get_host_cpu_features().get("avx512f") else "avx2"


ISA = host_isa()
VECTOR_BYTES, BLOCKS = TABLES[ISA]
# Rows of the short register tile that computes the ragged last rows of C (fewer than MR) in groups:
# a third of MR, so M = 64 (5 x 12 + 4) takes one short tile and M = 32 (2 x 12 + 8) two.
SHORT_ROWS = BLOCKS["float32"][0] // 3


def blocks_for(dtype) -> tuple[int, int, int, int, int, int]:
    """The (MR, NR, MC, KC, NC, KC_SMALL) row for a float dtype."""
    return BLOCKS[np.dtype(dtype).name]
