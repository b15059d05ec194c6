"""Per-layer, per-phase timers for the training loop; the tables and exports live in jitnn/report.py.

The training loop brackets every layer call and every model-level phase through a recorder (the
backend's: ``HostRecorder`` here, one ``perf_counter_ns`` pair per call; CUDA events on the GPU; the
do-nothing ``NULL_RECORDER`` when no profile is open, so the loop has no branches for profiling),
which calls ``add(layer, phase, t0, t1, batch)``: never inside kernels. A row is keyed by (model, layer,
phase, batch size) and holds [ns, calls]; FLOPs and bytes are computed from the layers' shapes when
a report asks, so recording costs a dict lookup and two additions.

JIT compilation is timed apart: numba takes its global compiler lock for every compile and every
load from the disk cache, and a listener on that lock (installed at import, silent otherwise) logs
each outermost span. A span that falls inside a timed call is subtracted from that call's row and
counted in ``Profile.compile_ns`` instead, so rows never contain compile time.

Phases: per layer ``forward``, ``backward``, ``update`` (its share of the optimizer step); for the
model ``setup`` (fit's checks, targets, buffers), ``shuffle``, ``batching``, ``loss``, ``nan_guard``
(finite check + weight snapshot), ``optimizer`` (the step outside the per-array kernels), ``metrics``,
``loop`` (progress bar and loop bookkeeping), ``validation``, ``callbacks``, and ``allreduce`` (the
gradient reduction of a data-parallel step, jitnn.distributed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import NamedTuple

from numba.core import event as _event

_now = time.perf_counter_ns
_active: list = []


class _CompileClock(_event.Listener):
    """Outermost spans of numba's compiler lock: (start_ns, end_ns), in perf_counter_ns time."""

    def __init__(self):
        self.depth = 0
        self.start = 0
        self.spans: list[tuple[int, int]] = []

    def on_start(self, event):
        if self.depth == 0:
            self.start = _now()
        self.depth += 1

    def on_end(self, event):
        self.depth -= 1
        if self.depth == 0:
            self.spans.append((self.start, _now()))


_CLOCK = _CompileClock()
_event.register("numba:compiler_lock", _CLOCK)


def compile_ns_between(t0: int, t1: int) -> int:
    """Nanoseconds numba spent compiling (or loading compiled code) between two perf_counter_ns stamps."""
    return sum(max(0, min(b, t1) - max(a, t0)) for a, b in _CLOCK.spans)


class Row(NamedTuple):
    """One (layer, phase) of a profile; ``layer`` is None for model-level phases."""

    slot: int
    layer: int | None
    phase: str
    ns: int
    calls: int
    flops: int
    bytes: int


class Profile:
    """What one ``profile()`` block (or one ``fit(profile=True)``) recorded."""

    def __init__(self, trace: int = 0, t_start: int | None = None):
        self.acc: dict = {}  # (slot, layer, phase, batch) -> [ns, calls]
        self.models: list = []  # slot -> model
        self.max_events = int(trace)
        self.events: list | None = [] if trace else None  # (key, t0, ns, calls): the first calls
        self.t_start = _now() if t_start is None else t_start
        self.t_end: int | None = None
        spans = _CLOCK.spans
        self._c0 = len(spans)
        while self._c0 and spans[self._c0 - 1][1] > self.t_start:
            self._c0 -= 1  # a compile between t_start and now (fit's setup) still belongs to us
        self._cseen = self._c0
        self._c1: int | None = None
        self.rows_compile_ns = 0  # compile time taken out of rows (it happened inside a timed call)

    # --- recording ---------------------------------------------------------------------------------
    def recorder(self, model) -> _Recorder:
        for slot, m in enumerate(self.models):
            if m is model:
                return _Recorder(self, slot)
        self.models.append(model)
        return _Recorder(self, len(self.models) - 1)

    def _absorb_compile(self, t0: int, t1: int) -> int:
        """Compile time inside [t0, t1] from spans logged since the last call (taken out of the row)."""
        spans = _CLOCK.spans
        inside = sum(max(0, min(b, t1) - max(a, t0)) for a, b in spans[self._cseen:])
        self._cseen = len(spans)
        self.rows_compile_ns += inside
        return inside

    def close(self) -> None:
        if self.t_end is None:
            self.t_end = _now()
            self._c1 = len(_CLOCK.spans)

    # --- reading -----------------------------------------------------------------------------------
    @property
    def wall_ns(self) -> int:
        """Wall time of the block (so far, while it is open), compile time included."""
        return (self.t_end if self.t_end is not None else _now()) - self.t_start

    @property
    def compile_ns(self) -> int:
        """Time numba spent compiling or loading kernels while the profile was open."""
        spans = _CLOCK.spans[self._c0:self._c1]
        end = self.t_end if self.t_end is not None else _now()
        return sum(max(0, min(b, end) - max(a, self.t_start)) for a, b in spans)

    def total_ns(self) -> int:
        return sum(r[0] for r in self.acc.values())

    def coverage(self) -> float:
        """Share of the wall time (compile excluded) that the rows account for."""
        wall = self.wall_ns - self.compile_ns
        return self.total_ns() / wall if wall > 0 else 0.0

    def layer(self, slot: int, index: int):
        return self.models[slot].layers[index]

    def label(self, slot: int, layer: int | None) -> str:
        prefix = ""
        if len(self.models) > 1:
            names = [m.name for m in self.models]
            name = names[slot]
            prefix = f"{name}/" if names.count(name) == 1 else f"{name}#{slot}/"
        if layer is None:
            return prefix + "model"
        lay = self.layer(slot, layer)
        return f"{prefix}{lay.kind}[{layer}] {lay.describe()[len(lay.kind):].strip()}".rstrip()

    def table(self) -> list[Row]:
        """One Row per (model, layer, phase), batch sizes merged; FLOPs and bytes from shapes."""
        merged: dict = {}
        for (slot, layer, phase, batch), (ns, calls) in self.acc.items():
            flops, nbytes = self._work(slot, layer, phase, batch)
            r = merged.setdefault((slot, layer, phase), [0, 0, 0, 0])
            r[0] += ns
            r[1] += calls
            r[2] += flops * calls
            r[3] += nbytes * calls
        return [Row(s, l, p, *v) for (s, l, p), v in merged.items()]

    def _work(self, slot, layer, phase, batch):
        if layer is None:
            return 0, 0
        lay = self.layer(slot, layer)
        if phase == "update":
            return 0, update_bytes(self.models[slot].optimizer, lay)
        first = layer == 0  # the model skips the first layer's input gradient
        return (lay.flops(batch, need_input_grad=not first).get(phase, 0),
                lay.bytes_moved(batch, need_input_grad=not first).get(phase, 0))


def update_bytes(optimizer, layer) -> int:
    """Bytes one optimizer step moves for a layer: read g, read+write w and every state buffer."""
    slots = len(optimizer.slots) if optimizer is not None else 0
    return sum(p.nbytes for p in layer.params) * (1 + 2 * (1 + slots))


class _Recorder:
    """What the model holds during fit: ``add`` into one profile under this model's slot."""

    __slots__ = ("acc", "events", "max_events", "profile", "slot")

    def __init__(self, profile: Profile, slot: int):
        self.profile, self.slot, self.acc = profile, slot, profile.acc
        self.events, self.max_events = profile.events, profile.max_events

    def add(self, layer, phase, t0, t1, batch, calls=1):
        key = (self.slot, layer, phase, batch)
        row = self.acc.get(key)
        if row is None:
            row = self.acc[key] = [0, 0]
        ns = t1 - t0
        if len(_CLOCK.spans) != self.profile._cseen:
            ns -= self.profile._absorb_compile(t0, t1)
        row[0] += ns
        row[1] += calls
        events = self.events
        if events is not None and len(events) < self.max_events:
            events.append((key, t0, ns, calls))

    def update_hook(self, layers) -> _UpdateTimer:
        owner = [i for i, layer in enumerate(layers) for _ in layer.params]
        return _UpdateTimer(self, owner)

    def finish(self):
        """The end of one fit: close a profile that fit(profile=True) opened."""
        if self.profile not in _active:
            self.profile.close()


class _UpdateTimer:
    """``Optimizer.step(..., on_param=timer)``: bills each parameter array's kernel to its layer.

    ``start(batch)`` before the step; the step then calls it before array 0, ..., before array n-1 and
    after the last. Time before array 0 (checks, learning rate) goes to the model's ``optimizer`` row,
    as does the step's tail after the last boundary (the caller records ``t`` to the return).
    """

    __slots__ = ("batch", "owner", "rec", "t")

    def __init__(self, rec: _Recorder, owner: list):
        self.rec, self.owner, self.t, self.batch = rec, owner, 0, 0

    def start(self, batch):
        self.batch = batch
        self.t = _now()

    def __call__(self, i):
        owner = self.owner
        if 0 < i < len(owner) and owner[i] == owner[i - 1]:
            return  # the same layer's next array (a bias after its kernel): one row per layer and step
        t1 = _now()
        if i == 0:  # the step's head (checks, learning rate); its tail completes the call
            self.rec.add(None, "optimizer", self.t, t1, self.batch, 0)
        else:
            self.rec.add(self.owner[i - 1], "update", self.t, t1, self.batch)
        self.t = _now()


class NullRecorder:
    """The recorder when nothing is profiled: every method does nothing, at the cost of a call."""

    __slots__ = ()

    def start(self):
        return 0

    def stop(self, mark, layer, phase, batch):
        pass

    host_start, host_stop = start, stop

    def add(self, layer, phase, t0, t1, batch):
        pass

    def update_hook(self, batch):
        return None

    def end_update(self, batch):
        pass

    def flush(self):
        pass

    def finish(self):
        pass


NULL_RECORDER = NullRecorder()


class HostRecorder:
    """Host-clock timing for the training loop: ``mark = start()`` ... ``stop(mark, layer, phase, batch)``.

    ``host_start``/``host_stop`` time host work (the same clock here; a device recorder keeps its events
    for device work only). ``update_hook(batch)`` is the optimizer's ``on_param``, billing each array's
    update to its layer; ``end_update`` closes the step's ``optimizer`` row."""

    __slots__ = ("rec", "timer")

    def __init__(self, rec, layers):
        self.rec = rec
        self.timer = rec.update_hook(layers)

    def start(self):
        return _now()

    def stop(self, mark, layer, phase, batch):
        self.rec.add(layer, phase, mark, _now(), batch)

    host_start, host_stop = start, stop

    def add(self, layer, phase, t0, t1, batch):
        self.rec.add(layer, phase, t0, t1, batch)

    def update_hook(self, batch):
        self.timer.start(batch)
        return self.timer

    def end_update(self, batch):
        self.rec.add(None, "optimizer", self.timer.t, _now(), batch)

    def flush(self):
        pass

    def finish(self):
        self.rec.finish()


def current(requested, model, t_start=None):
    """The recorder for ``model``: the innermost ``profile()`` block, a new profile if requested, or None.

    A new profile's wall clock starts at ``t_start`` (the start of fit) when given.
    """
    if _active:
        return _active[-1].recorder(model)
    if requested:
        model.profile_ = Profile(t_start=t_start)
        return model.profile_.recorder(model)
    return None


@contextlib.contextmanager
def profile(trace: int = 0) -> Iterator[Profile]:
    """``with jitnn.profile() as p: model.fit(...)`` records every layer call inside the block.

    ``trace=N`` also keeps the first N calls with their timestamps, for the Chrome-trace and speedscope
    exports (later calls are still counted in the rows).
    """
    p = Profile(trace)
    _active.append(p)
    try:
        yield p
    finally:
        p.close()
        _active.remove(p)
