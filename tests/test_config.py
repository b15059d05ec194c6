"""jitnn.config: the compile-cache location probe and its fallbacks, threads, the serial launch."""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import jitnn
from jitnn import config


def _choose(monkeypatch, env, writable):
    """Run config._choose_cache with ``env`` and a fake probe that accepts only ``writable`` paths."""
    for key in ("JITNN_CACHE", "JITNN_CACHE_DIR", "NUMBA_CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(config, "writable_dir", lambda path: any(path.startswith(w) for w in writable))
    return config._choose_cache()


def test_cache_in_tree_when_the_package_is_writable(monkeypatch):
    here = os.path.dirname(os.path.abspath(config.__file__))
    assert _choose(monkeypatch, {}, [here]) == (True, None)


def test_cache_falls_back_to_the_user_directory(monkeypatch, tmp_path):
    home = str(tmp_path / "home")
    enabled, path = _choose(monkeypatch, {"HOME": home}, [home])
    assert enabled and path.startswith(home) and os.environ["NUMBA_CACHE_DIR"] == path
    assert os.stat(path).st_mode & 0o777 == 0o700  # created private: numba unpickles what it finds there


def test_cache_falls_back_to_the_temp_directory(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    enabled, path = _choose(monkeypatch, {"HOME": "/nonexistent-home"}, [str(tmp_path)])
    assert enabled and path.startswith(str(tmp_path))
    assert os.stat(path).st_mode & 0o777 == 0o700


def _plant(path, how):
    """A cache directory another user could have prepared for us: world-writable, theirs, or a link."""
    if how == "symlink":
        target = path.parent / "elsewhere"
        target.mkdir(mode=0o700)
        path.symlink_to(target)
        os.lchown(path, 4242, 4242) if os.geteuid() == 0 else None
        return
    path.mkdir()
    if how == "world-writable":
        path.chmod(0o777)
    elif os.geteuid() == 0:
        os.chown(path, 4242, 4242)
    else:  # an unprivileged test cannot give a directory away: a group-writable one fails the same check
        path.chmod(0o770)


@pytest.mark.parametrize("how", ["world-writable", "other-owner", "symlink"])
def test_a_planted_temp_fallback_is_refused(monkeypatch, tmp_path, how):
    """Defect 1 of issue 14: a predictable /tmp/jitnn-numba-<uid> made by someone else ran their pickle."""
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    _plant(tmp_path / f"jitnn-numba-{os.getuid()}", how)
    with pytest.warns(RuntimeWarning, match="compile cache disabled"):
        assert _choose(monkeypatch, {"HOME": "/nonexistent-home"}, [str(tmp_path)]) == (False, None)
    assert "NUMBA_CACHE_DIR" not in os.environ


@pytest.mark.parametrize("how", ["world-writable", "other-owner", "symlink"])
def test_a_planted_cache_dir_from_the_environment_is_refused(tmp_path, how):
    """The same check for JITNN_CACHE_DIR, in a fresh process: caching off, a warning, nothing written."""
    planted = tmp_path / "cache"
    _plant(planted, how)
    code = "import jitnn.config as c; print(c.CACHE, c.CACHE_DIR)"
    env = dict(os.environ, JITNN_CACHE_DIR=str(planted), PYTHONWARNINGS="default")
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "None"]
    assert "compile cache disabled" in out.stderr
    assert not any(os.scandir(os.path.realpath(planted)))


def test_cache_disabled_when_nothing_is_writable(monkeypatch):
    assert _choose(monkeypatch, {}, []) == (False, None)


def test_cache_off_by_environment(monkeypatch):
    assert _choose(monkeypatch, {"JITNN_CACHE": "0"}, ["/"]) == (False, None)


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    assert _choose(monkeypatch, {"JITNN_CACHE_DIR": str(tmp_path)}, [str(tmp_path)]) == (True, str(tmp_path))


def test_an_unwritable_cache_still_computes(tmp_path):
    """A fresh process whose only cache location is read-only imports and multiplies correctly."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code = ("import numpy as np, jitnn, jitnn.config as c; a = np.arange(6, dtype='f8').reshape(2, 3); "
            "print(c.CACHE, np.allclose(jitnn.matmul(a, a.T), a @ a.T))")
    env = dict(os.environ, JITNN_CACHE_DIR=str(ro))
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=600)
    ro.chmod(0o700)
    assert out.returncode == 0, out.stderr
    writable = os.access(str(ro), os.W_OK)  # root can write anywhere: then caching stays on, correctly
    assert out.stdout.split() == [str(writable), "True"]


def test_set_num_threads_validates(restore_num_threads):
    with pytest.raises(ValueError, match="positive int"):
        jitnn.set_num_threads(0)
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        jitnn.set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)
    jitnn.set_num_threads(1)
    assert jitnn.get_num_threads() == 1


def test_launch_runs_small_work_on_one_thread_and_restores(restore_num_threads):
    seen = []
    config.launch(lambda: seen.append(numba.get_num_threads()), 1)
    config.launch(lambda: seen.append(numba.get_num_threads()), config.PARALLEL_MIN_WORK)
    assert seen == [1, numba.get_num_threads()]
    assert np.isfinite(config.launch(np.sum, 10, np.ones(10)))


def test_threads_for_is_the_one_rule(restore_num_threads):
    jitnn.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert config.threads_for(config.PARALLEL_MIN_WORK - 1) == 1
    assert config.threads_for(config.PARALLEL_MIN_WORK) == jitnn.get_num_threads()
    assert config.threads_for(10, min_work=5) == jitnn.get_num_threads()
    jitnn.set_num_threads(1)
    assert config.threads_for(10**12) == 1


def test_launch_restores_threads_after_an_interrupt(restore_num_threads):
    """A KeyboardInterrupt inside a small launch leaves numba's thread count where it was."""
    before = numba.get_num_threads()

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        config.launch(interrupted, 1)
    assert numba.get_num_threads() == before


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
def test_launch_leaves_other_threads_alone(restore_num_threads):
    """The serial switch is thread-local: another Python thread keeps its count meanwhile."""
    import threading

    inside, release, seen = threading.Event(), threading.Event(), []

    def small_kernel():
        inside.set()
        release.wait(30)

    worker = threading.Thread(target=config.launch, args=(small_kernel, 1))
    worker.start()
    inside.wait(30)
    seen.append(numba.get_num_threads())
    release.set()
    worker.join(30)
    assert seen == [jitnn.get_num_threads()]


def _run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], check=False, env=dict(os.environ, **env),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_threading_layer_is_never_workqueue():
    """Without NUMBA_THREADING_LAYER, jitnn asks for a thread-safe layer (workqueue aborts on concurrent calls)."""
    code = ("import os; os.environ.pop('NUMBA_THREADING_LAYER', None); import numpy as np, numba, jitnn; "
            "jitnn.matmul(np.ones((300, 300)), np.ones((300, 300))); print(numba.threading_layer())")
    assert _run(code, NUMBA_NUM_THREADS="2").split()[-1] in ("tbb", "omp")


FORK_SCRIPT = """
import multiprocessing as mp, numpy as np, numba, jitnn
from jitnn import config
from jitnn.kernels.elementwise import activate

def work(_):
    a = np.ones((300, 300))
    ok = bool(np.allclose(jitnn.matmul(a, a), 300.0))  # the GEMM's serial path is fork-safe
    ok = ok and bool(np.allclose(jitnn.gemm(a, a, a.copy(), alpha=0.0, beta=2.0), 2.0))  # alpha == 0 too
    try:
        config.launch(activate, 10**7, a, a.copy(), 1, 0.0)
        return ok, "ran"
    except RuntimeError as e:
        return ok, str(e)

a = np.ones((400, 400))
jitnn.matmul(a, a)  # the parent uses the thread pool
config.launch(activate, 10**7, a, a.copy(), 1, 0.0)
with mp.get_context("fork").Pool(1) as pool:
    ok, msg = pool.apply_async(work, (0,)).get(timeout=120)
print(numba.threading_layer(), ok, "spawn" in msg if msg != "ran" else "ran")
"""


def test_fork_after_use_works():
    """A fork-based worker after the parent ran threads: the GEMM and launched kernels work (after OpenMP,
    on serial builds); nothing hangs or dies."""
    _, ok, verdict = _run(FORK_SCRIPT, NUMBA_NUM_THREADS="2").split()
    assert (ok, verdict) == ("True", "ran")


def test_warmup_refuses_when_the_cache_is_off():
    out = subprocess.run([sys.executable, "-m", "jitnn.warmup"], check=False, capture_output=True, text=True,
                         env=dict(os.environ, JITNN_CACHE="0"), timeout=600)
    assert out.returncode == 1 and "cache is off" in out.stderr


@pytest.mark.slow
def test_warmup_fills_an_empty_cache(tmp_path):
    """python -m jitnn.warmup compiles the GEMM into JITNN_CACHE_DIR; a second process then loads it."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    env = dict(os.environ, JITNN_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-m", "jitnn.warmup", "--dtype", "float64", "--gemm-only"], check=False,
                         capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stderr
    assert any(p.suffix == ".nbi" for p in cache.rglob("*")), "no numba index written"
    assert _run("import numpy as np, jitnn; print(jitnn.matmul(np.ones((2, 2)), np.ones((2, 2)))[0, 0])",
                JITNN_CACHE_DIR=str(cache)).split()[-1] == "2.0"
