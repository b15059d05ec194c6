"""Hotspot report: where a training step's time goes, per layer and phase, in the shape of ``pprof -top``.

    python perf/report.py                              # reference MLP, batch 64 and 1000, table to stdout
    python perf/report.py --steps 20 --tree            # phases nested under their layer, with memory
    python perf/report.py --sort cum --batch-size 128
    python perf/report.py --format chrome --out trace.json.gz      # open in ui.perfetto.dev
    python perf/report.py --format speedscope --out prof.speedscope.json   # open in speedscope.app
    python perf/report.py --format json --out report.json       # schema "jitnn.profile", version 1
    python perf/report.py --format pprof --out prof.pb.gz       # then: pprof -top prof.pb.gz
    python perf/report.py --format svg --out prof.svg           # time and GFLOP/s bars (needs matplotlib)
    python perf/report.py --lines                      # line-level listings (line_profiler), see below
    python perf/report.py --model model.npz            # a model saved with Sequential.save
    python perf/report.py --model mynet.py             # a file whose build() returns a compiled Sequential
    python perf/report.py --model cnn                  # the reference CNN of issue 12 on 28x28x1 images

A model whose input is images (``input_shape=(28, 28, 1)``) gets the data set's rows reshaped to images.
With no --model it profiles the reference MLP 784-512-128-64-10 with Adam on Fashion-MNIST (the
embedded digits set when Fashion-MNIST is not installed). For each batch size the model trains
--warmup steps first (compiling or loading kernels: reported as compile time, not in the rows), then
--steps steps under ``jitnn.profile()``. The peak in the header comes from ``jitnn.peak`` (measured
once per machine and thread count, then cached).

--lines adds two listings through line_profiler, which cannot see inside compiled code:
  1. the Python-level training loop (jitnn.training.fit, Sequential.train_step/apply_gradients,
     Dense.forward/backward, Optimizer.step) over real steps: a compiled kernel call is one opaque line with its real time;
  2. the pure-Python versions (``py_func``) of the kernels behind the hottest rows, run interpreted
     on a small clone of the layer: which lines run and how often, NOT how fast they run compiled.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import importlib.util
import io
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jitnn
from jitnn import peak as peak_mod
from jitnn import report
from jitnn.kernels.blocking import SHORT_ROWS
from jitnn.kernels.micro import WIDE_ROW_PANELS

HIDDEN = (512, 128, 64)


def reference_model(input_dim, classes):
    """The tutorial's network: input-512-128-64-classes, ReLU, softmax, Adam(1e-3)."""
    layers = [jitnn.Dense(HIDDEN[0], activation="relu", input_dim=input_dim)]
    layers += [jitnn.Dense(h, activation="relu") for h in HIDDEN[1:]]
    model = jitnn.Sequential(layers + [jitnn.Dense(classes, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=jitnn.optimizers.Adam(learning_rate=1e-3),
                  metrics=["accuracy"])
    return model


def reference_cnn(classes=10, dtype="float32"):
    """Issue 12's reference CNN: Conv 32 3x3 relu → MaxPool 2 → Conv 64 3x3 relu → MaxPool 2 → Flatten →
    Dense 128 relu → Dropout 0.3 → Dense softmax, Adam(1e-3), on 28x28x1 images."""
    model = jitnn.Sequential([
        jitnn.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)), jitnn.MaxPooling2D(2),
        jitnn.Conv2D(64, 3, activation="relu"), jitnn.MaxPooling2D(2), jitnn.Flatten(),
        jitnn.Dense(128, activation="relu"), jitnn.Dropout(0.3), jitnn.Dense(classes, activation="softmax")],
        dtype=dtype)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=jitnn.optimizers.Adam(learning_rate=1e-3),
                  metrics=["accuracy"])
    return model


def input_shape_of(model):
    """The per-sample shape ``model`` takes: its built shape, else its first layer's declared one (or None)."""
    if model.built:
        return model.input_shape
    return model.layers[0].declared_input_shape if model.layers else None


def shaped_for(model, x):
    """``x`` (rows of features) reshaped to the model's per-sample shape, e.g. images; SystemExit when the
    sizes differ."""
    shape = input_shape_of(model)
    if shape is None or tuple(x.shape[1:]) == tuple(shape):
        return x
    if math.prod(shape) != math.prod(x.shape[1:]):
        raise SystemExit(f"the model expects samples of shape {tuple(shape)}, the dataset has "
                         f"{tuple(x.shape[1:])} (choose another with --dataset)")
    return x.reshape(len(x), *shape)


def load_model(path, input_dim, classes):
    """A compiled Sequential from --model: a .npz saved by Sequential.save, a .py with build(), or "cnn"."""
    if path is None:
        return reference_model(input_dim, classes)
    if path == "cnn":
        return reference_cnn(classes)
    if not os.path.exists(path):
        raise SystemExit(f"--model {path}: no such file")
    if path.endswith(".py"):
        spec = importlib.util.spec_from_file_location("jitnn_report_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "build", None)):
            raise SystemExit(f"--model {path}: the file must define build() returning a compiled jitnn.Sequential")
        model = module.build()
    else:
        model = jitnn.load_model(path)
    if not isinstance(model, jitnn.Sequential) or model.loss is None:
        raise SystemExit(f"--model {path}: expected a compiled jitnn.Sequential, received: {type(model).__name__}"
                         + (" (not compiled)" if isinstance(model, jitnn.Sequential) else ""))
    if model.built and model.input_dim != input_dim and len(model.input_shape) == 1:
        raise SystemExit(f"--model {path} expects {model.input_dim} features, the dataset has {input_dim} "
                         "(choose another with --dataset)")
    return model


def _batch_sizes(values):
    sizes = []
    for v in values or ["64,1000"]:
        for part in str(v).split(","):
            if part.strip():
                try:
                    b = int(part)
                except ValueError:
                    raise SystemExit(f"--batch-size takes positive integers, received: {part!r}") from None
                if b < 1:
                    raise SystemExit(f"--batch-size takes positive integers, received: {b}")
                sizes.append(b)
    return sizes


def _plan(n, batch, steps):
    """(rows per epoch, epochs): at least ``steps`` steps of ``batch`` rows from a set of ``n`` rows."""
    batch = min(batch, n)
    per_epoch = max(1, n // batch)
    epochs = math.ceil(steps / per_epoch)
    return batch * math.ceil(steps / epochs), epochs, batch


def profile_batch(args, x, y, batch):
    """Warm up, then profile --steps steps at ``batch``; returns (model, profile, compile seconds)."""
    model = load_model(args.model, x.shape[1], int(y.max()) + 1)
    x = shaped_for(model, x)
    with jitnn.profile() as warm:  # kernels compile or load here: counted as compile, never as rows
        if args.warmup:
            rows, epochs, b = _plan(x.shape[0], batch, args.warmup)
            model.fit(x[:rows], y[:rows], epochs=epochs, batch_size=b, verbose=0, seed=args.seed)
    rows, epochs, b = _plan(x.shape[0], batch, args.steps)
    trace = args.max_events if args.format in ("chrome", "speedscope") else 0
    with jitnn.profile(trace=trace) as prof:
        model.fit(x[:rows], y[:rows], epochs=epochs, batch_size=b, verbose=0, seed=args.seed)
    return model, prof, (warm.compile_ns + prof.compile_ns) / 1e9


# ---------------------------------------------------------------------------------------------------
# --lines: line_profiler listings


def _line_profiler():
    try:
        from line_profiler import LineProfiler
    except ImportError:
        raise SystemExit("--lines needs line_profiler: pip install line_profiler (or '.[dev]')") from None
    return LineProfiler()


def python_lines(model, x, y, batch, steps, seed):
    """line_profiler over the Python-level training loop (the layer-by-layer path: a compiled step would
    be one opaque line), on real (compiled) kernels."""
    from jitnn import training
    from jitnn.layers.dense import Dense
    from jitnn.model import Sequential
    from jitnn.optimizers import Optimizer

    lp = _line_profiler()
    for fn in (training.fit, Sequential.train_step, Sequential.apply_gradients, Dense.forward, Dense.backward,
               Optimizer.step):
        lp.add_function(fn)
    rows, epochs, b = _plan(x.shape[0], batch, steps)
    from jitnn import compiled_step

    enabled, compiled_step.ENABLED = compiled_step.ENABLED, False  # the listing is of the Python loop's lines
    lp.enable_by_count()
    try:
        model.fit(x[:rows], y[:rows], epochs=epochs, batch_size=b, verbose=0, seed=seed)
    finally:
        lp.disable_by_count()
        compiled_step.ENABLED = enabled
    out = io.StringIO()
    lp.print_stats(out, output_unit=1e-3, stripzeros=True)
    return (f"== Line-level: the Python training loop, {epochs * (rows // b)} steps at batch {b} "
            "(line_profiler; each compiled kernel call is one opaque line, with its real time) ==\n"
            + out.getvalue())


def micro_kernel_py(kc, ap, a0, a_rs, a_cs, bp, b0, bs, ct, rows=None, panels=1):
    """Stand-in for the LLVM intrinsic, which only exists inside compiled code (same arithmetic); ``rows``
    for the short tile (SHORT_ROWS) or the wide row (1), else MR; ``panels`` NR panels of columns."""
    from jitnn.kernels.blocking import BLOCKS

    mr, nr = BLOCKS[ap.dtype.name][:2]
    mr, nr = rows or mr, nr * panels
    a = ap[a0 + np.arange(mr)[None, :] * a_rs + np.arange(kc)[:, None] * a_cs]  # (kc, mr)
    rows = b0 + np.arange(kc)[:, None] * bs + np.arange(nr)
    ct[:mr * nr] = (a.T.astype(np.float64) @ bp[rows].astype(np.float64)).reshape(-1)


def micro_kernel_c_py(kc, ap, a0, a_rs, a_cs, bp, b0, bs, c, c0, c_rs, alpha, beta, bias, col0, use_bias, act,
                       act_param, rows=None, panels=1):
    """Stand-in for micro_kernel_c: the same tile, written into flat C as act(alpha*tile + beta*C + bias)."""
    from jitnn.kernels.blocking import BLOCKS
    from jitnn.kernels.elementwise import LEAKY_RELU, RELU

    mr, nr = BLOCKS[ap.dtype.name][:2]
    mr, nr = rows or mr, nr * panels
    tile = np.empty(mr * nr, ap.dtype)
    micro_kernel_py(kc, ap, a0, a_rs, a_cs, bp, b0, bs, tile, mr, panels)
    for i in range(mr):
        row = c[c0 + i * c_rs:c0 + i * c_rs + nr]
        row[:] = alpha * tile[i * nr:(i + 1) * nr] + (beta * row if beta != 0 else 0)
        if use_bias:
            row += bias[col0:col0 + nr]
        if act == RELU:
            row[row < 0] = 0
        elif act == LEAKY_RELU:
            row[row < 0] *= act_param


@contextlib.contextmanager
def interpreted():
    """Every numba dispatcher in jitnn's modules swapped for its Python function, parallel paths on."""
    from numba.core.registry import CPUDispatcher

    from jitnn import config
    from jitnn.kernels import gemm
    from jitnn.linalg import dense

    gemm_py = gemm.gemm_kernel.py_func
    saved = []
    for name, module in list(sys.modules.items()):
        if name == "jitnn" or name.startswith("jitnn."):
            for attr, value in list(vars(module).items()):
                if isinstance(value, CPUDispatcher):
                    saved.append((module, attr, value))
                    setattr(module, attr, value.py_func)
    saved += [(gemm, "micro_kernel_c", gemm.micro_kernel_c), (gemm, "short_kernel_c", gemm.short_kernel_c),
              (gemm, "wide_row_kernel_c", gemm.wide_row_kernel_c),
              (dense, "PARALLEL_MIN_FLOPS", dense.PARALLEL_MIN_FLOPS),
              (config, "PARALLEL_MIN_WORK", config.PARALLEL_MIN_WORK),
              (dense, "compiled_kernels", dense.compiled_kernels)]
    gemm.micro_kernel_c = micro_kernel_c_py
    gemm.short_kernel_c = functools.partial(micro_kernel_c_py, rows=SHORT_ROWS)
    gemm.wide_row_kernel_c = functools.partial(micro_kernel_c_py, rows=1, panels=WIDE_ROW_PANELS)
    dense.PARALLEL_MIN_FLOPS = 0  # small inputs, but the parallel paths the real sizes take
    config.PARALLEL_MIN_WORK = 0
    dense.compiled_kernels = {np.dtype(dt): gemm_py for dt in ("float32", "float64")}
    try:
        with np.errstate(over="ignore"):  # the dropout hash relies on uint64 wraparound, silent when compiled
            yield [v.py_func for _, _, v in saved if isinstance(v, CPUDispatcher)] + [micro_kernel_py, micro_kernel_c_py]
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)


def _tiny_clone(model):
    """The model's layer stack at small widths (off every tile multiple), same loss and optimizer."""
    layers = []
    for layer in model.layers:
        cfg = dict(layer.get_config())
        if "units" in cfg:
            cfg["units"] = min(cfg["units"], 18)
            cfg["input_dim"] = None
        if "filters" in cfg:
            cfg["filters"] = min(cfg["filters"], 5)
        if "input_shape" in cfg:
            cfg["input_shape"] = None
        layers.append(type(layer)(**cfg))
    tiny = jitnn.Sequential(layers, dtype=model.dtype)
    tiny.compile(loss=model.loss, optimizer=type(model.optimizer).from_config(model.optimizer.get_config()))
    shape = model.input_shape
    tiny.build((min(model.input_dim, 20),) if len(shape) == 1 else (*(min(d, 13) for d in shape[:-1]), shape[-1]),
               seed=0)
    return tiny


def kernel_lines(model, prof, top=3, batch=8):
    """line_profiler over the ``py_func`` of the kernels behind the ``top`` hottest layer rows."""
    hot = [r for r in sorted(report.rows(prof), key=lambda r: -r["flat_ns"]) if r["layer"] is not None][:top]
    if not hot:
        return ""
    tiny = _tiny_clone(model)
    lp = _line_profiler()
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((batch, *tiny.input_shape)).astype(tiny.dtype)
    yb = rng.integers(0, tiny.output_dim, batch)
    targets = {(r["layer"], r["phase"]) for r in hot}
    owner = [i for i, layer in enumerate(tiny.layers) for _ in layer.params]

    def traced(method, index, phase):
        def run(*a, **k):
            if (index, phase) not in targets:
                return method(*a, **k)
            lp.enable_by_count()
            try:
                return method(*a, **k)
            finally:
                lp.disable_by_count()
        return run

    tracing = [False]

    def on_param(i):  # trace the optimizer's kernels for the hot layers only
        want = i < len(owner) and (owner[i], "update") in targets
        if want and not tracing[0]:
            lp.enable_by_count()
        elif tracing[0] and not want:
            lp.disable_by_count()
        tracing[0] = want

    for i, layer in enumerate(tiny.layers):
        layer.forward = traced(layer.forward, i, "forward")
        layer.backward = traced(layer.backward, i, "backward")
    tiny.allocate(batch)
    ys = tiny.prepare_targets(yb, xb)
    params = [p for layer in tiny.layers for p in layer.params]
    grads = [g for layer in tiny.layers for g in layer.grads]
    with interpreted() as funcs:
        for fn in funcs:
            lp.add_function(fn)
        tiny.train_step(xb, ys)
        tiny.optimizer.step(params, grads, on_param=on_param)
    out = io.StringIO()
    lp.print_stats(out, output_unit=1e-6, stripzeros=True)
    shapes = ", ".join(f"[{i}] {layer.describe()}" for i, layer in enumerate(tiny.layers))
    names = ", ".join(r["name"] for r in hot)
    return (f"== Line-level: pure-Python kernels (.py_func), INTERPRETED on a small clone ({shapes}; batch "
            f"{batch}) ==\n== for the hottest rows: {names}. Hits show which lines run and how often; times are "
            "Python's, not the compiled kernel's. micro_kernel is an LLVM intrinsic with no Python body: a numpy "
            "stand-in runs in its place. ==\n" + out.getvalue())


# ---------------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a .npz saved by Sequential.save, a .py file defining build(), or 'cnn'")
    p.add_argument("--batch-size", action="append", help="repeatable, or a comma list (default 64,1000)")
    p.add_argument("--steps", type=int, default=50, help="profiled steps per batch size (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="steps before profiling, not in the rows (default 3)")
    p.add_argument("--sort", choices=["flat", "cum"], default="flat")
    p.add_argument("--tree", action="store_true", help="nest phases under their layer, with memory")
    p.add_argument("--format", choices=["text", "json", "chrome", "speedscope", "pprof", "svg"],
                   default="text",
                   help="pprof: profile.proto gzipped (pprof -top FILE); svg: time and GFLOP/s bars (matplotlib)")
    p.add_argument("--out", help="write here instead of stdout (gzip-compressed when it ends in .gz)")
    p.add_argument("--lines", action="store_true", help="add line_profiler listings (see above)")
    p.add_argument("--limit", type=int, help="show at most this many rows of the table")
    p.add_argument("--dataset", default="auto", choices=["auto", "fashion_mnist", "digits"])
    p.add_argument("--max-events", type=int, default=20000,
                   help="calls kept with timestamps for chrome/speedscope; the rest are aggregated (default 20000)")
    p.add_argument("--refresh-peak", action="store_true", help="measure the machine's peak again")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.max_events < 0:
        p.error("--steps must be >= 1, --warmup and --max-events >= 0")
    if args.format in ("pprof", "svg") and not args.out:
        p.error(f"--format {args.format} writes a file: give --out")
    sizes = _batch_sizes(args.batch_size)

    name, (x, y), _ = jitnn.datasets.load_dataset(args.dataset)
    peak = peak_mod.estimate(refresh=args.refresh_peak)
    results = [(b, *profile_batch(args, x, y, b)) for b in sizes]
    titles = [f"{name} · batch {b} · {args.steps} steps" for b, *_ in results]

    def peak_for(model):
        return peak[model.dtype.name]

    if args.format == "text":
        blocks = []
        for title, (b, model, prof, comp) in zip(titles, results):
            render = report.render_tree(prof, peak_for(model), comp) if args.tree else \
                report.render_top(prof, args.sort, peak_for(model), comp, args.limit)
            blocks.append(f"== {title} ==\n{render}")
        text = "\n\n".join(blocks)
    elif args.format == "json":
        docs = []
        for title, (b, model, prof, comp) in zip(titles, results):
            doc = report.to_json(prof, peak_for(model), comp, args.sort)
            doc.update(title=title, batch_size=b, steps=args.steps, dataset=name)
            docs.append(doc)
        obj = report.to_document(docs)  # one versioned schema for one batch size or several
    elif args.format in ("pprof", "svg"):
        if args.format == "pprof":
            from jitnn import pprof

            pprof.write_pprof([r[2] for r in results], args.out, titles)
        else:
            from jitnn import plot

            plot.profile([r[2] for r in results], args.out, titles, [peak_for(r[1]) for r in results])
        print(f"wrote {args.format} to {args.out}", file=sys.stderr)
        obj = None
    elif args.format == "chrome":
        obj = report.to_chrome([r[2] for r in results], titles)
    else:
        obj = report.to_speedscope([r[2] for r in results], titles)

    if args.lines:
        b, model, prof, _ = results[0]
        lines = python_lines(model, shaped_for(model, x), y, b, min(args.steps, 20), args.seed) + "\n" + \
            kernel_lines(model, prof)
    if args.format == "text":
        if args.lines:
            text += "\n\n" + lines
        if args.out:
            opener = gzip.open if args.out.endswith(".gz") else open
            with opener(args.out, "wt", encoding="utf-8") as f:
                f.write(text + "\n")
        else:
            print(text)
    elif obj is not None:
        if args.out:
            report.write_json(obj, args.out)
            print(f"wrote {args.format} to {args.out}", file=sys.stderr)
        else:
            print(json.dumps(obj, ensure_ascii=False))
        if args.lines:
            print(lines, file=sys.stderr if not args.out else sys.stdout)
    elif args.lines:
        print(lines)
    return results


if __name__ == "__main__":
    main()
