"""Sparse benchmark: jitnn's CSR kernels against scipy.sparse, in one run.

    python perf/bench_sparse.py            # the tables: ms per call and the scipy/jitnn ratio
    python perf/bench_sparse.py --quick    # fewer repeats, the headline shape only
    pytest perf/bench_sparse.py --benchmark-only   # the headline through pytest-benchmark

Headline: C = A @ B with A an 8192 x 8192 float32 CSR matrix at 0.1%, 1%, 4% and 10% density and B
dense 8192 x 256 (the issue's goal: >= 2x scipy at 1%). Then the other products at training shapes:
X @ W with W a pruned CSR layer (784 x 512) and X a dense batch; Xᵀ @ dZ with X a CSR input batch.

Each figure is the median of several timed blocks after a warm-up; peers take turns block by block
with a pause before each block (``bench_gemm.median_times``), so spinning threads never bill the other.
Both sides allocate their result, as ``a @ b`` does; the ``out=`` column reuses one buffer.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_gemm import median_times

import jitnn
from jitnn.sparse import CSRMatrix, dense_spmm, spmm, spmm_t

DENSITIES = [0.001, 0.01, 0.04, 0.10]
HEADLINE = (8192, 8192, 256)  # A rows, A cols (= B rows), B cols


def random_csr(m, k, density, dtype=np.float32, seed=0):
    """(scipy csr_array, the same matrix as a CSRMatrix sharing its arrays), sorted indices."""
    import scipy.sparse as sp

    s = sp.random_array((m, k), density=density, format="csr", dtype=dtype, rng=seed)
    s.sort_indices()
    return s, CSRMatrix.from_scipy(s)


def headline_rows(repeats, densities=DENSITIES, shape=HEADLINE, dtype=np.float32):
    m, k, n = shape
    b = np.random.default_rng(1).standard_normal((k, n)).astype(dtype)
    out = np.empty((m, n), dtype)
    rows = []
    for d in densities:
        s, a = random_csr(m, k, d, dtype)
        calls = [lambda a=a: a @ b, lambda a=a: spmm(a, b, out), lambda s=s: s @ b]
        t_jit, t_out, t_sp = median_times(calls, repeats)
        rows.append((f"A @ B  {m}x{k} @ {k}x{n}", d, a.nnz, 2.0 * a.nnz * n, t_jit, t_out, t_sp))
    return rows


def training_rows(repeats, dtype=np.float32):
    """The products a sparse network runs: pruned-weight forward and sparse-input weight gradient."""
    rng = np.random.default_rng(2)
    rows = []
    for batch, density in ((64, 0.05), (64, 0.02), (1000, 0.05)):
        s, w = random_csr(784, 512, density, dtype, seed=3)
        x = np.maximum(rng.standard_normal((batch, 784)), 0).astype(dtype)  # ReLU-like: half zeros
        out = np.empty((batch, 512), dtype)
        calls = [lambda x=x, w=w: x @ w, lambda x=x, w=w, out=out: dense_spmm(x, w, out),
                 lambda x=x, s=s: x @ s]
        t = median_times(calls, repeats)
        rows.append((f"X @ W  b={batch} W 784x512", density, w.nnz, 2.0 * w.nnz * batch, *t))
    for batch, features, density in ((128, 8192, 0.01), (128, 100_000, 0.001)):
        s, xb = random_csr(batch, features, density, dtype, seed=4)
        dz = rng.standard_normal((batch, 256)).astype(dtype)
        out = np.empty((features, 256), dtype)
        calls = [lambda xb=xb, dz=dz: spmm_t(xb, dz), lambda xb=xb, dz=dz, out=out: spmm_t(xb, dz, out),
                 lambda s=s, dz=dz: s.T @ dz]
        t = median_times(calls, repeats)
        rows.append((f"X.T @ dZ  X {batch}x{features} CSR, dZ x256", density, xb.nnz, 2.0 * xb.nnz * 256, *t))
    return rows


def print_table(rows, title):
    print(f"\n{title}")
    print(f"{'product':42s} {'density':>7s} {'nnz':>9s} {'scipy ms':>9s} {'jitnn ms':>9s} {'out= ms':>8s} "
          f"{'GFLOP/s':>8s} {'scipy/jitnn':>11s}")
    for name, d, nnz, flops, t_jit, t_out, t_sp in rows:
        print(f"{name:42s} {100 * d:6.1f}% {nnz:9d} {1e3 * t_sp:9.2f} {1e3 * t_jit:9.2f} {1e3 * t_out:8.2f} "
              f"{flops / t_out / 1e9:8.1f} {t_sp / t_jit:11.2f}")


def mlp(d=784, k=10, seed=0):
    """The reference MLP 784-512-128-64-10 (built, compiled; weights from ``seed``)."""
    model = jitnn.Sequential([jitnn.Dense(512, activation="relu", input_dim=d), jitnn.Dense(128, activation="relu"),
                              jitnn.Dense(64, activation="relu"), jitnn.Dense(k, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.build(d, seed=seed)
    return model


def pruned_inference_rows(repeats, batch=64, sparsities=(0.9, 0.95, 0.98)):
    """(sparsity, dense s, pruned s) for predict() on one batch of the reference MLP."""
    x = np.random.default_rng(0).random((batch, 784), dtype=np.float64).astype(np.float32)
    dense = mlp()
    rows = []
    for sp in sparsities:
        pruned = jitnn.prune(dense, sparsity=sp)
        t_dense, t_pruned = median_times([lambda: dense.predict(x), lambda pruned=pruned: pruned.predict(x)], repeats)
        rows.append((sp, t_dense, t_pruned))
    return rows


def sparse_input_training_rows(repeats, n=8192, d=8192, density=0.01, batch=128):
    """(dense-input s, CSR-input s) for one epoch of a 2-layer classifier on the same bag-of-words-like data."""
    rng = np.random.default_rng(0)
    _, xs = random_csr(n, d, density)
    y = (rng.random(n) < 0.5).astype(np.int64)
    xd = xs.to_dense()

    def model():
        m = jitnn.Sequential([jitnn.Dense(256, activation="relu", input_dim=d), jitnn.Dense(2, activation="softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        m.build(d, seed=0)
        return m

    md, ms = model(), model()
    t_dense, t_sparse = median_times([lambda: md.fit(xd, y, epochs=1, batch_size=batch, verbose=0, seed=1),
                                      lambda: ms.fit(xs, y, epochs=1, batch_size=batch, verbose=0, seed=1)],
                                     repeats, min_seconds=0.0)
    return [(n, d, density, batch, t_dense, t_sparse)]


def pruned_accuracy(epochs=15, sparsity=0.95, schedule=(0.5, 0.75, 0.9, 0.95), per_step=2, extra=2):
    """Fashion-MNIST test accuracy: dense, then global magnitude pruning raised gradually to ``sparsity``
    (Zhu & Gupta 2017, https://arxiv.org/abs/1710.01878) with ``per_step`` fine-tuning epochs at each
    level and ``extra`` more at the end; also one-shot pruning with the same fine-tuning budget."""
    name, (x, y), (xt, yt) = jitnn.datasets.load_dataset("auto")
    dense = mlp(x.shape[1], int(y.max()) + 1)
    dense.fit(x, y, epochs=epochs, batch_size=128, verbose=0, seed=0)
    acc = {"dense": dense.evaluate(xt, yt)[1]}
    budget = per_step * len(schedule) + extra
    one_shot = jitnn.prune(dense, sparsity=sparsity, scope="global")
    one_shot.fit(x, y, epochs=budget, batch_size=128, verbose=0, seed=1)
    acc["one-shot"] = one_shot.evaluate(xt, yt)[1]
    model = dense
    for i, level in enumerate(schedule):
        model = jitnn.prune(model, sparsity=level, scope="global")
        model.fit(x, y, epochs=per_step, batch_size=128, verbose=0, seed=10 + i)
    model.fit(x, y, epochs=extra, batch_size=128, verbose=0, seed=20)
    acc["gradual"] = model.evaluate(xt, yt)[1]
    kept = sum(int((layer.W != 0).sum()) for layer in model.layers)
    total = sum(layer.W.size for layer in model.layers)
    return name, acc, budget, 1 - kept / total


def print_network(repeats, accuracy):
    print("\nPruned MLP 784-512-128-64-10 inference, predict() on one batch of 64 (dense jitnn vs pruned)")
    print(f"{'sparsity':>9s} {'dense ms':>9s} {'pruned ms':>10s} {'dense/pruned':>13s}")
    for sp, td, tp in pruned_inference_rows(repeats):
        print(f"{100 * sp:8.0f}% {1e3 * td:9.3f} {1e3 * tp:10.3f} {td / tp:13.2f}")
    print("\nSparse-input training: one epoch, Dense(256, relu) -> Dense(2, softmax), same data dense vs CSR")
    print(f"{'rows':>6s} {'features':>9s} {'density':>8s} {'batch':>6s} {'dense s':>8s} {'CSR s':>8s} {'dense/CSR':>10s}")
    for n, d, dens, b, td, ts in sparse_input_training_rows(max(3, repeats // 2)):
        print(f"{n:6d} {d:9d} {100 * dens:7.1f}% {b:6d} {td:8.3f} {ts:8.3f} {td / ts:10.2f}")
    if accuracy:
        name, acc, budget, sp = pruned_accuracy(epochs=accuracy)
        print(f"\n{name}, 784-512-128-64-10: dense after {accuracy} epochs: test accuracy {acc['dense']:.4f}")
        for kind in ("one-shot", "gradual"):
            print(f"  {kind:8s} global pruning to {100 * sp:.1f}% + {budget} fine-tuning epochs: "
                  f"{acc[kind]:.4f} ({100 * (acc[kind] - acc['dense']):+.2f} points)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats, the headline only")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per figure (median taken)")
    p.add_argument("--network", action="store_true", help="only the pruned-MLP and sparse-input training rows")
    p.add_argument("--accuracy", type=int, default=0, metavar="EPOCHS",
                   help="with --network: train EPOCHS, prune to 95%% (one-shot and gradual), fine-tune, report accuracy")
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    import numba
    import scipy

    print(f"jitnn {jitnn.__version__}, numba {numba.__version__}, scipy {scipy.__version__}, "
          f"threads: jitnn {jitnn.get_num_threads()}, float32, median of {repeats}")
    if args.network:
        print_network(repeats, args.accuracy)
        return
    print_table(headline_rows(repeats), "CSR @ dense (SpMM)")
    if not args.quick:
        print_table(training_rows(repeats), "Training shapes: pruned-weight forward, sparse-input gradient")


# --- pytest-benchmark -----------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - the table above needs no pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module", params=[0.01, 0.04], ids=["1pct", "4pct"])
    def headline(request):
        m, k, n = HEADLINE
        s, a = random_csr(m, k, request.param)
        b = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
        return s, a, b

    @pytest.mark.parametrize("impl", ["jitnn", "scipy"])
    def test_spmm(benchmark, headline, impl):
        s, a, b = headline
        out = np.empty((a.shape[0], b.shape[1]), np.float32)
        if impl == "jitnn":
            benchmark(spmm, a, b, out)
        else:
            benchmark(s.__matmul__, b)
        benchmark.extra_info["gflops_per_call"] = 2.0 * a.nnz * b.shape[1] / 1e9


if __name__ == "__main__":
    main()
