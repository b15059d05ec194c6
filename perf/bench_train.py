"""Training-speed benchmark: the tutorial's network 784-512-128-64-10 with Adam, float32, one run.

    python perf/bench_train.py                      # batch 1000, 64, 32: epoch times and ratios
    python perf/bench_train.py --samples 16000      # fewer samples per timed epoch (faster run)
    python perf/bench_train.py --accuracy 15        # also train jitnn and PyTorch 15 epochs: test accuracy
    python perf/bench_train.py --step-overhead      # per-step cost, compiled vs layer by layer, small MLP
    python perf/bench_train.py --inference --batch-sizes 1,64,1000 --repeats 9   # predict vs PyTorch
    pytest perf/bench_train.py --benchmark-only     # one batch size through pytest-benchmark

Peers, timed round-robin in one process so they share the machine's load (median of --repeats):
  jitnn     fit with the compiled step (jitnn/compiled_step.py): one @njit call per batch
  jitnn-layers  the same model and fit through the layer-by-layer loop (compiled_step.ENABLED = False):
            the "before" of the compiled step, in the same run
  tutorial  the numpy tutorial, a faithful copy in perf/baselines/ (its weights are float64, so its
            products run in float64: that is the code users bring)
  torch     PyTorch CPU, nn.Sequential + torch.optim.Adam + CrossEntropyLoss, float32, with
            torch.set_num_threads equal to jitnn's thread count
  sklearn   scikit-learn MLPClassifier(solver="adam"), float32 input
Each timed run is one epoch over the first --samples rows of Fashion-MNIST (digits if absent).

"bound" is the GEMM-bound limit: the epoch's FLOPs (every Dense layer's forward and backward products,
Dense.flops) at ``jitnn.peak`` (the micro-kernel's own rate on every thread); "x bound" = jitnn's epoch
time over it (issue 11's goal: within 1.3).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import tutorial_numpy

import jitnn
from jitnn import compiled_step
from jitnn.peak import peak_gflops

HIDDEN = (512, 128, 64)


def jitnn_model(d, k, seed=0):
    layers = [jitnn.Dense(HIDDEN[0], activation="relu", input_dim=d)]
    layers += [jitnn.Dense(h, activation="relu") for h in HIDDEN[1:]]
    model = jitnn.Sequential(layers + [jitnn.Dense(k, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=jitnn.optimizers.Adam(learning_rate=1e-3),
                  metrics=["accuracy"])
    model.build(d, seed=seed)
    return model


def torch_model(d, k, seed=0):
    import torch

    torch.manual_seed(seed)
    sizes = (d,) + HIDDEN
    mods = []
    for a, b in itertools.pairwise(sizes):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*mods, torch.nn.Linear(sizes[-1], k))
    return net, torch.optim.Adam(net.parameters(), lr=1e-3)


def torch_epoch(net, opt, xt, yt, batch, gen):
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    perm = torch.randperm(xt.shape[0], generator=gen)
    for s in range(0, xt.shape[0], batch):
        idx = perm[s:s + batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
    return float(loss.detach())


def make_peers(x, y, batch, k, threads, which):
    """name -> a callable that trains one epoch over (x, y) at ``batch``."""
    d = x.shape[1]
    peers = {}
    if "jitnn" in which:
        model = jitnn_model(d, k)
        # A user's fit of several epochs takes the compiled step; one timed epoch of fewer steps than
        # compiled_step.MIN_STEPS would not compile it, so the warm-up fit is long enough to (batch 1000:
        # 60 steps an epoch).
        steps = -(-x.shape[0] // batch)
        model.fit(x, y, epochs=-(-compiled_step.MIN_STEPS // steps), batch_size=batch, verbose=0, seed=1)
        peers["jitnn"] = lambda: model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=1)
        peers["jitnn"].model = model
    if "jitnn-layers" in which:
        layered = jitnn_model(d, k)

        def layer_by_layer():
            compiled_step.ENABLED = False
            try:
                layered.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=1)
            finally:
                compiled_step.ENABLED = True

        peers["jitnn-layers"] = layer_by_layer
    if "tutorial" in which:
        np.random.seed(0)
        tl = tutorial_numpy
        nn = tl.NN([tl.Layer(d, HIDDEN[0], "relu"), tl.Layer(HIDDEN[0], HIDDEN[1], "relu"),
                    tl.Layer(HIDDEN[1], HIDDEN[2], "relu"), tl.Layer(HIDDEN[2], k, "softmax")],
                   "categorical_crossentropy", tl.Adam())
        y1h = jitnn.datasets.one_hot(y, k)
        peers["tutorial"] = lambda: nn.fit(x, y1h, epochs=1, learning_rate=1e-3, sample_size=batch,
                                           include_logs=False)
    if "torch" in which:
        import torch

        torch.set_num_threads(threads)
        net, opt = torch_model(d, k)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        gen = torch.Generator().manual_seed(0)
        peers["torch"] = lambda: torch_epoch(net, opt, xt, yt, batch, gen)
    if "sklearn" in which:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=HIDDEN, solver="adam", batch_size=batch, learning_rate_init=1e-3,
                            max_iter=1, random_state=0)

        def sk():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(x, y)

        peers["sklearn"] = sk
    return peers


def gemm_bound_seconds(n, d, k, batch, dtype="float32"):
    """Seconds one epoch of n samples would take if its Dense FLOPs ran at jitnn.peak."""
    model = jitnn_model(d, k)
    flops = 0
    for start in range(0, n, batch):
        m = min(batch, n - start)
        for i, layer in enumerate(model.layers):
            f = layer.flops(m, need_input_grad=i > 0)
            flops += f["forward"] + f["backward"]
    return flops / (peak_gflops(dtype) * 1e9)


def time_round_robin(peers, repeats):
    for f in peers.values():
        f()  # warm-up: compilation, allocation, thread pools
    samples = {name: [] for name in peers}
    for _ in range(repeats):
        for name, f in peers.items():
            time.sleep(0.2)  # let the previous peer's spinning BLAS/OpenMP threads park
            t0 = time.perf_counter()
            f()
            samples[name].append(time.perf_counter() - t0)
    return {name: float(np.median(s)) for name, s in samples.items()}


def accuracy_run(x, y, xt, yt, k, epochs, batch, threads):
    """Full training of jitnn and PyTorch: (seconds, test accuracy) each."""
    out = {}
    model = jitnn_model(x.shape[1], k)
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, seed=0)
    out["jitnn"] = (time.perf_counter() - t0, model.evaluate(xt, yt)[1])
    try:
        import torch
    except ImportError:
        return out
    torch.set_num_threads(threads)
    net, opt = torch_model(x.shape[1], k)
    xtr, ytr = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        torch_epoch(net, opt, xtr, ytr, batch, gen)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    out["torch"] = (time.perf_counter() - t0, acc)
    return out


def step_overhead(blocks=8, steps=200, batch=32):
    """µs per step of the compiled step and of the layer-by-layer loop on a small MLP (32-64-Dropout-32-10,
    Adam, accuracy), where the kernels cost little and the cost between them shows; alternating blocks."""
    rng = np.random.default_rng(0)
    x = rng.random((batch * steps, 32), dtype=np.float32)
    y = rng.integers(0, 10, x.shape[0])

    def make():
        m = jitnn.Sequential([jitnn.Dense(64, "relu", input_dim=32), jitnn.Dropout(0.2), jitnn.Dense(32, "relu"),
                              jitnn.Dense(10, "softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        m.build(32, seed=0)
        return m

    models, times = {True: make(), False: make()}, {True: [], False: []}
    for block in range(blocks + 1):
        for enabled in (True, False):
            compiled_step.ENABLED = enabled
            t0 = time.perf_counter()
            models[enabled].fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=1)
            if block:  # the first block compiles
                times[enabled].append((time.perf_counter() - t0) / steps * 1e6)
    compiled_step.ENABLED = True
    c, lay = float(np.median(times[True])), float(np.median(times[False]))
    print(f"us per step, batch {batch}, {jitnn.get_num_threads()} threads: compiled {c:.0f}, layer by layer "
          f"{lay:.0f}, x {lay / c:.2f}")


def inference(batches, blocks, threads):
    """Predict time of the reference MLP, jitnn against PyTorch (eval forward + softmax, no_grad), at each
    batch size: median of alternating blocks of back-to-back calls (bench_gemm.median_times)."""
    import torch
    from bench_gemm import median_times

    _, (x, y), (xt, _) = jitnn.datasets.load_dataset("auto")
    k = int(y.max()) + 1
    model = jitnn_model(x.shape[1], k)
    model.fit(x[:2048], y[:2048], epochs=1, batch_size=64, verbose=0, seed=0)
    torch.set_num_threads(threads)
    net, _ = torch_model(x.shape[1], k)
    net.eval()
    print(f"predict, 784-512-128-64-{k}, float32, {threads} threads; median of {blocks} alternating blocks")
    for b in batches:
        xb = xt[:b]
        xb_t = torch.from_numpy(np.ascontiguousarray(xb))

        def torch_predict(xb_t=xb_t):
            with torch.no_grad():
                return torch.softmax(net(xb_t), 1)

        tj, tt = median_times([lambda xb=xb, b=b: model.predict(xb, batch_size=b), torch_predict], blocks)
        print(f"  batch {b:5d}: jitnn {tj * 1e6:9.1f} us, PyTorch {tt * 1e6:9.1f} us, ratio PyTorch/jitnn "
              f"{tt / tj:.2f}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="1000,64,32")
    p.add_argument("--samples", type=int, default=60000, help="rows per timed epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peers", default="jitnn,jitnn-layers,tutorial,torch,sklearn")
    p.add_argument("--accuracy", type=int, default=0, metavar="EPOCHS", help="also train to accuracy")
    p.add_argument("--step-overhead", action="store_true", help="only the per-step cost of the two paths")
    p.add_argument("--inference", action="store_true",
                   help="only predict at --batch-sizes, jitnn against PyTorch (median of --repeats blocks)")
    args = p.parse_args(argv)
    if args.step_overhead:
        step_overhead()
        return
    if args.inference:
        inference([int(b) for b in args.batch_sizes.split(",")], args.repeats, jitnn.get_num_threads())
        return
    jitnn.peak.estimate(refresh=True)  # "x bound" against today's peak: a figure cached under load only rises
    name, (x, y), (xt, yt) = jitnn.datasets.load_dataset("auto")
    x, y = x[:args.samples], y[:args.samples]
    k = int(y.max()) + 1
    threads = jitnn.get_num_threads()
    which = args.peers.split(",")
    available = [w for w in which if w in ("jitnn", "jitnn-layers", "tutorial") or _importable(w)]
    print(f"{name}: {x.shape[0]} samples per epoch, 784-512-128-64-{k}, Adam, float32, {threads} threads; "
          f"median of {args.repeats} epochs, peers timed round-robin")
    print(f"{'batch':>6s} " + " ".join(f"{w + ' s':>14s}" for w in available)
          + " " + " ".join(f"{'x ' + w:>14s}" for w in available if w != "jitnn") + f" {'bound s':>9s} {'x bound':>8s}")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        peers = make_peers(x, y, batch, k, threads, available)
        times = time_round_robin(peers, args.repeats)
        ratios = [times[w] / times["jitnn"] for w in available if w != "jitnn"]
        bound = gemm_bound_seconds(x.shape[0], x.shape[1], k, batch)
        print(f"{batch:6d} " + " ".join(f"{times[w]:14.3f}" for w in available)
              + " " + " ".join(f"{r:14.2f}" for r in ratios)
              + f" {bound:9.3f} {times['jitnn'] / bound if 'jitnn' in times else float('nan'):8.2f}"
              + (f"  (jitnn: {peers['jitnn'].model.step_path})" if "jitnn" in peers else ""), flush=True)
    print("(x peer = peer time / jitnn time: how many times faster jitnn trains; x bound = jitnn time / the "
          "GEMM-bound time at jitnn.peak)")
    if args.accuracy:
        _, (xf, yf), _ = jitnn.datasets.load_dataset(name)
        for peer, (sec, acc) in accuracy_run(xf, yf, xt, yt, k, args.accuracy, 128, threads).items():
            print(f"{peer}: {args.accuracy} epochs at batch 128 in {sec:.1f} s, test accuracy {acc:.4f}")


def _importable(mod):
    try:
        __import__({"sklearn": "sklearn", "torch": "torch"}[mod])
        return True
    except ImportError:
        return False


# --- pytest-benchmark -----------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("batch", [64, 1000])
    def test_train_epoch(benchmark, batch):
        _, (x, y), _ = jitnn.datasets.load_dataset("auto")
        x, y = x[:8000], y[:8000]
        model = jitnn_model(x.shape[1], int(y.max()) + 1)
        benchmark(lambda: model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=1))


if __name__ == "__main__":
    main()
