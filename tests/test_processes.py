"""Threading layers and forked workers (issue 14, defect 9), each in a fresh process with a timeout.

- numba's ``workqueue`` layer, chosen by the user, aborted the process (-6) when threads called kernels
  at once: jitnn's kernels now take turns under it.
- a ``fork``-based multiprocessing.Pool after training hung (GNU OpenMP does not survive fork and numba
  kills the child at its first parallel region): the child now runs serial builds of the kernels.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = """
import numpy as np, jitnn
def model():
    m = jitnn.Sequential([jitnn.Dense(64, activation="relu", input_dim=48), jitnn.Dense(10, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    m.build(48, seed=0)
    return m
x = np.random.default_rng(0).normal(size=(600, 48)).astype("f4")
y = np.random.default_rng(1).integers(0, 10, 600)
"""


def _run(code, timeout=420, **env):
    env = dict(os.environ, PYTHONPATH=ROOT, NUMBA_NUM_THREADS="2", **env)
    out = subprocess.run([sys.executable, "-c", MODEL + code], env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert out.returncode == 0, f"rc={out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    return out.stdout


WORKQUEUE = """
import threading, numba
a = np.random.default_rng(2).normal(size=(512, 512)).astype("f4")
ref_mm = jitnn.matmul(a, a)
m = model(); ref_pred = m.predict(x, batch_size=64)
trained = model(); trained.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=3)
other = model(); bad = []
def mm():
    for _ in range(6): bad.append(not np.array_equal(jitnn.matmul(a, a), ref_mm))
def pred():
    for _ in range(6): bad.append(not np.array_equal(m.predict(x, batch_size=64), ref_pred))
ts = [threading.Thread(target=f) for f in (mm, mm, pred, pred,
      lambda: other.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=3))]
[t.start() for t in ts]; [t.join() for t in ts]
same = all(np.array_equal(p, q) for p, q in zip(other.get_weights(), trained.get_weights()))
print(numba.threading_layer(), len(bad), sum(bad), same)
"""


def test_workqueue_layer_with_threads_does_not_abort():
    layer, calls, wrong, same = _run(WORKQUEUE, NUMBA_THREADING_LAYER="workqueue").split()
    assert (layer, calls, wrong, same) == ("workqueue", "24", "0", "True")


FORK = """
import multiprocessing as mp, numba
m = model()
m.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=1)  # the parent's thread pool is running now
ref = m.predict(x)
def train_in_child(_):
    c = model()
    c.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=1)
    return c.evaluate(x, y)
with mp.get_context("fork").Pool(2) as pool:
    outs = pool.map_async(m.predict, [x, x[:7]]).get(timeout=300)
    loss, acc = pool.apply_async(train_in_child, (0,)).get(timeout=300)
print(numba.threading_layer(), np.array_equal(outs[0], ref), np.array_equal(outs[1], ref[:7]),
      bool(np.isfinite(loss)), 0 <= acc <= 1)
"""


def test_fork_pool_after_training_works():
    """predict, fit and evaluate in fork-started workers after the parent trained: results, no hang."""
    assert _run(FORK).split()[1:] == ["True"] * 4

