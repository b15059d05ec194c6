"""Reports of a :class:`jitnn.profiler.Profile`: the ``pprof -top`` table, a tree, JSON, Chrome trace, speedscope.

(pprof's protobuf is in :mod:`jitnn.pprof`, the SVG chart in :mod:`jitnn.plot`.)

A row is one layer's phase (forward, backward, update) or a model-level phase (batching, loss, ...).
``flat`` is the row's own time; ``cum`` is the time of the layer around it (forward + backward +
update), so a row shows what the phase costs and what its whole layer costs; a model-level row's cum
is its flat. ``sum%`` is the running total of flat% down the table, as in pprof. GFLOP/s and GB/s
come from shapes (no counters inside kernels); %peak compares GFLOP/s with :mod:`jitnn.peak`.

Layers may describe themselves beyond the columns: a layer with a ``profile_notes()`` method
returning ``{"name": value}`` (a sparse layer's load factor nnz/size, say) gets those shown beside its
memory in the tree and in the JSON ``layers`` list, with no column to add.
"""

from __future__ import annotations

import gzip
import json

from jitnn import config
from jitnn import peak as peak_mod
from jitnn.version import __version__


def _fmt_s(ns):
    s = ns / 1e9
    if s >= 1:
        return f"{s:.2f}s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f}ms"
    return f"{s * 1e6:.0f}us"


def _fmt_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


# ---------------------------------------------------------------------------------------------------
# The rows


def rows(profile):
    """Every (layer, phase) as a dict: name, layer, phase, flat_ns, cum_ns, calls, flops, bytes."""
    table = profile.table()
    cum = {}
    for r in table:
        if r.layer is not None:
            cum[(r.slot, r.layer)] = cum.get((r.slot, r.layer), 0) + r.ns
    out = []
    for r in table:
        label = profile.label(r.slot, r.layer)
        out.append({"name": f"{label} :: {r.phase}", "label": label, "slot": r.slot, "layer": r.layer,
                    "phase": r.phase, "flat_ns": r.ns, "cum_ns": cum.get((r.slot, r.layer), r.ns),
                    "calls": r.calls, "flops": r.flops, "bytes": r.bytes})
    return out


def _rate(work, ns):
    return work / ns if ns > 0 and work else 0.0  # per ns == G per s


def _dtype(profile):
    return profile.models[0].dtype.name if profile.models else "float32"


def resolve_peak(profile, peak_gflops=None):
    """The peak to compare with: the number given, else the cached one for the model's dtype (no
    measuring here: ``jitnn.peak.estimate()`` or ``perf/report.py`` measure), else None."""
    if peak_gflops is not None:
        return float(peak_gflops) or None
    entry = peak_mod.cached()
    return float(entry[_dtype(profile)]) if entry else None


def _compile_s(profile, compile_s):
    return profile.compile_ns / 1e9 if compile_s is None else float(compile_s)


def layer_memory(profile, slot, index):
    """Bytes a layer holds: parameters, their gradients, optimizer state, work buffers."""
    model = profile.models[slot]
    layer = model.layers[index]
    first = sum(len(lay.params) for lay in model.layers[:index])
    state = 0
    opt = model.optimizer
    if opt is not None and getattr(opt, "built", False):
        state = opt.state_nbytes(range(first, first + len(layer.params)))
    mem = {"params": sum(p.nbytes for p in layer.params), "grads": sum(g.nbytes for g in layer.grads),
           "optimizer_state": state, "buffers": layer.buffer_bytes()}
    notes = getattr(layer, "profile_notes", None)
    return mem, (dict(notes()) if callable(notes) else {})


def _batches(profile):
    sizes = {}
    for (_slot, layer, phase, batch), (_ns, calls) in profile.acc.items():
        if layer is None and phase == "batching":
            sizes[batch] = sizes.get(batch, 0) + calls
    return sorted(sizes, key=lambda b: -sizes[b])


def header(profile, total_ns, peak=None, compile_s=None):
    """pprof's preamble: what was measured, against which peak, and how much of the wall it covers."""
    compile_s = _compile_s(profile, compile_s)
    threads = config.get_num_threads()
    batches = _batches(profile)
    what = f"Type: wall time, per layer and phase · {_dtype(profile)} · {threads} threads"
    if batches:
        what += f" · batch {batches[0]}" + (f" (+ {', '.join(map(str, batches[1:]))})" if batches[1:] else "")
    lines = [what]
    if peak:
        lines.append(f"Peak: {peak:.1f} GFLOP/s {_dtype(profile)} ({peak_mod.cpu_model()}, jitnn.peak)")
    wall = profile.wall_ns - profile.compile_ns
    if wall > 0:
        lines.append(f"Wall: {_fmt_s(wall)} excluding compile; the rows cover {100 * total_ns / wall:.1f}% of it")
    lines.append(f"Showing nodes accounting for {_fmt_s(total_ns)}, 100% of {_fmt_s(total_ns)} total "
                 f"(compile {compile_s:.2f}s not included)")
    return lines


def _cols(gf, peak, gbps):
    gfs = f"{gf:8.1f}" if gf else f"{'-':>8s}"
    pk = f"{100 * gf / peak:5.0f}%" if (peak and gf) else f"{'-':>6s}"
    gb = f"{gbps:6.1f}" if gbps else f"{'-':>6s}"
    return f"{gfs} {pk} {gb}"


def render_top(profile, sort="flat", peak_gflops=None, compile_s=None, limit=None):
    """The ``pprof -top`` table as text, sorted by ``flat`` or ``cum``; ``limit`` rows at most."""
    if sort not in ("flat", "cum"):
        raise ValueError(f"sort must be 'flat' or 'cum', received: sort={sort!r}")
    data = rows(profile)
    total = sum(r["flat_ns"] for r in data)
    peak = resolve_peak(profile, peak_gflops)
    key = (lambda r: (r["cum_ns"], r["flat_ns"])) if sort == "cum" else (lambda r: r["flat_ns"])
    data.sort(key=key, reverse=True)
    lines = header(profile, total, peak, compile_s)
    lines.append(f"{'flat':>9s} {'flat%':>6s} {'sum%':>6s} {'cum':>9s} {'cum%':>6s} {'calls':>8s} "
                 f"{'GFLOP/s':>8s} {'%peak':>6s} {'GB/s':>6s}  name")
    denom = total or 1
    acc = 0
    for r in data[:limit]:
        acc += r["flat_ns"]
        lines.append(f"{_fmt_s(r['flat_ns']):>9s} {100 * r['flat_ns'] / denom:5.1f}% {100 * acc / denom:5.1f}% "
                     f"{_fmt_s(r['cum_ns']):>9s} {100 * r['cum_ns'] / denom:5.1f}% {r['calls']:8d} "
                     f"{_cols(_rate(r['flops'], r['flat_ns']), peak, _rate(r['bytes'], r['flat_ns']))}  {r['name']}")
    return "\n".join(lines)


def _groups(profile):
    """[(label, slot, layer, [rows])] with each group's rows by flat, groups by their cum."""
    groups = {}
    for r in rows(profile):
        groups.setdefault((r["slot"], r["layer"]), []).append(r)
    out = [(g[0]["label"], s, lay, sorted(g, key=lambda r: -r["flat_ns"])) for (s, lay), g in groups.items()]
    return sorted(out, key=lambda g: -sum(r["flat_ns"] for r in g[3]))


def render_tree(profile, peak_gflops=None, compile_s=None):
    """Phases nested under their layer: the layer's cum, memory and notes, then each phase's flat."""
    groups = _groups(profile)
    total = sum(r["flat_ns"] for g in groups for r in g[3])
    denom = total or 1
    peak = resolve_peak(profile, peak_gflops)
    lines = header(profile, total, peak, compile_s)
    lines.append(f"{'cum':>9s} {'cum%':>6s} {'flat':>9s} {'flat%':>6s} {'calls':>8s} "
                 f"{'GFLOP/s':>8s} {'%peak':>6s} {'GB/s':>6s}  name")
    for label, slot, layer, members in groups:
        ns = sum(r["flat_ns"] for r in members)
        flops = sum(r["flops"] for r in members)
        nbytes = sum(r["bytes"] for r in members)
        extra = ""
        if layer is not None:
            mem, notes = layer_memory(profile, slot, layer)
            parts = [f"{k.replace('_', ' ')} {_fmt_bytes(v)}" for k, v in mem.items() if v]
            parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in notes.items()]
            extra = f"   [{', '.join(parts)}]" if parts else ""
        lines.append(f"{_fmt_s(ns):>9s} {100 * ns / denom:5.1f}% {'':>9s} {'':>6s} {'':>8s} "
                     f"{_cols(_rate(flops, ns), peak, _rate(nbytes, ns))}  {label}{extra}")
        for k, r in enumerate(members):
            branch = "└─" if k == len(members) - 1 else "├─"
            lines.append(f"{'':>9s} {'':>6s} {_fmt_s(r['flat_ns']):>9s} {100 * r['flat_ns'] / denom:5.1f}% "
                         f"{r['calls']:8d} {_cols(_rate(r['flops'], r['flat_ns']), peak, _rate(r['bytes'], r['flat_ns']))}"
                         f"  {branch} {r['phase']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Machine-readable exports


def to_json(profile, peak_gflops=None, compile_s=None, sort="flat"):
    """``{"total_s", "compile_s", "peak_gflops", "rows": [...], ...}``; the rows' flat_s add up to total_s."""
    data = rows(profile)
    total = sum(r["flat_ns"] for r in data)
    denom = total or 1
    peak = resolve_peak(profile, peak_gflops)
    data.sort(key=(lambda r: (r["cum_ns"], r["flat_ns"])) if sort == "cum" else (lambda r: r["flat_ns"]),
              reverse=True)
    out_rows = []
    for r in data:
        gf = _rate(r["flops"], r["flat_ns"])
        out_rows.append({"name": r["name"], "layer": r["label"], "phase": r["phase"],
                         "flat_s": r["flat_ns"] / 1e9, "flat_pct": 100 * r["flat_ns"] / denom,
                         "cum_s": r["cum_ns"] / 1e9, "cum_pct": 100 * r["cum_ns"] / denom, "calls": r["calls"],
                         "gflops": gf, "peak_pct": 100 * gf / peak if peak and gf else None,
                         "bytes": r["bytes"], "gbps": _rate(r["bytes"], r["flat_ns"])})
    layers = []
    for label, slot, layer, _ in _groups(profile):
        if layer is not None:
            mem, notes = layer_memory(profile, slot, layer)
            layers.append({"name": label, "memory_bytes": mem, "notes": notes})
    wall = profile.wall_ns - profile.compile_ns
    return {"total_s": total / 1e9, "compile_s": _compile_s(profile, compile_s), "peak_gflops": peak,
            "wall_s": wall / 1e9, "coverage": total / wall if wall > 0 else None, "dtype": _dtype(profile),
            "threads": config.get_num_threads(), "batch_sizes": _batches(profile),
            "rows": out_rows, "layers": layers}


SCHEMA = "jitnn.profile"
SCHEMA_VERSION = 1


def to_document(entries, producer=None):
    """The versioned JSON document every export writes, for one profile or many:
    ``{"schema": "jitnn.profile", "schema_version": 1, "producer": ..., "profiles": [entry, ...]}``.

    ``entries``: Profiles (each converted with ``to_json``) or dicts ``to_json`` returned (perhaps with
    ``title``/``batch_size``/``steps``/``dataset`` added, as perf/report.py does). The version goes up
    only when a field changes meaning or goes away; new fields may appear within a version.
    """
    entries = entries if isinstance(entries, (list, tuple)) else [entries]
    if producer is None:
        producer = f"jitnn {__version__}"
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "producer": producer,
            "profiles": [e if isinstance(e, dict) else to_json(e) for e in entries]}


def _short(label):
    return label.split(" ", 1)[0]


def to_chrome(profiles, names=None):
    """Chrome trace-event JSON (Perfetto, chrome://tracing): one complete ("X") event per recorded call.

    Only the first ``trace`` calls of a profile carry timestamps (``jitnn.profile(trace=N)``); the
    rest of each row's time follows as one aggregated event per row on a second track, so the events'
    durations still add up to the rows'.
    """
    profiles = profiles if isinstance(profiles, (list, tuple)) else [profiles]
    names = names or [f"jitnn profile {i}" for i in range(len(profiles))]
    events = []
    for pid, (p, pname) in enumerate(zip(profiles, names), start=1):
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "ts": 0, "args": {"name": pname}})
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": 1, "ts": 0,
                       "args": {"name": f"calls (first {p.max_events})"}})
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": 2, "ts": 0,
                       "args": {"name": "later calls, aggregated per row"}})
        traced = {}
        end = 0.0
        for (slot, layer, phase, batch), t0, ns, calls in p.events or ():
            ts = (t0 - p.t_start) / 1e3
            events.append({"name": f"{p.label(slot, layer)} :: {phase}", "cat": phase, "ph": "X", "ts": ts,
                           "dur": ns / 1e3, "pid": pid, "tid": 1, "args": {"batch": batch}})
            t = traced.setdefault((slot, layer, phase), [0, 0])
            t[0] += ns
            t[1] += calls
            end = max(end, ts + ns / 1e3)
        for r in sorted(p.table(), key=lambda r: -r.ns):
            done_ns, done_calls = traced.get((r.slot, r.layer, r.phase), (0, 0))
            rest = r.ns - done_ns
            if rest > 0:
                events.append({"name": f"{p.label(r.slot, r.layer)} :: {r.phase}", "cat": r.phase, "ph": "X",
                               "ts": end, "dur": rest / 1e3, "pid": pid, "tid": 2,
                               "args": {"calls": r.calls - done_calls, "aggregated": True}})
                end += rest / 1e3
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"producer": "jitnn.report.to_chrome", "unit": "microseconds"}}


def to_speedscope(profiles, names=None):
    """speedscope's file format (https://www.speedscope.app/file-format-schema.json).

    Per profile: a "sampled" profile whose stacks are [layer, phase] weighted by each row's total
    nanoseconds (all calls; the left-heavy view is the tree), and, when calls were traced, an "evented"
    profile of those calls in time order (opening the layer's frame, then the phase's).
    """
    profiles = profiles if isinstance(profiles, (list, tuple)) else [profiles]
    names = names or [f"jitnn profile {i}" for i in range(len(profiles))]
    frames, index = [], {}

    def frame(name):
        if name not in index:
            index[name] = len(frames)
            frames.append({"name": name})
        return index[name]

    out = []
    for p, pname in zip(profiles, names):
        samples, weights = [], []
        for r in sorted(p.table(), key=lambda r: -r.ns):
            label = p.label(r.slot, r.layer)
            samples.append([frame(label), frame(f"{_short(label)} {r.phase}")])
            weights.append(r.ns)
        out.append({"type": "sampled", "name": f"{pname}: all calls, per layer and phase",
                    "unit": "nanoseconds", "startValue": 0, "endValue": sum(weights),
                    "samples": samples, "weights": weights})
        if p.events:
            evs, last = [], 0
            for (slot, layer, phase, _batch), t0, ns, _calls in sorted(p.events, key=lambda e: e[1]):
                label = p.label(slot, layer)
                outer, inner = frame(label), frame(f"{_short(label)} {phase}")
                start = max(t0 - p.t_start, last)  # "at" must never decrease
                stop = max(start, t0 - p.t_start + ns)
                evs += [{"type": "O", "frame": outer, "at": start}, {"type": "O", "frame": inner, "at": start},
                        {"type": "C", "frame": inner, "at": stop}, {"type": "C", "frame": outer, "at": stop}]
                last = stop
            out.append({"type": "evented", "name": f"{pname}: first {len(p.events)} calls, timeline",
                        "unit": "nanoseconds", "startValue": 0, "endValue": last, "events": evs})
    return {"$schema": "https://www.speedscope.app/file-format-schema.json", "shared": {"frames": frames},
            "profiles": out, "name": names[0] if len(names) == 1 else "jitnn profiles",
            "activeProfileIndex": 0, "exporter": "jitnn.report.to_speedscope"}


def write_json(obj, path):
    """Write ``obj`` as JSON to ``path``, gzip-compressed when the name ends in ``.gz``."""
    text = json.dumps(obj, ensure_ascii=False)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
