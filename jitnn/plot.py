"""Pictures: training curves (``history``) and a profile's per-layer time and GFLOP/s (``profile``).

Both return a matplotlib ``Figure`` (made without pyplot, so no display or backend is touched) and
write it to ``path`` when one is given, in the format its extension names (.svg, .png, .pdf). SVG
keeps its text as text, so layer names can be searched in the file.

Requires matplotlib (``pip install 'jitnn[plot]'``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jitnn import report
from jitnn.callbacks import History
from jitnn.profiler import Profile

_SAVE_RC = {"svg.fonttype": "none", "svg.hashsalt": "jitnn"}  # text as <text>; stable ids


def _save(fig: Figure, path) -> None:
    if path is not None:
        with matplotlib.rc_context(_SAVE_RC):
            fig.savefig(os.fspath(path), bbox_inches="tight", metadata=_metadata(path))


def _metadata(path):
    ext = os.fspath(path).rsplit(".", 1)[-1].lower()
    return {"Date": None} if ext in ("svg", "pdf") else None  # byte-identical files for the same figure


def _series(history) -> dict[str, list[float]]:
    data = getattr(history, "history", history)
    if not isinstance(data, dict) or not data:
        raise TypeError("history must be a History (what fit returns) or a non-empty dict of per-epoch "
                        f"lists, received: {type(history).__name__}")
    return {str(k): [float(v) for v in vals] for k, vals in data.items()}


def history(history: History | dict[str, Sequence[float]], path: str | os.PathLike | None = None,
            title: str | None = None) -> Figure:
    """Loss and each metric per epoch, one panel each, training and validation (``val_``) together."""
    data = _series(history)
    names = [k for k in data if not k.startswith("val_")]
    names += [k[4:] for k in data if k.startswith("val_") and k[4:] not in data]
    fig = Figure(figsize=(4.2 * len(names), 3.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for key, style, label in ((name, "-o", "train"), ("val_" + name, "--s", "validation")):
            if key in data:
                epochs = range(1, len(data[key]) + 1)
                ax.plot(epochs, data[key], style, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def profile(profiles: Profile | Sequence[Profile], path: str | os.PathLike | None = None,
            names: Sequence[str] | None = None, peak_gflops: float | Sequence[float] | None = None,
            limit: int = 12) -> Figure:
    """Per layer and phase (the ``limit`` slowest rows): time bars, and GFLOP/s bars against the peak.

    One row of two panels per profile; ``peak_gflops`` (a number, or one per profile) defaults to the
    cached ``jitnn.peak`` figure for the model's dtype, as in the text report.
    """
    profiles = profiles if isinstance(profiles, (list, tuple)) else [profiles]
    names = names or [f"profile {i}" for i in range(len(profiles))]
    peaks = peak_gflops if isinstance(peak_gflops, (list, tuple)) else [peak_gflops] * len(profiles)
    heights = [max(1, min(limit, len(report.rows(p)))) for p in profiles]
    fig = Figure(figsize=(11, sum(0.32 * h + 1.0 for h in heights)), layout="constrained")
    grid = fig.subplots(len(profiles), 2, squeeze=False, gridspec_kw={"height_ratios": heights})
    for (ax_t, ax_g), p, pname, pk in zip(grid, profiles, names, peaks):
        rows = sorted(report.rows(p), key=lambda r: -r["flat_ns"])[:limit][::-1]  # slowest on top
        labels = [r["name"] for r in rows]
        ms = [r["flat_ns"] / 1e6 for r in rows]
        gflops = [r["flops"] / r["flat_ns"] if r["flat_ns"] and r["flops"] else 0.0 for r in rows]
        ax_t.barh(labels, ms, color="tab:blue")
        ax_t.set_xlabel("time (ms, compile excluded)")
        ax_t.set_title(f"{pname}: time per layer and phase")
        ax_g.barh(labels, gflops, color="tab:orange")
        ax_g.set_yticks(range(len(labels)), [""] * len(labels))
        ax_g.set_xlabel("GFLOP/s")
        peak = report.resolve_peak(p, pk)
        if peak:
            ax_g.axvline(peak, color="black", linestyle="--", linewidth=1)
            ax_g.text(peak, len(labels) - 0.5, f" peak {peak:.0f}", va="top", ha="right", fontsize=8)
        ax_g.set_title("achieved GFLOP/s against the peak")
        for ax in (ax_t, ax_g):
            ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return fig


__all__ = ["history", "profile"]
