"""Threading layers and forked workers (issue 14, defect 9), each in a fresh process with a timeout.

- numba's ``workqueue`` layer, chosen by the user, aborted the process (-6) when threads called kernels
  at once: jitnn's kernels now take turns under it.
- a ``fork``-based multiprocessing.Pool after training hung (GNU OpenMP does not survive fork and numba
  kills the child at its first parallel region): the child now runs serial builds of the kernels.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

from numba.core.registry import CPUDispatcher

import jitnn

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
def cnn():  # conv (direct and GEMM paths), BatchNormalization, max and average pooling
    m = jitnn.Sequential([jitnn.Conv2D(8, 3, activation="relu", input_shape=(12, 12, 3)),
                          jitnn.BatchNormalization(), jitnn.MaxPooling2D(2),
                          jitnn.Conv2D(16, 3, padding="same", use_bias=False), jitnn.BatchNormalization(),
                          jitnn.Activation("relu"),
                          jitnn.AveragePooling2D(2), jitnn.Flatten(), jitnn.Dense(10, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    m.build((12, 12, 3), seed=0)
    return m
xc = np.random.default_rng(4).normal(size=(96, 12, 12, 3)).astype("f4")
yc = y[:96]
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


WORKQUEUE_CNN = """
import threading, numba
ref = cnn(); ref.fit(xc, yc, epochs=1, batch_size=16, verbose=0, seed=3)
ref_pred = ref.predict(xc)
models = [cnn(), cnn()]
ts = [threading.Thread(target=lambda c=c: c.fit(xc, yc, epochs=1, batch_size=16, verbose=0, seed=3)) for c in models]
ts.append(threading.Thread(target=lambda: [ref.predict(xc) for _ in range(4)]))
[t.start() for t in ts]; [t.join() for t in ts]
same = [all(np.array_equal(p, q) for p, q in zip(c.get_weights(), ref.get_weights())) for c in models]
print(numba.threading_layer(), *same, np.array_equal(ref.predict(xc), ref_pred))
"""


def test_workqueue_layer_with_threads_training_cnns_does_not_abort():
    """Two threads training conv/BatchNormalization/pooling models and one predicting, under workqueue:
    BatchNormalization's kernels were called around config.call and aborted the process."""
    assert _run(WORKQUEUE_CNN, NUMBA_THREADING_LAYER="workqueue").split() == ["workqueue"] + ["True"] * 3


FORK_CNN = """
import multiprocessing as mp, numba
m = cnn()
m.fit(xc, yc, epochs=1, batch_size=16, verbose=0, seed=1)  # the parent's thread pool is running now
ref = m.predict(xc)
def train_in_child(_):
    c = cnn()
    c.fit(xc, yc, epochs=1, batch_size=16, verbose=0, seed=1)
    return [w.tolist() for w in c.get_weights()]
with mp.get_context("fork").Pool(1) as pool:
    out = pool.apply_async(m.predict, (xc,)).get(timeout=300)
    weights = pool.apply_async(train_in_child, (0,)).get(timeout=300)
print(numba.threading_layer(), np.array_equal(out, ref),
      all(np.allclose(np.asarray(w, p.dtype), p, rtol=1e-3, atol=1e-5) for w, p in zip(weights, m.get_weights())))
"""


def test_fork_pool_after_training_a_cnn_works():
    """A fork-started worker predicts and trains a conv/BatchNormalization/pooling model after the parent
    trained one: BatchNormalization's kernels bypassed config.call and the child died ("fork() called
    from a process already using GNU OpenMP"), hanging the Pool. The child's serial builds predict the
    parent's bits and train to the parent's weights within float32 rounding (a serial build may order a
    sum differently from the parallel one)."""
    assert _run(FORK_CNN).split()[1:] == ["True"] * 2


def _parallel_kernel(obj):
    return isinstance(obj, CPUDispatcher) and bool(obj.targetoptions.get("parallel"))


def _direct_parallel_calls(module):
    """``module:line function calls kernel`` for every call of a ``parallel=True`` kernel from a plain
    Python function of ``module`` (inside an @njit function a call is part of that kernel's region)."""
    found = []
    with open(module.__file__) as f:
        tree = ast.parse(f.read())
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or any("jit" in ast.unparse(d) for d in fn.decorator_list):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            f, target = node.func, None
            if isinstance(f, ast.Name):
                target = vars(module).get(f.id)
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                owner = vars(module).get(f.value.id)
                target = getattr(owner, f.attr, None) if inspect.ismodule(owner) else None
            if _parallel_kernel(target):
                found.append(f"{module.__name__}:{node.lineno} {fn.name} calls {ast.unparse(f)}")
    return found


def test_no_parallel_kernel_is_called_around_launch_or_call():
    """Every parallel kernel reached from Python goes through config.launch or config.call (passed to them,
    never called): they run a serial build in a child forked after OpenMP use and take turns under the
    workqueue layer. BatchNormalization's kernels once did not (the two tests above)."""
    found, kernels = [], 0
    for info in pkgutil.walk_packages(jitnn.__path__, "jitnn."):
        if info.name.startswith(("jitnn.cuda", "jitnn.backend.cuda")):
            continue  # GPU kernels: no CPU thread pool
        module = importlib.import_module(info.name)
        kernels += sum(_parallel_kernel(v) for v in vars(module).values())
        found += _direct_parallel_calls(module)
    assert kernels > 20  # the scan sees the kernels it checks for
    assert found == []
