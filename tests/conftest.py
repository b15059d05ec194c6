"""Shared pytest fixtures.

Without an NVIDIA GPU the CUDA tests (marked ``cuda``) run under numba's CUDA simulator, which must
be switched on before numba is first imported: hence this, above every import of jitnn.
"""

import os

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import pytest

import jitnn


@pytest.fixture
def restore_num_threads():
    """Yield jitnn's current thread count and set it back after the test, whatever the test did."""
    before = jitnn.get_num_threads()
    try:
        yield before
    finally:
        jitnn.set_num_threads(before)
