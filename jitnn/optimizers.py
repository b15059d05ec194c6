"""Optimizers, Keras-style on the outside, one fused kernel per family inside (schedules: jitnn.schedules).

One general implementation per family, the familiar names as thin factories (tinygrad's way):
``SGD`` (plain, momentum, Nesterov), ``Adagrad``, ``RMSprop``, and ``Adam``; ``AMSGrad`` is
``Adam(amsgrad=True)`` and ``AdamW`` is ``Adam(weight_decay=...)``. Each ``step`` makes one call per
parameter array into the optimizer's ``ops`` (jitnn.backend: the CPU's kernels are
:mod:`jitnn.kernels.optim`), which reads the gradient once and updates the weights and the moment
buffers in the same pass; after ``build`` nothing is allocated. ``state`` holds those buffers on the
device of ``ops``; ``to(ops)`` moves them. Where the device's kernels guard the step
(``ops.guard_in_update``: the CPU) the moments are double-buffered: the kernels write the new moments
into a second set of buffers and leave ``state`` as it was, and ``swap_moments`` makes the new set the
state once the step is accepted, so a step the NaN guard rejects costs the state nothing.

    opt = Adam(learning_rate=CosineDecay(1e-3, decay_steps=10_000))
    opt.step(params, grads)                 # in place; opt.iterations += 1
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from jitnn.backend.cpu import CPU
from jitnn.config import FLOAT_DTYPES
from jitnn.schedules import SCHEDULES, CosineDecay, LearningRateSchedule, StepDecay
from jitnn.schedules import check_real as _real


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, received: {name}={value!r}")
    return bool(value)


# ---------------------------------------------------------------------------------------------------
# The optimizer contract.


class Optimizer:
    """Base class: learning rate (a float or a schedule), step counter, per-parameter state buffers.

    Subclasses name their buffers in ``slots`` and apply one ``ops`` update per array in ``update_array``
    (a public hook: a subclass may wrap it, as tests/test_interrupts.py does to interrupt a step).
    """

    name = "optimizer"
    kernel = ""  # the Ops method of the family's update (checked by ``Ops.check_optimizer``)

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001):
        self.learning_rate = learning_rate
        self.iterations = 0
        self.ops = CPU
        self.state: dict[str, list] = {}  # slot -> one buffer per parameter array, on ``ops``' device
        self._next: dict[str, list] = {}  # the same, where the next step writes its moments (double-buffered)
        self.moment_parity = 0  # which of the two sets is ``state``: flips with each swap_moments
        self._specs = None  # [(shape, dtype)] of the params seen at build
        self._checked = None  # the (learning rate, dtype) next_step last validated

    def __getstate__(self):  # copy.deepcopy / pickle: the flat views are remade from the copied buffers
        state = dict(vars(self))
        state.pop("_bufs", None)
        state.pop("_outs", None)
        return state

    def __setstate__(self, state):
        # deepcopy copies a view as an array of its own: copied ``_bufs`` would no longer be ``state``, and
        # a copy's training would leave its ``state`` (what it saves) behind
        self.__dict__.update(state)
        if self.built:
            self._bufs = self._flat_views(self.state)
            self._outs = self._flat_views(self._next) if self.ops.guard_in_update else None

    # -- learning rate ---------------------------------------------------------------------------
    @property
    def learning_rate(self):
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, LearningRateSchedule):
            self._learning_rate = value
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError("learning_rate must be a positive float or a LearningRateSchedule, "
                            f"received: learning_rate={value!r}")
        else:
            self._learning_rate = _real("learning_rate", value, 0.0, low_open=True)

    def current_learning_rate(self) -> float:
        """The rate the next ``step`` uses: the schedule evaluated at ``iterations`` (0 for the first)."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if isinstance(lr, LearningRateSchedule) else lr

    def check_learning_rate(self, dtype, lr=None) -> float:
        """``lr`` (default: the next step's) as the kernels use it, in ``dtype``: ValueError when it is not
        a positive finite number there (1e39 is inf in float32, 1e-50 is 0)."""
        lr = self.current_learning_rate() if lr is None else lr
        with np.errstate(over="ignore", under="ignore"):
            cast = float(np.dtype(dtype).type(lr))
        if not (math.isfinite(cast) and cast > 0):
            raise ValueError(f"learning_rate must be a positive finite {np.dtype(dtype).name} (the weights' dtype), "
                             f"received: learning_rate={lr!r}, which is {cast!r} in {np.dtype(dtype).name}"
                             + (f" at iteration {self.iterations}" if self.scheduled else ""))
        return lr

    @property
    def scheduled(self) -> bool:
        """True when the learning rate is a schedule (it changes with ``iterations``)."""
        return isinstance(self._learning_rate, LearningRateSchedule)

    def next_step(self, dtype) -> tuple[float, int]:
        """(learning rate, 1-based step number) of the step about to run, checked in ``dtype``; advances
        ``iterations``. ``step`` calls it; a compiled training step (jitnn.compiled_step) calls it and then
        runs the update kernels itself on ``buffers(i)``."""
        lr = self.current_learning_rate()
        if (lr, dtype) != self._checked:  # a constant rate is checked once per dtype, not every step
            self.check_learning_rate(dtype, lr)
            self._checked = (lr, dtype)
        self.iterations += 1
        return lr, self.iterations

    # -- state -----------------------------------------------------------------------------------
    @property
    def slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state buffers (all zeros at build, same shape and dtype)."""
        return ()

    def _kernel_slots(self) -> tuple[str, ...]:
        """The buffers the kernel takes, in order, used or not (an unused one is passed empty)."""
        return self.slots

    @property
    def built(self) -> bool:
        return self._specs is not None

    def build(self, params) -> None:
        """Allocate the state buffers for ``params`` (zeros, same shape and dtype); once, before stepping."""
        params = self._check_params(params)
        for p in params:
            self.check_learning_rate(p.dtype)
        self._specs = [(tuple(p.shape), np.dtype(p.dtype)) for p in params]
        self.state = {s: [self.ops.zeros(shape, dtype) for shape, dtype in self._specs] for s in self.slots}
        self._allocate_next()

    def _allocate_next(self):
        """The second set of moment buffers on a device whose kernels write the new moments apart, and the
        flat views of both sets, made once: step() then allocates nothing, and an empty array of the right
        dtype stands in for a buffer the settings leave unused."""
        double = self.ops.guard_in_update
        self._next = {s: [self.ops.zeros(shape, dtype) for shape, dtype in self._specs] for s in self.slots} \
            if double else {}
        self._bufs, self._outs = self._flat_views(self.state), (self._flat_views(self._next) if double else None)

    def _flat_views(self, state):
        return [tuple(state[s][i].reshape(state[s][i].size) if s in state else self.ops.alloc(0, dtype)
                      for s in self._kernel_slots()) for i, (_, dtype) in enumerate(self._specs)]

    def buffers(self, i) -> tuple:
        """The flat state buffers the update kernel of parameter array ``i`` takes, in the kernel's
        argument order (an empty array for a buffer the settings leave unused); after ``build``."""
        return self._bufs[i]

    def next_buffers(self, i) -> tuple:
        """Where the next step writes the new moments of parameter array ``i`` (``buffers`` order), on a
        device whose kernels keep them apart (``ops.guard_in_update``); ``swap_moments`` then makes them
        the state."""
        return self._outs[i]

    def swap_moments(self) -> None:
        """The step just made is accepted: the buffers it wrote its moments into become ``state``, and the
        previous state's buffers receive the next step's (``ops.guard_in_update`` devices; O(slots))."""
        self.state, self._next = self._next, self.state
        self._bufs, self._outs = self._outs, self._bufs
        self.moment_parity ^= 1

    def state_nbytes(self, indices) -> int:
        """Bytes of the state buffers (both sets, where double-buffered) of the parameter arrays ``indices``."""
        return sum(arrays[i].nbytes for state in (self.state, self._next) for arrays in state.values()
                   for i in indices)

    def to(self, ops) -> None:
        """Run the updates on ``ops`` from now on; the state buffers move there."""
        ops.check_optimizer(self)
        if ops is self.ops:
            return
        if self.built:
            self.state = {s: [ops.to_device(self.ops.to_host(a)) for a in arrays] for s, arrays in self.state.items()}
        self.ops = ops
        if self.built:
            self._allocate_next()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """A copy of the state (numpy), keyed ``"iterations"`` and ``"{slot}/{index}"`` (e.g. ``"m/0"``)."""
        out = {"iterations": np.asarray(self.iterations, dtype=np.int64)}
        if self.built:
            for s, arrays in self.state.items():
                for i, a in enumerate(arrays):
                    out[f"{s}/{i}"] = self.ops.to_host(a)
        return out

    def load_state_arrays(self, arrays) -> None:
        """Restore what ``state_arrays`` returned (after ``build`` on the same params); all or nothing."""
        if not self.built:
            raise ValueError("call build(params) before load_state_arrays, so the state has somewhere to go")
        expected = {"iterations"} | {f"{s}/{i}" for s in self.slots for i in range(len(self._specs))}
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        if missing or extra:
            raise ValueError(f"optimizer state does not match {type(self).__name__} with "
                             f"{len(self._specs)} parameter arrays: missing {missing}, unexpected {extra}")
        it = np.asarray(arrays["iterations"])
        if it.shape != () or it.dtype.kind not in "iu" or int(it) < 0:
            raise ValueError(f"iterations must be a non-negative integer scalar, received: {it!r}")
        for s, bufs in self.state.items():
            for i, buf in enumerate(bufs):
                a = np.asarray(arrays[f"{s}/{i}"])
                if a.shape != tuple(buf.shape) or a.dtype.kind != "f":
                    raise ValueError(f"optimizer state {s}/{i} must be a float array of shape {buf.shape}, "
                                     f"received: shape={a.shape}, dtype={a.dtype}")
        for s, bufs in self.state.items():
            for i, buf in enumerate(bufs):
                self.ops.to_device(np.ascontiguousarray(arrays[f"{s}/{i}"], dtype=buf.dtype), out=buf)
        self.iterations = int(it)

    # -- stepping --------------------------------------------------------------------------------
    def step(self, params, grads, regularizers=None, on_param=None, snapshots=None) -> bool | None:
        """Update every ``params[i]`` in place from ``grads[i]``; ``iterations`` goes up by one.

        Returns True when the step made a weight NaN or inf, False when not, None when the device's
        kernels do not check (``ops.guard_in_update`` False). ``snapshots[i]`` (flat, one per array; only
        where the device checks) receives ``params[i]`` from before the step in the update's own pass. Where
        the device checks, a step that made a weight non-finite with snapshots given leaves ``state`` as it
        was before the step (the caller restores the weights and ``iterations``); any other step swaps the
        new moments in (``swap_moments``).

        ``regularizers[i] = (l1, l2)`` adds ``l1*sign(w) + 2*l2*w`` to the gradient (Keras penalty
        ``l1*sum|w| + l2*sum w^2``), fused into the kernel. Builds on the first call.
        ``on_param(i)``, when given, is called right before the kernel of ``params[i]`` and once more
        with ``i = len(params)`` after the last: the boundaries the profiler times each array's update by.
        """
        if not self.built:
            self.build(params)
        n = len(self._specs)
        if len(params) != n or len(grads) != n:
            raise ValueError(f"{type(self).__name__} was built for {n} parameter arrays, received: "
                             f"{len(params)} params and {len(grads)} grads")
        if regularizers is not None and len(regularizers) != n:
            raise ValueError(f"regularizers must have one (l1, l2) pair per parameter array ({n}), "
                             f"received: {len(regularizers)}")
        for i in range(n):
            self._check_pair(i, params[i], grads[i])
        guard = self.ops.guard_in_update
        if snapshots is not None and (not guard or len(snapshots) != n):
            raise ValueError(f"snapshots needs one flat array per parameter array ({n}) on a device whose "
                             f"updates keep them (ops.guard_in_update), received: {len(snapshots)} on {self.ops.name!r}")
        lr, _ = self.next_step(self._specs[0][1] if n else np.float64)
        bufs, outs = self._bufs, self._outs
        bad = False
        i = 0
        try:
            for i in range(n):
                l1, l2 = regularizers[i] if regularizers is not None else (0.0, 0.0)
                if on_param is not None:
                    on_param(i)
                w, g = params[i], grads[i]
                extra = {} if not guard else {"out": outs[i]} if snapshots is None else \
                    {"out": outs[i], "snapshot": snapshots[i]}
                bad |= bool(self.update_array(w.reshape(w.size), g.reshape(g.size), bufs[i], lr, float(l1), float(l2),
                                              **extra))
        except BaseException:
            # An interrupt between two arrays' kernels. The moments those arrays' kernels wrote are apart
            # (double-buffered), so the state is still the pre-step one. With snapshots, the arrays already
            # updated take back their pre-step weights and the step counter its value: no half step is
            # kept. Without, the half step stays as it was made: those arrays' new moments are copied in.
            if snapshots is not None:
                for j in range(i):
                    size = params[j].size
                    self.ops.copy(snapshots[j][:size], params[j].reshape(size))
                self.iterations -= 1
            elif guard:
                for j in range(i):
                    for new, old in zip(outs[j], bufs[j]):
                        self.ops.copy(new, old)
            raise
        if on_param is not None:
            on_param(n)
        if guard and not (bad and snapshots is not None):  # a rejected step keeps the pre-step moments
            self.swap_moments()
        return bad if guard else None

    def update_array(self, w, g, bufs, lr, l1, l2, **guard):
        """One kernel call on flat ``w``, ``g`` and this array's buffers (``_kernel_slots`` order); ``guard``
        is what a checking device's update takes besides (``out=``, ``snapshot=``). Returns what the
        device's update returns (True: a weight became non-finite)."""
        raise NotImplementedError

    def _check_params(self, params):
        if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
            raise TypeError(f"params must be a list of numpy arrays, received: {type(params).__name__}")
        for i, p in enumerate(params):
            if not isinstance(p, self.ops.array_type):
                raise TypeError(f"params[{i}] must be a numpy array, received: {type(p).__name__}")
            if np.dtype(p.dtype).name not in FLOAT_DTYPES:
                raise ValueError(f"params[{i}] must be float32 or float64, received: dtype={p.dtype}")
            if isinstance(p, np.ndarray) and not (p.flags.c_contiguous and p.flags.writeable):
                raise ValueError(f"params[{i}] must be a writeable C-contiguous array (it is updated in "
                                 f"place), received: c_contiguous={p.flags.c_contiguous}, "
                                 f"writeable={p.flags.writeable}")
        return list(params)

    def _check_pair(self, i, p, g):
        shape, dtype = self._specs[i]
        kind = self.ops.array_type
        if not isinstance(p, kind) or p.shape != shape or p.dtype != dtype:
            got = f"shape={p.shape}, dtype={p.dtype}" if isinstance(p, kind) else type(p).__name__
            raise ValueError(f"params[{i}] must match the array the optimizer was built for "
                             f"(shape={shape}, dtype={dtype}), received: {got}")
        if not isinstance(g, kind) or g.shape != shape or g.dtype != dtype:
            got = f"shape={g.shape}, dtype={g.dtype}" if isinstance(g, kind) else type(g).__name__
            raise ValueError(f"grads[{i}] must have the shape and dtype of params[{i}] "
                             f"(shape={shape}, dtype={dtype}), received: {got}")
        if isinstance(p, np.ndarray):  # device arrays are made contiguous by the backend
            if not (p.flags.c_contiguous and p.flags.writeable):
                raise ValueError(f"params[{i}] must be a writeable C-contiguous array")
            if not g.flags.c_contiguous:
                raise ValueError(f"grads[{i}] must be C-contiguous")

    # -- config ----------------------------------------------------------------------------------
    def _hyper(self) -> dict:
        """The constructor arguments besides the learning rate."""
        return {}

    def get_config(self) -> dict:
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = {"class": type(lr).__name__, "config": lr.get_config()}
        return {"name": self.name, "learning_rate": lr, **self._hyper()}

    @classmethod
    def from_config(cls, cfg: dict):
        cfg = dict(cfg)
        cfg.pop("name", None)
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict):
            if lr.get("class") not in SCHEDULES:
                raise ValueError(f"unknown learning-rate schedule {lr.get('class')!r}; "
                                 f"known: {sorted(SCHEDULES)}")
            cfg["learning_rate"] = SCHEDULES[lr["class"]].from_config(lr["config"])
        return cls(**cfg)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------------------------------
# The families, simplest first.


class SGD(Optimizer):
    """SGD with (Nesterov) momentum (Sutskever et al., https://proceedings.mlr.press/v28/sutskever13.html).

    v = momentum*v - lr*g;  w += v  (Nesterov: w += momentum*v - lr*g);  momentum = 0: w -= lr*g.
    """

    name = "sgd"
    kernel = "sgd_update"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.01, momentum: float = 0.0,
                 nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = _real("momentum", momentum, 0.0, 1.0)
        self.nesterov = _bool("nesterov", nesterov)

    @property
    def slots(self):
        return ("velocity",) if self.momentum > 0 else ()

    def _kernel_slots(self):
        return ("velocity",)

    def update_array(self, w, g, bufs, lr, l1, l2, **guard):
        return self.ops.sgd_update(w, g, bufs[0], lr, self.momentum, self.nesterov, l1, l2, **guard)

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., https://jmlr.org/papers/v12/duchi11a.html): w -= lr*g/(sqrt(sum g^2)+eps)."""

    name = "adagrad"
    kernel = "adagrad_update"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.epsilon = _real("epsilon", epsilon, 0.0)

    @property
    def slots(self):
        return ("accum",)

    def update_array(self, w, g, bufs, lr, l1, l2, **guard):
        return self.ops.adagrad_update(w, g, bufs[0], lr, self.epsilon, l1, l2, **guard)

    def _hyper(self):
        return {"epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton, https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf).

    ms = rho*ms + (1-rho)*g^2;  w -= lr*g / (sqrt(ms) + eps).
    """

    name = "rmsprop"
    kernel = "rmsprop_update"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, rho: float = 0.9,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.rho = _real("rho", rho, 0.0, 1.0, high_open=True)
        self.epsilon = _real("epsilon", epsilon, 0.0)

    @property
    def slots(self):
        return ("ms",)

    def update_array(self, w, g, bufs, lr, l1, l2, **guard):
        return self.ops.rmsprop_update(w, g, bufs[0], lr, self.rho, self.epsilon, l1, l2, **guard)

    def _hyper(self):
        return {"rho": self.rho, "epsilon": self.epsilon}


class Adam(Optimizer):
    """Adam (Kingma & Ba, https://arxiv.org/abs/1412.6980), with AMSGrad and decoupled weight decay (AdamW).

    One step t (1-based, shared by all parameter arrays): m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    (amsgrad: vmax = max(vmax, v), used for v); w -= lr*wd*w; w -= lr*m_hat/(sqrt(v_hat)+eps).
    """

    name = "adam"
    kernel = "adam_update"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(learning_rate)
        self.beta_1 = _real("beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _real("beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _real("epsilon", epsilon, 0.0)
        self.amsgrad = _bool("amsgrad", amsgrad)
        self.weight_decay = _real("weight_decay", weight_decay, 0.0)

    @property
    def slots(self):
        return ("m", "v", "vmax") if self.amsgrad else ("m", "v")

    def _kernel_slots(self):
        return ("m", "v", "vmax")

    def update_array(self, w, g, bufs, lr, l1, l2, **guard):
        m, v, vmax = bufs
        return self.ops.adam_update(w, g, m, v, vmax, lr, self.beta_1, self.beta_2, self.epsilon, self.iterations,
                                    self.weight_decay, self.amsgrad, l1, l2, **guard)

    def _hyper(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad, "weight_decay": self.weight_decay}


def AMSGrad(learning_rate: float | LearningRateSchedule = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
            epsilon: float = 1e-7, weight_decay: float = 0.0) -> Adam:
    """Adam with the running maximum of v (Reddi et al., https://openreview.net/forum?id=ryQu7f-RZ)."""
    return Adam(learning_rate, beta_1, beta_2, epsilon, amsgrad=True, weight_decay=weight_decay)


def AdamW(learning_rate: float | LearningRateSchedule = 0.001, weight_decay: float = 0.004,
          beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False) -> Adam:
    """Adam, decoupled weight decay w -= lr*wd*w (Loshchilov & Hutter, https://arxiv.org/abs/1711.05101)."""
    return Adam(learning_rate, beta_1, beta_2, epsilon, amsgrad=amsgrad, weight_decay=weight_decay)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "amsgrad": AMSGrad,
              "adamw": AdamW}


def get(identifier: str | dict | type | Optimizer) -> Optimizer:
    """An optimizer from a name (``"adam"``), a config dict, a class, or an instance (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer) or identifier in (AMSGrad, AdamW):
        return identifier()
    if isinstance(identifier, dict):
        cls = get(identifier.get("name", ""))
        return type(cls).from_config(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {identifier!r}; known: {', '.join(sorted(OPTIMIZERS))}")
        return OPTIMIZERS[key]()
    raise TypeError(f"optimizer must be a name, a config dict or an Optimizer, received: {identifier!r}")


__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "AMSGrad",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineDecay",
    "LearningRateSchedule",
    "Optimizer",
    "RMSprop",
    "StepDecay",
    "get",
]
