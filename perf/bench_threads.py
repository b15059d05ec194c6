"""The threading policy, measured: OpenMP spin count x serial threshold, idle and with a busy core.

    python perf/bench_threads.py                   # every spin count, idle and loaded
    python perf/bench_threads.py --spin 5000 30000 --rounds 7

Each setting runs in a fresh process (libgomp reads GOMP_SPINCOUNT once, when the pool starts). In it,
one "step" is the twelve GEMMs of the reference MLP at batch 64 (forward, X^T dZ, dZ W^T), called back to
back on two threads as a training loop calls them; the figure is the median step time over rounds.
"idle burn" is the CPU time the process spends in the 50 ms after its last call, sleeping: what its
spinning workers take from other processes (the worst round). ``--loaded`` adds a second process
spinning on one core. Settings run interleaved, round by round, each in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

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
    p.add_argument("--spin", nargs="+", default=["0", "1000", "5000", "30000", "300000"])
    p.add_argument("--min-flops", default="4000000", help="JITNN_PARALLEL_MIN_FLOPS for the spin settings")
    p.add_argument("--rounds", type=int, default=3, help="rounds; every setting runs once per round")
    p.add_argument("--steps", type=int, default=5, help="timed blocks of 50 steps in each child (median)")
    p.add_argument("--loaded", action="store_true", help="run a second process spinning on one core")
    args = p.parse_args(argv)
    # (label, spin, min_flops): the spin counts, and every GEMM on the calling thread (no team at all).
    settings = [(f"spin {sp}", sp, args.min_flops) for sp in args.spin] + [("serial", "0", str(10**15))]
    res = {label: [] for label, _, _ in settings}
    for r in range(args.rounds):  # interleaved: drifts in machine load hit every setting alike
        for label, spin, min_flops in settings:
            res[label].append(run(spin, args.steps, min_flops, args.loaded))
        print(f"round {r + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{'setting':>14s} {'step us (median)':>17s} {'all rounds':>28s} {'idle burn ms':>13s}")
    for label, _, _ in settings:
        steps = sorted(x["step_us"] for x in res[label])
        burn = max(x["idle_burn_ms"] for x in res[label])
        print(f"{label:>14s} {steps[len(steps) // 2]:17.0f} {' '.join(f'{x:.0f}' for x in steps):>28s} "
              f"{burn:13.1f}")


if __name__ == "__main__":
    main()
