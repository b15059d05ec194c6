"""The layer contract (Keras-style): validate in __init__, create weights in build, short forward/backward.

A layer owns its parameters, their gradients and its work buffers, sized once for the largest batch
(`allocate`); `forward`/`backward` return views of those buffers, so a training step allocates nothing.
Layers do no arithmetic themselves: they call ``self.ops`` (jitnn.backend), the one interface every
device implements, so a layer written once runs on each; ``to(ops)`` moves it to another device.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from jitnn.backend.cpu import CPU
from jitnn.backend.ops import Ops

# a per-sample shape as the public API takes it: an int (that many features) or a tuple such as (28, 28, 1)
ShapeLike = int | Sequence[int]


def as_shape(value: ShapeLike, what: str = "input_shape") -> tuple[int, ...]:
    """A per-sample shape as a tuple of positive ints (an int is a 1-D shape); ValueError otherwise."""
    shape = (value,) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{what} must be a tuple of positive ints, received: {what}={value!r}") from None
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape):
        raise ValueError(f"{what} must be a tuple of positive ints, received: {what}={value!r}")
    return tuple(int(d) for d in shape)


def batch_view(buf, n: int, shape) -> np.ndarray:
    """The first ``n`` rows of a (capacity, size) work buffer viewed as ``n`` samples of ``shape``."""
    return buf[:n].reshape((n, *shape))


def flat(x) -> np.ndarray:
    """A batch (N, ...) of a C-contiguous array viewed as (N, features), for the 2-D elementwise ops."""
    return x.reshape(x.shape[0], -1) if x.ndim != 2 else x


class Layer:
    """Base class. Subclasses set ``params``/``grads``/``regularizers`` in ``build``.

    Shapes are per sample (Keras): ``input_shape``/``output_shape`` tuples, the batch axis left out;
    ``input_dim``/``output_dim`` are their sizes (the feature counts of flat layers). A layer says what it
    makes of an input shape in ``compute_output_shape`` and which weights it needs in ``weight_shapes``
    (used by ``build``, ``Sequential.summary`` before building, and the file loader). Non-trainable
    weights (BatchNormalization's moving statistics) live in ``state``/``state_names``: saved and
    loaded with the parameters, never touched by the optimizer.
    """

    kind = "Layer"
    arrays: tuple[str, ...] = ()  # attributes holding the layer's parameters and gradients (moved by ``to``)

    def __init__(self, name: str | None = None, input_shape: ShapeLike | None = None):
        self.name = name
        self.declared_input_shape = None if input_shape is None else as_shape(input_shape)
        self.input_shape = self.output_shape = None
        self.input_dim = None
        self.output_dim = None
        self.state: list[np.ndarray] = []
        self.state_names: list[str] = []
        self.dtype = None
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.param_names: list[str] = []
        self.regularizers: list[tuple[float, float]] = []
        self.built = False
        self.capacity = 0
        self.ops = CPU

    def to(self, ops: Ops) -> None:
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

    def check_backend(self, ops: Ops) -> None:
        """ValueError when this layer cannot run on ``ops`` (nothing to check for most layers)."""

    def collect(self) -> None:
        """Refresh ``params``/``grads`` from the attributes in ``arrays`` (after ``build`` or ``to``)."""

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int, ...]:
        """The per-sample output shape for ``input_shape``; ValueError naming both when it does not fit.
        The default keeps the shape."""
        return as_shape(input_shape)

    def weight_shapes(self, input_shape: ShapeLike) -> list[tuple[str, tuple[int, ...], bool]]:
        """``(name, shape, trainable)`` of every weight for ``input_shape``, trainable ones first."""
        return []

    def set_shapes(self, input_shape: ShapeLike) -> None:
        """Record the input and output shapes (and their sizes) for ``input_shape``."""
        self.input_shape = as_shape(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.input_dim, self.output_dim = math.prod(self.input_shape), math.prod(self.output_shape)

    def build(self, input_shape: ShapeLike, dtype: DTypeLike, rng: np.random.Generator) -> None:
        """Create the weights for inputs of per-sample ``input_shape`` (an int: that many features)."""
        self.set_shapes(input_shape)
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

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        """A one-line label; ``input_shape`` is the per-sample input a not-yet-built layer will receive
        (``Sequential.summary`` passes it so sizes show before building)."""
        return self.kind

    def get_config(self) -> dict:
        return {"name": self.name}

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the parameters as numpy arrays, in ``params`` order ([] for a layer without any)."""
        return [np.array(self.ops.to_host(p)) for p in self.params]

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
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

    def inference_copy(self) -> Layer:
        """A shallow copy for inference in another thread: the same parameters and settings (shared, not
        copied), but no work buffers, so its ``allocate``/``forward`` never write memory another thread
        reads. The convention that makes this generic: every work buffer is an attribute named ``_buf*``
        (made with ``_buffer``); whatever else ``forward`` writes (``_x``) lands on the copy."""
        twin = copy.copy(self)
        for name in [k for k in vars(twin) if k.startswith("_buf")]:
            delattr(twin, name)
        twin.capacity = 0
        return twin

    def _buffer(self, attr: str, cols: int, dtype=None) -> np.ndarray:
        """A (capacity, cols) work buffer, reallocated only when capacity grows."""
        buf = getattr(self, attr, None)
        if buf is None or buf.shape[0] < self.capacity or buf.shape[1] != cols:
            buf = self.ops.zeros((self.capacity, cols), dtype or self.dtype)
            setattr(self, attr, buf)
        return buf

    def buffer_bytes(self) -> int:
        return int(sum(v.nbytes for k, v in vars(self).items() if k.startswith("_buf") and hasattr(v, "nbytes")))
