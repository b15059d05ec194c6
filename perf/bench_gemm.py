"""GEMM benchmark: jitnn against numpy (OpenBLAS), measured the way a user's code calls it.

    python perf/bench_gemm.py                      # f32 and f64, every shape, jitnn's thread count
    python perf/bench_gemm.py --threads 1          # one jitnn thread against one OpenBLAS thread
    python perf/bench_gemm.py --quick --dtype float32
    python perf/bench_gemm.py --dtype float32 --batches 1000 --only b=1000   # the batch-1000 step's products
    pytest perf/bench_gemm.py --benchmark-only     # a few shapes through pytest-benchmark

Each peer runs in blocks of back-to-back calls (no pause inside a block, as in a training loop); the
peers alternate block by block, so drifts in machine load hit both alike, and each figure is the
median over the blocks. The table gives GFLOP/s, the ratio jitnn/numpy (> 1: jitnn faster) and jitnn's
share of ``jitnn.peak`` (the micro-kernel's measured rate on this machine and thread count).

numpy's BLAS threads are limited to ``--threads`` with threadpoolctl, so both peers use the same
number of cores. OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE, when set, change OpenBLAS's kernel choice; the
header prints what threadpoolctl reports so the peer is known.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jitnn
from jitnn import peak

SQUARE = [256, 512, 1024, 2048]
# The reference MLP 784-512-128-64-10.
LAYERS = [(784, 512), (512, 128), (128, 64), (64, 10)]
BATCHES = (32, 64, 128)


def mlp_shapes(batches=BATCHES, layers=LAYERS):
    """(name, M, K, N, trans_a, trans_b): forward XW, backward X^T dZ and dZ W^T of every layer."""
    out = []
    for batch in batches:
        for fan_in, fan_out in layers:
            out.append((f"fwd XW    b={batch} {fan_in}x{fan_out}", batch, fan_in, fan_out, False, False))
            out.append((f"bwd X^TdZ b={batch} {fan_in}x{fan_out}", fan_in, batch, fan_out, True, False))
            if fan_in != 784:  # dX is skipped for the first layer
                out.append((f"bwd dZW^T b={batch} {fan_in}x{fan_out}", batch, fan_out, fan_in, False, True))
    return out


def operands(m, k, n, ta, tb, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b, np.empty((m, n), dtype)


def median_times(fns, blocks=7, block_seconds=0.04, clock=time.perf_counter, settle=0.2):
    """Median seconds per call of each fn over ``blocks`` blocks of back-to-back calls, peers alternating.

    ``clock`` is wall time by default; with one thread, ``time.thread_time`` (the calling thread's CPU
    time) leaves out the slices other processes take on a shared machine.
    """
    for f in fns:
        f()  # warm-up: compilation, workspace, caches
    calls = []
    for f in fns:  # size each block to ~block_seconds
        t0 = clock()
        f()
        f()
        calls.append(max(2, int(block_seconds / max((clock() - t0) / 2, 1e-7))))
    samples = [[] for _ in fns]
    for _ in range(blocks):
        for i, f in enumerate(fns):
            # Let the other peer's threads park first: OpenBLAS workers spin for ~0.1 s after a call, and
            # on 2 cores a spinning worker takes half a core from the next peer's second thread.
            time.sleep(settle)
            t0 = clock()
            for _ in range(calls[i]):
                f()
            samples[i].append((clock() - t0) / calls[i])
    return [float(np.median(s)) for s in samples]


def run_table(shapes, dtype, blocks, clock=time.perf_counter):
    rows = []
    for name, m, k, n, ta, tb in shapes:
        a, b, c = operands(m, k, n, ta, tb, dtype)
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        c2 = c.copy()
        t_j, t_n = median_times([lambda a=a, b=b, c=c, ta=ta, tb=tb: jitnn.gemm(a, b, c, trans_a=ta, trans_b=tb),
                                 lambda opa=opa, opb=opb, c2=c2: np.matmul(opa, opb, out=c2)], blocks, clock=clock)
        flops = 2.0 * m * n * k
        rows.append((name, m, k, n, flops / t_j / 1e9, flops / t_n / 1e9, t_n / t_j, t_j))
    return rows


def print_table(rows, title, peak_gf):
    print(f"\n{title}")
    print(f"{'shape':30s} {'M':>5s} {'K':>5s} {'N':>5s} {'us/call':>8s} {'jitnn':>7s} {'numpy':>7s} "
          f"{'ratio':>6s} {'%peak':>6s}")
    for name, m, k, n, gj, gn, ratio, t in rows:
        print(f"{name:30s} {m:5d} {k:5d} {n:5d} {t * 1e6:8.1f} {gj:7.1f} {gn:7.1f} {ratio:6.2f} "
              f"{100 * gj / peak_gf:5.0f}%")
    ratios = [r[6] for r in rows]
    print(f"{'geometric mean of jitnn/numpy':>62s} {np.exp(np.mean(np.log(ratios))):6.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="256^3, 1024^3 and batch 64 only")
    p.add_argument("--blocks", type=int, default=7, help="alternating blocks per figure (median taken)")
    p.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    p.add_argument("--threads", type=int, default=None, help="threads for both peers (default: jitnn's)")
    p.add_argument("--batches", default=None,
                   help="comma-separated batch sizes of the MLP products (default 32,64,128; 64 with --quick)")
    p.add_argument("--only", default="", help="run only shapes whose name contains this text")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: the calling thread's CPU time (one thread only; robust on a shared machine)")
    args = p.parse_args(argv)
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    threads = args.threads or jitnn.get_num_threads()
    if args.clock == "cpu" and threads != 1:
        p.error("--clock cpu measures the calling thread only: use it with --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    jitnn.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")
    blas = [(i.get("internal_api"), i.get("version"), i.get("architecture"), i.get("num_threads"))
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"jitnn {jitnn.__version__}, numba {numba.__version__} ({numba.config.THREADING_LAYER}), "
          f"numpy {np.__version__}, BLAS {blas}, threads: {threads}, median of {args.blocks} blocks, "
          f"{args.clock} clock")
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    est = peak.estimate(threads, refresh=True)  # keeps the best seen: a figure cached under load only rises
    for dt in dtypes:
        sizes = [256, 1024] if args.quick else SQUARE
        square = [(f"square {s}", s, s, s, False, False) for s in sizes]
        batches = (64,) if args.quick else BATCHES
        if args.batches:
            batches = tuple(int(b) for b in args.batches.split(","))
        shapes = square + mlp_shapes(batches)
        shapes = [s for s in shapes if args.only in s[0]]
        print_table(run_table(shapes, np.dtype(dt).type, args.blocks, clock),
                    f"{dt}: C = op(A) @ op(B), peak {est[dt]} GFLOP/s on {threads} thread(s)", est[dt])


# --- pytest-benchmark -----------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - the table above needs no pytest
    pytest = None

if pytest is not None:
    BENCH_SHAPES = [(f"square{s}", s, s, s, False, False) for s in (256, 1024)] + [
        (name.replace(" ", ""), m, k, n, ta, tb) for name, m, k, n, ta, tb in mlp_shapes((64,), LAYERS[:1])
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
