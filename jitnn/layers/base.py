"""The layer contract (Keras-style): validate in __init__, create weights in build, short forward/backward.

A layer owns its parameters, their gradients and its work buffers, sized once for the largest batch
(`allocate`); `forward`/`backward` return views of those buffers, so a training step allocates nothing.
Layers do no arithmetic themselves: they call ``self.ops`` (jitnn.backend), the one interface every
device implements, so a layer written once runs on each; ``to(ops)`` moves it to another device.
"""

from __future__ import annotations

import numpy as np

from jitnn.backend.cpu import CPU


class Layer:
    """Base class. Subclasses set ``params``/``grads``/``regularizers`` in ``build``."""

    kind = "Layer"
    arrays: tuple[str, ...] = ()  # attributes holding the layer's parameters and gradients (moved by ``to``)

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
        self.ops = CPU

    def to(self, ops) -> None:
        """Compute on ``ops`` from now on: parameters and gradients move there, work buffers are remade."""
        self.check_backend(ops)
        if ops is self.ops:
            return
        for name in self.arrays:
            a = getattr(self, name, None)
            if a is not None:
                setattr(self, name, ops.to_device(np.ascontiguousarray(self.ops.to_host(a))))
        for name in [k for k in vars(self) if k.startswith("_buf")]:
            delattr(self, name)
        self.ops, self.capacity = ops, 0
        if self.built:
            self.collect()

    def check_backend(self, ops) -> None:
        """ValueError when this layer cannot run on ``ops`` (nothing to check for most layers)."""

    def collect(self) -> None:
        """Refresh ``params``/``grads`` from the attributes in ``arrays`` (after ``build`` or ``to``)."""

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

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the parameters as numpy arrays, in ``params`` order ([] for a layer without any)."""
        return [np.array(self.ops.to_host(p)) for p in self.params]

    def set_weights(self, weights) -> None:
        """Write ``weights`` (as ``get_weights`` returns them) into the parameters; all are checked
        (count, shapes, finite) before any is written."""
        weights = list(weights)
        if len(weights) != len(self.params):
            raise ValueError(f"layer {self.name or self.kind!r} has {len(self.params)} weight arrays, "
                             f"received: {len(weights)}")
        arrays = []
        for i, (p, w) in enumerate(zip(self.params, weights)):
            a = np.asarray(w)
            if a.shape != tuple(p.shape):
                raise ValueError(f"weight {i} of layer {self.name or self.kind!r} must have shape "
                                 f"{tuple(p.shape)}, received: shape={a.shape}")
            if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
                raise ValueError(f"weight {i} of layer {self.name or self.kind!r} must hold finite numbers")
            arrays.append(np.ascontiguousarray(a, p.dtype))
        for p, a in zip(self.params, arrays):
            self.ops.to_device(a, out=p)
        if getattr(self, "mask", None) is not None:
            self.apply_mask()

    def param_count(self) -> int:
        return int(sum(p.size for p in self.params))

    def _buffer(self, attr: str, cols: int, dtype=None) -> np.ndarray:
        """A (capacity, cols) work buffer, reallocated only when capacity grows."""
        buf = getattr(self, attr, None)
        if buf is None or buf.shape[0] < self.capacity or buf.shape[1] != cols:
            buf = self.ops.zeros((self.capacity, cols), dtype or self.dtype)
            setattr(self, attr, buf)
        return buf

    def buffer_bytes(self) -> int:
        return int(sum(v.nbytes for k, v in vars(self).items() if k.startswith("_buf") and hasattr(v, "nbytes")))
