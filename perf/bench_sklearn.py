"""jitnn.sklearn.MLPClassifier against sklearn.neural_network.MLPClassifier: same data, same settings.

    python perf/bench_sklearn.py                        # Fashion-MNIST (digits if absent), 3 blocks
    python perf/bench_sklearn.py --epochs 5 --blocks 2 --samples 20000   # a quicker run
    python perf/bench_sklearn.py --dataset digits
    python perf/bench_sklearn.py --threads 1 --clock cpu        # one thread each, CPU seconds: load-robust

Both estimators get identical parameters (hidden_layer_sizes, activation, solver="adam", alpha,
batch_size, learning_rate_init, max_iter=--epochs, shuffle, random_state) and the same float32
arrays; tol=0 and n_iter_no_change > max_iter make both run exactly --epochs epochs, so the fit times
compare the same work. Blocks alternate the order (sklearn then jitnn, then jitnn then sklearn, ...)
so both see the same machine load; block k uses random_state=k for both. Reported: each fit time,
the median ratio sklearn / jitnn, and the test accuracy of every fit with the mean difference.

Both sides compute in float32: scikit-learn's MLP keeps float32 input in float32 (coefs_ take X's
dtype), and jitnn's estimator trains in float32 by default. jitnn's kernels and its compiled training
step are compiled (or loaded from the cache) by a warm-up fit first, reported apart: the warm-up runs
at least compiled_step.MIN_STEPS steps at the benchmark's batch size, since a shorter fit keeps to the
layer-by-layer loop and would leave the step's compile inside the first timed block. Every timed jitnn
fit must have run the compiled step (checked).

On a shared machine scikit-learn's 2-thread wall time inflates far more than jitnn's (OpenBLAS workers
wait on a descheduled peer), so a loaded figure flatters jitnn. ``--threads 1 --clock cpu`` gives
each side one thread and times the process's CPU seconds, which other processes barely change: the
figure to quote when the machine is not quiet. The load average is printed with each block.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLP
from threadpoolctl import threadpool_limits

import jitnn
from jitnn import compiled_step
from jitnn.sklearn import MLPClassifier


def settings(args, seed):
    return {"hidden_layer_sizes": tuple(args.hidden), "activation": "relu", "solver": "adam", "alpha": 1e-4,
            "batch_size": args.batch_size, "learning_rate_init": 1e-3, "max_iter": args.epochs, "tol": 0.0,
            "n_iter_no_change": args.epochs + 1, "shuffle": True, "random_state": seed}


def timed_fit(est, x, y, x_test, y_test, clock):
    time.sleep(0.5)  # let the other library's spinning worker threads go idle (docs/benchmarks.md)
    t0 = clock()
    est.fit(x, y)
    seconds = clock() - t0
    assert est.n_iter_ == est.max_iter, f"{type(est).__module__} stopped after {est.n_iter_} epochs"
    if isinstance(est, MLPClassifier):
        assert est.model_.step_path == "compiled", f"jitnn's fit ran {est.model_.step_path!r}"
    return seconds, 100.0 * est.score(x_test, y_test)


def warm_up(args, x, y):
    """One jitnn fit of at least MIN_STEPS steps at the benchmark's batch size, so that the kernels and
    the compiled step (the same generated source as the timed fits) are compiled before the blocks."""
    rows = min(len(x), 10 * args.batch_size)
    steps_per_epoch = -(-rows // args.batch_size)
    epochs = -(-compiled_step.MIN_STEPS // steps_per_epoch)
    est = MLPClassifier(**dict(settings(args, 0), max_iter=epochs, n_iter_no_change=epochs + 1))
    est.fit(x[:rows], y[:rows])
    return est.model_.step_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="auto", choices=["auto", "fashion_mnist", "digits"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--samples", type=int, default=None, help="train on the first N rows (default: all)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both (numba's for jitnn, OpenBLAS's for scikit-learn); default jitnn's")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: the process's CPU seconds (with --threads 1; robust on a shared machine)")
    args = p.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu counts every thread's CPU time: use it with --threads 1")
    threads = args.threads or jitnn.get_num_threads()
    jitnn.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    warnings.simplefilter("ignore", ConvergenceWarning)

    name, (x, y), (x_test, y_test) = jitnn.datasets.load_dataset(args.dataset)
    if args.samples:
        x, y = x[:args.samples], y[:args.samples]
    print(f"{name}: {x.shape[0]} train / {x_test.shape[0]} test rows, {x.shape[1]} features; "
          f"hidden {tuple(args.hidden)}, adam, batch {args.batch_size}, {args.epochs} epochs; "
          f"{x.dtype} both; threads {threads} each, cores {os.cpu_count()}; {args.clock} clock")
    t0 = time.perf_counter()
    path = warm_up(args, x, y)
    print(f"jitnn warm-up (compile or cache load, {path} step): {time.perf_counter() - t0:.1f}s, "
          "not in the timings")

    results = {"sklearn": [], "jitnn": []}
    for block in range(args.blocks):
        order = [("sklearn", SkMLP), ("jitnn", MLPClassifier)]
        for label, cls in order if block % 2 == 0 else order[::-1]:
            seconds, acc = timed_fit(cls(**settings(args, block)), x, y, x_test, y_test, clock)
            results[label].append((seconds, acc))
            print(f"  block {block} {label:8s} fit {seconds:7.2f}s  test accuracy {acc:.2f}%  "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    ratios = [s[0] / j[0] for s, j in zip(results["sklearn"], results["jitnn"])]
    acc = {k: statistics.mean(a for _, a in v) for k, v in results.items()}
    print(f"fit time sklearn / jitnn: median {statistics.median(ratios):.2f}x "
          f"(blocks: {', '.join(f'{r:.2f}x' for r in ratios)})")
    print(f"test accuracy: sklearn {acc['sklearn']:.2f}%, jitnn {acc['jitnn']:.2f}% "
          f"(mean over {args.blocks} seeds; difference {acc['jitnn'] - acc['sklearn']:+.2f} points)")
    return results


if __name__ == "__main__":
    main()
