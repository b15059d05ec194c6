"""The threading policy, measured: OpenMP spin count x serial threshold, idle and with a busy core.

    python perf/bench_threads.py                   # every spin count, idle and loaded
    python perf/bench_threads.py --spin 5000 30000 --rounds 7

Each setting runs in a fresh process (libgomp reads GOMP_SPINCOUNT once, when the pool starts). In it,
one "step" is the twelve GEMMs of the reference MLP at batch 64 (forward, X^T dZ, dZ W^T), called back to
back on two threads as a training loop calls them; the figure is the median step time over rounds.
"idle burn" is the CPU time the process spends in the 50 ms after its last call, sleeping: what its
spinning workers take from other processes. "loaded" repeats it with a second process spinning on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, os, resource, sys, time
import numpy as np
sys.path.insert(0, os.environ["JITNN_ROOT"])
import jitnn
from jitnn.linalg import gemm_into
sys.path.insert(0, os.path.join(os.environ["JITNN_ROOT"], "perf"))
from bench_gemm import mlp_shapes, operands
ops = []
for _, m, k, n, ta, tb in mlp_shapes((64,)):
    a, b, c = operands(m, k, n, ta, tb, np.float32)
    ops.append((a.T if ta else a, b.T if tb else b, c))
def step():
    for a, b, c in ops:
        gemm_into(a, b, c)
for _ in range(20):
    step()
times = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    for _ in range(50):
        step()
    times.append((time.perf_counter() - t0) / 50)
ru0 = resource.getrusage(resource.RUSAGE_SELF)
time.sleep(0.05)
ru1 = resource.getrusage(resource.RUSAGE_SELF)
burn = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
print(json.dumps({"step_us": float(np.median(times)) * 1e6, "idle_burn_ms": burn * 1e3}))
"""


def run(spin, rounds, min_flops, loaded):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_NUM_THREADS="2", JITNN_ROOT=root)
    if spin is not None:
        env["GOMP_SPINCOUNT"] = str(spin)
    if min_flops is not None:
        env["JITNN_PARALLEL_MIN_FLOPS"] = str(min_flops)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(rounds)], check=False, env=env, capture_output=True, text=True,
                             timeout=600)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spin", nargs="+", default=["0", "5000", "30000", "300000"])
    p.add_argument("--min-flops", nargs="+", default=["4000000", "1000000000000"],
                   help="JITNN_PARALLEL_MIN_FLOPS values (a huge one: every GEMM on one thread)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    print(f"{'GOMP_SPINCOUNT':>14s} {'MIN_FLOPS':>14s} {'idle: step us':>14s} {'idle burn ms':>12s} "
          f"{'loaded: step us':>15s} {'burn ms':>8s}")
    for min_flops in args.min_flops:
        for spin in args.spin:
            t0 = time.perf_counter()
            idle = run(spin, args.rounds, min_flops, False)
            busy = run(spin, args.rounds, min_flops, True)
            print(f"{spin:>14s} {min_flops:>14s} {idle['step_us']:14.0f} {idle['idle_burn_ms']:12.1f} "
                  f"{busy['step_us']:15.0f} {busy['idle_burn_ms']:8.1f}   ({time.perf_counter() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
