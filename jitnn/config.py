"""Every setting of jitnn in one place: dtype, threads, fastmath flags, the compile cache.

Environment variables are read once, here, at import:

- ``NUMBA_NUM_THREADS``: numba's own cap on worker threads (numba reads it; we respect it).
- ``JITNN_NUM_THREADS``: threads jitnn kernels use (default: all numba threads).
- ``JITNN_CACHE``: ``0`` disables the on-disk compile cache.
- ``JITNN_CACHE_DIR``: where compiled kernels are cached (default: numba's own choice, falling back to
  ``~/.cache/jitnn/numba`` and then a temporary directory when that is not writable). Outside the
  package, the directory must belong to this user and be writable by nobody else (numba unpickles its
  cache index): otherwise caching is off, with a RuntimeWarning. Fallbacks are created with mode 0700.
"""

from __future__ import annotations

import os
import stat
import tempfile
import warnings

# Safe fastmath subset. "nnan"/"ninf" would let LLVM assume no NaN/inf and delete our NaN checks;
# "reassoc" lets it reorder sums (vectorized reductions), "contract" lets it fuse a*b+c into an FMA.
FASTMATH = {"reassoc", "contract", "nsz"}

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


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".jitnn-probe-", delete=True)
        probe.close()
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
    return path if _writable_dir(path) else None


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


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
    wanted = os.environ.get("JITNN_CACHE_DIR") or os.environ.get("NUMBA_CACHE_DIR")
    if wanted:
        candidates = [wanted]
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        if _writable_dir(os.path.join(here, "__pycache__")):
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

# libgomp (numba's default threading layer here) spins ~300k iterations at every barrier before it
# sleeps. When another process holds a core, the spinning thread burns the slice the other one needs:
# a training step of the 784-512-128-64-10 MLP at batch 128 measured 12-24 ms with the default and
# 12 ms with 5000, against 5 ms on an idle machine where both settings measured alike (docs/benchmarks.md).
# libgomp reads this once, when numba first starts its thread pool (below); a value you set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "5000")

import numba

if CACHE_DIR is not None and numba.config.CACHE_DIR != CACHE_DIR:
    numba.config.reload_config()  # numba was imported before us: make it see the new directory


def _initial_threads() -> int:
    n = int(os.environ.get("JITNN_NUM_THREADS", numba.config.NUMBA_NUM_THREADS))
    return max(1, min(n, numba.config.NUMBA_NUM_THREADS))


def set_num_threads(n: int) -> None:
    """Set how many threads jitnn's parallel kernels use (at most ``NUMBA_NUM_THREADS``)."""
    if not isinstance(n, (int,)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads needs a positive int, received: {n!r}")
    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        raise ValueError(
            f"set_num_threads({n}) exceeds NUMBA_NUM_THREADS={limit}; raise that environment variable "
            "before the first import of numba"
        )
    numba.set_num_threads(n)


def get_num_threads() -> int:
    """Threads jitnn's parallel kernels use now."""
    return numba.get_num_threads()


numba.set_num_threads(_initial_threads())

# The njit options every kernel shares.
JIT = dict(nogil=True, cache=CACHE, fastmath=FASTMATH, error_model="numpy")
PJIT = dict(JIT, parallel=True)

# Below this much work (elements touched, or FLOPs for a GEMM) a kernel runs on the calling thread
# alone. Waking the pool costs 3-6 us on an idle machine, and when another process holds a core a
# parallel region can wait a whole scheduler time slice (measured: 8 ms for a 128x512 activation).
PARALLEL_MIN_WORK = int(os.environ.get("JITNN_PARALLEL_MIN_WORK", 65536))
PARALLEL_MIN_FLOPS = int(os.environ.get("JITNN_PARALLEL_MIN_FLOPS", 4_000_000))


def launch(kernel, work, *args):
    """``kernel(*args)``, single-threaded when ``work`` < PARALLEL_MIN_WORK (see above)."""
    if work >= PARALLEL_MIN_WORK:
        return kernel(*args)
    threads = numba.get_num_threads()
    if threads == 1:
        return kernel(*args)
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)
