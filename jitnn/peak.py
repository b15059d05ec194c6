"""The machine's float32/float64 peak, for the profiler's %peak column: measured once, then cached.

The measurement runs jitnn's own GEMM micro-kernel (:func:`jitnn.kernels.micro.micro_kernel`, the
MR x NR register tile of FMAs) in a tight loop on panels that stay in L1, one copy per thread under
``prange``: the rate the GEMM could reach if packing, memory and the epilogue cost nothing. It is
calibrated to short runs of which the best is kept: on a shared machine another process only ever
lowers the figure. When another process holds a core, a run on all threads cannot find them all free,
so one thread is measured too and the peak is max(all threads, threads x one thread): the loop touches
nothing but its own core's registers and L1, so cores add up. About 0.3 s per dtype.

The result is cached in ``peak.json`` under the jitnn cache directory, keyed by the CPU model
(``/proc/cpuinfo`` "model name") and the thread count. The directory is ``JITNN_CACHE_DIR``, else
``~/.cache/jitnn``, else a directory in the system temp dir; when none is writable the figure is kept
in memory for the process only.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time

import numba
import numpy as np
from numba import njit, prange

from jitnn import config
from jitnn.kernels.blocking import BLOCKS, ISA
from jitnn.kernels.micro import micro_kernel

# Panel depth per dtype: A sliver + B sliver in a 32 KiB L1 with room to spare (f32: 6 + 16 KiB,
# f64: 9 + 12 KiB). 256 deep is how docs/architecture.md measured the kernel alone (91.8 GFLOP/s).
KC = {"float32": 256, "float64": 192}
FILE_NAME = "peak.json"
_memory: dict = {}  # key -> entry, for when no cache directory is writable


@njit(parallel=True, cache=config.CACHE, nogil=True)
def _fma_loop(ap, bp, ct, kc, nr, reps):
    """``reps`` micro-kernel calls per thread on its own L1-resident panels; returns a checksum."""
    tasks = ap.shape[0]
    mr = ct.shape[1] // nr  # the packed A panel's column step
    sink = np.zeros(tasks)
    for t in prange(tasks):
        s = 0.0
        for _ in range(reps):
            micro_kernel(kc, ap[t], 0, 1, mr, bp[t], 0, nr, ct[t])
            # Read the whole tile: reading one element let LLVM drop the other stores as overwritten
            # by the next call, and with them most FMAs (311 GFLOP/s "measured" on a 2.1 GHz core).
            for q in range(ct.shape[1]):
                s += ct[t, q]
        sink[t] = s
    return sink


def measure(dtype="float32", threads=None, seconds=0.03, rounds=5) -> float:
    """GFLOP/s of the micro-kernel on ``threads`` threads (default: jitnn's), best of ``rounds`` runs."""
    dtype = np.dtype(dtype)
    threads = threads or config.get_num_threads()
    mr, nr = BLOCKS[dtype.name][:2]
    kc = KC[dtype.name]
    rng = np.random.default_rng(0)
    ap = rng.uniform(-1e-3, 1e-3, (threads, kc * mr)).astype(dtype)
    bp = rng.uniform(-1e-3, 1e-3, (threads, kc * nr)).astype(dtype)
    ct = np.zeros((threads, mr * nr), dtype)
    flops_per_call = 2 * mr * nr * kc
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        # config.call: in a child forked after OpenMP use a parallel region would abort it (serial build there)
        config.call(_fma_loop, ap, bp, ct, kc, nr, 1)  # compile (or load from the cache) outside the timing
        reps = 1000
        while True:  # calibrate: grow until one run takes >= a tenth of the budget
            t0 = time.perf_counter()
            config.call(_fma_loop, ap, bp, ct, kc, nr, reps)
            dt = time.perf_counter() - t0
            if dt >= seconds / 10 or reps >= 1 << 30:
                break
            reps *= 4
        reps = max(1, int(reps * seconds / max(dt, 1e-9)))
        best = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            config.call(_fma_loop, ap, bp, ct, kc, nr, reps)
            best = max(best, flops_per_call * reps * threads / (time.perf_counter() - t0) / 1e9)
        return best
    finally:
        numba.set_num_threads(before)


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo, or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cache_dir() -> str | None:
    """The first writable of JITNN_CACHE_DIR, ~/.cache/jitnn, <tmp>/jitnn-<uid>; None if none is."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    env = config.cache_dir_setting()
    candidates = [env] if env else []
    candidates += [os.path.join(os.path.expanduser("~"), ".cache", "jitnn"),
                   os.path.join(tempfile.gettempdir(), f"jitnn-{uid}")]
    for path in candidates:
        if config.writable_dir(path):
            return path
    return None


# Bumped when the measurement changes: entries of another method (or register tile) are measured again
# rather than kept as "the best seen" (method 2 reads the whole tile after each call).
METHOD = f"2 {ISA}"


def clear_memory() -> None:
    """Forget the figures kept for this process when no cache file could be written (tests use it)."""
    _memory.clear()


def _key(threads: int) -> str:
    return f"{cpu_model()} | threads={threads}"


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt: measure again and overwrite


def cached(threads=None, path=None) -> dict | None:
    """The cached entry for this CPU and thread count, without measuring; None when there is none."""
    threads = threads or config.get_num_threads()
    key = _key(threads)
    if key in _memory:
        return _memory[key]
    if path is None:
        d = cache_dir()
        path = os.path.join(d, FILE_NAME) if d else None
    entry = _read(path).get(key) if path else None
    ok = isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in config.FLOAT_DTYPES)
    ok = ok and entry.get("method") == METHOD
    return dict(entry, path=path, source="cache") if ok else None


def estimate(threads=None, path=None, refresh=False, seconds=0.03) -> dict:
    """``{"float32": GFLOP/s, "float64": GFLOP/s, "cpu", "threads", "source", "path"}``, measured once.

    ``path`` overrides the cache file; ``refresh`` measures again and keeps the higher of the old and
    new figures. When the file cannot be written the entry is still returned (``"path": None``) and
    kept for this process.
    """
    threads = threads or config.get_num_threads()
    if not refresh:
        hit = cached(threads, path)
        if hit is not None:
            return hit
    t0 = time.perf_counter()
    entry = {"cpu": cpu_model(), "threads": threads, "method": METHOD}
    for dt in config.FLOAT_DTYPES:
        parallel = measure(dt, threads, seconds)
        single = measure(dt, 1, seconds, rounds=8) if threads > 1 else parallel
        entry[dt] = round(max(parallel, threads * single), 1)
        entry[f"{dt}_measured"] = {"all_threads": round(parallel, 1), "one_thread": round(single, 1)}
    entry.update({
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 2)})
    key = _key(threads)
    if path is None:
        d = cache_dir()
        path = os.path.join(d, FILE_NAME) if d else None
    old = _memory.get(key) or (_read(path).get(key) if path else None)
    if isinstance(old, dict) and old.get("method") == METHOD:  # keep the best seen: load only lowers it
        for dt in config.FLOAT_DTYPES:
            if isinstance(old.get(dt), (int, float)):
                entry[dt] = max(entry[dt], float(old[dt]))
        entry["runs"] = int(old.get("runs", 1)) + 1 if isinstance(old.get("runs", 1), int) else 2
    written = _write(path, key, entry) if path else False
    if not written:
        _memory[key] = dict(entry, path=None, source="measured (not cached: no writable cache directory)")
        return _memory[key]
    return dict(entry, path=path, source="measured")


def _write(path: str, key: str, entry: dict) -> bool:
    """Merge ``entry`` into the JSON file atomically; False when the directory is not writable."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        data = _read(path)
        data[key] = entry
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".peak-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def peak_gflops(dtype="float32", threads=None, measure_if_missing=True) -> float | None:
    """The peak for ``dtype``: cached, else measured now (or None when ``measure_if_missing`` is False)."""
    entry = estimate(threads) if measure_if_missing else cached(threads)
    return None if entry is None else float(entry[np.dtype(dtype).name])
