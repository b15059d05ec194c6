"""BatchNormalization (Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167) over the last (channel) axis.

Training normalizes with the batch's statistics (biased variance) and updates the moving ones as Keras
does, ``moving = momentum * moving + (1 - momentum) * batch``; inference uses the moving statistics.
A Dense output (N, units) and a Conv2D output (N, H, W, C) alike are viewed as (rows, C) for the
kernels (jitnn.kernels.normalization: fixed-block reductions, the same bits for any thread count).
The moving statistics are non-trainable weights (``state``): saved with the model, never updated by the
optimizer; ``Sequential.fold_batchnorm`` folds them into the layer before.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from jitnn.backend.ops import Ops
from jitnn.layers.base import Layer, ShapeLike, as_shape

BN_OPS = ("batchnorm_workspace", "batchnorm_train", "batchnorm_inference", "batchnorm_update_moving",
          "backprop_batchnorm")


class BatchNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta, per channel (the last axis)."""

    kind = "BatchNormalization"
    arrays = ("gamma", "beta", "dgamma", "dbeta", "moving_mean", "moving_variance")

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 input_shape: ShapeLike | None = None, name: str | None = None):
        super().__init__(name, input_shape)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNormalization momentum must be in [0, 1], received: momentum={momentum!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"BatchNormalization epsilon must be > 0, received: epsilon={epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)

    def weight_shapes(self, input_shape: ShapeLike) -> list[tuple[str, tuple[int, ...], bool]]:
        c = (as_shape(input_shape)[-1],)
        return ([("gamma", c, True)] if self.scale else []) + ([("beta", c, True)] if self.center else []) + \
            [("moving_mean", c, False), ("moving_variance", c, False)]

    def build(self, input_shape: ShapeLike, dtype: DTypeLike, rng: np.random.Generator) -> None:
        super().build(input_shape, dtype, rng)
        c, ops = self.input_shape[-1], self.ops
        self.channels = c
        self.gamma = ops.to_device(np.ones(c, self.dtype))
        self.beta = ops.zeros(c, self.dtype)
        self.dgamma, self.dbeta = ops.zeros(c, self.dtype), ops.zeros(c, self.dtype)
        self.moving_mean = ops.zeros(c, self.dtype)
        self.moving_variance = ops.to_device(np.ones(c, self.dtype))
        self.param_names = (["gamma"] if self.scale else []) + (["beta"] if self.center else [])
        self.regularizers = [(0.0, 0.0)] * len(self.param_names)
        self.state_names = ["moving_mean", "moving_variance"]
        self.collect()

    def collect(self) -> None:
        pairs = ([(self.gamma, self.dgamma)] if self.scale else []) + ([(self.beta, self.dbeta)] if self.center else [])
        self.params = [p for p, _ in pairs]
        self.grads = [g for _, g in pairs]
        self.state = [self.moving_mean, self.moving_variance]

    def check_backend(self, ops: Ops) -> None:
        ops.check_ops(self.kind, *BN_OPS)

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.output_dim)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)
        if getattr(self, "_buf_stats", None) is None:  # batch mean, var, scale, shift: one per channel
            self._buf_stats = self.ops.zeros((4, self.channels), self.dtype)
            self._buf_partial = self.ops.batchnorm_workspace(self.channels)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n, c, ops = x.shape[0], self.channels, self.ops
        mean, var, scale, shift = self._buf_stats
        x2, y2 = x.reshape(-1, c), self._buf_out[:n].reshape(-1, c)
        self._x2 = x2
        if training:
            ops.batchnorm_train(x2, self.gamma, self.beta, self.epsilon, y2, mean, var, scale, shift,
                                self._buf_partial)
            ops.batchnorm_update_moving(self.moving_mean, self.moving_variance, mean, var, self.momentum)
        else:
            ops.batchnorm_inference(x2, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                                    self.epsilon, y2, scale, shift)
        return y2.reshape(x.shape)

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        n, c = grad.shape[0], self.channels
        mean, var = self._buf_stats[0], self._buf_stats[1]
        dx2 = self._buf_dx[:n].reshape(-1, c)
        self.ops.backprop_batchnorm(grad.reshape(-1, c), self._x2, self.gamma, mean, var, self.epsilon, dx2,
                                    self.dgamma, self.dbeta, self._buf_partial)
        return dx2.reshape(grad.shape) if need_input_grad else None

    def flops(self, batch: int, need_input_grad: bool = True) -> dict:
        d = batch * self.input_dim
        return {"forward": 5 * d, "backward": 8 * d}

    def bytes_moved(self, batch: int, need_input_grad: bool = True) -> dict:
        d = batch * self.input_dim * self.dtype.itemsize
        return {"forward": 3 * d, "backward": 4 * d}

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        shape = input_shape or self.declared_input_shape
        channels = self.channels if self.built else (shape[-1] if shape else "")
        return f"BatchNormalization {channels}".rstrip()

    def get_config(self) -> dict:
        return {"momentum": self.momentum, "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape),
                "name": self.name}
