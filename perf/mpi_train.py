"""One timed training run of the reference MLP, for perf/bench_distributed.py; prints one JSON line.

    mpiexec -n 2 python perf/mpi_train.py --batch 1024 --epochs 3          # data parallel, 1 thread a rank
    python perf/mpi_train.py --batch 1024 --epochs 3 --plain --threads 2     # one process, no MPI
    mpiexec -n 2 python perf/mpi_train.py --batch 256 --layers               # the layer-by-layer loop

The first epoch compiles (or loads the cache) and is reported apart; the rest are the steady state.
With ``--profile`` the per-phase times of the last epoch (forward, backward, update, allreduce) come
from jitnn's profiler; with ``--step-times`` each steady step's wall time (batch begin to batch end) is
printed too, the samples the cost model's straggler term draws from.
"""

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jitnn
from jitnn import Dense, Sequential


def model_for(d, k, hidden):
    sizes = [d, *hidden]
    layers = [Dense(h, activation="relu", input_dim=i if j == 0 else None)
              for j, (i, h) in enumerate(itertools.pairwise(sizes))]
    model = Sequential(layers + [Dense(k, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=60000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hidden", default="512,128,64")
    p.add_argument("--plain", action="store_true", help="no MPI: one process")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--step-times", action="store_true", help="also print every steady step's seconds")
    p.add_argument("--layers", action="store_true", help="the layer-by-layer loop (compiled_step.ENABLED = False)")
    args = p.parse_args()
    if args.layers:
        from jitnn import compiled_step

        compiled_step.ENABLED = False
    strategy = None
    if not args.plain:
        from jitnn.distributed import DataParallel

        strategy = DataParallel(threads=args.threads)
    elif args.threads:
        jitnn.set_num_threads(args.threads)
    _, (x, y), _ = jitnn.datasets.load_dataset("auto")
    x, y = x[:args.samples], y[:args.samples]
    model = model_for(x.shape[1], int(y.max()) + 1, [int(h) for h in args.hidden.split(",")])
    extra = {"strategy": strategy} if strategy is not None else {}
    t0 = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=args.batch, verbose=0, seed=0, **extra)
    first = time.perf_counter() - t0
    epochs = []
    step_times = []
    marks = {}
    timer = jitnn.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: marks.__setitem__("t", time.perf_counter()),
        on_train_batch_end=lambda batch, logs: step_times.append(time.perf_counter() - marks["t"]))
    if args.step_times:
        extra["callbacks"] = [timer]
    for _ in range(args.epochs - 1):
        t0 = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=args.batch, verbose=0, seed=0, **extra)
        epochs.append(time.perf_counter() - t0)
    extra.pop("callbacks", None)
    phases = {}
    if args.profile:
        with jitnn.profile() as prof:
            model.fit(x, y, epochs=1, batch_size=args.batch, verbose=0, seed=0, **extra)
        for row in prof.table():
            phases[row.phase] = phases.get(row.phase, 0) + row.ns / 1e9
    if strategy is None or strategy.is_root:
        steps = (x.shape[0] + args.batch - 1) // args.batch
        grad_bytes = sum(pa.nbytes for layer in model.layers for pa in layer.params)
        print(json.dumps({"ranks": 1 if strategy is None else strategy.size, "threads": jitnn.get_num_threads(),
                          "batch": args.batch, "steps": steps, "first_epoch_s": first, "epoch_s": epochs,
                          "grad_bytes": grad_bytes, "phases_s": phases, "step_s": step_times,
                          "step_path": model.step_path}), flush=True)


if __name__ == "__main__":
    main()
