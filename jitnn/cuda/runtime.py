"""Whether a CUDA device (or numba's CUDA simulator) can run jitnn's GPU kernels, and why not.

Importing this module never fails: without the ``numba-cuda`` package ``cuda`` is None and
``available()`` is False. ``require()`` turns every reason for "no GPU" into one clear error.
The simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is first imported) runs the same kernels
on the CPU, one Python thread per CUDA thread: right for correctness tests on tiny shapes, useless
for speed.
"""

from __future__ import annotations

import numba
import numpy as np

try:  # numba-cuda provides numba.cuda; numba releases since 0.61 no longer ship a working one
    from numba import cuda
except ImportError:  # pragma: no cover - depends on what is installed
    cuda = None


class CudaUnavailableError(RuntimeError):
    """No CUDA device can run jitnn's kernels here; the message says why and what to do."""


def device_function(fn):
    """An ``@njit`` function for use inside CUDA kernels.

    On a GPU numba compiles the CPU dispatcher itself for the device, so ``fn`` is returned as is. The
    simulator runs kernels as Python and hands them simulated arrays, which compiled CPU code cannot
    unbox; there the function (and every ``@njit`` function it calls) is rebuilt as plain Python.
    """
    if not simulated():
        return fn
    import types

    from numba.core.registry import CPUDispatcher

    def pure(f):
        py = f.py_func
        g = dict(py.__globals__)
        for name in py.__code__.co_names:
            if isinstance(g.get(name), CPUDispatcher):
                g[name] = pure(g[name])
        return types.FunctionType(py.__code__, g, py.__name__, py.__defaults__, py.__closure__)

    twin = pure(fn)

    def quiet(*args):  # numpy warns on the uint64 wraparound that the hashes rely on
        with np.errstate(over="ignore"):
            return twin(*args)

    return quiet


def simulated() -> bool:
    """True when numba's CUDA simulator stands in for a GPU (NUMBA_ENABLE_CUDASIM=1)."""
    return cuda is not None and bool(numba.config.ENABLE_CUDASIM)


def available() -> bool:
    """True when kernels can run: a CUDA GPU with a working driver, or the simulator."""
    if cuda is None:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install raises instead of answering  # noqa: BLE001
        return False


def require() -> None:
    """Raise CudaUnavailableError, saying why and what to do, unless ``available()``."""
    if cuda is None:
        raise CudaUnavailableError(
            "device='cuda' needs the numba-cuda package, which is not installed: "
            "pip install 'jitnn[cuda]' (and a CUDA toolkit matching your driver: numba-cuda[cu12] or "
            "numba-cuda[cu13]), or train on the CPU with device='cpu'")
    if not available():
        raise CudaUnavailableError(
            "device='cuda' found no usable CUDA GPU (numba.cuda.is_available() is False: no NVIDIA GPU, "
            "or no driver). Run on a machine with an NVIDIA GPU and driver, train on the CPU with "
            "device='cpu', or set NUMBA_ENABLE_CUDASIM=1 before importing numba to test with the "
            "simulator (correct but very slow)")


def device_name() -> str:
    """The GPU's name (``"simulator"`` under NUMBA_ENABLE_CUDASIM), for reports and benchmarks."""
    require()
    if simulated():
        return "CUDA simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def multiprocessors() -> int:
    """Streaming multiprocessors of the current device (1 under the simulator); sizes GEMM tiles."""
    if simulated():
        return 1
    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
