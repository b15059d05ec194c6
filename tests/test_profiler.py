"""jitnn.profile, the reports (text, tree, JSON, Chrome trace, speedscope), jitnn.peak and perf/report.py.

The accounting test holds the profiler to its goal: on a run of >= 50 steps the rows cover >= 95% of
the wall time measured around ``fit`` (compile excluded). Compile time is forced into a profiled call
with a freshly made @njit function and must land in ``compile_ns``, never in a row.
"""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import time

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import jitnn
from jitnn import Dense, Dropout, Layer, Sequential, optimizers, report
from jitnn import peak as peak_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "perf", "report.py")
MODEL_PHASES = {"setup", "shuffle", "batching", "loss", "nan_guard", "optimizer", "metrics", "loop", "callbacks"}


def data(n=512, features=24, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    return x, rng.integers(0, classes, n)


def mlp(features=24, classes=4, hidden=(32,), dropout=None, name=None):
    layers = [Dense(hidden[0], activation="relu", input_dim=features)]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Dense(h, activation="relu") for h in hidden[1:]]
    model = Sequential(layers + [Dense(classes, activation="softmax")], name=name)
    model.compile(loss="categorical_crossentropy", optimizer=optimizers.Adam(1e-3), metrics=["accuracy"])
    return model


def profiled(model=None, n=512, batch=32, trace=0, **fit):
    x, y = data(n)
    model = model or mlp(dropout=0.25)
    model.fit(x[:batch], y[:batch], epochs=1, batch_size=batch, verbose=0, seed=0)  # compile outside
    with jitnn.profile(trace=trace) as prof:
        model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=0, **fit)
    return model, prof


@pytest.fixture(scope="module")
def run():
    """One profiled epoch (16 steps) with a Dropout layer, validation data and 64 traced calls."""
    x, y = data(128, seed=1)
    return profiled(trace=64, validation_data=(x, y))


# ---------------------------------------------------------------------------------------------- rows


def test_every_layer_phase_and_model_phase_is_recorded(run):
    model, prof = run
    by = {(r.layer, r.phase): r for r in prof.table()}
    for i, layer in enumerate(model.layers):
        assert by[(i, "forward")].calls == by[(i, "backward")].calls == 16
        assert ((i, "update") in by) == bool(layer.params)  # Dropout has no parameters to update
    assert {p for (layer, p) in by if layer is None} == MODEL_PHASES | {"validation"}
    assert by[(None, "optimizer")].calls == by[(0, "update")].calls == 16  # one call per step, not per array
    assert all(r.ns >= 0 for r in by.values())
    assert by[(0, "forward")].flops == 16 * model.layers[0].flops(32)["forward"]


def test_cum_is_the_layers_forward_backward_update_and_flat_adds_to_total(run):
    _, prof = run
    data_rows = report.rows(prof)
    for r in data_rows:
        assert r["cum_ns"] >= r["flat_ns"]
        if r["layer"] is not None:
            assert r["cum_ns"] == sum(s["flat_ns"] for s in data_rows if s["layer"] == r["layer"])
        else:
            assert r["cum_ns"] == r["flat_ns"]
    assert sum(r["flat_ns"] for r in data_rows) == prof.total_ns()


def test_first_layer_backward_counts_no_input_gradient(run):
    model, prof = run
    by = {(r.layer, r.phase): r for r in prof.table()}
    dense = model.layers[0]
    full = dense.flops(32)["backward"]
    assert by[(0, "backward")].flops == 16 * (full - 2 * 32 * dense.input_dim * dense.units)
    assert by[(2, "backward")].flops == 16 * model.layers[2].flops(32)["backward"]


def test_fit_profile_true_records_and_closes():
    x, y = data(256)
    model = mlp()
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, profile=True)
    prof = model.profile_
    assert prof.t_end is not None and prof.total_ns() > 0
    assert prof.total_ns() <= prof.wall_ns
    assert {r.phase for r in prof.table()} >= {"forward", "backward", "update", "batching"}


def test_two_models_in_one_profile_keep_their_own_rows():
    x, y = data(128)
    a, b = mlp(name="a"), mlp(hidden=(8,), name="b")
    for m in (a, b):
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    with jitnn.profile() as prof:
        a.fit(x, y, epochs=1, batch_size=32, verbose=0)
        b.fit(x, y, epochs=1, batch_size=32, verbose=0)
    names = {r["name"] for r in report.rows(prof)}
    assert "a/Dense[0] 24→32 relu :: forward" in names and "b/Dense[0] 24→8 relu :: forward" in names


def test_optimizer_hook_marks_every_array_boundary_and_steps_once():
    params = [np.ones(5, np.float32), np.ones((2, 3), np.float32)]
    grads = [np.full(5, 0.1, np.float32), np.full((2, 3), 0.1, np.float32)]
    opt = optimizers.Adam(0.1)
    seen = []
    opt.step(params, grads, on_param=seen.append)
    assert seen == [0, 1, 2] and opt.iterations == 1
    plain = [np.ones(5, np.float32), np.ones((2, 3), np.float32)]
    ref = optimizers.Adam(0.1)
    ref.step(plain, grads)
    for p, q in zip(params, plain):
        np.testing.assert_array_equal(p, q)


# -------------------------------------------------------------------------- accounting and compile


def test_rows_account_for_95_percent_of_the_wall_time_of_50_steps():
    """64 steps at batch 64 of a 784-256-128-10 MLP: rows / (wall around fit - compile) >= 0.95.

    The gap is the profiler's own bookkeeping between timed calls (well under 1 us a row) and loop glue.
    On this 2-core shared machine it measured 98-99.5%; the median of three runs absorbs a stray stall.
    """
    x, y = data(64 * 64, features=784, classes=10)
    model = mlp(features=784, classes=10, hidden=(256, 128))
    model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    shares = []
    for _ in range(3):
        t0 = time.perf_counter_ns()
        with jitnn.profile() as prof:
            model.fit(x, y, epochs=1, batch_size=64, verbose=0, seed=0)
        wall = time.perf_counter_ns() - t0 - prof.compile_ns
        assert sum(r.calls for r in prof.table() if r.phase == "forward" and r.layer == 0) == 64
        shares.append(prof.total_ns() / wall)
    assert sorted(shares)[1] >= 0.95, shares


def _copy(x, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = x[i, j]


class Jitted(Layer):
    """An identity layer whose forward runs a brand-new @njit function: it compiles on the first call."""

    kind = "Jitted"

    def __init__(self):
        super().__init__()
        self.fn = numba.njit(cache=False)(_copy)  # a new dispatcher each time: nothing cached

    def allocate(self, batch):
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.input_dim)

    def forward(self, x, training):
        out = self._buf_out[: x.shape[0]]
        self.fn(x, out)
        return out

    def backward(self, grad, need_input_grad):
        return grad


def test_compile_time_is_reported_apart_and_never_in_rows():
    x, y = data(256)
    model = Sequential([Jitted(), Dense(4, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="sgd")
    model.fit(x[:8], y[:8], epochs=0, verbose=0)  # build, no step: the layer's kernel is not compiled yet
    t0 = time.perf_counter_ns()
    with jitnn.profile() as prof:
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    wall = time.perf_counter_ns() - t0
    by = {(r.layer, r.phase): r for r in prof.table()}
    assert prof.compile_ns > 20e6, "the new @njit function compiled inside the block"
    assert prof.rows_compile_ns > 20e6, "and inside a timed call, from which it was taken out"
    assert by[(0, "forward")].ns < prof.compile_ns / 4
    assert prof.total_ns() + prof.compile_ns <= wall
    text = report.render_top(prof, peak_gflops=100.0)
    assert f"(compile {prof.compile_ns / 1e9:.2f}s not included)" in text


# -------------------------------------------------------------------------------------------- text


def test_render_top_has_pprofs_shape_and_sorts(run):
    _, prof = run
    text = report.render_top(prof, peak_gflops=100.0)
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Showing nodes accounting for"))
    assert "100% of" in lines[head] and "not included" in lines[head]
    assert lines[head + 1].split() == ["flat", "flat%", "sum%", "cum", "cum%", "calls", "GFLOP/s", "%peak",
                                       "GB/s", "name"]
    body = lines[head + 2:]
    assert len(body) == len(prof.table())
    assert body[-1].split()[2] == "100.0%"  # sum% ends at 100
    assert "Peak: 100.0 GFLOP/s" in text
    cum = report.render_top(prof, sort="cum", peak_gflops=100.0).splitlines()[head + 2:]
    names = [line.split("  ")[-1] for line in cum]
    by = {r["name"]: r for r in report.rows(prof)}
    values = [by[n.strip()]["cum_ns"] for n in names]
    assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError, match="sort"):
        report.render_top(prof, sort="self")


def test_render_tree_nests_phases_under_layers_with_memory(run):
    model, prof = run
    text = report.render_tree(prof, peak_gflops=100.0)
    assert "Dense[0] 24→32 relu   [params 3.1KiB, grads 3.1KiB, optimizer state 12.5KiB" in text
    assert "├─ forward" in text and "└─" in text
    mem, notes = report.layer_memory(prof, 0, 0)
    assert mem["params"] == sum(p.nbytes for p in model.layers[0].params) and notes == {}


def test_a_layer_can_add_notes_without_a_column(run):
    model, prof = run
    model.layers[0].profile_notes = lambda: {"load": 0.03125}
    try:
        assert "load 0.03125" in report.render_tree(prof)
        # "layers" is ordered by time, which a layer this small does not always lead: look it up by name
        notes = {entry["name"].split()[0]: entry["notes"] for entry in report.to_json(prof)["layers"]}
        assert notes["Dense[0]"] == {"load": 0.03125}
        assert all(n == {} for name, n in notes.items() if name != "Dense[0]")
    finally:
        del model.layers[0].profile_notes


# ------------------------------------------------------------------------------------------ exports


def test_json_export_rows_add_up_to_the_total(run):
    _, prof = run
    doc = json.loads(json.dumps(report.to_json(prof, peak_gflops=50.0)))
    assert {"total_s", "compile_s", "peak_gflops", "rows"} <= set(doc)
    keys = {"name", "flat_s", "flat_pct", "cum_s", "cum_pct", "calls", "gflops", "peak_pct"}
    assert all(keys <= set(r) for r in doc["rows"])
    assert sum(r["flat_s"] for r in doc["rows"]) == pytest.approx(doc["total_s"], rel=1e-9)
    assert sum(r["flat_pct"] for r in doc["rows"]) == pytest.approx(100)
    assert doc["peak_gflops"] == 50.0
    top = doc["rows"][0]
    assert top["flat_s"] == max(r["flat_s"] for r in doc["rows"])
    dense = next(r for r in doc["rows"] if r["name"].endswith(":: forward") and r["gflops"])
    assert dense["peak_pct"] == pytest.approx(100 * dense["gflops"] / 50.0)


def test_chrome_trace_is_valid_bounded_and_adds_up(run, tmp_path):
    _, prof = run
    doc = json.loads(json.dumps(report.to_chrome(prof, ["run"])))
    events = doc["traceEvents"]
    assert all("ph" in e and "name" in e and "ts" in e for e in events)
    complete = [e for e in events if e["ph"] == "X"]
    assert all({"ts", "dur", "name", "pid", "tid"} <= set(e) and e["dur"] >= 0 for e in complete)
    raw = [e for e in complete if e["tid"] == 1]
    assert len(raw) == len(prof.events) == 64  # the first 64 calls, then aggregated per row
    assert any(e["tid"] == 2 for e in complete)
    assert sum(e["dur"] for e in complete) == pytest.approx(prof.total_ns() / 1e3, rel=1e-6)
    path = tmp_path / "trace.json.gz"
    report.write_json(doc, path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert json.load(f) == doc
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"


def test_speedscope_file_follows_the_schema(run):
    _, prof = run
    doc = json.loads(json.dumps(report.to_speedscope(prof, ["run"])))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert all(isinstance(f["name"], str) for f in frames)
    sampled, evented = doc["profiles"]
    assert sampled["type"] == "sampled" and sampled["unit"] == "nanoseconds"
    assert len(sampled["samples"]) == len(sampled["weights"]) and sum(sampled["weights"]) == prof.total_ns()
    assert all(0 <= i < len(frames) for s in sampled["samples"] for i in s)
    assert evented["type"] == "evented" and evented["startValue"] <= evented["endValue"]
    stack, last = [], 0
    for e in evented["events"]:
        assert e["at"] >= last and 0 <= e["frame"] < len(frames)
        last = e["at"]
        if e["type"] == "O":
            stack.append(e["frame"])
        else:
            assert e["type"] == "C" and stack.pop() == e["frame"]
    assert not stack and len(evented["events"]) == 4 * 64


# --------------------------------------------------------------------------------------------- peak


@pytest.fixture
def fake_measure(monkeypatch):
    figures = {"float32": 100.0, "float64": 50.0}
    monkeypatch.setattr(peak_mod, "measure", lambda dtype, threads=None, seconds=0.03, rounds=5: figures[dtype])
    peak_mod.clear_memory()
    yield figures
    peak_mod.clear_memory()


def test_peak_cache_round_trip(tmp_path, fake_measure):
    path = str(tmp_path / "sub" / "peak.json")
    first = peak_mod.estimate(threads=2, path=path)
    assert first["source"] == "measured" and first["float32"] == 200.0  # max(all threads, 2 x one thread)
    with open(path, encoding="utf-8") as f:
        stored = json.load(f)
    assert list(stored) == [f"{peak_mod.cpu_model()} | threads=2"]
    again = peak_mod.estimate(threads=2, path=path)
    assert again["source"] == "cache" and again["float64"] == 100.0
    fake_measure["float32"] = 10.0  # a busy machine measures less: a refresh keeps the best figure
    assert peak_mod.estimate(threads=2, path=path, refresh=True)["float32"] == 200.0
    assert peak_mod.cached(threads=1, path=path) is None  # another thread count is another key


def test_peak_falls_back_to_memory_when_nothing_is_writable(tmp_path, fake_measure, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    entry = peak_mod.estimate(threads=2, path=str(blocker / "peak.json"))
    assert entry["path"] is None and entry["source"].startswith("measured (not cached")
    assert peak_mod.cached(threads=2)["float32"] == 200.0  # kept for the process
    monkeypatch.setenv("JITNN_CACHE_DIR", str(blocker / "cache"))
    assert peak_mod.cache_dir() != str(blocker / "cache")  # an unwritable JITNN_CACHE_DIR is skipped
    monkeypatch.setattr(jitnn.config, "writable_dir", lambda path: False)
    assert peak_mod.cache_dir() is None


def test_peak_measurement_runs_the_micro_kernel():
    assert peak_mod.measure("float32", threads=1, seconds=0.005, rounds=1) > 1.0
    assert peak_mod.cpu_model()


# ---------------------------------------------------------------------------------------------- CLI


def load_cli():
    spec = importlib.util.spec_from_file_location("jitnn_perf_report", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_end_to_end_on_digits(tmp_path):
    """The script as a user runs it: a subprocess, digits, two batch sizes, tree view; then chrome.gz."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, CLI, "--dataset", "digits", "--steps", "3", "--warmup", "1",
                          "--batch-size", "16", "--batch-size", "64", "--tree"],
                         check=False, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Showing nodes accounting for") == 2
    assert "digits · batch 16 · 3 steps" in out.stdout and "├─ forward" in out.stdout
    trace = tmp_path / "t.json.gz"
    out = subprocess.run([sys.executable, CLI, "--dataset", "digits", "--steps", "2", "--warmup", "1",
                          "--batch-size", "32", "--format", "chrome", "--out", str(trace)],
                         check=False, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    with gzip.open(trace, "rt", encoding="utf-8") as f:
        assert any(e["ph"] == "X" for e in json.load(f)["traceEvents"])


def test_cli_models_from_npz_and_python_files(tmp_path, capsys):
    cli = load_cli()
    x, y = jitnn.datasets.load_digits()[0]
    model = mlp(features=x.shape[1], classes=10)
    model.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    saved = str(model.save(tmp_path / "m.npz"))
    out = tmp_path / "r.json"
    cli.main(["--model", saved, "--dataset", "digits", "--steps", "2", "--warmup", "1", "--batch-size", "32",
              "--format", "json", "--out", str(out)])
    doc = json.loads(out.read_text())["profiles"][0]
    assert doc["batch_size"] == 32 and doc["rows"]
    assert sum(r["flat_s"] for r in doc["rows"]) == pytest.approx(doc["total_s"])
    script = tmp_path / "net.py"
    script.write_text("import jitnn\n"
                      "def build():\n"
                      "    m = jitnn.Sequential([jitnn.Dense(12, activation='relu'), jitnn.Dense(10, activation='softmax')])\n"
                      "    m.compile(loss='categorical_crossentropy', optimizer='sgd')\n"
                      "    return m\n")
    cli.main(["--model", str(script), "--dataset", "digits", "--steps", "2", "--warmup", "0",
              "--batch-size", "16,32", "--format", "speedscope"])
    doc = json.loads(capsys.readouterr().out)
    assert len([p for p in doc["profiles"] if p["type"] == "sampled"]) == 2
    with pytest.raises(SystemExit, match="build"):
        (tmp_path / "bad.py").write_text("x = 1\n")
        cli.main(["--model", str(tmp_path / "bad.py"), "--dataset", "digits", "--steps", "1"])


def test_cli_line_listings_label_interpreted_kernels_and_restore_them(run):
    model, prof = run
    cli = load_cli()
    from jitnn.kernels import gemm

    text = cli.kernel_lines(model, prof, top=2)
    assert "INTERPRETED" in text.split("\n", 1)[0]
    assert "Function: gemm_kernel" in text
    assert isinstance(gemm.pack_a, CPUDispatcher) and isinstance(gemm.gemm_kernel, CPUDispatcher)
    assert not isinstance(gemm.micro_kernel_c, type(cli.micro_kernel_py))
    x, y = data(128)
    listing = cli.python_lines(model, x, y, 32, 2, 0)
    assert "Function: Sequential.train_step" in listing and "Function: Dense.forward" in listing
