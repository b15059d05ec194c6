"""Denormals flushed to zero while fit runs, on every kernel thread, and the caller's state restored."""

import os
import subprocess
import sys

import numpy as np
import pytest

import jitnn
from jitnn.backend import cpu
from jitnn.kernels import fpenv

pytestmark = pytest.mark.skipif(not fpenv.SUPPORTED, reason="MXCSR exists on x86-64 only")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = np.float32(1e-39)  # a float32 denormal


def control():
    """The calling thread's MXCSR without its 6 sticky exception flags (numpy clears those itself)."""
    return fpenv.get_mxcsr() & ~0x3F


def denormal_product():
    """A GEMM big enough to run on every thread, whose A is denormal: 0 under DAZ, ~1e-39 otherwise."""
    a = np.full((192, 96), TINY, np.float32)
    return jitnn.gemm(a, np.ones((96, 160), np.float32))


def test_kernels_flush_inside_and_not_outside():
    ops = jitnn.backend.get("cpu")
    before = control()
    assert (denormal_product() > 0).all()
    with ops.denormals_flushed():
        assert fpenv.get_mxcsr() & fpenv.FTZ_DAZ == fpenv.FTZ_DAZ
        assert (denormal_product() == 0).all()  # every tile, whichever thread computed it
    assert control() == before
    assert (denormal_product() > 0).all()


def test_the_caller_state_is_restored_after_an_exception():
    before = control()
    with pytest.raises(KeyboardInterrupt), jitnn.backend.get("cpu").denormals_flushed():
        raise KeyboardInterrupt
    assert control() == before


def test_fit_runs_flushed_and_leaves_numpy_alone():
    seen = []

    class Probe(jitnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(fpenv.get_mxcsr() & fpenv.FTZ_DAZ)

    m = jitnn.Sequential([jitnn.Dense(3, input_dim=4)])
    m.compile(loss="mse", optimizer="sgd")
    before = control()
    m.fit(np.ones((8, 4), np.float32), np.ones((8, 3)), epochs=1, verbose=0, callbacks=[Probe()])
    assert seen == [fpenv.FTZ_DAZ] and control() == before
    assert np.float32(1e-38) * np.float32(0.01) > 0  # numpy after fit still makes denormals


def test_the_setting_turns_it_off():
    code = ("import numpy as np, jitnn; from jitnn.kernels import fpenv; "
            "ops = jitnn.backend.get('cpu'); b = fpenv.get_mxcsr()\n"
            "with ops.denormals_flushed(): assert fpenv.get_mxcsr() == b\nprint('ok')")
    env = dict(os.environ, JITNN_FLUSH_DENORMALS="0", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    assert cpu.FLUSH_DENORMALS  # this process: the default
