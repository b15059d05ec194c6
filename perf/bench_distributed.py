"""Data-parallel training on MPI: measured here, then predicted past this machine (docs/distributed.md).

    python perf/bench_distributed.py                 # everything below, ~5 minutes on 2 cores
    python perf/bench_distributed.py --rounds 5 --batches 256,1024

1. alpha and beta of the allreduce, fitted to 2-rank Allreduce timings from 8 B to 32 MiB
   (perf/mpi_allreduce.py; MPICH's shared-memory path between two processes on this machine).
2. Epoch time of 2 ranks x 1 thread against 1 process x 2 threads at the same global batch, the two
   alternating run by run (median of --rounds), and the allreduce's share of a step (profiler row).
3. The cost model: the 2-rank step predicted from per-rank compute plus the fitted allreduce, against
   the measured 2-rank step; compute measured three ways (see the table), the last with the wait for
   the slower rank drawn from per-step times.
4. Weak-scaling predictions at 8, 64 and 512 nodes on 25 and 100 Gb/s networks, each node this
   machine, for the reference MLP and a larger one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from jitnn.distributed import AllreduceModel, StepModel, predict_scaling

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
NETWORKS = {"25 Gb/s (RoCE, 5 us)": (25, 5.0), "100 Gb/s (InfiniBand, 2 us)": (100, 2.0)}


def start(cmd):
    """``cmd`` running, this checkout first on its path, its output captured."""
    return subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def results(cmd, proc):
    """The JSON lines ``proc`` (started by ``start``) printed; SystemExit with its stderr if it failed."""
    out, err = proc.communicate(timeout=1800)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def run(cmd):
    return results(cmd, start(cmd))


def train_args(batch, threads, epochs, samples, hidden="512,128,64", profile=False, step_times=False):
    args = [os.path.join(HERE, "mpi_train.py"), "--batch", batch, "--epochs", epochs, "--samples", samples,
            "--threads", threads, "--hidden", hidden] + (["--profile"] if profile else []) + \
        (["--step-times"] if step_times else [])
    return [str(a) for a in args]


def train(ranks, batch, threads, epochs, samples, hidden="512,128,64", profile=False, step_times=False):
    args = train_args(batch, threads, epochs, samples, hidden, profile, step_times)
    if ranks == 0:
        return run([sys.executable, *args, "--plain"])[0]
    return run([MPIEXEC, "-n", str(ranks), sys.executable, *args])[0]


def train_side_by_side(copies, batch, epochs, samples):
    """``copies`` one-thread processes training at once, no MPI: each step computed as a rank computes it,
    beside another rank's work (shared L3 and memory bandwidth). Their per-step times, pooled."""
    cmd = [sys.executable, *train_args(batch, 1, epochs, samples, step_times=True), "--plain"]
    procs = [start(cmd) for _ in range(copies)]  # all started before any is waited for
    return [t for proc in procs for t in results(cmd, proc)[0]["step_s"]]


def step_s(result):
    return statistics.median(result["epoch_s"]) / result["steps"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", default="256,1024")
    p.add_argument("--epochs", type=int, default=3, help="per run; the first (compile) is reported apart")
    p.add_argument("--samples", type=int, default=60000)
    args = p.parse_args()
    if MPIEXEC is None:
        raise SystemExit("needs mpiexec: pip install 'jitnn[distributed]'")

    rows = run([MPIEXEC, "-n", "2", sys.executable, os.path.join(HERE, "mpi_allreduce.py")])
    comm = AllreduceModel.fit([r["bytes"] for r in rows], [r["seconds"] for r in rows], 2)
    print("## 1. Allreduce, 2 ranks on this machine (float32, in place)\n")
    print("| bytes | measured µs | model µs |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['bytes']:,} | {r['seconds'] * 1e6:.1f} | {comm.time(r['bytes'], 2) * 1e6:.1f} |")
    print(f"\nfit: alpha = {comm.alpha * 1e6:.2f} µs, beta = {comm.beta * 1e9:.3f} ns/B "
          f"({8 / comm.beta / 1e9:.1f} Gbit/s)\n")

    print("## 2. 2 ranks x 1 thread against 1 process x 2 threads, same global batch\n")
    print("| global batch | 1 x 2 threads s/epoch | 2 ranks x 1 thread s/epoch | ratio (each round's) | allreduce % of step |"
          "\n|---:|---:|---:|---:|---:|")
    measured = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        one, two = [], []
        for _ in range(args.rounds):  # alternate, so both see the same machine
            one.append(statistics.median(train(0, batch, 2, args.epochs, args.samples)["epoch_s"]))
            two.append(statistics.median(train(2, batch, 1, args.epochs, args.samples)["epoch_s"]))
        prof = train(2, batch, 1, 2, args.samples, profile=True)
        share = prof["phases_s"].get("allreduce", 0.0) / max(sum(prof["phases_s"].values()), 1e-12)
        measured[batch] = (statistics.median(one), statistics.median(two), prof)
        rounds = ", ".join(f"{b / a:.2f}" for a, b in zip(one, two))  # this machine's drift, round by round
        print(f"| {batch} | {measured[batch][0]:.3f} | {measured[batch][1]:.3f} | "
              f"{measured[batch][1] / measured[batch][0]:.2f} ({rounds}) | {100 * share:.1f} |")

    print("\n## 3. The cost model against the measured 2-rank step\n")
    print("compute: (a) the 2-rank run's own profiler rows, all but allreduce; (b) a 1-process, 1-thread run "
          "at the per-rank batch, the other core idle; (c) two such runs side by side (each beside the "
          "other's work, as ranks are), their per-step times giving both the mean and the wait for the "
          "slower rank (E[max of 2 draws], jitnn.distributed.expected_max). Each adds the fitted allreduce.\n")
    print("| global batch | compute (a) / (b) / (c) mean / (c) slower of 2, ms | allreduce model ms | predicted "
          "(a) / (b) / (c) ms | measured ms | error (a) / (b) / (c) |\n|---:|---:|---:|---:|---:|---:|")
    for batch, (_, two, prof) in measured.items():
        ar = comm.time(prof["grad_bytes"], 2)
        steps = prof["steps"]
        in_run = (sum(prof["phases_s"].values()) - prof["phases_s"].get("allreduce", 0.0)) / steps
        solo = step_s(train(0, batch // 2, 1, args.epochs, args.samples))
        beside = StepModel.from_samples(train_side_by_side(2, batch // 2, args.epochs, args.samples),
                                        prof["grad_bytes"])
        actual = two / steps
        pred = [StepModel(c, prof["grad_bytes"]).time(comm, 2) for c in (in_run, solo)] + [beside.time(comm, 2)]
        errors = " / ".join(f"{100 * (x - actual) / actual:+.1f}%" for x in pred)
        print(f"| {batch} | {in_run * 1e3:.2f} / {solo * 1e3:.2f} / {beside.compute_s * 1e3:.2f} / "
              f"{beside.slowest_compute(2) * 1e3:.2f} | {ar * 1e3:.3f} | "
              f"{' / '.join(f'{x * 1e3:.2f}' for x in pred)} | {actual * 1e3:.2f} | {errors} |")

    print("\n## 4. Predicted weak scaling, one node = this machine (2 cores), 512 rows per node per step\n")
    print("efficiency with every node at the mean step / with each node's measured step-time spread (the "
          "step waits for the slowest node: expected_max), and that step's time.\n")
    models = {"reference MLP 784-512-128-64-10": "512,128,64", "larger MLP 784-4096-4096-4096-10": "4096,4096,4096"}
    print("| model | network | 8 nodes | 64 nodes | 512 nodes |\n|---|---|---:|---:|---:|")
    for name, hidden in models.items():
        r = train(0, 512, 2, 3, min(args.samples, 16384), hidden=hidden, step_times=True)
        jittery = StepModel.from_samples(r["step_s"], r["grad_bytes"])  # each node's own step-time spread
        steady = StepModel(jittery.compute_s, r["grad_bytes"])  # every node exactly at the mean
        for net, (gbit, lat) in NETWORKS.items():
            comm_net = AllreduceModel.network(gbit, lat)
            cells = " | ".join(f"{100 * a['efficiency']:.0f}% / {100 * b['efficiency']:.0f}% ({b['step_s'] * 1e3:.1f} ms)"
                               for a, b in zip(predict_scaling(steady, comm_net), predict_scaling(jittery, comm_net)))
            print(f"| {name} ({r['grad_bytes'] / 2**20:.1f} MiB of gradients, {jittery.compute_s * 1e3:.1f} ms "
                  f"compute) | {net} | {cells} |")


if __name__ == "__main__":
    main()
