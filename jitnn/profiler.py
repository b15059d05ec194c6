"""Per-layer, per-phase timers for the training loop (the report itself lives in perf/report.py).

The model calls ``add(layer_index, phase, ns, batch)`` once per layer call: one perf_counter_ns pair
per call, never inside kernels. FLOPs and bytes come from the layers' shapes.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

_active: list = []


class Profile:
    """Records (layer, phase) -> wall ns, calls, FLOPs, bytes for every model it is attached to."""

    def __init__(self):
        self.rows = defaultdict(lambda: [0, 0, 0, 0])  # key -> [ns, calls, flops, bytes]
        self.labels = {}
        self.model = None
        self.wall_ns = 0
        self._t0 = None

    def attach(self, model):
        self.model = model
        return self

    def add(self, layer_index, phase, ns, batch):
        if layer_index is None:
            key = ("model", phase)
            flops = nbytes = 0
        else:
            layer = self.model.layers[layer_index]
            key = (layer_index, phase)
            if key not in self.labels:
                self.labels[key] = f"{layer.kind}[{layer_index}] {layer.describe()[len(layer.kind):].strip()}"
            flops = layer.flops(batch).get(phase, 0)
            nbytes = layer.bytes_moved(batch).get(phase, 0)
        row = self.rows[key]
        row[0] += ns
        row[1] += 1
        row[2] += flops
        row[3] += nbytes

    def finish(self):
        pass

    def total_ns(self):
        return sum(r[0] for r in self.rows.values())


def current(requested, model):
    """The profile to record into: the innermost ``profile()`` block, a new one if requested, or None."""
    if _active:
        return _active[-1].attach(model)
    if requested:
        model.profile_ = Profile().attach(model)
        return model.profile_
    return None


@contextlib.contextmanager
def profile():
    """``with jitnn.profile() as p: model.fit(...)`` records every layer call inside the block."""
    p = Profile()
    _active.append(p)
    t0 = time.perf_counter_ns()
    try:
        yield p
    finally:
        p.wall_ns = time.perf_counter_ns() - t0
        _active.remove(p)
