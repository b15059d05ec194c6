"""What the test files share: dtype lists, tolerances, central differences, log parsing, weight checks.

    from helpers import DTYPES, central_diff, tolerance
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

DTYPES = [np.float32, np.float64]
DTYPE_NAMES = ["float32", "float64"]  # the ids of a parametrisation over DTYPES
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FD_EPS = 1e-6  # central-difference step for float64 inputs


def tolerance(dtype, float32=(1e-4, 1e-5), float64=(1e-11, 1e-12)) -> dict:
    """``{"rtol": .., "atol": ..}`` for ``dtype``: ``float32``/``float64`` give (rtol, atol) per dtype; each
    test file keeps the pair that fits what it compares (one kernel, a whole step, several steps)."""
    rtol, atol = float32 if np.dtype(dtype) == np.float32 else float64
    return {"rtol": rtol, "atol": atol}


def central_diff_at(loss, arr, indices, eps=FD_EPS):
    """dloss/darr at each of ``indices`` (float64, in their order) by central differences, perturbing
    ``arr`` in place one element at a time and putting it back: for arrays too large to difference whole."""
    g = []
    for idx in indices:
        old = arr[idx]
        arr[idx] = old + eps
        up = loss()
        arr[idx] = old - eps
        down = loss()
        arr[idx] = old
        g.append((up - down) / (2 * eps))
    return np.array(g, np.float64)


def central_diff(loss, arr, eps=FD_EPS):
    """dloss/darr by central differences, perturbing ``arr`` in place one element at a time."""
    return central_diff_at(loss, arr, np.ndindex(arr.shape), eps).reshape(arr.shape)


def fd_grad(f, x, eps=FD_EPS):
    """The gradient of the scalar ``f(x)`` at ``x`` by central differences, on a float64 copy of ``x``."""
    x = np.array(x, np.float64)
    return central_diff(lambda: f(x), x, eps)


def run_threaded(script, threads=3):
    """Run ``script`` in a fresh interpreter whose numba pool has ``threads`` threads and whose kernels go
    parallel at any size (the serial cut-offs set to 0); it must print "ok"; it may import from tests/ (helpers, a test file's cases). Thread-independence tests
    use it: in the test process the pool may have one thread (NUMBA_NUM_THREADS=1, a one-core machine)
    and small work runs on the calling thread, so one thread would be compared with one thread."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), JITNN_PARALLEL_MIN_WORK="0",
               JITNN_PARALLEL_MIN_FLOPS="0", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")]))
    env.pop("JITNN_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def logged_errors(out, epochs, pattern):
    """The per-epoch errors printed in ``out`` (one line per epoch matching ``pattern``: epoch, epochs,
    error), checking every line's format and numbering."""
    lines = out.strip().splitlines()
    assert len(lines) == epochs, out
    errs = []
    for i, line in enumerate(lines):
        m = pattern.fullmatch(line)
        assert m, line
        assert (int(m[1]), int(m[2])) == (i + 1, epochs)
        errs.append(float(m[3]))
    return errs


def assert_weights_equal(a, b):
    """Two lists of arrays, bitwise equal."""
    assert len(a) == len(b)
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
