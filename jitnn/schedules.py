"""Learning-rate schedules: callables ``step -> learning rate``, evaluated once per optimizer step.

    opt = jitnn.optimizers.Adam(learning_rate=CosineDecay(1e-3, decay_steps=10_000))
"""

from __future__ import annotations

import math
import numbers


def check_real(name, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a float within [low, high] (open ends on request), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, received: {name}={value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        rng = f"{left}{lo}, {hi}{right}"
        raise ValueError(f"{name} must be in {rng}, received: {name}={value!r}")
    return v


def check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, received: {name}={value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, received: {name}={value!r}")
    return int(value)



class LearningRateSchedule:
    """Base class: ``schedule(step) -> float`` for the 0-based step about to be taken; ``get_config``."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg: dict) -> LearningRateSchedule:
        return cls(**cfg)


class StepDecay(LearningRateSchedule):
    """lr = initial * drop ** (step // every): the staircase decay of Krizhevsky et al. (AlexNet)."""

    def __init__(self, initial_learning_rate: float, drop: float = 0.5, every: int = 1000):
        self.initial_learning_rate = check_real("initial_learning_rate", initial_learning_rate, 0.0, low_open=True)
        self.drop = check_real("drop", drop, 0.0, 1.0, low_open=True)
        self.every = check_int("every", every, 1)

    def __call__(self, step):
        return self.initial_learning_rate * self.drop ** (int(step) // self.every)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "drop": self.drop, "every": self.every}


class CosineDecay(LearningRateSchedule):
    """Cosine annealing, SGDR without restarts (Loshchilov & Hutter, https://arxiv.org/abs/1608.03983).

    lr = initial * ((1 - alpha) * 0.5 * (1 + cos(pi * min(s, decay_steps) / decay_steps)) + alpha),
    with s = step - warmup_steps; during the first ``warmup_steps`` steps the rate instead ramps up
    linearly, lr = initial * (step + 1) / warmup_steps, so the very first step already moves.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 warmup_steps: int = 0):
        self.initial_learning_rate = check_real("initial_learning_rate", initial_learning_rate, 0.0, low_open=True)
        self.decay_steps = check_int("decay_steps", decay_steps, 1)
        self.alpha = check_real("alpha", alpha, 0.0, 1.0)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)

    def __call__(self, step):
        step = int(step)
        if step < self.warmup_steps:
            return self.initial_learning_rate * (step + 1) / self.warmup_steps
        s = min(step - self.warmup_steps, self.decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "warmup_steps": self.warmup_steps}


SCHEDULES = {"StepDecay": StepDecay, "CosineDecay": CosineDecay}


