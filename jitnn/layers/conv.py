"""Conv2D: A = f(conv(X, W) + b), channels-last, with the bias and activation fused into the kernel's write.

X (N, H, W, C), W (KH, KW, C, F) (Keras' layout), A (N, OH, OW, F). The kernels (jitnn.kernels.conv,
docs/conv.md) pick the direct loop for few input channels and im2col + our packed GEMM otherwise; the
patch buffer (``cols``) is sized once per batch size. As in Dense, an activation the kernel cannot apply
while writing (softmax, swish, gelu) runs after it through ``ops.activate``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from jitnn import activations, initializers
from jitnn.backend.ops import Ops
from jitnn.kernels.conv import conv2d_geometry
from jitnn.layers.base import Layer, ShapeLike, as_shape, batch_view, flat
from jitnn.layers.dense import regularizer_factors

CONV_OPS = ("conv2d", "backprop_conv2d", "conv2d_workspace")


def as_pair(value, what):
    """An int or a pair of positive ints as a pair (Keras' kernel_size/strides/pool_size arguments)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, received: {what}={value!r}")
    return int(pair[0]), int(pair[1])


def check_padding(padding):
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', received: padding={padding!r}")
    return padding


def image_shape(layer, input_shape):
    """``input_shape`` as (H, W, C), or a ValueError naming the layer and the shape."""
    shape = as_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{layer.kind} takes images (height, width, channels), received: input_shape={shape}")
    return shape


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as Keras and PyTorch) with optional bias and activation."""

    kind = "Conv2D"
    arrays = ("W", "b", "dW", "db")

    def __init__(self, filters: int, kernel_size: int | tuple[int, int], strides: int | tuple[int, int] = 1,
                 padding: str = "valid", dilation_rate: int | tuple[int, int] = 1,
                 activation: str | activations.Activation | None = None, use_bias: bool = True,
                 kernel_initializer: str | initializers.Initializer = "glorot_uniform",
                 bias_initializer: str | initializers.Initializer = "zeros",
                 kernel_regularizer: float | dict | None = None, input_shape: ShapeLike | None = None,
                 name: str | None = None):
        super().__init__(name, input_shape)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"Conv2D filters must be a positive int, received: filters={filters!r}")
        self.filters = int(filters)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.strides = as_pair(strides, "strides")
        self.dilation_rate = as_pair(dilation_rate, "dilation_rate")
        if self.strides != (1, 1) and self.dilation_rate != (1, 1):
            raise ValueError(f"Conv2D takes strides > 1 or dilation_rate > 1, not both (as Keras), received: "
                             f"strides={strides!r}, dilation_rate={dilation_rate!r}")
        self.padding = check_padding(padding)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.l1, self.l2 = regularizer_factors(kernel_regularizer)
        if self.declared_input_shape is not None:
            self.compute_output_shape(self.declared_input_shape)

    def geometry(self, input_shape: ShapeLike) -> tuple:
        """(OH, OW, pads) for ``input_shape`` (H, W, C); ValueError naming the layer when it does not fit."""
        h, w, _ = image_shape(self, input_shape)
        try:
            return conv2d_geometry(h, w, *self.kernel_size, self.strides, self.dilation_rate, self.padding)
        except ValueError as e:
            raise ValueError(f"Conv2D kernel_size={self.kernel_size} with padding={self.padding!r} does not "
                             f"fit input_shape={tuple(input_shape)}: {e}") from None

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int, ...]:
        oh, ow, _ = self.geometry(input_shape)
        return (oh, ow, self.filters)

    def weight_shapes(self, input_shape: ShapeLike) -> list[tuple[str, tuple[int, ...], bool]]:
        c = image_shape(self, input_shape)[2]
        kernel = ("kernel", (*self.kernel_size, c, self.filters), True)
        return [kernel] + ([("bias", (self.filters,), True)] if self.use_bias else [])

    def build(self, input_shape: ShapeLike, dtype: DTypeLike, rng: np.random.Generator) -> None:
        super().build(input_shape, dtype, rng)
        self.pads = self.geometry(self.input_shape)[2]
        ops, shapes = self.ops, {n: s for n, s, _ in self.weight_shapes(self.input_shape)}
        self.W = ops.to_device(self.kernel_initializer(shapes["kernel"], rng, self.dtype))
        self.dW = ops.zeros(self.W.shape, self.dtype)
        self.b = ops.to_device(self.bias_initializer((self.filters,), rng, self.dtype))
        self.db = ops.zeros(self.b.shape, self.dtype)
        self.param_names = ["kernel", "bias"] if self.use_bias else ["kernel"]
        self.regularizers = [(self.l1, self.l2), (0.0, 0.0)][:len(self.param_names)]
        self.collect()

    def collect(self) -> None:
        self.params = [self.W, self.b] if self.use_bias else [self.W]
        self.grads = [self.dW, self.db] if self.use_bias else [self.dW]

    def check_backend(self, ops: Ops) -> None:
        ops.check_ops(self.kind, *CONV_OPS)

    def allocate(self, batch: int) -> None:
        grown = batch > self.capacity
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.output_dim)
        self._buf_dz = self._buffer("_buf_dz", self.output_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)
        if self.activation.needs_preactivation:
            self._buf_z = self._buffer("_buf_z", self.output_dim)
        if grown or getattr(self, "_buf_cols", None) is None:
            self._buf_cols = self.ops.conv2d_workspace((self.capacity, *self.input_shape), self.W.shape,
                                                       self.output_shape[:2], self.dtype)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n = x.shape[0]
        ops, act = self.ops, self.activation
        out = batch_view(self._buf_out, n, self.output_shape)
        bias = self.b if self.use_bias else None
        self._x = x
        geo = (self.strides, self.dilation_rate, self.pads)
        if act.in_epilogue:
            return ops.conv2d(x, self.W, bias, out, *geo, act, self._buf_cols)
        z = batch_view(self._buf_z, n, self.output_shape) if act.needs_preactivation else out
        ops.conv2d(x, self.W, bias, z, *geo, None, self._buf_cols)
        return ops.activate(flat(z), flat(out), act).reshape(out.shape)

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        n = grad.shape[0]
        ops, act = self.ops, self.activation
        out = self._buf_out[:n]
        z = self._buf_z[:n] if act.needs_preactivation else out
        dz = ops.backprop_activation(flat(grad), z, out, act, self._buf_dz[:n]).reshape(grad.shape)
        dx = batch_view(self._buf_dx, n, self.input_shape) if need_input_grad else None
        ops.backprop_conv2d(self._x, self.W, dz, dx, self.dW, self.db if self.use_bias else None, self.strides,
                            self.dilation_rate, self.pads, self._buf_cols)
        return dx

    def flops(self, batch: int, need_input_grad: bool = True) -> dict:
        oh, ow, f = self.output_shape
        kh, kw = self.kernel_size
        mm = 2 * batch * oh * ow * f * kh * kw * self.input_shape[2]
        epi = 2 * batch * oh * ow * f
        return {"forward": mm + epi, "backward": mm + (mm if need_input_grad else 0) + epi}

    def bytes_moved(self, batch: int, need_input_grad: bool = True) -> dict:
        item = self.dtype.itemsize
        w = self.W.size * item
        io = batch * (self.input_dim + self.output_dim) * item
        dx = batch * self.input_dim * item if need_input_grad else 0
        return {"forward": w + io, "backward": 2 * w + io + batch * self.output_dim * item + dx}

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        kh, kw = self.kernel_size
        return f"Conv2D {self.filters} {kh}x{kw} {self.activation.name}"

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation.get_config(), "use_bias": self.use_bias,
                "kernel_regularizer": {"l1": self.l1, "l2": self.l2},
                "input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape),
                "name": self.name}
