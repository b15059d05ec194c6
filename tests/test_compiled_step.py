"""The compiled training step (jitnn/compiled_step.py) and the NaN guard fused into the optimizer kernels.

The reference for the compiled step is the layer-by-layer loop (``compiled_step.ENABLED = False``), which
tests/test_layers.py and tests/test_model.py check against PyTorch and finite differences: the two paths
must agree bit for bit (weights, optimizer state, logged loss and metrics) on every structure the
compiled step accepts, with a ragged last batch (a one-row batch included: the GEMM's matrix-vector path).
"""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest
from helpers import assert_weights_equal

import jitnn
from jitnn import NonFiniteLossError, compiled_step, optimizers
from jitnn.kernels import optim as K
from jitnn.sparse import CSRMatrix


@pytest.fixture(autouse=True)
def compile_short_fits(monkeypatch):
    """These tests train a few steps: compile the step for them anyway."""
    monkeypatch.setattr(compiled_step, "MIN_STEPS", 0)


def _data(n, d, k, kind, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    if kind == "labels":
        y = rng.integers(0, k, n)
    elif kind == "onehot":
        y = np.eye(k)[rng.integers(0, k, n)]
    elif kind == "binary":
        y = (rng.random((n, k)) > 0.5).astype(float)
    else:
        y = rng.standard_normal((n, k))
    return x, y


# (name, layers, loss, optimizer, metrics, targets, dtype, n, batch)
CASES = {
    "mlp_adam_f32": (lambda: [jitnn.Dense(16, "relu", input_dim=9), jitnn.Dropout(0.3), jitnn.Dense(5, "softmax")],
                     "categorical_crossentropy", lambda: optimizers.Adam(0.01), ["accuracy"], "labels", "float32",
                     150, 64),
    "regression_sgd_f64": (lambda: [jitnn.Dense(7, "tanh", input_dim=6, kernel_regularizer={"l1": 0.01, "l2": 0.02}),
                                    jitnn.LeakyReLU(0.2), jitnn.Activation("sigmoid"), jitnn.Dropout(0.25),
                                    jitnn.Dense(1, use_bias=False)],
                           "mse", lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True), ["mae"], "real",
                           "float64", 97, 32),
    "bce_rmsprop_f32": (lambda: [jitnn.Dense(11, "swish", input_dim=5), jitnn.Dense(3, "sigmoid")],
                        "binary_crossentropy", lambda: optimizers.RMSprop(0.01), ["binary_accuracy", "mse"],
                        "binary", "float32", 70, 16),
    "softmax_layer_amsgrad_f64": (lambda: [jitnn.Dense(8, "gelu", input_dim=4), jitnn.Dense(4),
                                           jitnn.Activation("softmax")],
                                  "categorical_crossentropy", lambda: optimizers.AdamW(0.01, amsgrad=True),
                                  ["accuracy"], "onehot", "float64", 41, 8),
    "mae_adagrad_f32": (lambda: [jitnn.Dense(6, "leaky_relu", input_dim=3), jitnn.Dense(2, "linear")],
                        "mae", lambda: optimizers.Adagrad(0.1), [], "real", "float32", 33, 33),
}
DEFAULT = ["mlp_adam_f32", "regression_sgd_f64"]


def _model(case, seed=3):
    layers, loss, opt, metrics, _, dtype, _, _ = CASES[case]
    model = jitnn.Sequential(layers(), dtype=dtype)
    model.compile(loss=loss, optimizer=opt(), metrics=metrics)
    model.build(model.layers[0].declared_input_dim, seed=seed)
    return model


def _train(case, enabled, monkeypatch, epochs=2):
    _, _, _, _, kind, _, n, batch = CASES[case]
    model = _model(case)
    x, y = _data(n, model.input_dim, model.layers[-1].output_dim or CASES_OUT[case], kind)
    monkeypatch.setattr(compiled_step, "ENABLED", enabled)
    history = model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, seed=5)
    return model, history.history


CASES_OUT = {"mlp_adam_f32": 5, "regression_sgd_f64": 1, "bce_rmsprop_f32": 3, "softmax_layer_amsgrad_f64": 4,
             "mae_adagrad_f32": 2}


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c in DEFAULT else pytest.mark.slow) for c in CASES])
def test_compiled_step_matches_layer_by_layer_bitwise(case, monkeypatch):
    fast, h_fast = _train(case, True, monkeypatch)
    slow, h_slow = _train(case, False, monkeypatch)
    assert fast.step_path == "compiled"
    assert slow.step_path.startswith("layers:")
    assert h_fast == h_slow
    assert_weights_equal(fast.get_weights(), slow.get_weights())
    a, b = fast.optimizer.state_arrays(), slow.optimizer.state_arrays()
    assert a.keys() == b.keys()
    assert_weights_equal([a[k] for k in sorted(a)], [b[k] for k in sorted(b)])
    assert all(np.isfinite(w).all() for w in fast.get_weights())


def test_layer_path_runs_when_the_compiled_step_cannot(monkeypatch):
    model = _model("mlp_adam_f32")
    x, y = _data(40, 9, 5, "labels")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.step_path == "compiled"
    with jitnn.profile():
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.step_path == "layers: a profile is recording per-layer times"
    model.fit(CSRMatrix.from_dense(x), y, epochs=1, batch_size=16, verbose=0)
    assert model.step_path == "layers: input is a CSRMatrix"
    model.compile(loss="categorical_crossentropy", optimizer=model.optimizer,
                  metrics=[lambda yt, yp: float(np.mean(yp))])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.step_path.startswith("layers: metric ")
    monkeypatch.setattr(model.optimizer, "step", model.optimizer.step)
    model.compile(loss="categorical_crossentropy", optimizer=model.optimizer)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.step_path == "layers: Adam.step is replaced on the instance"
    monkeypatch.undo()
    calls = []
    forward = model.layers[0].forward
    monkeypatch.setattr(model.layers[0], "forward", lambda a, training: calls.append(1) or forward(a, training))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # a wrapped layer (a test's hook) sees every batch
    assert model.step_path == "layers: Dense.forward is replaced on the instance"
    assert len(calls) == 3


def test_batch_callbacks_run_every_compiled_step():
    model = _model("mlp_adam_f32")
    x, y = _data(50, 9, 5, "labels")
    seen = []

    class Hooks(jitnn.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(("begin", batch))

        def on_train_batch_end(self, batch, logs=None):
            seen.append(("end", batch, round(logs["loss"], 12)))

    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Hooks()])
    assert model.step_path == "compiled"
    assert [s[:2] for s in seen] == [(k, b) for b in range(4) for k in ("begin", "end")]
    assert all(np.isfinite(s[2]) for s in seen if s[0] == "end")


def test_compiled_steps_allocate_nothing_between_batches():
    """After the first batch, one compiled step (and the loop around it) allocates at most small Python
    objects: the peak of new memory between two batch ends stays far below one activation buffer."""
    import tracemalloc

    model = _model("mlp_adam_f32")
    x, y = _data(64 * 8, 9, 5, "labels")
    peaks = []

    class Peak(jitnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            _, peak = tracemalloc.get_traced_memory()
            peaks.append(peak - self.base)
            tracemalloc.reset_peak()
            self.base, _ = tracemalloc.get_traced_memory()

    hook = Peak()
    hook.base = 0
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # compiles
    tracemalloc.start()
    try:
        model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[hook])
    finally:
        tracemalloc.stop()
    assert model.step_path == "compiled"
    assert max(peaks[2:]) < 4096, peaks


# --- the NaN guard (issue 14, defect 3) ------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False], ids=["compiled", "layers"])
@pytest.mark.parametrize("steps", [1, 3])
def test_update_that_makes_weights_non_finite_is_never_kept(enabled, steps, monkeypatch):
    """The issue's repro: a huge rate overflows the weights in the LAST (here also the only) update."""
    monkeypatch.setattr(compiled_step, "ENABLED", enabled)
    m = jitnn.Sequential([jitnn.Dense(1, input_dim=2)])
    m.compile(loss="mse", optimizer=optimizers.SGD(1e30))
    m.build(2, seed=0)
    x, y = np.ones((4 * steps, 2)), np.full(4 * steps, 1e10)
    if steps > 1:  # some good steps first, then the rate that overflows
        m.optimizer.learning_rate = 1e-3
        m.fit(x[:4 * (steps - 1)], y[:4 * (steps - 1)], epochs=1, batch_size=4, verbose=0)
        m.optimizer.learning_rate = 1e30
    before = m.get_weights()
    with pytest.raises(NonFiniteLossError, match=r"a weight became NaN or inf in the update at epoch 1, batch 1"):
        m.fit(x[:4], y[:4], epochs=1, batch_size=4, verbose=0)
    assert m.step_path == ("compiled" if enabled else "layers: compiled step disabled (compiled_step.ENABLED)")
    assert_weights_equal(m.get_weights(), before)


def test_nan_guard_off_still_raises_on_non_finite_weights():
    m = jitnn.Sequential([jitnn.Dense(1, input_dim=2)])
    m.compile(loss="mse", optimizer=optimizers.SGD(1e30))
    with pytest.raises(NonFiniteLossError, match="nan_guard=False"):
        m.fit(np.ones((4, 2)), np.full(4, 1e10), epochs=1, batch_size=4, verbose=0, nan_guard=False)


@pytest.mark.parametrize("rate", [1e39, 1e-50])
def test_learning_rate_checked_in_the_weights_dtype(rate):
    m = jitnn.Sequential([jitnn.Dense(1, input_dim=2)], dtype="float32")
    m.compile(loss="mse", optimizer=optimizers.SGD(rate))
    with pytest.raises(ValueError, match=re.escape(f"learning_rate={rate!r}, which is ") + r"(inf|0\.0) in float32"):
        m.fit(np.ones((4, 2)), np.ones(4), epochs=1, batch_size=4, verbose=0)
    assert m.optimizer.iterations == 0
    ok = jitnn.Sequential([jitnn.Dense(1, input_dim=2)], dtype="float64")  # the same rate is fine there
    ok.compile(loss="mse", optimizer=optimizers.SGD(rate))
    ok.fit(np.ones((4, 2)), np.ones(4), epochs=1, batch_size=4, verbose=0)
    assert ok.optimizer.iterations == 1


def test_scheduled_rate_checked_each_step():
    class Explode(optimizers.LearningRateSchedule):
        def __call__(self, step):
            return 0.01 if step < 2 else 1e40

        def get_config(self):
            return {}

    m = jitnn.Sequential([jitnn.Dense(1, input_dim=2)])
    m.compile(loss="mse", optimizer=optimizers.SGD(Explode()))
    with pytest.raises(ValueError, match="at iteration 2"):
        m.fit(np.ones((12, 2)), np.ones(12), epochs=1, batch_size=4, verbose=0)
    assert m.optimizer.iterations == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e45])
def test_set_weights_refuses_non_finite(bad):
    m = jitnn.Sequential([jitnn.Dense(3, input_dim=2)])
    m.build(2, seed=0)
    before = m.get_weights()
    w = [a.astype(np.float64) for a in before]
    w[1][2] = bad
    with pytest.raises(ValueError, match="weight 1 has 1 NaN or infinite value"):
        m.set_weights(w)
    assert_weights_equal(m.get_weights(), before)


def _kernel_cases(n, dtype):
    """(kernel, [w, g, moments...], scalars) per optimizer family and mode; the moment outputs are made by
    ``_outs``."""
    rng = np.random.default_rng(n)
    w, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    s = rng.uniform(0, 1, n).astype(dtype)
    e = np.empty(0, dtype)
    return [
        (K.sgd_update, [w, g, e], (0.1, 0.0, False, 0.0, 0.0)),
        (K.sgd_update, [w, g, s], (0.1, 0.9, True, 0.01, 0.02)),
        (K.adagrad_update, [w, g, s], (0.1, 1e-7, 0.0, 0.0)),
        (K.rmsprop_update, [w, g, s], (0.1, 0.9, 1e-7, 0.0, 0.0)),
        (K.adam_update, [w, g, s, s * 2, e], (0.1, 0.9, 0.999, 1e-7, 3, 0.0, False, 0.0, 0.0)),
        (K.adam_update, [w, g, s, s * 2, s * 3], (0.1, 0.9, 0.999, 1e-7, 3, 0.01, True, 0.01, 0.02)),
    ]


def _outs(arrays):
    """Output buffers for the moments among ``arrays`` (empty where the input is), filled with a marker."""
    return [np.full(a.size, -3, a.dtype) for a in arrays[2:]]


@pytest.mark.parametrize("n", [1, 7, K.SERIAL_MAX + 13])  # serial and chunked parallel paths
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_kernels_fill_snapshot_and_flag_non_finite(n, dtype):
    for kernel, arrays, scalars in _kernel_cases(n, dtype):
        ref = [a.copy() for a in arrays]
        ref_out = _outs(arrays)
        kernel(*ref, *scalars, np.empty(0, dtype), *ref_out)  # without a snapshot: the reference update
        got = [a.copy() for a in arrays]
        got_out = _outs(arrays)
        snap = np.full(n, -7, dtype)
        assert kernel(*got, *scalars, snap, *got_out) == 0
        assert_weights_equal(got + got_out, ref + ref_out)
        np.testing.assert_array_equal(snap, arrays[0])  # the weights from before the step
        for bad in (np.inf, np.nan):
            g = [a.copy() for a in arrays]
            g[1][n // 2] = bad  # a non-finite gradient element makes that weight non-finite
            assert kernel(*g, *scalars, np.empty(0, dtype), *_outs(arrays)) != 0
        with pytest.raises(ValueError, match="snapshot must be empty"):
            kernel(*[a.copy() for a in arrays], *scalars, np.zeros(3 * n, dtype), *_outs(arrays))


@pytest.mark.parametrize("n", [7, K.SERIAL_MAX + 13])  # serial and chunked parallel paths
def test_update_kernels_write_the_moments_apart(n):
    """Double-buffered moments: the new moments go to the output buffers and the inputs stay as they were
    (the state a rejected step keeps: jitnn.optimizers swaps only accepted steps in); the same values the
    sequence of in-place updates gives, two steps running."""
    for kernel, arrays, scalars in _kernel_cases(n, np.float32):
        before = [a.copy() for a in arrays]
        w, g, *moments = [a.copy() for a in arrays]
        outs = _outs(arrays)
        assert kernel(w, g, *moments, *scalars, np.empty(0, np.float32), *outs) == 0
        for a, b in zip(moments, before[2:]):
            np.testing.assert_array_equal(a, b)  # inputs untouched
        w2 = w.copy()
        kernel(w2, g, *outs, *scalars, np.empty(0, np.float32), *moments)  # the swap: step 2 from step 1's state
        again = [a.copy() for a in before]
        ref_outs = _outs(arrays)
        kernel(again[0], again[1], *again[2:], *scalars, np.empty(0, np.float32), *ref_outs)
        kernel(again[0], again[1], *ref_outs, *scalars, np.empty(0, np.float32), *again[2:])
        assert_weights_equal([w2] + moments, [again[0]] + again[2:])


def _diverging_fit(opt, rate, enabled, monkeypatch):
    """A float32 regression trained a few good steps by ``opt``, then a one-step fit at ``rate`` on targets
    of 1e10 whose update makes a weight inf; returns (model, (weights, optimizer state) before that fit,
    the good data)."""
    monkeypatch.setattr(compiled_step, "ENABLED", enabled)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 5)).astype(np.float32), rng.standard_normal((32, 1)).astype(np.float32)
    m = jitnn.Sequential([jitnn.Dense(8, "relu", input_dim=5), jitnn.Dense(1)], dtype="float32")
    m.compile(loss="mse", optimizer=opt)
    m.build(5, seed=0)
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    before = m.get_weights(), m.optimizer.state_arrays()
    m.optimizer.learning_rate = rate
    with pytest.raises(NonFiniteLossError, match="weight became NaN or inf in the update.*optimizer state"):
        m.fit(x, y * 1e10, epochs=1, batch_size=32, verbose=0)
    return m, before, (x, y)


@pytest.mark.parametrize("enabled", [True, False], ids=["compiled", "layers"])
@pytest.mark.parametrize("make, rate", [(lambda: optimizers.SGD(1e-3, momentum=0.9), 1e30),
                                        (lambda: optimizers.Adam(1e-3), 3e38),
                                        (lambda: optimizers.RMSprop(1e-3), 2e38)],
                         ids=["sgd_momentum", "adam", "rmsprop"])
def test_rejected_step_puts_back_the_optimizer_state(make, rate, enabled, monkeypatch, tmp_path):
    """Issue 14, defect 3: the guard put back the weights but left the moments at inf and the step
    counter advanced, so every later fit failed and the saved file could not be loaded."""
    m, (weights, state), (x, y) = _diverging_fit(make(), rate, enabled, monkeypatch)
    assert m.step_path.startswith("compiled" if enabled else "layers")
    assert_weights_equal(m.get_weights(), weights)
    got = m.optimizer.state_arrays()
    assert sorted(got) == sorted(state)
    for k in state:
        np.testing.assert_array_equal(got[k], state[k], err_msg=k)
    m.optimizer.learning_rate = 1e-3
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)  # a sane rate trains again
    assert m.optimizer.iterations == int(state["iterations"]) + 4
    assert all(np.isfinite(a).all() for a in m.get_weights())
    m.save(tmp_path / "m.npz")
    back = jitnn.load_model(tmp_path / "m.npz")
    assert_weights_equal(back.get_weights(), m.get_weights())
    for k, a in m.optimizer.state_arrays().items():
        np.testing.assert_array_equal(back.optimizer.state_arrays()[k], a, err_msg=k)


def test_non_finite_loss_puts_back_the_optimizer_state_of_the_weights_it_restores():
    """A loss seen non-finite at batch 2 restores the weights from before batch 1's update: the moments
    and step counter go back to that point too (before this fit)."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((32, 5)), rng.integers(0, 3, 32)
    m = jitnn.Sequential([jitnn.Dense(8, "relu", input_dim=5), jitnn.Dense(3, "softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer=optimizers.SGD(1e-3, momentum=0.9))
    m.build(5, seed=0)
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    weights, state = m.get_weights(), m.optimizer.state_arrays()
    m.optimizer.learning_rate = 1e30
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1, batch 2"):
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert_weights_equal(m.get_weights(), weights)
    for k, a in m.optimizer.state_arrays().items():
        np.testing.assert_array_equal(a, state[k], err_msg=k)


def test_save_refuses_non_finite_weights_or_optimizer_state(tmp_path):
    """With nan_guard=False a diverged fit keeps its inf weights and moments: save names the array
    instead of writing a file load_model would refuse, and leaves an existing file alone."""
    m = jitnn.Sequential([jitnn.Dense(1, input_dim=2)])
    m.compile(loss="mse", optimizer=optimizers.SGD(1e-3, momentum=0.9))
    m.fit(np.ones((4, 2)), np.ones(4), epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "m.npz"
    m.save(path)
    kept = path.read_bytes()
    m.optimizer.state["velocity"][1][0] = np.inf
    with pytest.raises(ValueError, match=r"cannot save: optimizer/velocity/1 contains NaN or inf"):
        m.save(path)
    m.optimizer.state["velocity"][1][0] = 0.0
    m.layers[0].params[0][1, 0] = np.nan
    with pytest.raises(ValueError, match=r"cannot save: layer0/kernel contains NaN or inf"):
        m.save(path)
    assert path.read_bytes() == kept


@pytest.mark.parametrize("m", [0, 1, 7, 331])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_take_rows_gathers_as_np_take_on_every_thread_count(m, dtype, restore_num_threads):
    """The step's batch gather (rows in parallel) equals np.take for any start, count and thread count;
    rows past m are left alone."""
    rng = np.random.default_rng(m)
    src = rng.uniform(-1, 1, (1009, 13)).astype(dtype)
    order = rng.permutation(1009)
    start = 5
    want = np.take(src, order[start:start + m], axis=0)
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        jitnn.set_num_threads(threads)
        out = np.full((m + 2, 13), 7, dtype)
        compiled_step.take_rows(src, order, start, m, out)
        np.testing.assert_array_equal(out[:m], want)
        assert (out[m:] == 7).all()
