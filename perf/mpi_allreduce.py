"""Run under mpiexec: Allreduce (in place, SUM, float32) timings per message size, printed by rank 0 as
JSON lines {"bytes": n, "seconds": median}. perf/bench_distributed.py fits alpha and beta to them.

Each size is timed in blocks of back-to-back calls after a barrier (the median block, divided by its
calls), so the figure is what a training loop pays per step, not a cold first call.
"""

import json
import sys
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
sizes = [int(s) for s in sys.argv[1:]] or [2**k for k in range(3, 27, 2)]  # 8 B .. 32 MiB
for nbytes in sizes:
    buf = np.ones(max(1, nbytes // 4), np.float32)
    calls = max(3, min(200, int(2e7 // max(nbytes, 1))))
    blocks = []
    for _ in range(7):
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(calls):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        blocks.append((time.perf_counter() - t0) / calls)
    worst = comm.reduce(float(np.median(blocks)), op=MPI.MAX, root=0)  # the slowest rank sets the pace
    if comm.Get_rank() == 0:
        print(json.dumps({"bytes": buf.nbytes, "seconds": worst}), flush=True)
