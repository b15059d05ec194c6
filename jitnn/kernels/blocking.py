"""GEMM block sizes: data, one row per dtype (BLIS keeps them in a per-CPU table the same way).

Tuned for AMD EPYC Zen 3 (AVX2 + FMA: 16 ymm registers, two 256-bit FMA pipes; 32 KiB L1d and
512 KiB L2 per core, 32 MiB L3 shared):

- MR x NR is the register tile. float32: 6 x 16 = 12 ymm accumulators (6 rows x two 8-lane vectors),
  2 ymm for the row of B and 1 for the broadcast of A: 15 of 16 registers, 12 FMAs per 3 loads.
  float64 has 4 lanes per ymm, so 6 x 8 keeps the same 12 accumulators.
- KC: the depth of one pass over C. The classic bound keeps an MR x KC sliver of A plus a KC x NR
  sliver of B in L1 (float32 KC=256: 22 KiB). float32 uses 512 anyway: each KC step is one more
  read-modify-write pass over C, and Zen 3's L2 feeds the 32 KiB B sliver fast enough (sweep in
  docs/architecture.md: 1000x784x512 109 vs 93, 1024^3 111 vs 106 GFLOP/s). float64 keeps 256.
- MC: the packed MC x KC block of A is reused for every NR panel of B, so it lives in L2:
  float32 144 x 512 x 4 B = 288 KiB, float64 72 x 256 x 8 B = 144 KiB, of 512 KiB.
- NC: the packed KC x NC panel of B is shared by both cores from L3: 512 x 4080 x 4 B = 8 MiB.
- KC_SMALL: the KC of the small-M path, which reads B in place at its own row stride instead of
  from a packed panel; there a 256-deep sliver (16 KiB of B) stays in L1 where a 512-deep one does not
  (64x784x512 float32: 88 vs 76 GFLOP/s).
"""

import numpy as np

# dtype name -> (MR, NR, MC, KC, NC, KC_SMALL). MC is a multiple of MR, NC of NR.
BLOCKS = {
    "float32": (6, 16, 144, 512, 4080, 256),
    "float64": (6, 8, 72, 256, 4080, 256),
}


def blocks_for(dtype) -> tuple[int, int, int, int, int, int]:
    """The (MR, NR, MC, KC, NC, KC_SMALL) row for a float dtype."""
    return BLOCKS[np.dtype(dtype).name]
