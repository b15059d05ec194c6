"""Flatten and Reshape: new per-sample shapes over the same memory (views, nothing copied)."""

from __future__ import annotations

import math

import numpy as np

from jitnn.layers.base import Layer, ShapeLike, as_shape


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), row-major (channels-last images flatten as Keras')."""

    kind = "Flatten"

    def __init__(self, input_shape: ShapeLike | None = None, name: str | None = None):
        super().__init__(name, input_shape)

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int, ...]:
        return (math.prod(as_shape(input_shape)),)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x.reshape(x.shape[0], self.output_dim)

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        return grad.reshape((grad.shape[0], *self.input_shape)) if need_input_grad else None

    def bytes_moved(self, batch: int, need_input_grad: bool = True) -> dict:
        return {"forward": 0, "backward": 0}

    def get_config(self) -> dict:
        return {"input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape),
                "name": self.name}


class Reshape(Layer):
    """(N, *input_shape) -> (N, *target_shape), same element count; one -1 in target_shape is inferred."""

    kind = "Reshape"

    def __init__(self, target_shape: ShapeLike, input_shape: ShapeLike | None = None,
                 name: str | None = None):
        super().__init__(name, input_shape)
        try:
            target = tuple(target_shape)
        except TypeError:
            target = None
        if not target or target.count(-1) > 1 or \
                any(isinstance(d, bool) or not isinstance(d, int) or (d < 1 and d != -1) for d in target):
            raise ValueError(f"Reshape target_shape must be a tuple of positive ints (one may be -1), "
                             f"received: target_shape={target_shape!r}")
        self.target_shape = target
        if self.declared_input_shape is not None:
            self.compute_output_shape(self.declared_input_shape)

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int, ...]:
        shape = as_shape(input_shape)
        size, known = math.prod(shape), math.prod(d for d in self.target_shape if d != -1)
        out = tuple(size // known if d == -1 else d for d in self.target_shape)
        if math.prod(out) != size:
            raise ValueError(f"Reshape cannot make {shape} ({size} values) into target_shape={self.target_shape}")
        return out

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x.reshape((x.shape[0], *self.output_shape))

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        return grad.reshape((grad.shape[0], *self.input_shape)) if need_input_grad else None

    def bytes_moved(self, batch: int, need_input_grad: bool = True) -> dict:
        return {"forward": 0, "backward": 0}

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        return f"Reshape {self.target_shape}"

    def get_config(self) -> dict:
        return {"target_shape": list(self.target_shape),
                "input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape),
                "name": self.name}
