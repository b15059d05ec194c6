"""What ``jitnn.profile()`` costs: a batch-64 fit of a 784-512-128-10 MLP with and without it.

    python perf/bench_profiler.py                    # 4096 samples (64 steps) per epoch, 15 rounds
    python perf/bench_profiler.py --repeats 15 --samples 8192

One process, one model, epochs timed around ``fit``. Each round runs a plain epoch and a profiled
epoch, in alternating order (ABBA), with a short pause before each so numba's worker threads have
gone back to sleep. Reported: the median epoch of each, the ratio of the medians, and the median of
the per-round ratios (the figure least moved by load drifting during the run). Goal: <= 1.03.

On a shared machine single epochs move by tens of percent, so finer figures follow:
  short fits     the same comparison over many short fits (--block-steps steps each, --pairs pairs,
                 ABBA, median of the per-pair ratios: a stall hits one block of a pair, the median
                 drops it);
  paired steps   one training step (forward, loss, backward, optimizer) with and without a recorder,
                 alternated step by step, median of the per-pair differences; an A/A run of two plain
                 steps beside it shows the noise floor of that median;
  bookkeeping    the profiler's calls per step times the cost of one ``add`` in a hot loop: a lower
                 bound (between kernels the interpreter runs with cold caches, so the real cost per
                 call is higher, which the paired steps measure).
Data: the first --samples rows of Fashion-MNIST (digits when absent, at its own 64 features).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jitnn


def model_for(d, k, seed=0):
    model = jitnn.Sequential([jitnn.Dense(512, activation="relu", input_dim=d), jitnn.Dense(128, activation="relu"),
                              jitnn.Dense(k, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=jitnn.optimizers.Adam(learning_rate=1e-3),
                  metrics=["accuracy"])
    model.build(d, seed=seed)
    return model


def epoch(model, x, y, batch, profiled, pause=0.05):
    time.sleep(pause)
    t0 = time.perf_counter()
    if profiled:
        with jitnn.profile() as prof:
            model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=1)
        return time.perf_counter() - t0, prof
    model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=1)
    return time.perf_counter() - t0, None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=15, help="rounds of (plain, profiled) epochs (default 15)")
    p.add_argument("--pairs", type=int, default=200, help="pairs of short fits (default 200; 0 skips)")
    p.add_argument("--block-steps", type=int, default=4, help="steps per short fit (default 4)")
    p.add_argument("--step-pairs", type=int, default=800, help="pairs of single steps (default 800; 0 skips)")
    args = p.parse_args(argv)

    name, (x, y), _ = jitnn.datasets.load_dataset("auto")
    x, y = x[:args.samples], y[:args.samples]
    model = model_for(x.shape[1], int(y.max()) + 1)
    epoch(model, x, y, args.batch_size, True)  # compile / load kernels, allocate buffers
    epoch(model, x, y, args.batch_size, False)
    plain, profiled, ratios, coverage = [], [], [], []
    for r in range(args.repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        got = {}
        for flag in order:
            got[flag] = epoch(model, x, y, args.batch_size, flag)
        plain.append(got[False][0])
        profiled.append(got[True][0])
        ratios.append(got[True][0] / got[False][0])
        coverage.append(got[True][1].coverage())
    steps = -(-x.shape[0] // args.batch_size)
    print(f"{name}: {x.shape[0]} samples, batch {args.batch_size} ({steps} steps/epoch), "
          f"{x.shape[1]}-512-128-{int(y.max()) + 1} Adam, {jitnn.get_num_threads()} threads, "
          f"{args.repeats} rounds (ABBA)")
    print(f"plain epoch     median {statistics.median(plain) * 1e3:8.1f} ms  "
          f"(min {min(plain) * 1e3:.1f}, max {max(plain) * 1e3:.1f})")
    print(f"profiled epoch  median {statistics.median(profiled) * 1e3:8.1f} ms  "
          f"(min {min(profiled) * 1e3:.1f}, max {max(profiled) * 1e3:.1f})")
    print(f"ratio of medians {statistics.median(profiled) / statistics.median(plain):.4f}; "
          f"median of per-round ratios {statistics.median(ratios):.4f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"rows cover {100 * statistics.median(coverage):.1f}% of the profiled epochs' wall time (median)")
    if args.pairs:
        rows = args.block_steps * args.batch_size
        bp, bq, br = [], [], []
        for r in range(args.pairs):
            order = (False, True) if r % 2 == 0 else (True, False)
            got_b = {flag: epoch(model, x[:rows], y[:rows], args.batch_size, flag, pause=0.002)[0] for flag in order}
            bp.append(got_b[False])
            bq.append(got_b[True])
            br.append(got_b[True] / got_b[False])
        q = statistics.quantiles(br, n=4)
        print(f"short fits ({args.block_steps} steps, {args.pairs} pairs): plain median {statistics.median(bp) * 1e3:.2f} ms, "
              f"profiled {statistics.median(bq) * 1e3:.2f} ms; ratio of medians "
              f"{statistics.median(bq) / statistics.median(bp):.4f}; median of per-pair ratios "
              f"{statistics.median(br):.4f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
    if args.step_pairs:
        for label, diff, base in paired_steps(model, x, y, args.batch_size, args.step_pairs):
            print(f"paired steps ({args.step_pairs}, {label}): median difference {diff / 1e3:+.1f} us on a "
                  f"{base / 1e3:.0f} us step ({100 * diff / base:+.2f}%)")
    adds, per_add = bookkeeping(got[True][1], steps)
    step_ns = statistics.median(plain) / steps * 1e9
    print(f"bookkeeping (lower bound): {adds:.1f} profiler calls per step x {per_add:.0f} ns = "
          f"{adds * per_add / 1e3:.1f} us per step, {100 * adds * per_add / step_ns:.2f}% of a plain step "
          f"({step_ns / 1e3:.0f} us)")
    return statistics.median(ratios)


def paired_steps(model, x, y, batch, pairs):
    """[(label, median ns difference, median plain step ns)] for A/A (two plain steps) and A/profiled."""
    now = time.perf_counter_ns
    xb = np.ascontiguousarray(x[:batch])
    yb = model.prepare_targets(y[:batch], xb)
    rec = jitnn.profiler.HostRecorder(jitnn.profiler.Profile().recorder(model), model.layers)
    model.allocate(batch)

    def plain():
        model.recorder = jitnn.profiler.NULL_RECORDER
        t0 = now()
        model.train_step(xb, yb)
        model.apply_gradients(on_param=model.recorder.update_hook(batch))
        model.recorder.end_update(batch)
        return now() - t0

    def profiled():  # what fit does around a step when profiling, minus batching
        model.recorder = rec
        t0 = now()
        model.train_step(xb, yb)
        model.apply_gradients(on_param=rec.update_hook(batch))
        rec.end_update(batch)
        return now() - t0

    out = []
    for label, other in (("A/A control", plain), ("plain/profiled", profiled)):
        for _ in range(10):
            plain(), other()
        diffs, base = [], []
        for i in range(pairs):
            if i % 2:
                a = plain()
                b = other()
            else:
                b = other()
                a = plain()
            diffs.append(b - a)
            base.append(a)
        out.append((label, statistics.median(diffs), statistics.median(base)))
    return out


def bookkeeping(prof, steps, n=200_000):
    """(profiler calls per step, ns per call), an upper bound: every call costs a full ``add`` and two
    clock reads, including the optimizer hook's calls that return at once (a bias after its kernel)."""
    acc = prof.acc
    calls = sum(c for (_s, _l, phase, _b), (_ns, c) in acc.items() if phase not in ("setup", "shuffle"))
    calls += sum(c for (_s, _l, phase, _b), (_ns, c) in acc.items() if phase == "optimizer")  # its head
    calls += steps * sum(len(layer.params) for layer in prof.models[0].layers)  # hook calls per array
    rec = jitnn.profiler.Profile().recorder(prof.models[0])
    now = time.perf_counter_ns
    best = float("inf")
    for _ in range(5):
        t0 = now()
        for _ in range(n):
            rec.add(0, "forward", now(), now(), 64)
        best = min(best, (now() - t0) / n)
    return calls / steps, best


if __name__ == "__main__":
    main()
