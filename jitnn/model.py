"""Sequential: a stack of layers with Keras' compile / fit / evaluate / predict / save, on any device.

The model owns the layers, the loss, the optimizer and the metrics, and one ``ops`` (jitnn.backend):
``Sequential(device="cuda")`` or ``model.to("cuda")`` swaps it, and weights and optimizer state move.
``fit`` validates its arguments and runs the one training loop (jitnn/training.py); one step is
``train_step`` (forward, loss, backward) then ``apply_gradients`` (the optimizer), both public.

``x`` may be a ``jitnn.sparse.CSRMatrix`` (CPU): fit gathers each shuffled batch with ``x.take_rows(idx)``
(a new CSR batch per step: O(batch + its nonzeros) allocated, unlike the dense path), predict runs
row-slice views ``x[s:s + batch_size]``, and the first Dense layer multiplies the CSR batch directly.
Pruned Dense layers (``jitnn.prune``) get their mask re-applied after every optimizer step.

The last Dense's softmax/sigmoid fuses with a cross-entropy loss (gradient from logits). After the
first batch of a given size nothing is allocated.

Threads and sharing (jitnn/sharing.py, which ``Sequential`` inherits): ``predict``/``evaluate`` are
thread-safe, also beside a ``fit`` of the same model; one ``fit`` at a time; a layer or an optimizer
belongs to one model.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from jitnn import backend, fit_inputs, saving, training
from jitnn import losses as losses_mod
from jitnn import metrics as metrics_mod
from jitnn import optimizers as optimizers_mod
from jitnn.backend.ops import Ops
from jitnn.callbacks import Callback, History
from jitnn.config import FLOAT_DTYPES
from jitnn.layers import Dense, Layer
from jitnn.layers.base import ShapeLike, as_shape
from jitnn.layers.folding import fold_plan
from jitnn.metrics import log_key
from jitnn.profiler import NULL_RECORDER
from jitnn.sharing import NEW_OPTIMIZER, Sharing
from jitnn.sparse import CSRMatrix
from jitnn.training import NonFiniteLossError
from jitnn.validation import (
    as_features,
    as_targets,
    check_batch_size,
    check_callbacks,
    check_flag,
    check_seed,
    check_validation_data,
    check_verbose,
)

_now = time.perf_counter_ns

class Sequential(Sharing):
    """A stack of layers trained with ``compile`` then ``fit`` (see the module docstring)."""

    def __init__(self, layers: Iterable[Layer] | None = None, name: str | None = None,
                 dtype: DTypeLike = "float32", device: str | Ops = "cpu"):
        if np.dtype(dtype).name not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be float32 or float64, received: dtype={dtype!r}")
        self.name, self.dtype, self.ops = name or "sequential", np.dtype(dtype), backend.get(device)
        self.layers, self.loss, self.optimizer, self.metrics = [], None, None, []
        self.built, self.stop_training, self.history = False, False, None
        self.recorder = NULL_RECORDER  # the training loop's profiler recorder, during fit
        self._fused = False
        self._cap = 0
        self._xb = self._yb = self._step_lists = None
        self._init_thread_state()
        for layer in layers or []:
            self.add(layer)

    @property
    def device(self) -> str:
        return self.ops.name

    @property
    def fused(self) -> bool:
        """True when ``compile`` fused the last Dense's softmax/sigmoid with a cross-entropy loss: that layer
        emits logits, the loss takes its gradient from them, and ``predict`` applies the activation."""
        return self._fused

    # --- construction ------------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        if not hasattr(layer, "forward") or not hasattr(layer, "build"):
            raise TypeError(f"Sequential.add needs a jitnn layer, received: {type(layer).__name__}")
        if self.built:
            raise ValueError("cannot add layers to a built model")
        if any(layer is other for other in self.layers):
            raise ValueError(f"this layer ({layer.describe()}) is already in the model: each position needs "
                             "its own layer object")
        self._claim(layer, "layer", "the second would rebuild it and re-draw the first's weights: create a new "
                    "layer, or copy.deepcopy(layer) for one with the same weights")
        layer.to(self.ops)
        self.layers.append(layer)
        self._structure_changed()

    def to(self, device: str | Ops) -> Sequential:
        """Move the model to ``"cpu"`` or ``"cuda"`` (weights and optimizer state follow); returns self.

        Raises, changing nothing, when a layer, the loss, a metric or the optimizer cannot run there."""
        ops = backend.get(device)
        self._refuse_while_training("move")
        for layer in self.layers:
            layer.check_backend(ops)
        self._check_compiled_for(ops)
        for layer in self.layers:
            layer.to(ops)
        if self.optimizer is not None:
            self.optimizer.to(ops)
        self.ops, self._cap, self._xb, self._yb, self._step_lists = ops, 0, None, None, None
        self._structure_changed()
        return self

    def _sync_host(self):
        """Nothing to copy: get_weights and the file writer read device arrays through the backend (or
        numpy's ``__array__``), so the host always sees the current weights."""

    def build(self, input_shape: ShapeLike, seed: int | None = None) -> None:
        """Create every layer's weights for per-sample ``input_shape`` (an int: that many features; a
        tuple such as (28, 28, 1) for images), drawn from ``seed``."""
        if not self.layers:
            raise ValueError("the model has no layers")
        self._refuse_while_training("build")
        rng = np.random.default_rng(seed)
        shapes = self.layer_shapes(input_shape)
        for layer, shape in zip(self.layers, shapes):
            layer.to(self.ops)
            layer.build(shape, self.dtype, rng)
        self.input_shape, self.output_shape = shapes[0], self.layers[-1].output_shape
        self.input_dim, self.output_dim, self.built = self.layers[0].input_dim, self.layers[-1].output_dim, True
        self._cap, self._xb, self._yb, self._step_lists = 0, None, None, None
        self._configure_fusion()
        self._structure_changed()

    def layer_shapes(self, input_shape: ShapeLike) -> list[tuple[int, ...]]:
        """Each layer's per-sample input shape, then the model's output shape, for ``input_shape``;
        ValueError naming the layer and the shapes where they do not chain."""
        shapes = [as_shape(input_shape)]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(layer.compute_output_shape(shapes[-1]))
            except ValueError as e:
                raise ValueError(f"layer {i} ({layer.describe()}) cannot take input of shape {shapes[-1]}: {e}") \
                    from None
        return shapes

    def _declared_input_shape(self):
        first = self.layers[0] if self.layers else None
        return getattr(first, "declared_input_shape", None)

    def compile(self, loss: str | dict | losses_mod.Loss = "mse",
                optimizer: str | dict | optimizers_mod.Optimizer = "adam",
                metrics: Sequence[str | Callable] | None = None) -> None:
        """Set the loss, optimizer and metrics; ValueError now if the model's device cannot run one."""
        self._refuse_while_training("compile")
        loss = losses_mod.get(loss)
        optimizer = optimizers_mod.get(optimizer)
        metrics = [(m, metrics_mod.get(m)) for m in (metrics or [])]
        self._check_compiled_for(self.ops, loss, optimizer, metrics)
        self._claim(optimizer, "optimizer", NEW_OPTIMIZER)
        optimizer.to(self.ops)
        self.loss, self.optimizer, self.metrics = loss, optimizer, metrics
        self.compiled = True
        if self.built:
            self._configure_fusion()
        self._structure_changed()

    def _check_compiled_for(self, ops, loss=None, optimizer=None, metrics=None):
        loss = loss or self.loss
        optimizer = optimizer or self.optimizer
        if loss is not None:
            ops.check_loss(loss)
        if optimizer is not None:
            ops.check_optimizer(optimizer)
        for _, fn in (self.metrics if metrics is None else metrics):
            ops.check_metric(fn)

    def _configure_fusion(self):
        """Fuse the last Dense's softmax/sigmoid with a cross-entropy loss (gradient from logits)."""
        last = self.layers[-1]
        fuse = getattr(self.loss, "from_logits_activation", None)
        for layer in self.layers:
            if isinstance(layer, Dense):
                layer.emit_logits = False
        self._fused = isinstance(last, Dense) and fuse is not None and last.activation.name == fuse
        if self._fused:
            last.emit_logits = True

    def _ensure_built(self, x, seed=None):
        if not self.built:
            with self._lock:
                if not self.built:
                    declared = self._declared_input_shape()
                    self.build(declared if declared is not None else x.shape[1:], seed=seed)
        if tuple(x.shape[1:]) != self.input_shape:
            if len(x.shape) == 2 and len(self.input_shape) == 1:  # a CSRMatrix has a shape, no ndim
                raise ValueError(f"x has {x.shape[1]} features, the model expects {self.input_dim}")
            raise ValueError(f"x has samples of shape {tuple(x.shape[1:])}, the model expects {self.input_shape}")

    def allocate(self, batch: int, gather: bool = True, y_like: np.ndarray | None = None) -> None:
        """Buffers for ``batch`` rows on the model's device; ``gather=False`` (CSR input) skips the dense
        batch buffer, ``y_like`` (the targets) sizes the target batch buffer."""
        for layer in self.layers:
            layer.allocate(batch)
        ops, out = self.ops, self.output_shape
        if self._cap < batch:
            self._cap = batch
            self._probs = ops.zeros((batch, *out), self.dtype)
            self._grad = ops.zeros((batch, *out), self.dtype)
            self._row_loss = ops.zeros(batch, ops.row_dtype or self.dtype)
            self._rows = ops.zeros(batch, np.float64)
            self._xb = self._yb = None
        if gather and (self._xb is None or self._xb.shape[0] < batch):
            self._xb = ops.zeros((batch, *self.input_shape), self.dtype)
        if y_like is not None:
            shape = (batch,) + tuple(y_like.shape[1:])
            yb = self._yb
            if yb is None or yb.shape[0] < batch or tuple(yb.shape[1:]) != shape[1:] or yb.dtype != y_like.dtype:
                self._yb = ops.zeros(shape, y_like.dtype)
        self.sums = ops.zeros(1 + len(self.metrics), np.float64)

    def batch_buffers(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The (input, target) batch buffers ``allocate`` made (the input one is None for CSR input)."""
        return self._xb, self._yb

    def _masked_layers(self):
        return [layer for layer in self.layers if getattr(layer, "mask", None) is not None]

    def weights_changed(self) -> None:
        """Re-apply pruning masks (and refresh sparse inference kernels) after weights were written."""
        self._begin_write()
        try:
            for layer in self._masked_layers():
                layer.apply_mask()
        finally:
            self._end_write()


    # --- one step ----------------------------------------------------------------------------------
    def train_step(self, x: np.ndarray, y: np.ndarray,
                   sample_weight: np.ndarray | None = None) -> float | None:
        """Forward, loss, backward and metric numerators for one batch already on the device.

        Gradients land in the layers' ``grads``; the running loss and metric sums in the model's sums.
        Returns the batch's mean loss where the backend computes it on the host (the CPU), else None.
        The weights change only in ``apply_gradients``. ``sample_weight``: the batch's per-row weights
        on the device (float64), which scale each row's loss and gradient (jitnn/fit_inputs.py)."""
        m = x.shape[0]
        rec = self.recorder
        out = self._forward(x, True, rec)
        t = rec.start()
        value, pred = self._loss(out, y, m, sample_weight)
        rec.stop(t, None, "loss", m)
        grad = self._grad[:m]
        for i in range(len(self.layers) - 1, -1, -1):
            t = rec.start()
            grad = self.layers[i].backward(grad, i > 0)
            rec.stop(t, i, "backward", m)
        t = rec.start()
        self._add_metrics(y, pred, m)
        rec.stop(t, None, "metrics", m)
        return value

    def test_step(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """Inference-mode forward, loss and metric numerators for one batch on the device; returns as
        ``train_step``. Nothing is trained."""
        m = x.shape[0]
        value, pred = self._loss(self._forward(x, False, NULL_RECORDER), y, m)
        self._add_metrics(y, pred, m)
        return value

    def apply_gradients(self, on_param: Callable | None = None,
                        snapshots: list[np.ndarray] | None = None) -> bool | None:
        """One optimizer step from the layers' gradients (then pruning masks re-applied).

        Returns what ``Optimizer.step`` returns: True when the step made a weight NaN or inf (the
        training loop then restores ``snapshots``, which the update filled with the pre-step weights),
        None on a device whose update kernels do not check."""
        params, grads, regs, masked = self._step_lists or self._gather_step_lists()
        self._begin_write()  # a concurrent predict sees the weights before or after this step, never between
        try:
            bad = self.optimizer.step(params, grads, regs, on_param=on_param, snapshots=snapshots)
            for layer in masked:
                layer.apply_mask()
        finally:
            self._end_write()
        return bad

    def reset_sums(self) -> None:
        """Zero the running loss and metric sums (the loop does it at each epoch's start)."""
        self.ops.to_device(np.zeros(1 + len(self.metrics)), out=self.sums)

    def _loss(self, out, y, m, sample_weight=None):
        ops, grad, rows = self.ops, self._grad[:m], self._row_loss[:m]
        if self._fused:
            pred = self._probs[:m]
            value = self.loss.value_and_grad_from_logits(out, y, pred, grad, rows, ops)
        else:
            pred = out
            value = self.loss.value_and_grad(out, y, grad, rows, ops)
        if sample_weight is not None:
            value = ops.weight_rows(grad, rows, sample_weight)
        ops.add_loss(self.sums, 0, value, rows, m)
        return value, pred

    def _add_metrics(self, y, pred, m):
        # after backward: on a device the loss gradient's buffer is free to be the metrics' scratch
        for k, (_, fn) in enumerate(self.metrics):
            self.ops.add_metric(fn, y, pred, self.sums, 1 + k, self._rows[:m], self._grad[:m])

    def _gather_step_lists(self):
        """The lists one optimizer step walks, gathered once (again after build, ``to`` or a new mask)."""
        self._step_lists = ([p for layer in self.layers for p in layer.params],
                            [g for layer in self.layers for g in layer.grads],
                            [r for layer in self.layers for r in layer.regularizers], self._masked_layers())
        return self._step_lists

    # --- inference ---------------------------------------------------------------------------------
    def _forward(self, x, training, rec):
        out = x
        n = x.shape[0]
        for i, layer in enumerate(self.layers):
            t = rec.start()
            out = layer.forward(out, training)
            rec.stop(t, i, "forward", n)
        return out

    def _predict_into(self, x, batch_size, result):
        ops = self.ops
        layers, probs = self._inference_layers(min(batch_size, max(1, x.shape[0])))
        for s in range(0, x.shape[0], batch_size):
            out = ops.asarray(x[s:s + batch_size])
            n = out.shape[0]
            for layer in layers:
                out = layer.forward(out, False)
            if self._fused:
                out = ops.activate(out, probs[:n], layers[-1].activation)
            ops.to_host(out, result[s:s + n])

    def predict(self, x: ArrayLike | CSRMatrix, batch_size: int = 1024, verbose: int = 0) -> np.ndarray:
        """Model outputs (probabilities for softmax/sigmoid heads) for every row of ``x``, as numpy.

        Thread-safe (docs/reliability.md): each thread runs its own copies of the layers' buffers, and the
        result comes from one set of weights even while another thread's fit updates them."""
        batch_size, _ = check_batch_size(batch_size), check_verbose(verbose)
        x = as_features(x, self.dtype, "x")
        self._ensure_built(x)
        result = np.empty((x.shape[0], *self.output_shape), self.dtype)
        seen = self._writes
        if not seen & 1:
            self._predict_into(x, batch_size, result)
            if self._writes == seen:
                return result
        with self._lock:  # the weights changed while we read them: again, with writers held off
            self._predict_into(x, batch_size, result)
        return result

    def evaluate(self, x: ArrayLike | CSRMatrix, y: ArrayLike, batch_size: int = 1024, verbose: int = 0,
                 sample_weight: ArrayLike | None = None,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """Mean loss (and metrics) over ``x, y``: a float, or [loss, metric, ...] with metrics; with
        ``return_dict=True`` a dict keyed "loss" and the metrics' log names (as ``history.history``).

        ``sample_weight`` weighs each row's loss: Σ wᵢ·lᵢ / N (metrics stay unweighted, docs/keras.md)."""
        self._require_compiled()
        batch_size, _ = check_batch_size(batch_size), check_verbose(verbose)
        x = as_features(x, self.dtype, "x")
        as_targets(y, x.shape[0])
        self._ensure_built(x)
        y = self.prepare_targets(y, x)
        if sample_weight is not None:
            sample_weight = fit_inputs.check_sample_weight(sample_weight, x.shape[0])
        pred = self.predict(x, batch_size)
        values = [float(self.loss(y, pred, sample_weight))] + [float(fn(y, pred)) for _, fn in self.metrics]
        if return_dict:
            return dict(zip(["loss"] + [log_key(name) for name, _ in self.metrics], values))
        return values[0] if len(values) == 1 else values

    # --- training ----------------------------------------------------------------------------------
    def _require_compiled(self):
        if self.loss is None:
            raise ValueError("call compile(loss=..., optimizer=...) before training or evaluating")

    def prepare_targets(self, y: ArrayLike, x: np.ndarray | CSRMatrix) -> np.ndarray:
        """``y`` validated for ``x`` and the loss, in the form the training step takes (see Loss.prepare_targets)."""
        if len(self.output_shape) != 1:  # the loss kernels take (samples, outputs)
            raise ValueError(f"the losses take flat outputs (samples, outputs); this model outputs samples of shape "
                             f"{self.output_shape}: end it with Flatten or GlobalAveragePooling2D and a Dense")
        return self.loss.prepare_targets(as_targets(y, x.shape[0]), self.output_dim, self.dtype)

    def fit(self, x: ArrayLike | CSRMatrix, y: ArrayLike, epochs: int = 1, batch_size: int = 32,
            validation_data: tuple | None = None, verbose: int = 1, seed: int | None = None,
            shuffle: bool = True, callbacks: Sequence[Callback] | None = None, profile: bool = False,
            nan_guard: bool = True, strategy: object | None = None, validation_split: float = 0.0,
            sample_weight: ArrayLike | None = None, class_weight: dict[int, float] | None = None, initial_epoch: int = 0) -> History:
        """Train with shuffled minibatches; returns a History (``history.history["loss"]`` ...).

        Keras' data arguments keep Keras's meaning (jitnn/fit_inputs.py, docs/keras.md):
        ``validation_split`` holds out the last fraction of the rows (ignored when ``validation_data``
        is given, which may be ``(x, y)`` or ``(x, y, sample_weight)``); ``sample_weight`` or
        ``class_weight`` weighs each row's loss; ``initial_epoch`` resumes: epochs ``initial_epoch`` to
        ``epochs - 1`` run, and callbacks see those indices.

        ``seed`` fixes weights (if not yet built), shuffling and dropout: same seed, same result.
        ``nan_guard`` keeps a copy of the weights at each check of the loss, so that a NaN loss can
        restore the last good ones (jitnn/training.py: costs one copy of the parameters per check).
        ``strategy``: ``jitnn.distributed.DataParallel()`` trains data-parallel over MPI ranks, each
        computing its share of every ``batch_size`` (global) batch (docs/distributed.md).
        """
        t_fit = _now()
        with self._training():
            return self._fit(t_fit, x, y, epochs, batch_size, validation_data, verbose, seed, shuffle, callbacks,
                             profile, nan_guard, strategy, validation_split, sample_weight, class_weight,
                             initial_epoch)

    def _fit(self, t_fit, x, y, epochs, batch_size, validation_data, verbose, seed, shuffle, callbacks, profile,
             nan_guard, strategy, validation_split, sample_weight, class_weight, initial_epoch):
        self._require_compiled()
        if strategy is None:
            strategy = training.SINGLE_PROCESS
        elif not all(hasattr(strategy, hook) for hook in ("shard", "reduce_gradients", "guard")):
            raise TypeError(f"strategy must be a jitnn.distributed strategy such as DataParallel(), "
                            f"received: {type(strategy).__name__}")
        seed = strategy.agree_seed(seed)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, received: epochs={epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
            raise ValueError(f"initial_epoch must be an int >= 0, received: initial_epoch={initial_epoch!r}")
        weighted = sample_weight is not None or class_weight is not None or (
            isinstance(validation_data, (tuple, list)) and len(validation_data) == 3)
        if weighted and strategy is not training.SINGLE_PROCESS:
            raise ValueError("sample weights (sample_weight, class_weight, or in validation_data) are not "
                             "supported with a distributed strategy yet")
        if sample_weight is not None and class_weight is not None:
            raise ValueError("pass sample_weight or class_weight, not both (as Keras)")
        batch_size = check_batch_size(batch_size)
        verbose, seed, callbacks = check_verbose(verbose), check_seed(seed), check_callbacks(callbacks, Callback)
        shuffle, profile, nan_guard = (check_flag(k, v) for k, v in
                                       (("shuffle", shuffle), ("profile", profile), ("nan_guard", nan_guard)))
        validation_data = check_validation_data(validation_data)
        x = as_features(x, self.dtype, "x")
        as_targets(y, x.shape[0])  # its form, before anything is built; the loss checks the values below
        self._ensure_built(x, seed=seed)
        y = self.prepare_targets(y, x)
        if sample_weight is not None:
            sample_weight = fit_inputs.check_sample_weight(sample_weight, x.shape[0])
        if validation_data is None and validation_split:
            (x, y, sample_weight), validation_data = fit_inputs.split_validation(x, y, sample_weight,
                                                                                  validation_split)
        elif validation_data is not None:
            xv, yv, wv = (*validation_data, None)[:3]
            xv = as_features(xv, self.dtype, "validation x")
            self._ensure_built(xv)
            yv = self.prepare_targets(yv, xv)
            validation_data = (xv, yv, None if wv is None else
                               fit_inputs.check_sample_weight(wv, xv.shape[0], "validation sample_weight"))
        if class_weight is not None:
            sample_weight = fit_inputs.class_weight_to_sample_weight(class_weight, y, self.output_dim)
        if validation_data is not None and validation_data[2] is None:
            validation_data = validation_data[:2]
        if x.shape[0] == 0:
            raise ValueError("x has no rows to train on")
        self._claim(self.optimizer, "optimizer", NEW_OPTIMIZER)  # one assigned after compile
        self.optimizer.to(self.ops)
        self._step_lists = None  # masks may have been set since the last fit
        # under MPI, an error on one rank ends every rank instead of a hang; denormals are flushed to zero
        # while training (kernels/fpenv.py: each costs a ~100-cycle assist, and training makes many)
        with strategy.guard(), self.ops.denormals_flushed():
            self.history = training.fit(
                self, x, y, epochs=epochs, batch_size=min(batch_size, x.shape[0]),
                validation_data=validation_data, verbose=verbose, rng=np.random.default_rng(seed),
                shuffle=shuffle, callbacks=callbacks, profile=profile, nan_guard=nan_guard, t_start=t_fit,
                strategy=strategy, sample_weight=sample_weight, initial_epoch=int(initial_epoch))
        return self.history

    # --- weights, config, files --------------------------------------------------------------------
    def _weight_arrays(self):
        """Every weight in Keras' order: per layer, the trainable ones, then its state (moving statistics)."""
        return [p for layer in self.layers for p in (*layer.params, *layer.state)]

    def count_params(self) -> int:
        """The number of parameters (every weight and bias), as Keras' ``count_params``; before building,
        counted from the shapes the first layer's declared input gives (nothing is built or drawn)."""
        if self.built:  # moving statistics included, as Keras counts non-trainable weights
            return int(sum(w.size for w in self._weight_arrays()))
        declared = self._declared_input_shape()
        if declared is None:
            raise ValueError(f"model {self.name!r} is not built yet and its first layer declares no input: "
                             "count_params needs the input size (pass input_shape= to the first layer, or "
                             "call build(input_shape) or fit first)")
        return sum(math.prod(shape) for layer, layer_input in zip(self.layers, self.layer_shapes(declared))
                   for _, shape, _ in layer.weight_shapes(layer_input))

    def get_weights(self) -> list[np.ndarray]:
        return [self.ops.to_host(p) for p in self._weight_arrays()]

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        params = self._weight_arrays()
        if len(weights) != len(params):
            raise ValueError(f"set_weights needs {len(params)} arrays, received: {len(weights)}")
        cast = []
        for i, (p, w) in enumerate(zip(params, weights)):
            if np.shape(w) != tuple(p.shape):
                raise ValueError(f"weight {i} must have shape {p.shape}, received: {np.shape(w)}")
            w = np.asarray(w)
            if w.dtype.kind not in "biuf":
                raise TypeError(f"weight {i} must be a real numeric array, received: dtype={w.dtype}")
            with np.errstate(over="ignore"):  # an overflow is reported below, by name
                w = w.astype(p.dtype, copy=False)  # checked after the cast: 1e45 is inf in float32
            bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
            if bad:
                raise ValueError(f"weight {i} has {bad} NaN or infinite value(s) in {p.dtype} "
                                 "(nothing was changed)")
            cast.append(w)
        with self.writing_weights():
            for p, w in zip(params, cast):
                self.ops.to_device(w, out=p)
            self.weights_changed()

    def get_config(self) -> dict:
        shape = getattr(self, "input_shape", None)
        return {"name": self.name, "dtype": self.dtype.name, "input_dim": getattr(self, "input_dim", None),
                "input_shape": None if shape is None else list(shape),
                "layers": [{"class": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
                "loss": self.loss.get_config() if self.loss is not None else None,
                "optimizer": self.optimizer.get_config() if self.optimizer is not None else None}

    def save(self, path: str | os.PathLike) -> str | os.PathLike:
        """Write architecture, weights and optimizer state to ``path`` (.npz), atomically."""
        if not self.built:
            raise ValueError("build or fit the model before saving it")
        self._sync_host()
        return saving.save_model(self, path)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load parameters saved from a model of the same architecture; on any error nothing changes."""
        self._refuse_while_training("load weights into")
        saving.load_weights(self, path)

    def summary(self, print_fn: Callable[[str], object] = print) -> str:
        """Each layer's output shape and parameter count (weights included, trainable or not), as Keras
        prints them; before building, from the first layer's declared input (else "?")."""
        declared = self._declared_input_shape() if not self.built else self.input_shape
        shapes = self.layer_shapes(declared) if declared is not None else [None] * (len(self.layers) + 1)
        lines = [f'Model: "{self.name}"', f"{'Layer':40s} {'Output shape':>18s} {'Params':>10s}"]
        total = 0
        for i, (layer, shape, out) in enumerate(zip(self.layers, shapes, shapes[1:])):
            count = layer.param_count() if shape is None else \
                sum(math.prod(s) for _, s, _ in layer.weight_shapes(shape))
            total += count
            shown = "?" if out is None else str((None, *out)).replace("None", "N")
            lines.append(f"{f'[{i}] ' + layer.describe(shape):40s} {shown:>18s} {count:>10,}")
        lines.append(f"Total params: {total:,} ({self.dtype.name}, {total * self.dtype.itemsize / 1024:.1f} KiB)")
        print_fn("\n".join(lines))
        return "\n".join(lines)

    def fold_batchnorm(self) -> Sequential:
        """A new inference model with each BatchNormalization folded into the Conv2D/Dense right before
        it (jitnn/layers/folding.py): W' = W * s, b' = (b - moving_mean) * s + beta, s = gamma /
        sqrt(moving_variance + epsilon), and an elementwise Activation after it moved into that layer's
        epilogue. Predictions equal this model's within rounding; this model is unchanged. A BN after an
        activation cannot fold and stays. The copy is not compiled (compile it to evaluate or train)."""
        if not self.built:
            raise ValueError("build or fit the model before folding its BatchNormalization layers")
        layers, weights = fold_plan(self.layers, self.ops.to_host)
        folded = Sequential(layers, name=self.name, dtype=self.dtype, device=self.ops)
        folded.build(self.input_shape)
        folded.set_weights(weights)
        return folded


__all__ = ["NonFiniteLossError", "Sequential"]
