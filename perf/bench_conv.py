"""Convolution and pooling kernels against PyTorch CPU, the reference CNN's layers, in one run.

    python perf/bench_conv.py                  # the table at batch 64 and 256, float32
    python perf/bench_conv.py --sweep          # also: algorithm and chunk-size alternatives per layer
    python perf/bench_conv.py --denormals      # GEMM on denormal vs normal inputs, and with FTZ/DAZ set
    python perf/bench_conv.py --no-table --end-to-end [--train-images 60000]   # the whole reference CNN
    python perf/bench_conv.py --no-table --fold  # inference of examples/fashion_mnist_cnn.py, BN folded or not
    python perf/bench_conv.py --no-table --accuracy 10   # the reference CNN trained 10 epochs by each library

The reference CNN (issue 12): Conv 32 3x3 relu on 28x28x1 -> MaxPool 2 -> Conv 64 3x3 relu -> MaxPool 2.
--end-to-end trains the whole reference CNN (perf/report.py ``reference_cnn``: + Flatten, Dense 128 relu,
Dropout 0.3, Dense 10 softmax, Adam 1e-3) for one epoch over --train-images Fashion-MNIST images at
batch 64 and 256, jitnn and PyTorch (the same net, NCHW, ``nn.CrossEntropyLoss``) taking turns epoch by
epoch, median of --epoch-repeats each; then inference (``predict``/``model.eval()`` forward) at batch 1
and 64 through ``median_times``. Layer by layer, forward is conv + bias + relu (fused in jitnn's GEMM epilogue); backward is relu' then dW, db (and dX
for the second conv). PyTorch runs in its native NCHW layout with the same thread count; its backward
is ``aten.convolution_backward`` (what autograd calls). Times: median of alternating blocks
(``bench_gemm.median_times``); ratios are PyTorch time / jitnn time (> 1: jitnn faster).
"""

from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# jitnn first: its config sets GOMP_SPINCOUNT before any OpenMP runtime starts, and PyTorch's bundled
# libgomp reads it too, so neither library's idle workers spin on the core the other one is using.
# isort: off
import jitnn
import torch
import torch.nn.functional as F
# isort: on
from bench_gemm import median_times

from jitnn.kernels.conv import backprop_conv2d, conv2d, conv2d_geometry, conv2d_workspace, im2col
from jitnn.kernels.elementwise import RELU, backprop_activation
from jitnn.kernels.fpenv import FTZ_DAZ, set_mxcsr_bits
from jitnn.kernels.pooling import backprop_maxpool2d, maxpool2d, pool_geometry

# (name, H, W, C, F): the two 3x3 convolutions of the reference CNN, each followed by MaxPool 2.
LAYERS = [("conv1 28x28x1->32", 28, 28, 1, 32), ("conv2 13x13x32->64", 13, 13, 32, 64)]


class ConvCase:
    """One conv + relu + maxpool layer's operands in both layouts, and the calls each side makes."""

    def __init__(self, batch, h, w, c, f, dtype=np.float32, seed=0):
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((batch, h, w, c)).astype(dtype)
        self.w = (rng.standard_normal((3, 3, c, f)) / np.sqrt(9 * c)).astype(dtype)
        self.b = (0.1 * rng.standard_normal(f)).astype(dtype)
        self.oh, self.ow, self.pads = conv2d_geometry(h, w, 3, 3)
        self.y = np.empty((batch, self.oh, self.ow, f), dtype)
        self.dy = rng.standard_normal(self.y.shape).astype(dtype)
        self.dz = np.empty_like(self.dy)
        self.dx = np.empty_like(self.x) if c > 1 else None  # the first layer needs no dX
        self.dw = np.empty_like(self.w)
        self.db = np.empty_like(self.b)
        self.cols = conv2d_workspace(self.x.shape, self.w.shape, (self.oh, self.ow), dtype)
        ph, pw, _, _ = pool_geometry(self.oh, self.ow, (2, 2))
        self.p = np.empty((batch, ph, pw, f), dtype)
        self.arg = np.empty(self.p.shape, np.int32)
        self.dp = rng.standard_normal(self.p.shape).astype(dtype)
        self.flops = 2 * batch * self.oh * self.ow * f * 9 * c
        # PyTorch, NCHW
        self.tx = torch.tensor(self.x).permute(0, 3, 1, 2).contiguous()
        self.tw = torch.tensor(self.w).permute(3, 2, 0, 1).contiguous()
        self.tb = torch.tensor(self.b)
        self.ty = torch.relu(F.conv2d(self.tx, self.tw, self.tb))
        self.tdy = torch.tensor(self.dy).permute(0, 3, 1, 2).contiguous()
        self.tp, self.tidx = F.max_pool2d(self.ty, 2, return_indices=True)
        self.tdp = torch.tensor(self.dp).permute(0, 3, 1, 2).contiguous()

    def set_chunk(self, chunk_bytes):
        self.cols = conv2d_workspace(self.x.shape, self.w.shape, (self.oh, self.ow), self.x.dtype, chunk_bytes)

    # --- jitnn
    def fwd(self, algorithm="auto"):
        conv2d(self.x, self.w, self.b, self.y, pads=self.pads, act=RELU, cols=self.cols, algorithm=algorithm)

    def bwd(self):
        f = self.y.shape[3]
        backprop_activation(self.dy.reshape(-1, f), self.y.reshape(-1, f), self.y.reshape(-1, f), RELU, 0.0,
                            self.dz.reshape(-1, f))
        backprop_conv2d(self.x, self.w, self.dz, self.dx, self.dw, self.db, pads=self.pads, cols=self.cols)

    def pool(self):
        maxpool2d(self.y, 2, 2, 2, 2, 0, 0, self.p, self.arg)

    def pool_bwd(self):
        backprop_maxpool2d(self.dp, self.arg, 2, 2, 2, 2, 0, 0, self.dy)

    # --- PyTorch
    def t_fwd(self):
        torch.relu(F.conv2d(self.tx, self.tw, self.tb))

    def t_bwd(self):
        dz = torch.ops.aten.threshold_backward(self.tdy, self.ty, 0)
        torch.ops.aten.convolution_backward(dz, self.tx, self.tw, [self.tw.shape[0]], [1, 1], [0, 0], [1, 1],
                                            False, [0, 0], 1, [self.dx is not None, True, True])

    def t_pool(self):
        F.max_pool2d(self.ty, 2, return_indices=True)

    def t_pool_bwd(self):
        torch.ops.aten.max_pool2d_with_indices_backward(self.tdp, self.ty, [2, 2], [2, 2], [0, 0], [1, 1],
                                                        False, self.tidx)


def layer_table(batches, repeats):
    # Measured again (keeping the best seen): a figure cached under load would put %peak over 100.
    peak = jitnn.peak.estimate(refresh=True)["float32"]
    print(f"threads: jitnn {jitnn.get_num_threads()}, torch {torch.get_num_threads()}; "
          f"float32 peak (jitnn.peak) {peak:.1f} GFLOP/s")
    print(f"{'layer':28s} {'batch':>5s} {'op':10s} {'jitnn ms':>9s} {'torch ms':>9s} {'torch/jitnn':>11s} "
          f"{'GFLOP/s':>8s} {'%peak':>6s}")
    for batch in batches:
        for name, h, w, c, f in LAYERS:
            case = ConvCase(batch, h, w, c, f)
            for op, ours, theirs, flops in (("conv fwd", case.fwd, case.t_fwd, case.flops),
                                            ("conv bwd", case.bwd, case.t_bwd,
                                             case.flops * (2 if case.dx is not None else 1)),
                                            ("pool fwd", case.pool, case.t_pool, 0),
                                            ("pool bwd", case.pool_bwd, case.t_pool_bwd, 0)):
                tj, tt = median_times([ours, theirs], repeats)
                gf = flops / tj / 1e9 if flops else float("nan")
                pk = f"{100 * gf / peak:6.1f}" if flops else ""
                print(f"{name:28s} {batch:5d} {op:10s} {tj * 1e3:9.3f} {tt * 1e3:9.3f} {tt / tj:11.2f} "
                      f"{gf:8.1f} {pk:>6s}", flush=True)


def sweep(batches, repeats):
    """The alternatives per shape: direct vs im2col + GEMM, and patch-matrix chunk sizes."""
    chunks = [1 << 18, 1 << 20, 1 << 21, 1 << 23, 1 << 30]
    for batch in batches:
        for name, h, w, c, f in LAYERS:
            case = ConvCase(batch, h, w, c, f)
            fns, labels = [], []
            if c <= 8:
                fns.append(lambda case=case: case.fwd("direct"))
                labels.append("fwd direct")
            for cb in chunks:
                def run(cb=cb, case=case):
                    case.set_chunk(cb)
                    case.fwd("gemm")
                fns.append(run)
                labels.append(f"fwd gemm chunk {cb >> 10} KiB")
            if c > 8:
                def numpy_gemm(case=case):
                    # im2col, then OpenBLAS for the product: what the GEMM path would take with a GEMM at
                    # OpenBLAS speed (bias and relu left out, so a lower bound)
                    m = case.y.shape[0] * case.oh * case.ow
                    cols = np.empty((m, case.cols.shape[1]), case.x.dtype) if case.cols.shape[0] < m else case.cols
                    im2col(case.x, 0, case.x.shape[0], 3, 3, 1, 1, 1, 1, 0, 0, case.oh, case.ow, cols)
                    np.matmul(cols[:m], case.w.reshape(-1, case.w.shape[3]), out=case.y.reshape(m, -1))
                fns.append(numpy_gemm)
                labels.append("fwd im2col + OpenBLAS")
            times = median_times(fns, repeats)
            for label, t in zip(labels, times):
                print(f"{name:28s} {batch:5d} {label:26s} {t * 1e3:8.3f} ms {case.flops / t / 1e9:7.1f} GFLOP/s",
                      flush=True)
            fns = []
            for cb in chunks:
                def runb(cb=cb, case=case):
                    case.set_chunk(cb)
                    case.bwd()
                fns.append(runb)
            for cb, t in zip(chunks, median_times(fns, repeats)):
                print(f"{name:28s} {batch:5d} bwd chunk {cb >> 10:8d} KiB    {t * 1e3:8.3f} ms", flush=True)


# --- denormals ---------------------------------------------------------------------------------------
# MXCSR's FTZ/DAZ bits on every numba thread: jitnn/kernels/fpenv.py (fit sets them while it trains).


@njit(parallel=True)
def axpy(a, x, y):
    """y = a*x + y: an elementwise update (an optimizer's moment update has this shape)."""
    for i in prange(x.size):
        y[i] = a * x[i] + y[i]


def denormals(repeats):
    """GEMM and an elementwise update on normal vs denormal data, with MXCSR's FTZ/DAZ off and on."""
    rng = np.random.default_rng(0)
    tiny = np.finfo(np.float32).tiny  # 1.18e-38, the smallest normal float32
    threads = jitnn.get_num_threads()
    csr = np.zeros(numba.config.NUMBA_NUM_THREADS, np.int32)
    m, k, n = 7744, 288, 64  # conv2's forward GEMM at batch 64
    a = rng.uniform(0.5, 1, (m, k)).astype(np.float32)
    b = rng.uniform(0.5, 1, (k, n)).astype(np.float32)
    cases = {
        "normal x normal": (a, b),
        "denormal A (1e-39) x normal B": ((a * 1e-39).astype(np.float32), b),
        "normal A, B -> denormal products (1e-20 x 1e-20)": ((a * 1e-20).astype(np.float32),
                                                            (b * 1e-20).astype(np.float32)),
    }
    x = rng.uniform(0.5, 1, 1 << 22).astype(np.float32)
    ax = {"normal": x, "denormal": (x * (tiny / 4)).astype(np.float32)}
    print(f"\ndenormals, float32, {threads} threads (median of {repeats} blocks, ms)")
    for flush in (False, True):
        set_mxcsr_bits(FTZ_DAZ, flush, numba.get_num_threads(), csr)
        states = {hex(int(v) & 0xFFFF) for v in csr[:threads]}
        print(f"FTZ/DAZ {'on ' if flush else 'off'} (MXCSR per thread: {sorted(states)})")
        for name, (p, q) in cases.items():
            c = np.empty((m, n), np.float32)
            t, = median_times([lambda p=p, q=q, c=c: jitnn.gemm(p, q, c)], repeats)
            zeros = np.mean(c == 0)
            print(f"  gemm {m}x{k}x{n} {name:48s} {t * 1e3:8.3f} ms  ({2 * m * n * k / t / 1e9:6.1f} GFLOP/s, "
                  f"{100 * zeros:.0f}% zeros in C)")
        for name, xv in ax.items():
            yv = xv.copy()
            t, = median_times([lambda xv=xv, yv=yv: axpy(np.float32(0.9), xv, yv)], repeats)
            print(f"  axpy 4M {name:48s} {t * 1e3:8.3f} ms")
    set_mxcsr_bits(FTZ_DAZ, False, numba.get_num_threads(), csr)


def torch_cnn(classes=10):
    """The reference CNN in PyTorch (NCHW), Keras' default initializers (glorot uniform, zero bias)."""
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(128, classes))
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def torch_epoch(net, opt, x, y, batch, gen):
    """One shuffled epoch of minibatch Adam on (N, 1, 28, 28) tensors; returns the mean loss."""
    net.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(x), generator=gen)
    total = 0.0
    for s in range(0, len(x), batch):
        idx = order[s:s + batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(x)


def end_to_end(batches, images, repeats, infer_repeats):
    """Training epochs and inference of the whole reference CNN, jitnn vs PyTorch, alternating."""
    import time

    from report import reference_cnn

    (x, y), (xt, _) = jitnn.datasets.load_fashion_mnist(flatten=False)
    x, y = x[:images], y[:images]
    xt_nchw = torch.from_numpy(np.ascontiguousarray(xt.transpose(0, 3, 1, 2)))
    x_nchw, y_t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)
    print(f"== reference CNN end to end: {len(x)} training images, {jitnn.get_num_threads()} threads each ==")
    for batch in batches:
        model = reference_cnn()
        model.fit(x[:2 * batch], y[:2 * batch], epochs=1, batch_size=batch, verbose=0, seed=0)  # compile
        net = torch_cnn()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        torch_epoch(net, opt, x_nchw[:2 * batch], y_t[:2 * batch], batch, gen)
        tj, tt = [], []
        for r in range(repeats):
            t = time.perf_counter()
            hj = model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=r)
            tj.append(time.perf_counter() - t)
            t = time.perf_counter()
            lt = torch_epoch(net, opt, x_nchw, y_t, batch, gen)
            tt.append(time.perf_counter() - t)
            print(f"  batch {batch:4d} epoch {r + 1}: jitnn {tj[-1]:7.2f} s (loss {hj.history['loss'][0]:.4f})  "
                  f"PyTorch {tt[-1]:7.2f} s (loss {lt:.4f})", flush=True)
        mj, mt = float(np.median(tj)), float(np.median(tt))
        scale = 60000 / len(x)
        print(f"  batch {batch:4d} median epoch: jitnn {mj:.2f} s, PyTorch {mt:.2f} s, ratio PyTorch/jitnn "
              f"{mt / mj:.2f}  (x{scale:.1f} for a 60000-image epoch: {mj * scale:.0f} s vs {mt * scale:.0f} s)")
    net.eval()
    for b in (1, 64):
        xb, xb_t = xt[:b], xt_nchw[:b]

        def torch_predict(xb_t=xb_t):
            with torch.no_grad():
                return torch.softmax(net(xb_t), 1)

        tj, tt = median_times([lambda xb=xb, b=b: model.predict(xb, batch_size=b), torch_predict], infer_repeats)
        print(f"  inference batch {b:3d}: jitnn {tj * 1e3:8.3f} ms, PyTorch {tt * 1e3:8.3f} ms, ratio "
              f"PyTorch/jitnn {tt / tj:.2f}")


def accuracy(epochs, batch):
    """The reference CNN trained ``epochs`` full epochs by each library, epochs alternating: each epoch's
    time and test accuracy, so that both the accuracy (issue 12: jitnn within half a point of PyTorch's)
    and the slowdown of later epochs (PyTorch's denormals, without ``torch.set_flush_denormal``) show."""
    import time

    from report import reference_cnn

    (x, y), (xt, yt) = jitnn.datasets.load_fashion_mnist(flatten=False)
    x_nchw, y_t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)
    xt_nchw = torch.from_numpy(np.ascontiguousarray(xt.transpose(0, 3, 1, 2)))
    print(f"== reference CNN, {epochs} epochs of {len(x)} images, batch {batch}, {jitnn.get_num_threads()} threads "
          f"each, test accuracy on {len(xt)} images (compile time included in jitnn's first epoch) ==")
    model = reference_cnn()
    torch.manual_seed(0)
    net = torch_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for epoch in range(epochs):
        t = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=epoch)
        tj = time.perf_counter() - t
        aj = float(np.mean(model.predict(xt, batch_size=1000).argmax(1) == yt))
        t = time.perf_counter()
        torch_epoch(net, opt, x_nchw, y_t, batch, gen)
        tt = time.perf_counter() - t
        net.eval()
        with torch.no_grad():
            at = float((net(xt_nchw).argmax(1).numpy() == yt).mean())
        rows.append((tj, aj, tt, at))
        print(f"  epoch {epoch + 1:2d}: jitnn {tj:6.1f} s, test accuracy {aj:.4f}   PyTorch {tt:6.1f} s, "
              f"test accuracy {at:.4f}", flush=True)
    tj, aj, tt, at = (np.array(c) for c in zip(*rows))
    last = slice(max(1, epochs - 3), epochs)  # the last three epochs (not the first: it compiles)
    print(f"  after {epochs} epochs: test accuracy jitnn {aj[-1]:.4f}, PyTorch {at[-1]:.4f} (difference "
          f"{(aj[-1] - at[-1]) * 100:+.2f} points); best epoch jitnn {aj.max():.4f}, PyTorch {at.max():.4f}")
    if epochs > 2:
        print(f"  epoch time, epoch 2 -> median of the last three: jitnn {tj[1]:.1f} -> {np.median(tj[last]):.1f} s, "
              f"PyTorch {tt[1]:.1f} -> {np.median(tt[last]):.1f} s; ratio PyTorch/jitnn over epochs 2-{epochs}: "
              f"{np.median(tt[1:] / tj[1:]):.2f} (median)")


def fold(repeats):
    """Inference of the example CNN (Conv → BN → ReLU blocks) before and after ``fold_batchnorm``."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    from fashion_mnist_cnn import build

    model = build()
    model.build((28, 28, 1), seed=0)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # moving statistics away from (0, 1), as after training
        if layer.kind == "BatchNormalization":
            layer.moving_mean[...] = rng.standard_normal(layer.moving_mean.shape)
            layer.moving_variance[...] = rng.uniform(0.5, 2.0, layer.moving_variance.shape)
    folded = model.fold_batchnorm()
    print(f"== BatchNorm folding: {len(model.layers)} layers -> {len(folded.layers)} ==")
    for b in (1, 64, 256):
        x = rng.random((b, 28, 28, 1)).astype(np.float32)
        diff = float(np.abs(model.predict(x) - folded.predict(x)).max())
        tu, tf = median_times([lambda x=x, b=b: model.predict(x, batch_size=b),
                               lambda x=x, b=b: folded.predict(x, batch_size=b)], repeats)
        print(f"  batch {b:3d}: unfolded {tu * 1e3:8.3f} ms, folded {tf * 1e3:8.3f} ms, speedup {tu / tf:.2f}x "
              f"(max |difference| {diff:.1e})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--denormals", action="store_true")
    ap.add_argument("--no-table", action="store_true")
    ap.add_argument("--end-to-end", action="store_true", help="train and run the whole reference CNN")
    ap.add_argument("--fold", action="store_true", help="inference with BatchNormalization folded or not")
    ap.add_argument("--train-images", type=int, default=60000, help="images per --end-to-end epoch")
    ap.add_argument("--epoch-repeats", type=int, default=3, help="alternating epochs per library and batch")
    ap.add_argument("--accuracy", type=int, default=0, metavar="EPOCHS",
                    help="train the reference CNN this many full epochs per library (batch: the first of --batches)")
    args = ap.parse_args(argv)
    torch.set_num_threads(jitnn.get_num_threads())
    if not args.no_table:
        layer_table(args.batches, args.repeats)
    if args.sweep:
        sweep(args.batches, args.repeats)
    if args.denormals:
        denormals(args.repeats)
    if args.fold:
        fold(args.repeats)
    if args.end_to_end:
        end_to_end(args.batches, args.train_images, args.epoch_repeats, args.repeats)
    if args.accuracy:
        accuracy(args.accuracy, args.batches[0])


if __name__ == "__main__":
    main()
