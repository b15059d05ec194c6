"""Run under mpiexec: the last rank raises inside guard() while the others wait in a collective.
The job must end (not hang) with a message naming the failing rank."""

import numpy as np

from jitnn.distributed import DataParallel

s = DataParallel()
with s.guard():
    if s.rank == s.size - 1:
        raise ValueError("bad batch on purpose")
    s.reduce_sums(np.zeros(1))  # the other ranks block here until the abort ends them
print("unreachable on the failing rank", flush=True)
