"""GEMM benchmark: jitnn against numpy (OpenBLAS) and a naive Numba triple loop, in one run.

    python perf/bench_gemm.py            # the table: GFLOP/s and the jitnn/numpy ratio per shape
    python perf/bench_gemm.py --quick    # fewer shapes and repeats (the README's demo uses this)
    pytest perf/bench_gemm.py --benchmark-only   # the same shapes through pytest-benchmark

Each figure is the median of several timed blocks of calls after a warm-up; peers take turns block by
block in one process, so the ratio is measured under the same machine load (this machine is shared and
noisy), with a short pause between blocks so one library's spinning threads never bill the other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jitnn  # noqa: E402
from jitnn.config import PJIT  # noqa: E402

SQUARE = [64, 128, 256, 512, 1024, 2048]
# The reference MLP 784-512-128-64-10: (name, M, K, N, trans_a, trans_b) for each layer's three GEMMs.
LAYERS = [(784, 512), (512, 128), (128, 64), (64, 10)]


def mlp_shapes(batches=(32, 64, 1000), layers=LAYERS):
    """Forward XW, backward X^T dZ and dZ W^T for every layer of the reference MLP."""
    out = []
    for batch in batches:
        for fan_in, fan_out in layers:
            out.append((f"fwd  XW    b={batch} {fan_in}x{fan_out}", batch, fan_in, fan_out, False, False))
            out.append((f"bwd  X^TdZ b={batch} {fan_in}x{fan_out}", fan_in, batch, fan_out, True, False))
            if fan_in != 784:  # dX is skipped for the first layer
                out.append((f"bwd  dZW^T b={batch} {fan_in}x{fan_out}", batch, fan_out, fan_in, False, True))
    return out


@njit(**PJIT)
def naive_matmul(a, b, c):
    """The triple loop a tutorial would write, parallel over rows: the floor jitnn must clear."""
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        for j in range(n):
            s = c.dtype.type(0)
            for p in range(k):
                s += a[i, p] * b[p, j]
            c[i, j] = s


def operands(m, k, n, ta, tb, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b, np.empty((m, n), dtype)


def median_times(fns, repeats, min_seconds=0.05, settle=0.15):
    """Median seconds per call of each fn: rounds of timed blocks, fns taking turns block by block.

    Turns alternate so slow drifts in machine load hit every peer alike, but never call by call:
    OpenBLAS workers keep spinning ~0.1 s after numpy returns (and numba's after jitnn), which would
    bill one peer for the other's threads. ``settle`` seconds of sleep before each block let them park.
    """
    for f in fns:
        f()  # warm-up (compilation, workspace, caches)
    inner = []
    for f in fns:  # batch fast calls so each sample lasts long enough to time reliably
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        inner.append(max(1, int(min_seconds / max(dt, 1e-7))))
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            time.sleep(settle)
            f()  # wake this peer's thread pool before the clock starts
            t0 = time.perf_counter()
            for _ in range(inner[i]):
                f()
            samples[i].append((time.perf_counter() - t0) / inner[i])
    return [float(np.median(s)) for s in samples]


def run_table(shapes, repeats, with_naive=True, dtype=np.float32):
    rows = []
    for name, m, k, n, ta, tb in shapes:
        a, b, c = operands(m, k, n, ta, tb, dtype)
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        fns = [lambda: jitnn.gemm(a, b, c, trans_a=ta, trans_b=tb), lambda: np.matmul(opa, opb, out=c)]
        naive = with_naive and m * n * k <= 512**3
        if naive:
            fns.append(lambda: naive_matmul(opa, opb, c))
        times = median_times(fns, repeats)
        flops = 2.0 * m * n * k
        gf = [flops / t / 1e9 for t in times]
        rows.append((name, m, k, n, gf[0], gf[1], gf[2] if naive else float("nan"), times[1] / times[0]))
    return rows


def print_table(rows, title):
    print(f"\n{title}")
    print(f"{'shape':34s} {'M':>5s} {'K':>5s} {'N':>5s} {'jitnn':>8s} {'numpy':>8s} {'naive':>8s} "
          f"{'jitnn/numpy':>11s}")
    for name, m, k, n, gj, gn, gv, ratio in rows:
        print(f"{name:34s} {m:5d} {k:5d} {n:5d} {gj:8.1f} {gn:8.1f} {gv:8.1f} {ratio:11.2f}")
    ratios = [r[-1] for r in rows]
    print(f"{'geometric mean of jitnn/numpy':>68s} {np.exp(np.mean(np.log(ratios))):11.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per figure (median taken)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = p.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 11)
    dtype = np.dtype(args.dtype).type
    import numba

    print(f"jitnn {jitnn.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
          f"threads: jitnn {jitnn.get_num_threads()}, {dtype.__name__}, GFLOP/s (median of {repeats})")
    sizes = [256, 1024] if args.quick else SQUARE
    square = [(f"square {s}", s, s, s, False, False) for s in sizes]
    print_table(run_table(square, repeats, dtype=dtype), "Square C = A @ B")
    batches = (64,) if args.quick else (32, 64, 1000)
    print_table(run_table(mlp_shapes(batches), repeats, dtype=dtype),
                "Reference MLP 784-512-128-64-10 (forward XW, backward X^T dZ and dZ W^T)")


# --- pytest-benchmark -----------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - the table above needs no pytest
    pytest = None

if pytest is not None:
    BENCH_SHAPES = [(f"square{s}", s, s, s, False, False) for s in (256, 1024)] + [
        (name.replace(" ", ""), m, k, n, ta, tb) for name, m, k, n, ta, tb in mlp_shapes((64, 1000), LAYERS[:1])
    ]

    @pytest.mark.parametrize("impl", ["jitnn", "numpy"])
    @pytest.mark.parametrize("shape", BENCH_SHAPES, ids=[s[0] for s in BENCH_SHAPES])
    def test_gemm(benchmark, shape, impl):
        _, m, k, n, ta, tb = shape
        a, b, c = operands(m, k, n, ta, tb)
        if impl == "jitnn":
            benchmark(jitnn.gemm, a, b, c, trans_a=ta, trans_b=tb)
        else:
            benchmark(np.matmul, a.T if ta else a, b.T if tb else b, out=c)
        benchmark.extra_info["gflops_per_call"] = 2.0 * m * n * k / 1e9


if __name__ == "__main__":
    main()
