"""The layer contract (Keras-style): validate in __init__, create weights in build, short forward/backward.

A layer owns its parameters, their gradients and its work buffers, sized once for the largest batch
(`allocate`); `forward`/`backward` return views of those buffers, so a training step allocates nothing.
Layers do no arithmetic themselves: they call kernels.
"""

from __future__ import annotations

import numpy as np


class Layer:
    """Base class. Subclasses set ``params``/``grads``/``regularizers`` in ``build``."""

    kind = "Layer"

    def __init__(self, name=None):
        self.name = name
        self.input_dim = None
        self.output_dim = None
        self.dtype = None
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.param_names: list[str] = []
        self.regularizers: list[tuple[float, float]] = []
        self.built = False
        self.capacity = 0

    def build(self, input_dim: int, dtype, rng: np.random.Generator) -> None:
        """Create the weights for ``input_dim`` inputs; the default keeps the width."""
        self.input_dim = self.output_dim = input_dim
        self.dtype = np.dtype(dtype)
        self.built = True

    def allocate(self, batch: int) -> None:
        """Make sure the work buffers hold ``batch`` rows (grown, never shrunk)."""
        self.capacity = max(self.capacity, batch)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        raise NotImplementedError

    def flops(self, batch: int, need_input_grad: bool = True) -> dict:
        """Floating-point operations per call of each phase, from shapes (for the profiler).

        ``need_input_grad`` is False for the model's first layer, whose backward skips dX."""
        return {"forward": 0, "backward": 0}

    def bytes_moved(self, batch: int, need_input_grad: bool = True) -> dict:
        """Bytes read and written per call of each phase, from shapes (for the profiler)."""
        item = self.dtype.itemsize if self.dtype is not None else 4
        io = batch * ((self.input_dim or 0) + (self.output_dim or 0)) * item
        return {"forward": io, "backward": 2 * io}

    def describe(self) -> str:
        return self.kind

    def get_config(self) -> dict:
        return {"name": self.name}

    def param_count(self) -> int:
        return int(sum(p.size for p in self.params))

    def _buffer(self, attr: str, cols: int, dtype=None) -> np.ndarray:
        """A (capacity, cols) work buffer, reallocated only when capacity grows."""
        buf = getattr(self, attr, None)
        if buf is None or buf.shape[0] < self.capacity or buf.shape[1] != cols:
            buf = np.zeros((self.capacity, cols), dtype or self.dtype)
            setattr(self, attr, buf)
        return buf

    def buffer_bytes(self) -> int:
        return int(sum(v.nbytes for k, v in vars(self).items() if k.startswith("_buf") and hasattr(v, "nbytes")))
