"""Weight initializers: ``init(shape, rng, dtype) -> array`` for a (fan_in, fan_out) kernel or a bias.

Glorot/Xavier: Glorot & Bengio 2010, http://proceedings.mlr.press/v9/glorot10a.html
He: He et al. 2015, https://arxiv.org/abs/1502.01852
"""

from __future__ import annotations

import math

import numpy as np


def _fans(shape):
    if len(shape) == 1:
        return shape[0], shape[0]
    # a conv kernel (KH, KW, C, F): each output sees KH*KW*C inputs (Keras' receptive-field fans)
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: draws from ``rng`` (a numpy Generator) and returns a C-order array of ``dtype``."""

    name = "initializer"

    def __call__(self, shape, rng, dtype):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}


class Zeros(Initializer):
    """All zeros (the default bias)."""

    name = "zeros"

    def __call__(self, shape, rng, dtype):
        return np.zeros(shape, dtype)


class Ones(Initializer):
    """All ones."""

    name = "ones"

    def __call__(self, shape, rng, dtype):
        return np.ones(shape, dtype)


class _Scaled(Initializer):
    """Normal or uniform with variance ``scale / fan`` (the shared form of Glorot and He)."""

    def __init__(self, scale, fan, distribution):
        self.scale, self.fan, self.distribution = scale, fan, distribution

    def __call__(self, shape, rng, dtype):
        fan_in, fan_out = _fans(shape)
        fan = {"in": fan_in, "avg": (fan_in + fan_out) / 2.0}[self.fan]
        var = self.scale / max(fan, 1.0)
        if self.distribution == "normal":
            w = rng.normal(0.0, math.sqrt(var), size=shape)
        else:
            limit = math.sqrt(3.0 * var)
            w = rng.uniform(-limit, limit, size=shape)
        return np.ascontiguousarray(w, dtype=dtype)


class GlorotUniform(_Scaled):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""

    name = "glorot_uniform"

    def __init__(self):
        super().__init__(1.0, "avg", "uniform")


class GlorotNormal(_Scaled):
    """N(0, 2 / (fan_in + fan_out)) (Glorot & Bengio 2010), the tutorial's XavierInitializer."""

    name = "glorot_normal"

    def __init__(self):
        super().__init__(1.0, "avg", "normal")


class HeNormal(_Scaled):
    """N(0, 2 / fan_in) (He et al. 2015), suited to ReLU layers."""

    name = "he_normal"

    def __init__(self):
        super().__init__(2.0, "in", "normal")


class HeUniform(_Scaled):
    """U(-l, l), l = sqrt(6 / fan_in) (He et al. 2015)."""

    name = "he_uniform"

    def __init__(self):
        super().__init__(2.0, "in", "uniform")


_ALIASES = {
    "zeros": Zeros, "ones": Ones,
    "glorot_uniform": GlorotUniform, "xavier_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal, "xavier_normal": GlorotNormal, "xavier": GlorotNormal,
    "he_normal": HeNormal, "he_uniform": HeUniform,
}


def get(identifier) -> Initializer:
    """An initializer from a name or an instance (returned as is)."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _ALIASES:
        return _ALIASES[identifier.lower()]()
    if callable(identifier):
        return _Callable(identifier)
    raise ValueError(f"unknown initializer {identifier!r}; expected one of {sorted(_ALIASES)} or a callable")


class _Callable(Initializer):
    """Wraps ``fn(shape, rng, dtype)``."""

    name = "callable"

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, shape, rng, dtype):
        return np.ascontiguousarray(self.fn(shape, rng, dtype), dtype=dtype)
