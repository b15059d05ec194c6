"""jitnn.saving: every optimizer round-trips at every stage; saving keeps modes, follows links, cleans up.

Hostile and corrupt files are attacked in tests/test_hostile_files.py.
"""

import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

from jitnn import Sequential, load_model, optimizers
from jitnn.layers import Dense

OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.05),
    "sgd-momentum": lambda: optimizers.SGD(0.05, momentum=0.9),
    "sgd-nesterov": lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda: optimizers.Adagrad(0.05),
    "rmsprop": lambda: optimizers.RMSprop(0.01),
    "adam": lambda: optimizers.Adam(0.01),
    "amsgrad": lambda: optimizers.AMSGrad(0.01),
    "adamw": lambda: optimizers.AdamW(0.01),
    "adam-cosine": lambda: optimizers.Adam(optimizers.CosineDecay(0.01, decay_steps=20, warmup_steps=2)),
}


def data(n=40, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), rng.integers(0, classes, size=n)


def small_model(optimizer, dtype="float32"):
    # no Dropout: its position in the mask stream is not part of the file (see docs/reliability.md)
    model = Sequential([Dense(7, activation="relu", input_dim=5), Dense(3, activation="softmax")], dtype=dtype)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer)
    model.build(5, seed=0)
    return model


def assert_same_model(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert a.optimizer.get_config() == b.optimizer.get_config()
    assert a.optimizer.iterations == b.optimizer.iterations
    sa, sb = a.optimizer.state_arrays(), b.optimizer.state_arrays()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_optimizer_round_trips_at_every_stage(tmp_path, name, dtype):
    """Defect 4 of issue 14: a compiled, never-trained model with Adam/RMSprop/SGD-momentum saved but did
    not load ("missing m/0"). Stages: never trained, trained, loaded then trained again, reloaded."""
    x, y = data()
    model = small_model(OPTIMIZERS[name](), dtype)
    for stage in range(3):
        path = model.save(tmp_path / f"stage{stage}.npz")
        loaded = load_model(path)
        assert_same_model(loaded, model)
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
        # the loaded model continues exactly as the original does
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=stage)
        loaded.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=stage)
        assert_same_model(loaded, model)
        model = loaded  # the next stage saves the model that was loaded and trained again


def test_an_uncompiled_model_round_trips(tmp_path):
    model = Sequential([Dense(4, input_dim=3)])
    model.build(3, seed=1)
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.optimizer is None and loaded.loss is None
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


# ---------------------------------------------------------------- side effects of saving (defect 6)


def saved_model(seed=0):
    model = Sequential([Dense(4, input_dim=3)])
    model.compile(loss="mse", optimizer="adam")
    model.build(3, seed=seed)
    return model


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444])
def test_replacing_a_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "m.npz"
    saved_model(0).save(path)
    path.chmod(mode)
    saved_model(1).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    np.testing.assert_array_equal(load_model(path).get_weights()[0], saved_model(1).get_weights()[0])


def test_a_new_file_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        saved_model().save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.npz").stat().st_mode) == 0o644


def test_saving_to_a_symlink_writes_its_target(tmp_path):
    real = tmp_path / "store" / "real.npz"
    real.parent.mkdir()
    saved_model(0).save(real)
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    saved_model(1).save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    np.testing.assert_array_equal(load_model(real).get_weights()[0], saved_model(1).get_weights()[0])
    assert sorted(os.listdir(real.parent)) == ["real.npz"]


KILLED_SAVE = """
import os, signal, numpy as np, jitnn
model = jitnn.Sequential([jitnn.Dense(4, input_dim=3)]); model.build(3, seed=0)
real = np.savez
def dying(fh, **arrays):
    real(fh, **arrays); os.kill(os.getpid(), signal.SIGKILL)
np.savez = dying
model.save({path!r})
"""


def test_a_killed_save_leaves_the_old_file_and_the_next_save_removes_its_temporary(tmp_path):
    path = tmp_path / "m.npz"
    saved_model(0).save(path)
    good = path.read_bytes()
    foreign = tmp_path / ".tmp-someone-else.npz"
    foreign.write_bytes(b"not ours")
    out = subprocess.run([sys.executable, "-c", KILLED_SAVE.format(path=str(path))], check=False, capture_output=True,
                         timeout=300, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert path.read_bytes() == good  # atomic: the kill changed nothing
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-jitnn-")]
    assert len(leftovers) == 1
    saved_model(1).save(path)
    assert sorted(os.listdir(tmp_path)) == [foreign.name, "m.npz"]  # ours removed, a stranger's kept


def test_a_live_save_s_temporary_is_kept(tmp_path):
    """A temporary whose process is alive may be a concurrent save: never removed."""
    import socket

    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32]
    live = tmp_path / f".tmp-jitnn-m.npz-{host}-{os.getpid()}-abc.npz"
    live.write_bytes(b"in progress")
    saved_model().save(tmp_path / "m.npz")
    assert live.exists()
