"""Sweep GEMM block sizes (MC, KC) on the MLP's shapes and 1024^3, interleaved rounds, median GFLOP/s.

    python perf/sweep_blocks.py [--rounds 4] [--dtype float32]

Block sizes are runtime arguments of the kernel, so the sweep needs no recompilation: it rewrites the
table jitnn.linalg reads. It runs on one thread and times with the thread's CPU clock, so other
processes on a shared machine do not bill their time slices to a configuration. MC values are rounded
to a multiple of MR. Copy the winning row into jitnn/kernels/blocking.py.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jitnn import linalg

SHAPES = [(1000, 784, 512, ""), (784, 1000, 512, "ta"), (1000, 512, 784, "tb"), (1024, 1024, 1024, ""),
          (64, 784, 512, "")]
CONFIGS = [(96, 256), (192, 192), (192, 256), (192, 384), (192, 512), (288, 256), (384, 256), (384, 384)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--configs", default="", help="MCxKC pairs to try instead, e.g. 96x128,192x128")
    args = p.parse_args(argv)
    configs = [tuple(map(int, c.split("x"))) for c in args.configs.split(",")] if args.configs else CONFIGS
    dt = np.dtype(args.dtype)
    import jitnn

    jitnn.set_num_threads(1)
    rng = np.random.default_rng(0)
    data = []
    for m, k, n, t in SHAPES:
        a = rng.random((k, m) if t == "ta" else (m, k), dtype=np.float64).astype(dt)
        b = rng.random((n, k) if t == "tb" else (k, n), dtype=np.float64).astype(dt)
        data.append((a.T if t == "ta" else a, b.T if t == "tb" else b, np.empty((m, n), dt), 2.0 * m * n * k))
    base = linalg.BLOCKS[dt]
    res = {cfg: [[] for _ in SHAPES] for cfg in configs}
    for _ in range(args.rounds):
        for cfg in configs:
            mc = max(base[0], cfg[0] // base[0] * base[0])
            linalg.BLOCKS[dt] = (base[0], base[1], mc, cfg[1], base[4], base[5])
            linalg.workspace.buffers.clear()
            for i, (a, b, c, flops) in enumerate(data):
                linalg.gemm_into(a, b, c)
                t0, reps = time.thread_time(), 0
                while time.thread_time() - t0 < 0.15:
                    linalg.gemm_into(a, b, c)
                    reps += 1
                res[cfg][i].append(flops * reps / (time.thread_time() - t0) / 1e9)
    linalg.BLOCKS[dt] = base
    print("(MC, KC)    " + "  ".join(f"{m}x{k}x{n}{'/' + t if t else ''}" for m, k, n, t in SHAPES))
    for cfg in configs:
        print(f"{cfg!s:11s} " + "  ".join(f"{np.median(v):12.1f}" for v in res[cfg]))


if __name__ == "__main__":
    main()
