"""jitnn.distributed: the collectives and the training loop under ``mpiexec -n 2`` and ``-n 3``, and the
cost model against hand-computed values.

The MPI tests launch the scripts in tests/mpi/ with the mpiexec beside this interpreter (the ``mpich``
wheel of the dev extra puts it there) and skip, saying why, where mpi4py or mpiexec is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jitnn.distributed import AllreduceModel, StepModel, predict_scaling

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")

try:
    import mpi4py  # noqa: F401

    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

needs_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC),
                               reason="needs mpi4py and mpiexec: pip install 'jitnn[distributed]'")


def ok_ranks(stdout):
    """The "OK rank r of n" lines the ranks printed (mpiexec may glue two ranks' lines together)."""
    return sorted(re.findall(r"OK rank \d+ of \d+", stdout))


def run_mpi(n, script, *args, timeout=240):
    """``mpiexec -n n python tests/mpi/script args``; the completed process (never hangs past timeout)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NUMBA_NUM_THREADS=os.environ.get("NUMBA_NUM_THREADS", "2"))
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the ranks train on the CPU
    cmd = [MPIEXEC, "-n", str(n), sys.executable, os.path.join(HERE, "mpi", script), *map(str, args)]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_collectives_match_local_reference(ranks):
    proc = run_mpi(ranks, "strategy_ops.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ok_ranks(proc.stdout) == sorted(f"OK rank {r} of {ranks}" for r in range(ranks))


def warm_cache(script, *args, timeout=600):
    """Run ``script`` once as a lone process (mpi4py makes it a singleton rank 0 of 1) so that its kernels
    and compiled steps are in the disk cache before the ranks start: otherwise every rank compiles the same
    code at once, 3 ranks on 2 cores (97 s of a CI run). Its outcome is left to the real run to report."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    try:
        subprocess.run([sys.executable, os.path.join(HERE, "mpi", script), *map(str, args)], check=False, env=env,
                       capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


@needs_mpi
@pytest.mark.parametrize("ranks, dtype", [(2, "float64"), (3, "float32")])
def test_data_parallel_fit_equals_one_process_at_the_global_batch(ranks, dtype):
    warm_cache("train_equivalence.py", dtype)
    proc = run_mpi(ranks, "train_equivalence.py", dtype, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ok_ranks(proc.stdout) == sorted(f"OK rank {r} of {ranks}" for r in range(ranks))


def test_fit_refuses_what_is_not_a_strategy():
    import jitnn

    m = jitnn.Sequential([jitnn.Dense(2, input_dim=3)])
    m.compile(loss="mse", optimizer="sgd")
    with pytest.raises(TypeError, match="strategy must be a jitnn.distributed strategy"):
        m.fit(np.ones((4, 3)), np.ones((4, 2)), strategy="mpi", verbose=0)


@needs_mpi
def test_a_failing_rank_ends_every_rank_with_its_name():
    proc = run_mpi(2, "rank_fails.py", timeout=120)
    assert proc.returncode != 0
    assert "rank 1 of 2 failed" in proc.stderr
    assert "bad batch on purpose" in proc.stderr
    assert "unreachable" not in proc.stdout


def test_gradient_arena_makes_every_gradient_a_view_of_one_aligned_buffer():
    import jitnn
    from jitnn.distributed.strategy import gradient_arena

    def build():
        m = jitnn.Sequential([jitnn.Conv2D(3, 3, activation="relu", input_shape=(6, 6, 2)),
                              jitnn.BatchNormalization(), jitnn.Flatten(), jitnn.Dense(5, activation="softmax")])
        m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        return m

    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((23, 6, 6, 2)).astype(np.float32), rng.integers(0, 5, 23)
    plain, viewed = build(), build()
    viewed.set_weights(plain.get_weights())
    plain.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=0)  # gradients with values in them
    viewed.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=0)
    before = [g.copy() for layer in viewed.layers for g in layer.grads]
    views, arena = gradient_arena(viewed)
    assert list(arena) == [np.dtype(np.float32)] and len(views) == len(before) == 6
    flat = arena[np.dtype(np.float32)]
    grads = [g for layer in viewed.layers for g in layer.grads]
    assert all(g is v for g, v in zip(grads, views))
    for g, b in zip(grads, before):
        assert np.shares_memory(g, flat) and g.ctypes.data % 64 == 0  # a view, starting on a cache line
        np.testing.assert_array_equal(g, b)  # values kept
    assert flat.size >= sum(g.size for g in grads)
    assert gradient_arena(viewed, views, arena)[1] is arena  # set up already: nothing moves
    # training through the views gives the same bits as through the layers' own arrays
    plain.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0)
    viewed.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0)
    for a, b in zip(plain.get_weights(), viewed.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- the cost model -----------------------------------------------------------------------------------

def test_ring_allreduce_time_is_the_alpha_beta_formula():
    m = AllreduceModel(alpha=2e-6, beta=1e-9)
    assert m.time(1e6, 1) == 0.0
    assert m.time(1e6, 2) == pytest.approx(2 * 2e-6 + 1e6 * 1e-9)
    assert m.time(4e6, 8) == pytest.approx(14 * 2e-6 + 2 * 7 / 8 * 4e6 * 1e-9)


def test_fit_recovers_alpha_and_beta_from_noisy_timings():
    true = AllreduceModel(alpha=3e-6, beta=2.5e-10)
    sizes = np.logspace(1, 8, 15)
    rng = np.random.default_rng(0)
    times = np.array([true.time(n, 2) for n in sizes]) * (1 + 0.02 * rng.standard_normal(sizes.size))
    got = AllreduceModel.fit(sizes, times, 2)
    assert got.alpha == pytest.approx(true.alpha, rel=0.1)
    assert got.beta == pytest.approx(true.beta, rel=0.05)
    with pytest.raises(ValueError):
        AllreduceModel.fit([1.0], [1.0], 2)


def test_network_model_and_scaling_efficiency():
    net = AllreduceModel.network(gbit_per_s=100, latency_us=10)
    assert net.beta == pytest.approx(8 / 100e9)
    step = StepModel(compute_s=0.05, grad_bytes=4 * 10**6)
    rows = predict_scaling(step, net, nodes=(8, 64))
    for row in rows:
        t_ar = 2 * (row["nodes"] - 1) * 1e-5 + 2 * (row["nodes"] - 1) / row["nodes"] * 4e6 * 8 / 100e9
        assert row["allreduce_s"] == pytest.approx(t_ar)
        assert row["efficiency"] == pytest.approx(0.05 / (0.05 + t_ar))
    assert rows[0]["efficiency"] > rows[1]["efficiency"]


def test_expected_max_is_exact_for_the_empirical_distribution():
    from jitnn.distributed import expected_max

    assert expected_max([3.0, 3.0, 3.0], 64) == pytest.approx(3.0)
    assert expected_max([1.0, 2.0, 4.0], 1) == pytest.approx(7 / 3)  # one draw: the mean
    assert expected_max([0.0, 1.0], 2) == pytest.approx(0.75)  # max of two fair coins
    rng = np.random.default_rng(5)
    x = rng.gamma(4.0, 1e-3, size=37)
    draws = rng.choice(x, size=(200_000, 8)).max(axis=1)  # Monte Carlo reference
    assert expected_max(x, 8) == pytest.approx(draws.mean(), rel=5e-3)
    assert expected_max(x, 512) <= x.max() and expected_max(x, 512) > expected_max(x, 8)
    with pytest.raises(ValueError, match="p >= 1"):
        expected_max([], 2)


def test_a_step_waits_for_the_slowest_rank():
    net = AllreduceModel(alpha=2e-6, beta=1e-9)
    samples = [0.010, 0.010, 0.010, 0.014]  # one step in four is slow
    step = StepModel.from_samples(samples, grad_bytes=10**6)
    assert step.compute_s == pytest.approx(0.011)
    # 2 ranks: the pair is fast only when both are: 1 - (3/4)^2 of steps wait for 14 ms.
    slow = 1 - 0.75**2
    assert step.time(net, 2) == pytest.approx(0.010 + 0.004 * slow + net.time(1e6, 2))
    assert step.efficiency(net, 2) == pytest.approx(0.011 / step.time(net, 2))
    rows = predict_scaling(step, net, nodes=(2, 512))
    assert rows[1]["compute_s"] == pytest.approx(0.014, rel=1e-6)  # at 512 ranks some rank is always slow
    assert StepModel(0.011, 10**6).time(net, 2) == pytest.approx(0.011 + net.time(1e6, 2))  # no samples: no wait
