"""Every setting of jitnn in one place: dtype, threads, fastmath flags, the compile cache.

Environment variables, all read here (at import, except the two read at each call, last below):

- ``NUMBA_NUM_THREADS``: numba's own cap on worker threads (numba reads it; we respect it).
- ``JITNN_NUM_THREADS``: threads jitnn kernels use (default: all numba threads).
- ``JITNN_PARALLEL_MIN_WORK``: below this many elements touched, a kernel runs on the calling thread
  (default 65536). ``JITNN_PARALLEL_MIN_FLOPS``: the same for GEMM, in FLOPs (default 4,000,000).
- ``JITNN_CACHE``: ``0`` disables the on-disk compile cache.
- ``JITNN_CACHE_DIR``: where compiled kernels are cached (default: numba's own choice, falling back to
  ``~/.cache/jitnn/numba`` and then a temporary directory when that is not writable). Outside the
  package, the directory must belong to this user and be writable by nobody else (numba unpickles its
  cache index): otherwise caching is off, with a RuntimeWarning. Fallbacks are created with mode 0700.
- ``NUMBA_THREADING_LAYER``: when unset, jitnn asks numba for ``threadsafe`` (tbb if installed, else
  omp; never ``workqueue``, which aborts the process when two threads call kernels at once). Set to
  ``workqueue`` by the user, jitnn's parallel kernels take turns behind one lock (``kernel_turns``).
- ``JITNN_FLUSH_DENORMALS``: ``0`` keeps denormal floats during ``fit``; by default the CPU backend
  flushes them to zero on its threads while ``fit`` runs (jitnn/kernels/fpenv.py says why).
- ``GOMP_SPINCOUNT``: how long an idle OpenMP worker spins before sleeping; a value you set wins
  (jitnn's default and why: the Threading section of docs/architecture.md).
- ``NUMBA_CACHE_DIR``: numba's own cache directory, used when ``JITNN_CACHE_DIR`` is unset (same
  checks); jitnn sets it to the directory it chose, and removes it when it refused it.
- ``NUMBA_ENABLE_CUDASIM``: numba's CUDA simulator (``1``, set before numba is first imported) stands in
  for a GPU; numba reads it, jitnn.cuda asks numba (``jitnn.cuda.runtime.simulated``).
- ``JITNN_FASHION_MNIST``: the directory ``jitnn.datasets.fashion_mnist`` reads (default
  ``/usr/share/datasets/fashion-mnist``). Read at each call (``fashion_mnist_dir_setting``), as is
  ``JITNN_CACHE_DIR`` for the peak-FLOP/s file (``cache_dir_setting``): a notebook or a test may set them
  after import.

The thread rule (``threads_for``): work below the size above runs on the calling thread, larger work
on ``get_num_threads()`` threads. GEMM receives the count as an argument; ``launch`` applies it to
other kernels through numba's thread-local count, restored on every exit, KeyboardInterrupt included.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
import warnings

# Safe fastmath subset. "nnan"/"ninf" would let LLVM assume no NaN/inf and delete our NaN checks;
# "reassoc" lets it reorder sums (vectorized reductions), "contract" lets it fuse a*b+c into an FMA.
FASTMATH = {"reassoc", "contract", "nsz"}

# Denormals flushed to zero (MXCSR FTZ/DAZ) on the kernel threads while fit runs: each one costs a
# microcode assist of ~100 cycles (jitnn/kernels/fpenv.py).
FLUSH_DENORMALS = os.environ.get("JITNN_FLUSH_DENORMALS", "1") != "0"

DEFAULT_DTYPE = "float32"
FLOAT_DTYPES = ("float32", "float64")


def _private_dir_problem(path: str) -> str | None:
    """Why ``path`` may not hold compiled code for this user, or None when it may.

    numba reads its cache index with pickle: whoever can write the directory can run code as us. So the
    directory must be ours and writable by nobody else (no group or other write bit), and it must not
    be a symlink (another user could re-point a link in a shared /tmp after we checked it).
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"cannot stat it ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != _uid():
        return f"it is owned by uid {st.st_uid}, not by this user (uid {_uid()})"
    if os.name == "posix" and st.st_mode & 0o022:
        return f"other users can write to it (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def writable_dir(path: str) -> bool:
    """True when ``path`` exists or can be made, and a file can be created in it."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jitnn-probe-", delete=True):
            pass
        return True
    except OSError:
        return False


def _private_dir(path: str) -> str | None:
    """``path`` made (mode 0700) or found private to this user and writable, else None.

    A directory that exists but fails ``_private_dir_problem`` is refused with a RuntimeWarning. A
    symlink is followed only when this user (or root) owns the link itself: nobody else can re-point it.
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.mkdir(path, 0o700)  # atomic: if it already exists (maybe planted), the checks below decide
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) and st.st_uid in (0, _uid()):
            path = os.path.realpath(path)
    except OSError:
        return None
    problem = _private_dir_problem(path)
    if problem is not None:
        warnings.warn(f"jitnn: compile cache disabled for {path!r}: {problem}", RuntimeWarning, stacklevel=3)
        return None
    return path if writable_dir(path) else None


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def cache_dir_setting() -> str | None:
    """``$JITNN_CACHE_DIR`` as it is now (None when unset or empty)."""
    return os.environ.get("JITNN_CACHE_DIR") or None


def fashion_mnist_dir_setting() -> str | None:
    """``$JITNN_FASHION_MNIST`` as it is now (None when unset or empty)."""
    return os.environ.get("JITNN_FASHION_MNIST") or None


def _choose_cache() -> tuple[bool, str | None]:
    """Decide, before numba is imported, whether and where compiled kernels are cached.

    numba caches next to the source (``__pycache__``) and falls back to a user-wide directory; when
    neither is writable ``@njit(cache=True)`` raises at decoration time. We probe first, point
    ``NUMBA_CACHE_DIR`` at a writable place, and disable caching only when nothing is writable. A
    directory outside the package (``JITNN_CACHE_DIR``, ``NUMBA_CACHE_DIR`` or a fallback) must be
    private to this user (see ``_private_dir_problem``): otherwise caching is off, with a warning.
    """
    if os.environ.get("JITNN_CACHE", "1") == "0":
        return False, None
    wanted = cache_dir_setting() or os.environ.get("NUMBA_CACHE_DIR")
    if wanted:
        candidates = [wanted]
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        if writable_dir(os.path.join(here, "__pycache__")):
            return True, None  # numba's default in-tree location works
        candidates = [
            os.path.join(os.path.expanduser("~"), ".cache", "jitnn", "numba"),
            os.path.join(tempfile.gettempdir(), f"jitnn-numba-{_uid()}"),
        ]
    for candidate in candidates:
        path = _private_dir(candidate)
        if path is not None:
            os.environ["NUMBA_CACHE_DIR"] = path
            return True, path
    # numba would otherwise still use a NUMBA_CACHE_DIR we refused if some code asked for cache=True
    os.environ.pop("NUMBA_CACHE_DIR", None)
    return False, None


CACHE, CACHE_DIR = _choose_cache()

# libgomp spins GOMP_SPINCOUNT iterations (one PAUSE each, ~40-140 cycles) at every barrier before its
# workers sleep. 1000 keeps the team awake across the few-microsecond Python gaps between back-to-back
# kernels (a training step, a loop of matmuls) and lets an idle process sleep within ~0.1 ms. On a
# loaded machine every spin takes a time slice another thread needs: interleaved runs of
# perf/bench_threads.py (12 MLP GEMMs a step, 2 threads, load average ~10) measured 13.5 ms a step at
# 1000, 18.5 ms at 5000, 57 ms at 30000 and 196 ms at libgomp's default 300000 (docs/architecture.md).
SPIN_COUNT = "1000"
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

if CACHE_DIR is not None and numba.config.CACHE_DIR != CACHE_DIR:
    numba.config.reload_config()  # numba was imported before us: make it see the new directory


if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"  # tbb, else omp: both take concurrent callers

# workqueue runs one parallel region at a time and kills the process when a second thread starts another:
# under it (the user's explicit choice) jitnn's kernels take turns; otherwise this costs one no-op `with`.
kernel_turns = threading.RLock() if numba.config.THREADING_LAYER == "workqueue" else contextlib.nullcontext()


def _initial_threads() -> int:
    n = int(os.environ.get("JITNN_NUM_THREADS", numba.config.NUMBA_NUM_THREADS))
    return max(1, min(n, numba.config.NUMBA_NUM_THREADS))


_threads = _initial_threads()


def set_num_threads(n: int) -> None:
    """Set how many threads jitnn's parallel kernels use (at most ``NUMBA_NUM_THREADS``)."""
    global _threads
    if not isinstance(n, (int,)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads needs a positive int, received: {n!r}")
    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        raise ValueError(
            f"set_num_threads({n}) exceeds NUMBA_NUM_THREADS={limit}; raise that environment variable "
            "before the first import of numba"
        )
    numba.set_num_threads(n)
    _threads = n


def get_num_threads() -> int:
    """Threads jitnn's parallel kernels use now."""
    return _threads


numba.set_num_threads(_threads)

# The njit options every kernel shares.
JIT = {"nogil": True, "cache": CACHE, "fastmath": FASTMATH, "error_model": "numpy"}
PJIT = dict(JIT, parallel=True)


# numba's thread count from jitted code, by the threading layer's own C functions (their symbols are
# registered when the layer starts, which the numba.set_num_threads above does). numba's overloads of
# get/set_num_threads call them through ctypes pointers, which numba refuses to cache on disk.
def _threading_layer_function(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


@intrinsic
def set_threads(typingctx, n):
    """numba.set_num_threads(n) for the calling thread, from jitted code (no checks: 1 <= n <= the pool)."""

    def codegen(context, builder, signature, args):
        _threading_layer_function(builder, "set_num_threads", ir.VoidType(), [builder.trunc(args[0], ir.IntType(32))])
        return context.get_dummy_value()

    return types.void(types.intp), codegen


@intrinsic
def threads_now(typingctx):
    """numba.get_num_threads() for the calling thread, from jitted code."""

    def codegen(context, builder, signature, args):
        return builder.sext(_threading_layer_function(builder, "get_num_threads", ir.IntType(32), []),
                            ir.IntType(64))

    return types.intp(), codegen


@numba.njit(nogil=True, cache=CACHE)
def swap_threads(n):
    """Sets the calling thread's numba thread count to ``n``; returns the count it had. ~0.3 us a call,
    where numba.get_num_threads and numba.set_num_threads cost 2-4 us each in Python checks and locks."""
    before = threads_now()
    set_threads(n)
    return before


# Below this much work (elements touched, or FLOPs for a GEMM) a kernel runs on the calling thread
# alone. Waking the pool costs 3-6 us on an idle machine, and when another process holds a core a
# parallel region can wait a whole scheduler time slice (measured: 8 ms for a 128x512 activation).
PARALLEL_MIN_WORK = int(os.environ.get("JITNN_PARALLEL_MIN_WORK", "65536"))
PARALLEL_MIN_FLOPS = int(os.environ.get("JITNN_PARALLEL_MIN_FLOPS", "4000000"))


# Set in a child forked after the parent ran GNU OpenMP threads: libgomp's pool does not survive
# fork(), and numba kills such a child at its first parallel region ("Terminating: fork() called from a
# process already using GNU OpenMP"), which hangs a multiprocessing.Pool waiting on it.
_forked_after_omp = False


def _after_fork_in_child() -> None:
    global _forked_after_omp
    try:
        _forked_after_omp = numba.threading_layer() == "omp"
    except ValueError:  # the parent never started a thread pool: the child starts its own
        _forked_after_omp = False


os.register_at_fork(after_in_child=_after_fork_in_child)

_serial_builds: dict = {}


def _serial_build(kernel):
    """``kernel`` compiled without ``parallel`` (its prange loops run as range), for a child forked after
    OpenMP use: it never enters a parallel region, so the child works, on one thread. Compiled on its
    first use in the child and not cached on disk (numba's cache index would not tell it from the
    parallel build)."""
    fn = _serial_builds.get(kernel)
    if fn is None:
        fn = _serial_builds[kernel] = numba.njit(**dict(JIT, cache=False))(kernel.py_func)
    return fn


def call(kernel, *args):
    """A parallel kernel that splits its own work (the optimizer updates): called as it is, except in a
    child forked after OpenMP use (a serial build) and under the workqueue layer (one at a time)."""
    if _forked_after_omp:
        return _serial_build(kernel)(*args)
    with kernel_turns:
        return kernel(*args)


def threads_for(work, min_work=None) -> int:
    """The one thread rule: how many threads a piece of ``work`` (elements, or FLOPs for a GEMM) gets.

    1 below ``min_work`` (default PARALLEL_MIN_WORK) or in a child forked after OpenMP was used (the
    serial paths never enter a parallel region, so they stay safe there); else ``get_num_threads()``.
    """
    if work < (PARALLEL_MIN_WORK if min_work is None else min_work) or _forked_after_omp:
        return 1
    return _threads


def launch(kernel, work, *args):
    """``kernel(*args)`` on ``threads_for(work)`` threads (serially built in a child forked after OpenMP use).

    numba's thread count is thread-local, so concurrent callers in other Python threads are not
    affected; it is restored in ``finally`` (set inside the ``try``), so an interrupt cannot leave it
    at one thread.
    """
    if _forked_after_omp:
        return _serial_build(kernel)(*args)
    with kernel_turns:
        if threads_for(work) > 1:
            return kernel(*args)
        before = 0
        try:
            before = swap_threads(1)
            return kernel(*args)
        finally:
            if before > 1:
                swap_threads(before)
