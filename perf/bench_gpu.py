"""GPU benchmarks (issue 6): jitnn's tiled GEMM against cuBLAS (through CuPy), and the tutorial's
training benchmark end to end, each timed with CUDA events after a warm-up.

    python perf/bench_gpu.py                     # GEMM 1024..8192 + 10 epochs of 60k samples, batch 1000
    python perf/bench_gpu.py --gemm-only --sizes 1024 4096
    python perf/bench_gpu.py --conv-only         # the reference CNN's training step, GPU vs CPU
    python perf/bench_gpu.py --smoke             # tiny shapes: checks the script (also under the simulator)

GEMM: C = A @ B in float32, square sizes, median GFLOP/s of ``--repeats`` timed calls after two
warm-ups; the peer is ``cupy.matmul`` (cuBLAS SGEMM; CuPy leaves TF32 off unless CUPY_TF32=1, so
both run plain FP32 FMAs, no tensor cores). Training: 784-512-128-64-10 relu/softmax, Adam, batch
1000, as the numpy tutorial's benchmark; Fashion-MNIST when installed, else random data of the same
shape (the timing does not depend on the values). One warm-up epoch compiles every kernel, then
``--epochs`` epochs are timed between two CUDA events; PyTorch on the same GPU is the peer when it
is importable with CUDA. Conv: issue 12's reference CNN (Conv 32 3x3 relu, MaxPool 2, Conv 64 3x3 relu,
MaxPool 2, Flatten, Dense 128 relu, Dropout 0.3, Dense 10 softmax; Adam 1e-3, batch 64) on 28x28x1
images, milliseconds per training step (forward + backward + update) on the GPU (CUDA events) and on
the CPU (host clock), each after a warm-up epoch. Results print as a table and, with ``--json``, as a
file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def _event_time(fn, repeats, cuda):
    """Median milliseconds of ``fn()`` over ``repeats`` calls, each between two CUDA events."""
    times = []
    for _ in range(repeats):
        e0, e1 = cuda.event(), cuda.event()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times)


def bench_gemm(sizes, repeats):
    from numba import cuda

    from jitnn.cuda.gemm import gemm_into, pick_tile

    try:
        import cupy
    except ImportError:
        cupy = None
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        da, db = cuda.to_device(a), cuda.to_device(b)
        dc = cuda.device_array((n, n), np.float32)
        run = lambda da=da, db=db, dc=dc: gemm_into(da, db, dc)
        for _ in range(2):
            run()
        ms = _event_time(run, repeats, cuda)
        flops = 2.0 * n ** 3
        row = {"n": n, "tile": pick_tile(n, n), "jitnn_gflops": flops / ms / 1e6}
        if n <= 2048:  # exactness spot check against float64 on the host
            ref = a[:64].astype(np.float64) @ b.astype(np.float64)
            row["max_rel_err"] = float(np.abs(dc.copy_to_host()[:64] - ref).max() / np.abs(ref).max())
        if cupy is not None:
            ca, cb = cupy.asarray(a), cupy.asarray(b)
            cc = cupy.empty((n, n), np.float32)
            crun = lambda ca=ca, cb=cb, cc=cc: cupy.matmul(ca, cb, out=cc)
            for _ in range(2):
                crun()
            cms = _event_time(crun, repeats, cuda)
            row["cublas_gflops"] = flops / cms / 1e6
            row["ratio"] = row["jitnn_gflops"] / row["cublas_gflops"]
        rows.append(row)
        print(f"GEMM {n:5d}: jitnn {row['jitnn_gflops']:9.1f} GFLOP/s ({row['tile']} tile)"
              + (f"  cuBLAS {row['cublas_gflops']:9.1f}  ratio {row['ratio']:.3f}" if "ratio" in row else ""),
              flush=True)
    return rows


def _data(samples, smoke):
    if not smoke:
        try:
            from jitnn.datasets import load_fashion_mnist

            (x, y), _ = load_fashion_mnist()
            return x[:samples].astype(np.float32), y[:samples], "fashion-mnist"
        except Exception:  # noqa: BLE001, S110 - no dataset on this machine: same-shape random data
            pass
    rng = np.random.default_rng(0)
    dim = 12 if smoke else 784
    return rng.random((samples, dim), dtype=np.float32), rng.integers(0, 10, samples), "random"


def bench_training(epochs, samples, batch, smoke):
    from numba import cuda

    import jitnn
    from jitnn import Dense, Sequential

    x, y, source = _data(samples, smoke)
    widths = (8, 8, 8) if smoke else (512, 128, 64)
    model = Sequential([Dense(widths[0], "relu"), Dense(widths[1], "relu"), Dense(widths[2], "relu"),
                        Dense(10, "softmax")], device="cuda")
    model.compile("categorical_crossentropy", jitnn.optimizers.Adam(1e-3), ["accuracy"])
    t0 = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=batch, seed=0, verbose=0)  # warm-up: compiles every kernel
    warm = time.perf_counter() - t0
    e0, e1 = cuda.event(), cuda.event()
    e0.record()
    hist = model.fit(x, y, epochs=epochs, batch_size=batch, seed=1, verbose=0)
    e1.record()
    e1.synchronize()
    seconds = e0.elapsed_time(e1) / 1e3
    row = {"source": source, "samples": samples, "epochs": epochs, "batch": batch, "jitnn_s": seconds,
           "warmup_s": warm, "final_loss": hist.history["loss"][-1], "final_acc": hist.history["accuracy"][-1]}
    torch_s = None if smoke else _torch_training(x, y, epochs, batch, widths)
    if torch_s is not None:
        row["torch_s"] = torch_s
        row["speedup_vs_torch"] = torch_s / seconds
    print(f"training {epochs} epochs x {samples} ({source}), batch {batch}: jitnn {seconds:.3f} s"
          + (f", PyTorch {torch_s:.3f} s" if torch_s else "") + f"; warm-up epoch {warm:.1f} s", flush=True)
    return row


def _torch_training(x, y, epochs, batch, widths):
    """The same model, optimizer and batches in PyTorch on the GPU (device-resident, no DataLoader)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False  # plain FP32, as jitnn
    dev = torch.device("cuda")
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y.astype(np.int64)).to(dev)
    layers, d = [], x.shape[1]
    for w in widths:
        layers += [torch.nn.Linear(d, w), torch.nn.ReLU()]
        d = w
    net = torch.nn.Sequential(*layers, torch.nn.Linear(d, 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    lossf = torch.nn.CrossEntropyLoss()

    def epoch():
        perm = torch.randperm(xt.shape[0], device=dev)
        for s in range(0, xt.shape[0], batch):
            idx = perm[s:s + batch]
            opt.zero_grad(set_to_none=True)
            lossf(net(xt[idx]), yt[idx]).backward()
            opt.step()

    epoch()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(epochs):
        epoch()
    e1.record()
    e1.synchronize()
    return e0.elapsed_time(e1) / 1e3


def _images(samples, smoke):
    """(x, y, source): Fashion-MNIST images (N, 28, 28, 1) when installed, else random ones (12x12 for --smoke)."""
    if not smoke:
        try:
            from jitnn.datasets import load_fashion_mnist

            (x, y), _ = load_fashion_mnist(flatten=False)
            return x[:samples], y[:samples], "fashion-mnist"
        except Exception:  # noqa: BLE001, S110 - no dataset on this machine: same-shape random data
            pass
    rng = np.random.default_rng(0)
    side = 12 if smoke else 28
    return rng.random((samples, side, side, 1), dtype=np.float32), rng.integers(0, 10, samples), "random"


def _reference_cnn(device, smoke):
    import jitnn
    from jitnn import Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Sequential

    f1, f2, units = (4, 8, 16) if smoke else (32, 64, 128)
    model = Sequential([Conv2D(f1, 3, activation="relu"), MaxPooling2D(2), Conv2D(f2, 3, activation="relu"),
                        MaxPooling2D(2), Flatten(), Dense(units, "relu"), Dropout(0.3), Dense(10, "softmax")],
                       device=device)
    model.compile("sparse_categorical_crossentropy", jitnn.optimizers.Adam(1e-3), ["accuracy"])
    return model


def bench_conv(samples, batch, smoke):
    """Milliseconds per training step of the reference CNN on the GPU and on the CPU (same data, seed)."""
    from numba import cuda

    from jitnn.cuda import simulated

    x, y, source = _images(samples, smoke)
    steps = -(-samples // batch)
    row = {"source": source, "samples": samples, "batch": batch, "image": list(x.shape[1:])}
    for device in ("cuda", "cpu"):
        model = _reference_cnn(device, smoke)
        model.fit(x, y, epochs=1, batch_size=batch, seed=0, verbose=0)  # warm-up: compiles every kernel
        if device == "cuda" and not simulated():  # the simulator's events carry no time
            e0, e1 = cuda.event(), cuda.event()
            e0.record()
            model.fit(x, y, epochs=1, batch_size=batch, seed=1, verbose=0)
            e1.record()
            e1.synchronize()
            ms = e0.elapsed_time(e1)
        else:
            t0 = time.perf_counter()
            model.fit(x, y, epochs=1, batch_size=batch, seed=1, verbose=0)
            ms = (time.perf_counter() - t0) * 1e3
        row[f"{device}_ms_per_step"] = ms / steps
    row["gpu_speedup"] = row["cpu_ms_per_step"] / max(row["cuda_ms_per_step"], 1e-9)
    print(f"reference CNN, batch {batch}, {steps} steps ({source}): GPU {row['cuda_ms_per_step']:.2f} ms/step, "
          f"CPU {row['cpu_ms_per_step']:.2f} ms/step, GPU {row['gpu_speedup']:.1f}x", flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--conv-samples", type=int, default=6400, help="images per timed conv epoch")
    ap.add_argument("--conv-batch", type=int, default=64)
    ap.add_argument("--gemm-only", action="store_true")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--conv-only", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, to check the script itself")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    import jitnn.cuda

    jitnn.cuda.require()
    if args.smoke:
        args.sizes, args.repeats, args.epochs, args.samples, args.batch = [65], 2, 1, 64, 32
        args.conv_samples, args.conv_batch = 16, 8
    result = {"device": jitnn.cuda.device_name()}
    print(f"device: {result['device']}", flush=True)
    only = args.gemm_only or args.train_only or args.conv_only
    if args.gemm_only or not only:
        result["gemm"] = bench_gemm(args.sizes, args.repeats)
    if args.train_only or not only:
        result["training"] = bench_training(args.epochs, args.samples, args.batch, args.smoke)
    if args.conv_only or not only:
        result["conv"] = bench_conv(args.conv_samples, args.conv_batch, args.smoke)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
