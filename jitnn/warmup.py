"""Fill the compile cache ahead of time, so a user's first ``fit`` does not wait for numba.

    python -m jitnn.warmup                      # float32 and float64: GEMM, and a Dense MLP's kernels
    python -m jitnn.warmup --dtype float32      # only what float32 models use
    JITNN_CACHE_DIR=/opt/jitnn-cache python -m jitnn.warmup   # e.g. in a Docker build step

It runs each kernel once on tiny inputs: the GEMM (every layout reaches one compiled function per
dtype), the matrix-vector path, and one training step and prediction of a small Dense network for
each common activation, loss and optimizer, so every kernel a Dense MLP calls is compiled and written to
the on-disk cache (``jitnn.config.CACHE_DIR``). Later processes load the machine code instead of
compiling it. The cache is specific to the CPU and the numba version: run it on the machine (or image)
that will train.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jitnn import config
from jitnn.linalg import gemm, matmul

ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
OPTIMIZERS = ("adam", "sgd", "rmsprop")


def warm_gemm(dtype) -> None:
    """One GEMM product and one matrix-vector product of ``dtype``, through the public API."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 5)).astype(dtype)
    b = rng.standard_normal((5, 3)).astype(dtype)
    gemm(a, b, bias=np.zeros(3, dtype), activation="relu")
    matmul(a, b[:, 0])


def warm_mlp(dtype) -> None:
    """One fit step, evaluate and predict of small Dense networks: the kernels a Dense MLP uses."""
    from jitnn import Dense, Dropout, Sequential

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6)).astype(dtype)
    labels = rng.integers(0, 3, 16)
    for act, opt in zip(ACTIVATIONS, OPTIMIZERS + OPTIMIZERS[:1]):
        model = Sequential([Dense(8, activation=act, input_dim=6), Dropout(0.1), Dense(3, activation="softmax")],
                           dtype=np.dtype(dtype).name)
        model.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
        model.fit(x, labels, epochs=1, batch_size=8, verbose=0)
        model.evaluate(x, labels, verbose=0)
        model.predict(x)
    reg = Sequential([Dense(4, activation="relu", input_dim=6), Dense(1)], dtype=np.dtype(dtype).name)
    reg.compile(loss="mse", optimizer="adam")
    reg.fit(x, x[:, :1], epochs=1, batch_size=8, verbose=0)


def warmup(dtypes=config.FLOAT_DTYPES, mlp=True, verbose=True) -> dict:
    """Compile (or load) the kernels for ``dtypes``; returns {step name: seconds}."""
    times = {}
    for dt in dtypes:
        steps = [("gemm", warm_gemm)] + ([("dense mlp", warm_mlp)] if mlp else [])
        for name, fn in steps:
            t0 = time.perf_counter()
            fn(dt)
            times[f"{dt} {name}"] = time.perf_counter() - t0
            if verbose:
                print(f"{dt:8s} {name:10s} {times[f'{dt} {name}']:6.1f} s", flush=True)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m jitnn.warmup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", nargs="+", default=list(config.FLOAT_DTYPES), choices=list(config.FLOAT_DTYPES))
    p.add_argument("--gemm-only", action="store_true", help="compile the products only, not the MLP kernels")
    args = p.parse_args(argv)
    where = config.CACHE_DIR or ("numba's default (__pycache__ beside the package)" if config.CACHE else None)
    if where is None:
        p.exit(1, "jitnn.warmup: the compile cache is off (JITNN_CACHE=0 or no writable directory): "
                  "nothing would be kept\n")
    print(f"jitnn.warmup: caching compiled kernels in {where}")
    total = sum(warmup(args.dtype, mlp=not args.gemm_only).values())
    print(f"done in {total:.1f} s")


if __name__ == "__main__":
    main()
