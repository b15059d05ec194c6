"""Run under mpiexec: every DataParallel collective against the value computed locally from all ranks' inputs."""

import numpy as np

from jitnn.distributed import DataParallel
from jitnn.distributed.strategy import balanced_slice
from jitnn.profiler import NULL_RECORDER

s = DataParallel()
r, p = s.rank, s.size
assert s.threads >= 1

# agree_seed: every rank gets the root's seed, also when the root draws it
def total(*values):
    buf = np.array(values, np.float64)
    s.reduce_sums(buf)
    return buf


drawn = s.agree_seed(None)
assert total(drawn % 1000003)[0] == p * (drawn % 1000003)  # exact in float64
seed = s.agree_seed(1234)
assert seed == 1234

# broadcast: the root's arrays win, every dtype and shape, empty arrays included
arrays = [np.full((3, 5), r, np.float32), np.full(7, r + 0.5), np.zeros((0, 4), np.float32)]
s.broadcast(arrays)
assert (arrays[0] == 0).all() and (arrays[1] == 0.5).all()
assert s.broadcast_scalar(10.0 + r) == 10.0

# shard: contiguous, balanced, covering the batch exactly once (uneven sizes, a batch smaller than p)
for rows in (0, 1, p - 1, p, 2 * p + 1, 97):
    first, count = s.shard(5, rows)
    part = balanced_slice(rows, r, p)
    assert (first, count) == (5 + part.start, part.stop - part.start)
    mine = np.arange(first, first + count)
    counts = total(count, mine.sum())
    assert counts[0] == rows and counts[1] == np.arange(5, 5 + rows).sum()

# allreduce_gradients: sum_r g_r * rows_r / global_rows, two dtypes in one call
rng = np.random.default_rng(7)
shapes = [(13, 7), (7,), (5, 3)]
all_g32 = [[rng.standard_normal(sh).astype(np.float32) for sh in shapes[:2]] for _ in range(p)]
all_g64 = [rng.standard_normal(shapes[2]) for _ in range(p)]
rows = [3 + q for q in range(p)]
grads = [g.copy() for g in all_g32[r]] + [all_g64[r].copy()]
s.reduce_gradients(grads, rows[r], sum(rows), NULL_RECORDER)
for i in range(2):
    want = sum(all_g32[q][i].astype(np.float64) * rows[q] / sum(rows) for q in range(p))
    np.testing.assert_allclose(grads[i], want, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(grads[2], sum(all_g64[q] * rows[q] / sum(rows) for q in range(p)), rtol=1e-12)
assert grads[0].dtype == np.float32 and grads[2].dtype == np.float64

# a rank without rows in the batch contributes zeros, even where its old gradient was not finite
g = [np.full(4, np.inf if r == 0 else 1.0)]
s.reduce_gradients(g, 0 if r == 0 else 2, 2 * (p - 1), NULL_RECORDER)
assert (g[0] == 1.0).all()

# agree: one rank's flag reaches all
assert s.agree(r == p - 1) is True
assert s.agree(False) is False
print(f"OK rank {r} of {p}", flush=True)
