"""Pooling, channels-last: MaxPooling2D (the argmax kept for backward), AveragePooling2D, GlobalAveragePooling2D.

Keras semantics (jitnn.kernels.pooling): strides default to pool_size; "same" pads at the bottom/right
first and padded cells never count (max ignores them, average divides by the real cells).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from jitnn.backend.ops import Ops
from jitnn.kernels.pooling import pool_geometry
from jitnn.layers.base import Layer, ShapeLike, batch_view
from jitnn.layers.conv import as_pair, check_padding, image_shape


class Pooling2D(Layer):
    """Shared geometry of the windowed poolings; subclasses name the ops (``kind`` is the Keras name)."""

    ops_names: tuple[str, ...] = ()

    def __init__(self, pool_size: int | tuple[int, int] = 2, strides: int | tuple[int, int] | None = None,
                 padding: str = "valid", input_shape: ShapeLike | None = None, name: str | None = None):
        super().__init__(name, input_shape)
        self.pool_size = as_pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else as_pair(strides, "strides")
        self.padding = check_padding(padding)
        if self.declared_input_shape is not None:
            self.compute_output_shape(self.declared_input_shape)

    def geometry(self, input_shape: ShapeLike) -> tuple:
        h, w, _ = image_shape(self, input_shape)
        try:
            return pool_geometry(h, w, self.pool_size, self.strides, self.padding)
        except ValueError as e:
            raise ValueError(f"{self.kind} pool_size={self.pool_size} does not fit input_shape="
                             f"{tuple(input_shape)}: {e}") from None

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int, ...]:
        oh, ow, _, _ = self.geometry(input_shape)
        return (oh, ow, image_shape(self, input_shape)[2])

    def build(self, input_shape: ShapeLike, dtype: DTypeLike, rng: np.random.Generator) -> None:
        super().build(input_shape, dtype, rng)
        self.pads = self.geometry(self.input_shape)[2:]

    def check_backend(self, ops: Ops) -> None:
        ops.check_ops(self.kind, *self.ops_names)

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.output_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)

    def flops(self, batch: int, need_input_grad: bool = True) -> dict:
        ph, pw = self.pool_size
        return {"forward": batch * self.output_dim * ph * pw, "backward": batch * self.input_dim}

    def bytes_moved(self, batch: int, need_input_grad: bool = True) -> dict:
        io = batch * (self.input_dim + self.output_dim) * self.dtype.itemsize
        return {"forward": io, "backward": io}

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        return f"{self.kind} {self.pool_size[0]}x{self.pool_size[1]}"

    def get_config(self) -> dict:
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "padding": self.padding,
                "input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape),
                "name": self.name}


class MaxPooling2D(Pooling2D):
    """The maximum of each window; backward routes each gradient to the window's (first) maximum."""

    kind = "MaxPooling2D"
    ops_names = ("maxpool2d", "backprop_maxpool2d")

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_argmax = self._buffer("_buf_argmax", self.output_dim, np.int32)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n = x.shape[0]
        out = batch_view(self._buf_out, n, self.output_shape)
        self._argmax = batch_view(self._buf_argmax, n, self.output_shape)
        return self.ops.maxpool2d(x, self.pool_size, self.strides, self.pads, out, self._argmax)

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        if not need_input_grad:
            return None
        dx = batch_view(self._buf_dx, grad.shape[0], self.input_shape)
        return self.ops.backprop_maxpool2d(grad, self._argmax, self.pool_size, self.strides, self.pads, dx)


class AveragePooling2D(Pooling2D):
    """The mean of each window's real cells."""

    kind = "AveragePooling2D"
    ops_names = ("avgpool2d", "backprop_avgpool2d")

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out = batch_view(self._buf_out, x.shape[0], self.output_shape)
        return self.ops.avgpool2d(x, self.pool_size, self.strides, self.pads, out)

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        if not need_input_grad:
            return None
        dx = batch_view(self._buf_dx, grad.shape[0], self.input_shape)
        return self.ops.backprop_avgpool2d(grad, self.pool_size, self.strides, self.pads, dx)


class GlobalAveragePooling2D(Layer):
    """(N, H, W, C) -> (N, C): the mean of each channel over the image."""

    kind = "GlobalAveragePooling2D"

    def __init__(self, input_shape: ShapeLike | None = None, name: str | None = None):
        super().__init__(name, input_shape)
        if self.declared_input_shape is not None:
            self.compute_output_shape(self.declared_input_shape)

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int, ...]:
        return (image_shape(self, input_shape)[2],)

    def check_backend(self, ops: Ops) -> None:
        ops.check_ops(self.kind, "global_avgpool2d", "backprop_global_avgpool2d")

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.output_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.ops.global_avgpool2d(x, self._buf_out[:x.shape[0]])

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        if not need_input_grad:
            return None
        return self.ops.backprop_global_avgpool2d(grad, batch_view(self._buf_dx, grad.shape[0], self.input_shape))

    def flops(self, batch: int, need_input_grad: bool = True) -> dict:
        return {"forward": batch * self.input_dim, "backward": batch * self.input_dim}

    def get_config(self) -> dict:
        return {"input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape),
                "name": self.name}
