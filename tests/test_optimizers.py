"""jitnn.optimizers and jitnn.kernels.optim against float64 numpy references written from the papers.

Every family runs through ``check_trajectory``: several parameter arrays at once (sizes off every
multiple of the kernel's CHUNK, one 2-D), random params and a fresh random gradient per step, float32
and float64, compared after every step with the reference below. The references are straight
transcriptions of the update rules (Kingma & Ba Algorithm 1 for Adam, with m_hat and v_hat spelled
out), independent of the kernels' folded scalars. PyTorch, when importable, is a second reference.
"""

import math
import tracemalloc

import numpy as np
import pytest
from helpers import DTYPE_NAMES, DTYPES, run_threaded, tolerance
from hypothesis import given, settings
from hypothesis import strategies as st

from jitnn import optimizers as O
from jitnn.kernels import optim as K

# 4097: one CHUNK plus one element (serial path); 10007: three CHUNKs (parallel path); one 2-D array
SHAPES = [(1,), (7,), (4097,), (10007,), (13, 17)]
STEPS = 6


# ---------------------------------------------------------------------------------------------------
# float64 references: state is a dict of lists of arrays, one entry per parameter array.


def reg_grad(g, w, l1, l2):
    """The gradient of l1*sum|w| + l2*sum w^2 added to g (Keras convention)."""
    return g + l1 * np.sign(w) + 2.0 * l2 * w


def ref_sgd(w, g, s, t, lr, momentum=0.0, nesterov=False):
    if momentum == 0.0:
        return w - lr * g
    s["v"] = momentum * s.get("v", 0.0) - lr * g
    return w + (momentum * s["v"] - lr * g if nesterov else s["v"])


def ref_adagrad(w, g, s, t, lr, epsilon=1e-7):
    s["a"] = s.get("a", 0.0) + g * g
    return w - lr * g / (np.sqrt(s["a"]) + epsilon)


def ref_rmsprop(w, g, s, t, lr, rho=0.9, epsilon=1e-7):
    s["ms"] = rho * s.get("ms", 0.0) + (1 - rho) * g * g
    return w - lr * g / (np.sqrt(s["ms"]) + epsilon)


def ref_adam(w, g, s, t, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=0.0):
    """Kingma & Ba, Algorithm 1; AMSGrad as PyTorch (bias-corrected max); AdamW decay before the step."""
    s["m"] = beta_1 * s.get("m", 0.0) + (1 - beta_1) * g
    s["v"] = beta_2 * s.get("v", 0.0) + (1 - beta_2) * g * g
    m_hat = s["m"] / (1 - beta_1**t)
    if amsgrad:
        s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
        v_hat = s["vmax"] / (1 - beta_2**t)
    else:
        v_hat = s["v"] / (1 - beta_2**t)
    w = w - lr * weight_decay * w
    return w - lr * m_hat / (np.sqrt(v_hat) + epsilon)


# (optimizer factory, reference, reference kwargs, learning rate)
CASES = {
    "sgd": (lambda: O.SGD(0.05), ref_sgd, {}, 0.05),
    "sgd_momentum": (lambda: O.SGD(0.05, momentum=0.9), ref_sgd, {"momentum": 0.9}, 0.05),
    "sgd_nesterov": (lambda: O.SGD(0.05, momentum=0.8, nesterov=True), ref_sgd,
                     {"momentum": 0.8, "nesterov": True}, 0.05),
    "adagrad": (lambda: O.Adagrad(0.1, epsilon=1e-6), ref_adagrad, {"epsilon": 1e-6}, 0.1),
    "rmsprop": (lambda: O.RMSprop(0.01, rho=0.8), ref_rmsprop, {"rho": 0.8}, 0.01),
    "adam": (lambda: O.Adam(0.01, beta_1=0.8, beta_2=0.95), ref_adam, {"beta_1": 0.8, "beta_2": 0.95}, 0.01),
    "amsgrad": (lambda: O.AMSGrad(0.01), ref_adam, {"amsgrad": True}, 0.01),
    "adam_amsgrad_flag": (lambda: O.Adam(0.01, amsgrad=True), ref_adam, {"amsgrad": True}, 0.01),
    "adamw": (lambda: O.AdamW(0.01, weight_decay=0.1), ref_adam, {"weight_decay": 0.1}, 0.01),
    "adamw_amsgrad": (lambda: O.AdamW(0.01, weight_decay=0.1, amsgrad=True), ref_adam,
                      {"weight_decay": 0.1, "amsgrad": True}, 0.01),
}


def random_problem(shapes, dtype, steps, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    # grads vary in scale across steps and arrays, so the moment estimates actually move
    grads = [[(rng.standard_normal(s) * rng.uniform(0.1, 3.0)).astype(dtype) for s in shapes]
             for _ in range(steps)]
    return params, grads


def step_tolerance(dtype):
    return tolerance(dtype, float32=(2e-5, 2e-5), float64=(1e-11, 1e-12))


def check_trajectory(opt, ref, ref_kw, lr, dtype, shapes=SHAPES, steps=STEPS, regs=None, lr_of_step=None):
    """Step ``opt`` and the float64 reference side by side, comparing every parameter after every step."""
    params, grads = random_problem(shapes, dtype, steps)
    ref_w = [p.astype(np.float64) for p in params]
    ref_state = [{} for _ in shapes]
    for k in range(steps):
        opt.step(params, grads[k], regs)
        assert opt.iterations == k + 1
        lr_k = lr_of_step(k) if lr_of_step else lr
        for i, g in enumerate(grads[k]):
            g64 = g.astype(np.float64)
            if regs is not None:
                g64 = reg_grad(g64, ref_w[i], *regs[i])
            ref_w[i] = ref(ref_w[i], g64, ref_state[i], k + 1, lr_k, **ref_kw)
        for i, (p, r) in enumerate(zip(params, ref_w)):
            assert p.dtype == dtype
            np.testing.assert_allclose(p, r, **step_tolerance(dtype), err_msg=f"param {i}, step {k + 1}")
    return params


# ---------------------------------------------------------------------------------------------------
# Every family against its reference.


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, dtype):
    make, ref, ref_kw, lr = CASES[case]
    check_trajectory(make(), ref, ref_kw, lr, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", ["sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam",
                                  "amsgrad", "adamw"])
def test_l1_l2_regularization(case, dtype):
    make, ref, ref_kw, lr = CASES[case]
    regs = [(0.01, 0.0), (0.0, 0.02), (0.01, 0.02), (0.03, 0.05), (0.0, 0.0)]
    check_trajectory(make(), ref, ref_kw, lr, dtype, regs=regs)


def test_l1_uses_sign_zero_at_zero():
    w = np.array([0.0, 2.0, -2.0])
    g = np.zeros(3)
    O.SGD(1.0).step([w], [g], [(0.5, 0.0)])
    np.testing.assert_array_equal(w, [0.0, 1.5, -1.5])


def test_adam_first_step_is_lr_times_sign_for_every_array():
    """Bias correction makes step 1 move by lr*sign(g) exactly (eps=0); t must be 1 for every array."""
    params, grads = random_problem([(5,), (9,), (4,)], np.float64, 1)
    before = [p.copy() for p in params]
    O.Adam(0.1, epsilon=0.0).step(params, grads[0])
    for b, p, g in zip(before, params, grads[0]):
        np.testing.assert_allclose(p - b, -0.1 * np.sign(g), rtol=1e-12)


def test_adam_step_counter_is_per_step_not_per_array():
    """With many arrays, step k uses t = k for all of them: same grads in two arrays give the same update."""
    rng = np.random.default_rng(3)
    opt = O.Adam(0.01)
    a, b = np.zeros(6), np.zeros(6)
    for _ in range(STEPS):
        g = rng.standard_normal(6)
        opt.step([a, b], [g, g.copy()])
    np.testing.assert_array_equal(a, b)
    assert opt.iterations == STEPS
    only = np.zeros(6)
    single = O.Adam(0.01)
    for _ in range(STEPS):
        g = rng.standard_normal(6)
        single.step([only], [g])
    assert single.iterations == STEPS


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 9000), lr=st.floats(1e-4, 1.0), b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.9999),
       t=st.integers(1, 10_000), wd=st.sampled_from([0.0, 0.01]), amsgrad=st.booleans(),
       l1=st.sampled_from([0.0, 1e-3]), l2=st.sampled_from([0.0, 1e-3]))
def test_adam_kernel_single_step_property(n, lr, b1, b2, t, wd, amsgrad, l1, l2):
    rng = np.random.default_rng(n)
    w, g = rng.standard_normal(n), rng.standard_normal(n)
    m, v = rng.standard_normal(n), rng.uniform(0.0, 2.0, n)
    vmax = v + rng.uniform(-0.5, 0.5, n).clip(0) if amsgrad else np.empty(0)
    state = {"m": m.copy(), "v": v.copy()}
    # the reference advances m, v from the state *before* step t; t is given, not counted
    s = {"m": m.copy(), "v": v.copy(), **({"vmax": vmax.copy()} if amsgrad else {})}
    expect = ref_adam(w.copy(), reg_grad(g, w, l1, l2), s, t, lr, b1, b2, 1e-7, amsgrad, wd)
    before = {"m": m.copy(), "v": v.copy(), "vmax": vmax.copy()}
    out = {"m": np.full(n, np.nan), "v": np.full(n, np.nan), "vmax": np.full(vmax.size, np.nan)}
    K.adam_update(w, g, state["m"], state["v"], vmax, lr, b1, b2, 1e-7, t, wd, amsgrad, l1, l2, np.empty(0),
                  out["m"], out["v"], out["vmax"])
    np.testing.assert_allclose(w, expect, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["m"], s["m"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out["v"], s["v"], rtol=1e-12, atol=1e-14)
    if amsgrad:
        np.testing.assert_allclose(out["vmax"], s["vmax"], rtol=1e-12, atol=1e-14)
    # double-buffered: the input moments are left as they were (a rejected step keeps them)
    for name, arr in (("m", state["m"]), ("v", state["v"]), ("vmax", vmax)):
        np.testing.assert_array_equal(arr, before[name])


def test_empty_and_scalar_params():
    params = [np.zeros(0, np.float32), np.array(1.5, np.float32)]
    grads = [np.zeros(0, np.float32), np.array(2.0, np.float32)]
    opt = O.Adam(0.1, epsilon=0.0)
    opt.step(params, grads)
    assert params[1] == np.float32(1.4)


# ---------------------------------------------------------------------------------------------------
# Schedules.


def test_step_decay_values():
    s = O.StepDecay(0.1, drop=0.5, every=3)
    assert [s(k) for k in range(8)] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])


def test_cosine_decay_values():
    s = O.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert s(0) == pytest.approx(1.0)
    assert s(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(10) == pytest.approx(0.1)
    assert s(1000) == pytest.approx(0.1)
    for k in range(12):
        assert s(k) == pytest.approx((1 - 0.1) * 0.5 * (1 + math.cos(math.pi * min(k, 10) / 10)) + 0.1)


def test_cosine_decay_warmup():
    s = O.CosineDecay(2.0, decay_steps=4, warmup_steps=4)
    assert [s(k) for k in range(4)] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert [s(k) for k in range(4, 9)] == pytest.approx([2.0, 2.0 * 0.5 * (1 + math.cos(math.pi / 4)), 1.0,
                                                         2.0 * 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_optimizer_follows_schedule(dtype):
    sched = O.StepDecay(0.1, drop=0.5, every=2)
    opt = O.SGD(sched, momentum=0.9)
    assert opt.current_learning_rate() == pytest.approx(0.1)
    check_trajectory(opt, ref_sgd, {"momentum": 0.9}, None, dtype, shapes=[(7,), (4097,)],
                     lr_of_step=sched)
    assert opt.current_learning_rate() == pytest.approx(sched(STEPS))


def test_adam_with_cosine_schedule():
    sched = O.CosineDecay(0.01, decay_steps=4, alpha=0.1)
    check_trajectory(O.Adam(sched), ref_adam, {}, None, np.float64, shapes=[(7,), (33,)], lr_of_step=sched)


@pytest.mark.parametrize("sched", [O.StepDecay(0.3, drop=0.1, every=7),
                                   O.CosineDecay(0.2, decay_steps=50, alpha=0.05, warmup_steps=3)])
def test_schedule_config_round_trip(sched):
    again = type(sched).from_config(sched.get_config())
    assert again.get_config() == sched.get_config()
    assert [again(k) for k in range(60)] == [sched(k) for k in range(60)]
    opt = O.Adam(sched)
    back = O.Adam.from_config(opt.get_config())
    assert isinstance(back.learning_rate, type(sched))
    assert back.get_config() == opt.get_config()


@pytest.mark.parametrize("make, match, exc", [
    (lambda: O.StepDecay(0.0), "initial_learning_rate=0.0", ValueError),
    (lambda: O.StepDecay(0.1, drop=1.5), "drop=1.5", ValueError),
    (lambda: O.StepDecay(0.1, every=0), "every=0", ValueError),
    (lambda: O.StepDecay(0.1, every=2.5), "every=2.5", TypeError),
    (lambda: O.CosineDecay(0.1, decay_steps=0), "decay_steps=0", ValueError),
    (lambda: O.CosineDecay(0.1, 10, alpha=2.0), "alpha=2.0", ValueError),
    (lambda: O.CosineDecay(0.1, 10, warmup_steps=-1), "warmup_steps=-1", ValueError),
    (lambda: O.CosineDecay("0.1", 10), "initial_learning_rate='0.1'", TypeError),
])
def test_schedule_errors(make, match, exc):
    with pytest.raises(exc, match=match):
        make()


# ---------------------------------------------------------------------------------------------------
# The kernels: parallel against serial, chunk edges.


def kernel_calls(dtype, n):
    """(name, kernel, args builder, the snapshot's position) for every kernel and mode, fresh arrays each
    call; the moment outputs follow the snapshot (the unused ones empty)."""
    rng = np.random.default_rng(11)
    w0, g0 = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    s0 = rng.uniform(0.0, 1.0, n).astype(dtype)
    none = np.empty(0, dtype)

    def arrays(k):
        return [w0.copy(), g0.copy()] + [s0.copy() for _ in range(k)]

    def outs(k, unused=0):
        return [np.zeros(n, dtype) for _ in range(k)] + [none.copy() for _ in range(unused)]

    return [
        ("sgd", K.sgd_update, lambda: (*arrays(0), none, 0.1, 0.0, False, 0.01, 0.02, none, *outs(0, 1)), 8),
        ("momentum", K.sgd_update, lambda: (*arrays(1), 0.1, 0.9, False, 0.01, 0.02, none, *outs(1)), 8),
        ("nesterov", K.sgd_update, lambda: (*arrays(1), 0.1, 0.9, True, 0.0, 0.0, none, *outs(1)), 8),
        ("adagrad", K.adagrad_update, lambda: (*arrays(1), 0.1, 1e-7, 0.01, 0.0, none, *outs(1)), 7),
        ("rmsprop", K.rmsprop_update, lambda: (*arrays(1), 0.1, 0.9, 1e-7, 0.0, 0.02, none, *outs(1)), 8),
        ("adam", K.adam_update, lambda: (*arrays(2), none, 0.1, 0.9, 0.999, 1e-7, 3, 0.0, False, 0.0, 0.0, none,
                                         *outs(2, 1)), 14),
        ("amsgrad_w", K.adam_update, lambda: (*arrays(3), 0.1, 0.9, 0.999, 1e-7, 3, 0.01, True, 0.01, 0.02, none,
                                              *outs(3)), 14),
    ]


def test_parallel_matches_one_thread():
    """Chunks are independent, so 3 threads give the bits of 1 (in a fresh interpreter with a 3-thread
    pool: in this process the pool may hold one thread)."""
    run_threaded("""
import numba
import numpy as np
import jitnn
from helpers import DTYPES
from jitnn.kernels import optim as K
from test_optimizers import kernel_calls

n = 5 * K.CHUNK + 123  # past SERIAL_MAX: the kernels split it over prange chunks
for dtype in DTYPES:
    for name, kernel, make_args, _ in kernel_calls(dtype, n):
        out = {}
        for threads in (1, 3):
            jitnn.set_num_threads(threads)
            assert numba.get_num_threads() == threads
            out[threads] = make_args()
            kernel(*out[threads])
        for k, (a, b) in enumerate(zip(out[1], out[3])):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} {dtype.__name__}: argument {k}")
print("ok")
""")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_where_an_empty_snapshot_points_changes_no_bit(dtype):
    """An empty snapshot or output buffer is "none", wherever its pointer lies. An empty snapshot that lay
    within w's range once sent Adam's vectorized loop down its scalar version (an overlap check), and 62 of
    20603 float32 weights came out one ulp apart (seen under pytest-xdist); keep() now copies in a pass of
    its own, and the loops that do not use an output buffer never touch it."""
    n = 5 * K.CHUNK + 123
    for name, kernel, make_args, snap in kernel_calls(dtype, n):
        plain = make_args()
        kernel(*plain)
        moved = list(make_args())
        inside = moved[0][100:100]  # an empty view whose pointer is inside w
        moved[snap] = inside
        moved[snap + 1:] = [inside if a.size == 0 else a for a in moved[snap + 1:]]
        kernel(*moved)
        for k, (a, b) in enumerate(zip(plain, moved)):
            if isinstance(a, np.ndarray) and a.size:
                np.testing.assert_array_equal(a, b, err_msg=f"{name}: argument {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
def test_compiled_matches_plain_python(dtype, monkeypatch):
    """The same source run as plain Python (prange -> range, numpy scalars) agrees with the compiled kernel.

    The plain run computes sqrt in float64 (math.sqrt returns a Python float), hence the float32 tolerance.
    """
    for name in ("regularized", "sgd_element", "adagrad_element", "rmsprop_element", "adam_moments", "adam_weight",
                 "_sgd_block", "_adagrad_block", "_rmsprop_block", "_adam_block"):
        monkeypatch.setattr(K, name, getattr(K, name).py_func)
    n = K.SERIAL_MAX + 5  # past the serial cut-off: three chunks through the Python prange loop
    # atol: FMA contraction in the compiled code rounds cancelling sums like w + mu*v - lr*g differently
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-14, "atol": 1e-14}
    for name, kernel, make_args, _ in kernel_calls(dtype, n):
        compiled, plain = make_args(), make_args()
        kernel(*compiled)
        kernel.py_func(*plain)
        for k, (a, b) in enumerate(zip(compiled, plain)):
            if isinstance(a, np.ndarray):
                np.testing.assert_allclose(a, b, **tol, err_msg=f"{name}: argument {k}")


@pytest.mark.parametrize("n", [K.CHUNK - 1, K.CHUNK, K.CHUNK + 1, K.SERIAL_MAX, K.SERIAL_MAX + 1,
                               3 * K.CHUNK + 7])
def test_chunk_edges_touch_every_element_once(n):
    w = np.zeros(n)
    g = np.ones(n)
    K.sgd_update(w, g, np.empty(0), 1.0, 0.0, False, 0.0, 0.0, np.empty(0), np.empty(0))
    np.testing.assert_array_equal(w, -1.0)


def test_no_recompilation_across_steps():
    """Python scalars reach the kernels with stable types: one signature per dtype, whatever the settings."""
    before = len(K.adam_update.signatures)
    for lr in (O.CosineDecay(0.01, 5), 1, 0.5):
        opt = O.Adam(lr, amsgrad=True, weight_decay=0.01)
        params, grads = random_problem([(5,)], np.float64, 3)
        for g in grads:
            opt.step(params, g, [(0, 1)])
    params, grads = random_problem([(5,)], np.float32, 3)
    O.Adam().step(params, grads[0])
    assert len(K.adam_update.signatures) <= max(before, 2)


# ---------------------------------------------------------------------------------------------------
# State, configs, allocation.


@pytest.mark.parametrize("case", list(CASES))
def test_state_round_trip(case):
    make = CASES[case][0]
    params, grads = random_problem([(7,), (3, 5)], np.float32, 6)
    a = make()
    for g in grads[:3]:
        a.step(params, g)
    saved = a.state_arrays()
    assert int(saved["iterations"]) == 3
    b = O.get(a.get_config())
    assert type(b) is type(a)
    b_params = [p.copy() for p in params]
    b.build(b_params)
    b.load_state_arrays(saved)
    assert b.iterations == 3
    for g in grads[3:]:
        a.step(params, g)
        b.step(b_params, g)
    for p, q in zip(params, b_params):
        np.testing.assert_array_equal(p, q)


def test_state_keys():
    params = [np.zeros(3), np.zeros(4)]
    opt = O.Adam()
    opt.build(params)
    assert sorted(opt.state_arrays()) == ["iterations", "m/0", "m/1", "v/0", "v/1"]
    opt = O.AMSGrad()
    opt.build(params)
    assert {"vmax/0", "vmax/1"} <= set(opt.state_arrays())
    opt = O.SGD()
    opt.build(params)
    assert sorted(opt.state_arrays()) == ["iterations"]
    opt.step(params, [np.ones(3), np.ones(4)])
    assert opt.state_arrays()["iterations"] == 1


def test_state_arrays_are_copies():
    params = [np.zeros(3)]
    opt = O.Adam()
    opt.step(params, [np.ones(3)])
    opt.state_arrays()["m/0"][:] = 99
    assert not np.any(opt.state_arrays()["m/0"] == 99)


def test_load_state_errors_change_nothing():
    params = [np.zeros(3), np.zeros(4)]
    opt = O.Adam()
    opt.step(params, [np.ones(3), np.ones(4)])
    good = opt.state_arrays()
    with pytest.raises(ValueError, match="build"):
        O.Adam().load_state_arrays(good)
    bad = dict(good, **{"m/1": np.zeros(5)})
    bad["m/0"] = np.full(3, 7.0)
    with pytest.raises(ValueError, match="m/1"):
        opt.load_state_arrays(bad)
    np.testing.assert_array_equal(opt.state_arrays()["m/0"], good["m/0"])
    missing = {k: v for k, v in good.items() if k != "v/1"}
    with pytest.raises(ValueError, match="v/1"):
        opt.load_state_arrays(missing)
    with pytest.raises(ValueError, match="vmax/0"):
        opt.load_state_arrays(dict(good, **{"vmax/0": np.zeros(3)}))
    with pytest.raises(ValueError, match="iterations"):
        opt.load_state_arrays(dict(good, iterations=np.array(-1)))


FACTORY_SETTINGS = {"amsgrad": {"amsgrad": True}, "adamw": {"weight_decay": 0.004}}  # thin factories over Adam


@pytest.mark.parametrize("name", sorted(O.OPTIMIZERS))
def test_config_round_trip_and_get(name):
    opt = O.get(name)
    cfg = opt.get_config()
    if name in FACTORY_SETTINGS:
        assert type(opt) is O.Adam and cfg["name"] == "adam"
        assert FACTORY_SETTINGS[name].items() <= cfg.items()
    else:
        assert isinstance(opt, O.OPTIMIZERS[name]) and cfg["name"] == name
    assert type(opt).from_config(cfg).get_config() == cfg
    assert O.get(cfg).get_config() == cfg
    assert O.get(opt) is opt
    assert O.get(name.upper()).get_config() == cfg


def test_factories_take_no_contradictory_arguments_and_old_configs_load():
    with pytest.raises(TypeError, match="amsgrad"):
        O.AMSGrad(amsgrad=False)
    assert O.get(O.AMSGrad).amsgrad and O.get(O.AdamW).weight_decay == 0.004
    # files written before the factories name them "amsgrad" / "adamw": they still load, as Adam
    old = {"name": "adamw", "learning_rate": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
           "amsgrad": True, "weight_decay": 0.1}
    opt = O.get(old)
    assert type(opt) is O.Adam and opt.get_config() == dict(old, name="adam")


def test_defaults_follow_keras():
    assert O.SGD().get_config() == {"name": "sgd", "learning_rate": 0.01, "momentum": 0.0, "nesterov": False}
    assert O.Adagrad().get_config() == {"name": "adagrad", "learning_rate": 0.001, "epsilon": 1e-7}
    assert O.RMSprop().get_config() == {"name": "rmsprop", "learning_rate": 0.001, "rho": 0.9,
                                        "epsilon": 1e-7}
    assert O.Adam().get_config() == {"name": "adam", "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                                     "epsilon": 1e-7, "amsgrad": False, "weight_decay": 0.0}
    assert O.AMSGrad().amsgrad and O.AdamW().weight_decay == 0.004


def test_learning_rate_can_be_reassigned():
    opt = O.SGD(0.1)
    opt.learning_rate = 0.5
    assert opt.current_learning_rate() == 0.5
    with pytest.raises(ValueError, match="learning_rate=0"):
        opt.learning_rate = 0


def test_steady_state_allocates_nothing():
    params, grads = random_problem([(64, 32), (32,), (32, 10), (10,), (10007,)], np.float32, 1)
    regs = [(0.0, 1e-4), (0.0, 0.0), (1e-5, 0.0), (0.0, 0.0), (0.0, 0.0)]
    for opt in (O.Adam(sched := O.CosineDecay(1e-3, 100)), O.AMSGrad(), O.SGD(0.01, momentum=0.9),
                O.RMSprop(), O.Adagrad()):
        opt.step(params, grads[0], regs)  # builds, compiles
        opt.step(params, grads[0], regs)
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            for _ in range(20):
                opt.step(params, grads[0], regs)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert current - start < 1024, f"{opt!r} keeps {current - start} bytes"
        assert peak - start < 4096, f"{opt!r} peaks at {peak - start} bytes"
    assert sched(0) == 1e-3


# ---------------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("make, match, exc", [
    (lambda: O.Adam(learning_rate=-1), "learning_rate=-1", ValueError),
    (lambda: O.SGD(learning_rate=0.0), "learning_rate=0.0", ValueError),
    (lambda: O.SGD(learning_rate=float("nan")), "learning_rate=nan", ValueError),
    (lambda: O.SGD(learning_rate="0.1"), "learning_rate='0.1'", TypeError),
    (lambda: O.SGD(learning_rate=True), "learning_rate=True", TypeError),
    (lambda: O.SGD(learning_rate=lambda step: 0.1), "learning_rate=", TypeError),
    (lambda: O.SGD(momentum=-0.1), "momentum=-0.1", ValueError),
    (lambda: O.SGD(momentum=1.5), "momentum=1.5", ValueError),
    (lambda: O.SGD(nesterov="yes"), "nesterov='yes'", TypeError),
    (lambda: O.Adagrad(epsilon=-1e-7), "epsilon=-1e-07", ValueError),
    (lambda: O.RMSprop(rho=1.0), "rho=1.0", ValueError),
    (lambda: O.Adam(beta_1=1.0), "beta_1=1.0", ValueError),
    (lambda: O.Adam(beta_2=-0.5), "beta_2=-0.5", ValueError),
    (lambda: O.Adam(amsgrad=1), "amsgrad=1", TypeError),
    (lambda: O.AdamW(weight_decay=-0.01), "weight_decay=-0.01", ValueError),
])
def test_constructor_errors(make, match, exc):
    with pytest.raises(exc, match=match):
        make()


def test_get_errors():
    with pytest.raises(ValueError, match="adam.*sgd"):
        O.get("nope")
    with pytest.raises(TypeError, match="3"):
        O.get(3)
    assert isinstance(O.get(O.RMSprop), O.RMSprop)


def test_step_errors():
    f64 = [np.zeros(3), np.zeros((2, 2))]
    opt = O.Adam()
    with pytest.raises(ValueError, match=r"grads\[1\]"):
        opt.step([np.zeros(3), np.zeros((2, 2))], [np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        opt.step(f64, [np.zeros(3, np.float32), np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r"params\[1\]"):
        opt.step([np.zeros(3), np.zeros((2, 3))], [np.zeros(3), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="2 parameter arrays"):
        opt.step(f64[:1], [np.zeros(3)])
    with pytest.raises(ValueError, match="regularizers"):
        opt.step(f64, [np.zeros(3), np.zeros((2, 2))], [(0.0, 0.0)])
    assert opt.iterations == 0  # nothing ran
    with pytest.raises(ValueError, match=r"params\[0\].*float32 or float64"):
        O.SGD().step([np.zeros(3, np.int64)], [np.zeros(3, np.int64)])
    with pytest.raises(ValueError, match=r"params\[0\].*C-contiguous"):
        O.SGD().step([np.zeros((4, 4))[:, ::2]], [np.zeros((4, 2))])
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\].*writeable"):
        O.SGD().step([frozen], [np.zeros(3)])
    with pytest.raises(TypeError, match=r"params\[0\]"):
        O.SGD().step([[1.0, 2.0]], [np.zeros(2)])


# ---------------------------------------------------------------------------------------------------
# PyTorch as a second reference.


def _torch_trajectory(torch, make_torch, make_ours, dtype, regs=None, steps=STEPS):
    params, grads = random_problem([(7,), (4097,), (3, 5)], dtype, steps, seed=5)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    topt = make_torch(tparams)
    ours = make_ours()
    for k in range(steps):
        for tp, g in zip(tparams, grads[k]):
            tp.grad = torch.tensor(g.copy())
        topt.step()
        ours.step(params, grads[k], regs)
        tol = step_tolerance(dtype)
        for i, (p, tp) in enumerate(zip(params, tparams)):
            np.testing.assert_allclose(p, tp.detach().numpy(), **tol, err_msg=f"param {i}, step {k + 1}")


TORCH_CASES = {
    "adam": (lambda t, ps: t.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-7),
             lambda: O.Adam(0.01, beta_1=0.8, beta_2=0.95), None),
    "amsgrad": (lambda t, ps: t.optim.Adam(ps, lr=0.01, eps=1e-8, amsgrad=True),
                lambda: O.AMSGrad(0.01, epsilon=1e-8), None),
    "adamw": (lambda t, ps: t.optim.AdamW(ps, lr=0.01, eps=1e-7, weight_decay=0.1),
              lambda: O.AdamW(0.01, weight_decay=0.1), None),
    "adam_l2": (lambda t, ps: t.optim.Adam(ps, lr=0.01, eps=1e-7, weight_decay=0.02),  # coupled L2: g + wd*w
                lambda: O.Adam(0.01), [(0.0, 0.01)] * 3),
    "sgd_momentum": (lambda t, ps: t.optim.SGD(ps, lr=0.05, momentum=0.9),
                     lambda: O.SGD(0.05, momentum=0.9), None),
    "sgd_nesterov": (lambda t, ps: t.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
                     lambda: O.SGD(0.05, momentum=0.9, nesterov=True), None),
    "rmsprop": (lambda t, ps: t.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-7),
                lambda: O.RMSprop(0.01), None),
    "adagrad": (lambda t, ps: t.optim.Adagrad(ps, lr=0.1, eps=1e-7),
                lambda: O.Adagrad(0.1), None),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_NAMES)
@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_matches_torch(case, dtype):
    torch = pytest.importorskip("torch")
    make_torch, make_ours, regs = TORCH_CASES[case]
    _torch_trajectory(torch, lambda ps: make_torch(torch, ps), make_ours, dtype, regs)


@pytest.mark.parametrize("call", [
    lambda: K.sgd_update(np.zeros(5), np.zeros(4), np.empty(0), 0.1, 0.0, False, 0.0, 0.0, np.empty(0), np.empty(0)),
    lambda: K.sgd_update(np.zeros(5), np.zeros(5), np.empty(0), 0.1, 0.9, False, 0.0, 0.0, np.empty(0), np.zeros(5)),
    lambda: K.sgd_update(np.zeros(5), np.zeros(5), np.zeros(5), 0.1, 0.9, False, 0.0, 0.0, np.empty(0), np.zeros(4)),
    lambda: K.adagrad_update(np.zeros(5), np.zeros(5), np.zeros(3), 0.1, 1e-7, 0.0, 0.0, np.empty(0), np.zeros(5)),
    lambda: K.adagrad_update(np.zeros(5), np.zeros(5), np.zeros(5), 0.1, 1e-7, 0.0, 0.0, np.empty(0), np.empty(0)),
    lambda: K.rmsprop_update(np.zeros(5), np.zeros(5), np.zeros(6), 0.1, 0.9, 1e-7, 0.0, 0.0, np.empty(0),
                             np.zeros(5)),
    lambda: K.rmsprop_update(np.zeros(5), np.zeros(5), np.zeros(5), 0.1, 0.9, 1e-7, 0.0, 0.0, np.empty(0),
                             np.zeros(6)),
    lambda: K.adam_update(np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(4), np.empty(0), 0.1, 0.9, 0.999,
                          1e-7, 1, 0.0, False, 0.0, 0.0, np.empty(0), np.zeros(5), np.zeros(5), np.empty(0)),
    lambda: K.adam_update(np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5), np.empty(0), 0.1, 0.9, 0.999,
                          1e-7, 1, 0.0, True, 0.0, 0.0, np.empty(0), np.zeros(5), np.zeros(5), np.zeros(5)),
    lambda: K.adam_update(np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5), np.empty(0), 0.1, 0.9, 0.999,
                          1e-7, 1, 0.0, False, 0.0, 0.0, np.empty(0), np.zeros(5), np.zeros(3), np.empty(0)),
])
def test_kernels_reject_unequal_lengths(call):
    """No bounds checks inside the loops, so the drivers must refuse short buffers up front."""
    with pytest.raises(ValueError, match="same length"):
        call()


def test_switching_amsgrad_on_after_build_is_refused_not_corrupting():
    opt = O.Adam()
    params = [np.zeros(9)]
    opt.step(params, [np.ones(9)])
    opt.amsgrad = True
    with pytest.raises(ValueError, match="same length"):
        opt.step(params, [np.ones(9)])
