"""Dense: A = f(X @ W + b), one GEMM with the bias and activation fused into its epilogue.

An activation the GEMM can apply while writing Z goes into its epilogue; any other (softmax, or one
whose derivative needs Z: swish, gelu) runs after the product through ``ops.activate``.

Two sparse variants share the layer on the CPU (docs/sparse.md, issue 5); ``ops.gemm`` takes CSR operands:
- a ``CSRMatrix`` input batch X: Z = spmm(X, W), then bias and activation in one epilogue pass;
  dW = spmm_t(X, dZ), so X is never densified.
- pruned weights (``jitnn.prune``): ``mask`` marks the kept weights. Training keeps a dense W and
  re-applies the mask after every optimizer step (``apply_mask``); inference runs
  dense_spmm(X, W_csr) with a CSR copy of W rebuilt lazily after W changes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from jitnn import activations, initializers
from jitnn.activations import LINEAR_ACTIVATION
from jitnn.backend.ops import Ops
from jitnn.layers.base import Layer, ShapeLike, as_shape
from jitnn.sparse import CSRMatrix


def regularizer_factors(value: float | dict | None) -> tuple[float, float]:
    """None, a float (L2), or {"l1": .., "l2": ..} -> (l1, l2)."""
    if value is None:
        return 0.0, 0.0
    if isinstance(value, (int, float)):
        value = {"l2": float(value)}
    if isinstance(value, dict):
        l1, l2 = float(value.get("l1", 0.0)), float(value.get("l2", 0.0))
        if l1 < 0 or l2 < 0:
            raise ValueError(f"regularization factors must be >= 0, received: {value}")
        return l1, l2
    raise TypeError(f"kernel_regularizer must be None, a float (L2) or a dict, received: {value!r}")


class Dense(Layer):
    """Fully connected layer: forward = one GEMM + bias + activation; backward = dZ, X^T dZ, col sums, dZ W^T."""

    kind = "Dense"
    arrays = ("W", "b", "dW", "db")

    def __init__(self, units: int, activation: str | activations.Activation | None = None,
                 input_dim: int | None = None,
                 kernel_initializer: str | initializers.Initializer = "glorot_uniform",
                 bias_initializer: str | initializers.Initializer = "zeros", use_bias: bool = True,
                 kernel_regularizer: float | dict | None = None, name: str | None = None,
                 input_shape: ShapeLike | None = None):
        super().__init__(name, input_shape)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense units must be a positive int, received: units={units!r}")
        if input_dim is not None and (not isinstance(input_dim, (int, np.integer)) or input_dim < 1):
            raise ValueError(f"Dense input_dim must be a positive int, received: input_dim={input_dim!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.declared_input_dim = None if input_dim is None else int(input_dim)
        if self.declared_input_dim is not None:
            if self.declared_input_shape not in (None, (self.declared_input_dim,)):
                raise ValueError(f"Dense input_dim and input_shape disagree, received: input_dim={input_dim}, "
                                 f"input_shape={input_shape}")
            self.declared_input_shape = (self.declared_input_dim,)
        elif self.declared_input_shape is not None:
            self.compute_output_shape(self.declared_input_shape)  # flat shapes only
            self.declared_input_dim = self.declared_input_shape[0]
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.use_bias = bool(use_bias)
        self.l1, self.l2 = regularizer_factors(kernel_regularizer)
        self.emit_logits = False  # set by the model when the loss fuses this layer's activation
        self.mask = None  # bool (input_dim, units) of kept weights once pruned (jitnn.prune)
        self._w_csr = None  # CSR copy of the masked W for inference; None when stale
        self._csr_rows = self._csr_nnz = 0  # CSR input batches seen: their rows and nonzeros (profiler)

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int, ...]:
        shape = as_shape(input_shape)
        if len(shape) != 1:
            raise ValueError(f"Dense takes flat features (samples, features), received: input_shape={shape}; "
                             "put a Flatten layer before it")
        return (self.units,)

    def weight_shapes(self, input_shape: ShapeLike) -> list[tuple[str, tuple[int, ...], bool]]:
        self.compute_output_shape(input_shape)
        d = as_shape(input_shape)[0]
        return [("kernel", (d, self.units), True)] + ([("bias", (self.units,), True)] if self.use_bias else [])

    def build(self, input_dim: ShapeLike, dtype: DTypeLike, rng: np.random.Generator) -> None:
        """Weights for ``input_dim`` features (an int, or a 1-D per-sample shape)."""
        self.set_shapes(input_dim)
        if self.declared_input_dim is not None and self.declared_input_dim != self.input_dim:
            raise ValueError(f"Dense(input_dim={self.declared_input_dim}) receives {self.input_dim} features")
        self.dtype = np.dtype(dtype)
        ops = self.ops
        self.W = ops.to_device(self.kernel_initializer((self.input_dim, self.units), rng, self.dtype))
        self.dW = ops.zeros(self.W.shape, self.dtype)
        self.b = ops.to_device(self.bias_initializer((self.units,), rng, self.dtype))
        self.db = ops.zeros(self.b.shape, self.dtype)
        self.param_names = ["kernel", "bias"] if self.use_bias else ["kernel"]
        self.regularizers = [(self.l1, self.l2), (0.0, 0.0)][:len(self.param_names)]
        self.collect()
        self.built = True

    def collect(self) -> None:
        self.params = [self.W, self.b] if self.use_bias else [self.W]
        self.grads = [self.dW, self.db] if self.use_bias else [self.dW]

    def check_backend(self, ops: Ops) -> None:
        if self.mask is not None and ops.name != "cpu":
            raise ValueError(f"{self.describe()} is pruned (jitnn.prune): pruned layers run on the CPU only")

    @property
    def emit_logits(self):
        """True when the model's loss fuses this layer's activation: forward then returns Z, and backward
        receives dL/dZ. ``output_activation`` is the activation the layer applies (none then)."""
        return self.output_activation is not self.activation

    @emit_logits.setter
    def emit_logits(self, value):
        self.output_activation = LINEAR_ACTIVATION if value else self.activation

    def allocate(self, batch: int) -> None:
        super().allocate(batch)
        self._buf_out = self._buffer("_buf_out", self.units)
        self._buf_dz = self._buffer("_buf_dz", self.units)
        self._buf_dx = self._buffer("_buf_dx", self.input_dim)
        if self.activation.needs_preactivation:
            self._buf_z = self._buffer("_buf_z", self.units)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n = x.shape[0]
        ops, act = self.ops, self.output_activation
        out = self._buf_out[:n]
        bias = self.b if self.use_bias else None
        self._x = x
        w = self.W
        if isinstance(x, CSRMatrix):  # spmm on the (masked) dense W
            self._csr_rows += n
            self._csr_nnz += x.nnz
        elif self.mask is not None and not training:
            w = self.sparse_kernel()  # pruned inference: dense X times CSR W
        if act.in_epilogue:
            return ops.gemm(x, w, out, bias=bias, activation=act)
        z = self._buf_z[:n] if act.needs_preactivation else out  # softmax runs in place
        ops.gemm(x, w, z, bias=bias)
        return ops.activate(z, out, act)

    # --- pruning (jitnn.prune) -----------------------------------------------------------------------
    def set_mask(self, mask: ArrayLike | None) -> None:
        """Keep only the weights where ``mask`` is True, now and after every optimizer step."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.W.shape:
            raise ValueError(f"mask must have the kernel's shape {self.W.shape}, received: {mask.shape}")
        self.mask = mask
        self._structure = CSRMatrix.from_dense(mask.astype(self.dtype))  # kept positions, row-major
        self.apply_mask()

    def apply_mask(self) -> None:
        """W *= mask, in place (one pass over W); called by fit after each optimizer step."""
        if self.mask is not None:
            np.multiply(self.W, self.mask, out=self.W)
            self._w_csr = None

    def sparse_kernel(self) -> CSRMatrix:
        """The masked W as a CSRMatrix (the mask's structure, W's current values), cached until W changes."""
        if self._w_csr is None:
            s = self._structure
            self._w_csr = CSRMatrix(self.W[self.mask], s.indices, s.indptr, s.shape)
        return self._w_csr

    def backward(self, grad: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        """``grad`` is dL/dA (dL/dZ when the loss fused this layer's activation: ``emit_logits``)."""
        n = grad.shape[0]
        ops, act = self.ops, self.output_activation
        out = self._buf_out[:n]
        z = self._buf_z[:n] if act.needs_preactivation else out
        dz = ops.backprop_activation(grad, z, out, act, self._buf_dz[:n])
        ops.gemm(self._x, dz, self.dW, trans_a=True)
        if self.use_bias:
            ops.column_sums(dz, self.db)
        if not need_input_grad:
            return None
        return ops.gemm(dz, self.W, self._buf_dx[:n], trans_b=True)

    def _input_nnz(self, batch):
        """Nonzeros of a CSR input batch of ``batch`` rows (the mean over batches seen), else None."""
        if not self._csr_rows:
            return None
        return self._csr_nnz / self._csr_rows * batch

    def flops(self, batch: int, need_input_grad: bool = True) -> dict:
        nnz = self._input_nnz(batch)
        mm = 2 * batch * self.input_dim * self.units if nnz is None else round(2 * nnz * self.units)
        dx = 2 * batch * self.input_dim * self.units if need_input_grad else 0  # the first layer skips dX
        return {"forward": mm + 2 * batch * self.units, "backward": mm + dx + 2 * batch * self.units}

    def bytes_moved(self, batch: int, need_input_grad: bool = True) -> dict:
        item = self.dtype.itemsize
        w = self.input_dim * self.units * item
        nnz = self._input_nnz(batch)
        x_in = batch * self.input_dim * item if nnz is None else round(nnz * (item + 4)) + 8 * (batch + 1)
        io = x_in + batch * self.units * item
        dx = (w + batch * self.input_dim * item) if need_input_grad else 0
        return {"forward": w + io, "backward": w + io + dx}

    def profile_notes(self) -> dict:
        """Sparse facts for the profiler's tree and JSON: CSR input density, pruned weight density."""
        notes = {}
        if self._csr_rows:
            per_row = self._csr_nnz / self._csr_rows
            notes["input_nnz_per_row"] = per_row
            notes["input_load_factor"] = per_row / self.input_dim
        if self.mask is not None:
            nnz = int(self._structure.nnz)
            notes["kernel_nnz"] = nnz
            notes["kernel_load_factor"] = nnz / self.mask.size
        return notes

    def describe(self, input_shape: tuple[int, ...] | None = None) -> str:
        features = self.input_dim or (input_shape[0] if input_shape else self.declared_input_dim) or "?"
        return f"Dense {features}\u2192{self.units} {self.activation.name}"

    def get_config(self) -> dict:
        return {"units": self.units, "activation": self.activation.get_config(), "input_dim": self.input_dim,
                "use_bias": self.use_bias, "kernel_regularizer": {"l1": self.l1, "l2": self.l2},
                "name": self.name}
