"""Shared pytest fixtures."""

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
