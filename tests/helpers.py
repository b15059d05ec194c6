"""What the test files share: dtype lists, tolerances, central differences, log parsing, weight checks.

    from helpers import DTYPES, central_diff, tolerance
"""

from __future__ import annotations

import numpy as np

DTYPES = [np.float32, np.float64]
DTYPE_NAMES = ["float32", "float64"]
FD_EPS = 1e-6  # central-difference step for float64 inputs


def tolerance(dtype, float32=(1e-4, 1e-5), float64=(1e-11, 1e-12)) -> dict:
    """``{"rtol": .., "atol": ..}`` for ``dtype``: ``float32``/``float64`` give (rtol, atol) per dtype; each
    test file keeps the pair that fits what it compares (one kernel, a whole step, several steps)."""
    rtol, atol = float32 if np.dtype(dtype) == np.float32 else float64
    return {"rtol": rtol, "atol": atol}


def central_diff(loss, arr, eps=FD_EPS):
    """dloss/darr by central differences, perturbing ``arr`` in place one element at a time."""
    g = np.empty(arr.shape, np.float64)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + eps
        up = loss()
        arr[idx] = old - eps
        down = loss()
        arr[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


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
