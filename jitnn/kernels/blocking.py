"""GEMM block sizes: data, one row per dtype (BLIS keeps them in a per-CPU table the same way).

Tuned for AMD EPYC Zen 3 (AVX2 + FMA: 16 ymm registers, two 256-bit FMA pipes; 32 KiB L1d and
512 KiB L2 per core, 32 MiB L3 shared):

- MR x NR is the register tile. float32: 6 x 16 = 12 ymm accumulators (6 rows x two 8-lane vectors),
  2 ymm for the row of B and 1 for the broadcast of A: 15 of 16 registers, 12 FMAs per 3 loads.
  float64 has 4 lanes per ymm, so 6 x 8 keeps the same 12 accumulators.
- KC: one MR x KC sliver of A plus one KC x NR sliver of B must sit in L1 while the micro-kernel runs:
  float32 256 x (6 + 16) x 4 B = 22 KiB of 32 KiB; float64 256 x (6 + 8) x 8 B = 28 KiB.
- MC: the packed MC x KC block of A is reused for every NR panel of B, so it lives in L2:
  float32 144 x 256 x 4 B = 144 KiB, float64 72 x 256 x 8 B = 144 KiB: under a third of 512 KiB,
  leaving room for the streamed B panels and C tiles.
- NC: the packed KC x NC panel of B is shared by both cores from L3: 256 x 4080 x 4 B = 4 MiB.
"""

import numpy as np

# dtype name -> (MR, NR, MC, KC, NC). MC is a multiple of MR, NC of NR.
BLOCKS = {
    "float32": (6, 16, 144, 512, 4080),
    "float64": (6, 8, 72, 256, 4080),
}


def blocks_for(dtype) -> tuple[int, int, int, int, int]:
    """The (MR, NR, MC, KC, NC) row for a float dtype."""
    return BLOCKS[np.dtype(dtype).name]
