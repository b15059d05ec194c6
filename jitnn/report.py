"""The hotspot table, in the shape of Go's ``pprof -top``.

Each row is one layer's phase (or a model-level phase: batching, loss, optimizer, metrics). ``flat``
is the row's own time; ``cum`` is its layer's forward + backward (the whole layer), so a row shows
both what the phase costs and what the layer around it costs. GFLOP/s come from shapes.
"""

from __future__ import annotations


def _fmt_s(ns):
    s = ns / 1e9
    if s >= 1:
        return f"{s:.2f}s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f}ms"
    return f"{s * 1e6:.0f}us"


def rows(profile):
    """[(name, flat_ns, cum_ns, calls, gflops)] for every recorded (layer, phase)."""
    by_layer = {}
    for (layer, _phase), r in profile.rows.items():
        by_layer[layer] = by_layer.get(layer, 0) + r[0]
    out = []
    for key, (ns, calls, flops, _bytes) in profile.rows.items():
        layer, phase = key
        label = profile.labels.get(key, "model")
        cum = by_layer[layer] if layer != "model" else ns
        gflops = flops / ns if ns and flops else 0.0  # FLOP per ns == GFLOP/s
        out.append((f"{label} :: {phase}", ns, cum, calls, gflops))
    return out


def render_top(profile, sort="flat", peak_gflops=None, compile_s=None, limit=None):
    """The table as text, sorted by ``flat`` or ``cum``."""
    data = rows(profile)
    total = sum(r[1] for r in data) or 1
    data.sort(key=lambda r: (r[2] if sort == "cum" else r[1]), reverse=True)
    head = f"Showing nodes accounting for {_fmt_s(total)}, 100% of {_fmt_s(total)} total"
    if compile_s is not None:
        head += f" (compile {compile_s:.2f}s not included)"
    lines = [head, f"{'flat':>9s} {'flat%':>6s} {'sum%':>6s} {'cum':>9s} {'cum%':>6s} {'calls':>8s} "
                   f"{'GFLOP/s':>8s} {'%peak':>6s}  name"]
    acc = 0
    for name, flat, cum, calls, gf in data[:limit]:
        acc += flat
        peak = f"{100 * gf / peak_gflops:5.0f}%" if (peak_gflops and gf) else "     -"
        gfs = f"{gf:8.1f}" if gf else "       -"
        lines.append(f"{_fmt_s(flat):>9s} {100 * flat / total:5.1f}% {100 * acc / total:5.1f}% {_fmt_s(cum):>9s} "
                     f"{100 * cum / total:5.1f}% {calls:8d} {gfs} {peak}  {name}")
    return "\n".join(lines)
