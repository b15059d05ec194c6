"""Sequential: the training loop, batching, metrics, callbacks, save/load (Keras conventions).

``x`` may be a ``jitnn.sparse.CSRMatrix``: fit gathers each shuffled batch with ``x.take_rows(idx)``
(a new CSR batch per step: O(batch + its nonzeros) allocated, unlike the dense path), predict runs
row-slice views ``x[s:s + batch_size]``, and the first Dense layer multiplies the CSR batch directly.
Pruned Dense layers (``jitnn.prune``) get their mask re-applied after every optimizer step.

One training step: gather the batch into preallocated buffers, forward through the layers, the loss
and its gradient (softmax/sigmoid fused with cross-entropy from logits), backward, one optimizer step.
After the first batch of a given size nothing is allocated. Each phase is timed per layer when a
profiler is active (one perf_counter_ns pair per call; the phases are listed in jitnn/profiler.py).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from jitnn import callbacks as cbks
from jitnn import losses as losses_mod
from jitnn import metrics as metrics_mod
from jitnn import optimizers as optimizers_mod
from jitnn import profiler as prof_mod
from jitnn import saving
from jitnn.activations import SOFTMAX
from jitnn.config import launch
from jitnn.kernels.elementwise import SIGMOID, activate
from jitnn.kernels.reductions import softmax_rows
from jitnn.layers import Dense
from jitnn.sparse import CSRMatrix
from jitnn.validation import as_features, check_batch_size, check_lengths

_now = time.perf_counter_ns


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the model keeps the weights of the last good step."""


class Sequential:
    """A stack of layers trained with ``compile`` then ``fit`` (see the module docstring)."""

    def __init__(self, layers=None, name=None, dtype="float32", device="cpu"):
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, received: dtype={dtype!r}")
        self.name, self.dtype, self.device = name or "sequential", np.dtype(dtype), _check_device(device)
        self._gpu_state = None
        self.layers, self.loss, self.optimizer, self.metrics = [], None, None, []
        self.built, self.stop_training, self.history = False, False, None
        for layer in layers or []:
            self.add(layer)

    # --- construction ------------------------------------------------------------------------------
    def add(self, layer):
        if not hasattr(layer, "forward") or not hasattr(layer, "build"):
            raise TypeError(f"Sequential.add needs a jitnn layer, received: {type(layer).__name__}")
        if self.built:
            raise ValueError("cannot add layers to a built model")
        self.layers.append(layer)

    def to(self, device):
        """Move the model to ``"cpu"`` or ``"cuda"`` (weights and optimizer state follow); returns self."""
        device = _check_device(device)
        if device == "cpu" and self._gpu_state is not None:
            self._gpu_state.download()
            self._gpu_state = None
        self.device = device
        return self

    def _gpu(self):
        """The model's device state (jitnn.cuda.training.DeviceModel), made on first use after build."""
        if self._gpu_state is None:
            from jitnn.cuda.training import DeviceModel

            self._gpu_state = DeviceModel(self)
        return self._gpu_state

    def _sync_host(self):
        """Bring device weights and optimizer state back into the host arrays (get_weights, save)."""
        if self._gpu_state is not None:
            self._gpu_state.download()

    def build(self, input_dim, seed=None):
        """Create every layer's weights for ``input_dim`` features (drawn from ``seed``)."""
        if not self.layers:
            raise ValueError("the model has no layers")
        rng = np.random.default_rng(seed)
        dim = int(input_dim)
        for layer in self.layers:
            layer.build(dim, self.dtype, rng)
            dim = layer.output_dim
        self.input_dim, self.output_dim, self.built = int(input_dim), dim, True
        self._gpu_state = None
        self._configure_fusion()

    def _declared_input_dim(self):
        first = self.layers[0] if self.layers else None
        return getattr(first, "declared_input_dim", None)

    def compile(self, loss="mse", optimizer="adam", metrics=None):
        self.loss = losses_mod.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        self.metrics = [(m, metrics_mod.get(m)) for m in (metrics or [])]
        self.compiled = True
        if self.built:
            self._configure_fusion()

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

    def _ensure_built(self, x):
        if not self.built:
            declared = self._declared_input_dim()
            self.build(declared if declared is not None else x.shape[1])
        if x.shape[1] != self.input_dim:
            raise ValueError(f"x has {x.shape[1]} features, the model expects {self.input_dim}")

    def _allocate(self, batch, gather=True):
        """Buffers for ``batch`` rows; ``gather=False`` (CSR input) skips the dense batch buffer."""
        for layer in self.layers:
            layer.allocate(batch)
        out = self.output_dim
        if getattr(self, "_cap", 0) < batch:
            self._cap = batch
            self._probs = np.zeros((batch, out), self.dtype)
            self._grad = np.zeros((batch, out), self.dtype)
            self._row_loss = np.zeros(batch, self.dtype)
        xb = getattr(self, "_xb", None)
        if gather and (xb is None or xb.shape[0] < batch):
            self._xb = np.zeros((batch, self.input_dim), self.dtype)

    def _masked_layers(self):
        return [layer for layer in self.layers if getattr(layer, "mask", None) is not None]

    def _weights_changed(self):
        """Re-apply pruning masks (and refresh sparse inference kernels) after weights were written."""
        for layer in self._masked_layers():
            layer.apply_mask()
        if self._gpu_state is not None:
            self._gpu_state.upload()

    # --- inference ---------------------------------------------------------------------------------
    def _forward(self, x, training, prof=None):
        out = x
        for i, layer in enumerate(self.layers):
            if prof is None:
                out = layer.forward(out, training)
            else:
                t0 = _now()
                out = layer.forward(out, training)
                prof.add(i, "forward", t0, _now(), x.shape[0])
        return out

    def _finish(self, out, n):
        """The model's output from the last layer's (possibly logit) output."""
        if not self._fused:
            return out
        probs = self._probs[:n]
        if self.layers[-1].activation.code == SOFTMAX:
            launch(softmax_rows, out.size, out, probs)
        else:
            launch(activate, out.size, out, probs, SIGMOID, 0.0)
        return probs

    def predict(self, x, batch_size=1024, verbose=0):
        """Model outputs (probabilities for softmax/sigmoid heads) for every row of ``x``, as numpy."""
        x = as_features(x, self.dtype, "x")
        self._ensure_built(x)
        batch_size = check_batch_size(batch_size)
        if self.device == "cuda":
            _no_csr_on_gpu(x)
            return self._gpu().predict(x, batch_size)
        result = np.empty((x.shape[0], self.output_dim), self.dtype)
        self._allocate(min(batch_size, max(1, x.shape[0])), gather=not isinstance(x, CSRMatrix))
        for s in range(0, x.shape[0], batch_size):
            chunk = x[s:s + batch_size]
            result[s:s + chunk.shape[0]] = self._finish(self._forward(chunk, False), chunk.shape[0])
        return result

    def evaluate(self, x, y, batch_size=1024, verbose=0):
        """Mean loss (and metrics) over ``x, y``: a float, or [loss, metric, ...] with metrics."""
        self._require_compiled()
        x = as_features(x, self.dtype, "x")
        self._ensure_built(x)
        y = self._prepare_targets(y, x)
        pred = self.predict(x, batch_size)
        values = [float(self.loss(y, pred))] + [float(fn(y, pred)) for _, fn in self.metrics]
        return values[0] if len(values) == 1 else values

    # --- training ----------------------------------------------------------------------------------
    def _require_compiled(self):
        if self.loss is None:
            raise ValueError("call compile(loss=..., optimizer=...) before training or evaluating")

    def _prepare_targets(self, y, x):
        y = np.asarray(y)
        check_lengths(x, y)
        return self.loss.prepare_targets(y, self.output_dim, self.dtype)

    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, verbose=1, seed=None, shuffle=True,
            callbacks=None, profile=False, nan_guard=True):
        """Train with shuffled minibatches; returns a History (``history.history["loss"]`` ...).

        ``seed`` fixes weights (if not yet built), shuffling and dropout: same seed, same result.
        ``nan_guard`` keeps a copy of the weights before each step so that a NaN loss can restore
        the last good ones (costs one copy of the parameters per step).
        """
        t_fit = _now()
        self._require_compiled()
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, received: epochs={epochs!r}")
        batch_size = check_batch_size(batch_size)
        x = as_features(x, self.dtype, "x")
        if not self.built:
            declared = self._declared_input_dim()
            self.build(declared if declared is not None else x.shape[1], seed=seed)
        self._ensure_built(x)
        y = self._prepare_targets(y, x)
        if validation_data is not None:
            xv, yv = validation_data
            xv = as_features(xv, self.dtype, "validation x")
            self._ensure_built(xv)
            yv = self._prepare_targets(yv, xv)
        n = x.shape[0]
        if n == 0:
            raise ValueError("x has no rows to train on")
        rng = np.random.default_rng(seed)
        batch_size = min(batch_size, n)
        sparse = isinstance(x, CSRMatrix)
        if self.device == "cuda":
            _no_csr_on_gpu(x)
            nan_guard_host = False  # the device keeps its own snapshot
        else:
            nan_guard_host = nan_guard
            self._allocate(batch_size, gather=not sparse)
        masked = self._masked_layers()
        yb = np.zeros((batch_size,) + y.shape[1:], y.dtype)
        params = [p for layer in self.layers for p in layer.params]
        grads = [g for layer in self.layers for g in layer.grads]
        regs = [r for layer in self.layers for r in layer.regularizers]
        snapshot = [np.empty_like(p) for p in params] if nan_guard_host else None
        history = cbks.History()
        cb_list = [history] + list(callbacks or [])
        for cb in cb_list:
            cb.set_model(self)
            cb.on_train_begin()
        prof = prof_mod.current(profile, self, t_fit)
        hook = None
        if prof:
            hook = prof.update_hook(self.layers)  # bills each array's optimizer kernel to its layer
            prof.add(None, "setup", t_fit, _now(), batch_size)
        self.stop_training = False
        steps = (n + batch_size - 1) // batch_size
        order = np.arange(n)
        try:
            if self.device == "cuda":
                self._gpu().fit(x, y, epochs, batch_size, (xv, yv) if validation_data is not None else None,
                                verbose, rng, shuffle, cb_list, prof, nan_guard)
            else:
                for epoch in range(epochs):
                    t_epoch = t0 = _now()
                    bar = _Progress(epoch, epochs, steps, verbose)
                    if shuffle:
                        rng.shuffle(order)
                    loss_sum, seen = 0.0, 0
                    metric_sums = [0.0] * len(self.metrics)
                    if prof:
                        prof.add(None, "shuffle", t0, _now(), batch_size)
                    for step in range(steps):
                        t0 = _now() if prof else 0
                        idx = order[step * batch_size:(step + 1) * batch_size]
                        m = idx.shape[0]
                        # mode="clip": with the default "raise" numpy gathers through a temporary (64 KiB a step
                        # here); the indices come from a permutation, so they are always in range.
                        if sparse:
                            xb = x.take_rows(idx)  # a new CSR batch each step (see the module docstring)
                        else:
                            xb = np.take(x, idx, axis=0, out=self._xb[:m], mode="clip")
                        ybm = np.take(y, idx, axis=0, out=yb[:m], mode="clip")
                        if prof:
                            prof.add(None, "batching", t0, _now(), m)
                        loss = self._train_step(xb, ybm, prof)
                        t0 = _now() if prof else 0
                        if not np.isfinite(loss):
                            if snapshot is not None and (epoch or step):
                                for p, s in zip(params, snapshot):
                                    p[...] = s
                                self._weights_changed()
                            raise NonFiniteLossError(
                                f"loss became {loss} at epoch {epoch + 1}, batch {step + 1} of {steps}; "
                                + ("the weights of the last good step were restored" if nan_guard else
                                   "nan_guard=False: the weights are those that produced it")
                            )
                        if snapshot is not None:
                            for p, s in zip(params, snapshot):
                                np.copyto(s, p)
                        if hook is None:
                            self.optimizer.step(params, grads, regs)
                            for layer in masked:
                                layer.apply_mask()
                        else:
                            prof.add(None, "nan_guard", t0, _now(), m)
                            hook.start(m)
                            self.optimizer.step(params, grads, regs, on_param=hook)
                            for layer in masked:
                                layer.apply_mask()  # billed to the model's optimizer row
                            prof.add(None, "optimizer", hook.t, _now(), m)
                            t0 = _now()
                        loss_sum += loss * m
                        seen += m
                        if self.metrics:
                            out = self._last_output
                            for k, (_, fn) in enumerate(self.metrics):
                                metric_sums[k] += fn(ybm, out) * m
                        if prof:
                            prof.add(None, "metrics", t0, _now(), m)
                            t0 = _now()
                        bar.update(step + 1, loss_sum / seen)
                        if prof:
                            prof.add(None, "loop", t0, _now(), m)
                    logs = {"loss": loss_sum / seen}
                    for k, (name, _) in enumerate(self.metrics):
                        logs[_metric_key(name)] = metric_sums[k] / seen
                    self._end_epoch(epoch, logs, (xv, yv) if validation_data is not None else None, bar, t_epoch,
                                    cb_list, prof, batch_size)
                    if self.stop_training:
                        break
            t0 = _now()
            for cb in cb_list:
                cb.on_train_end()
            if prof:
                prof.add(None, "callbacks", t0, _now(), batch_size)
        finally:
            if prof:
                prof.finish()  # a fit that raises (NonFiniteLossError, KeyboardInterrupt) still closes its profile
        self.history = history
        return history

    def _end_epoch(self, epoch, logs, validation, bar, t_epoch, cb_list, prof, batch_size):
        """Validation into ``logs``, the progress bar's last line, the callbacks' on_epoch_end (both devices)."""
        if validation is not None:
            t0 = _now()
            values = self.evaluate(*validation)
            values = values if isinstance(values, list) else [values]
            logs["val_loss"] = values[0]
            for (name, _), v in zip(self.metrics, values[1:]):
                logs["val_" + _metric_key(name)] = v
            if prof:
                prof.add(None, "validation", t0, _now(), validation[0].shape[0])
        t0 = _now()
        bar.close(logs, (t0 - t_epoch) / 1e9)
        for cb in cb_list:
            cb.on_epoch_end(epoch, logs)
        if prof:
            prof.add(None, "callbacks", t0, _now(), batch_size)

    def _train_step(self, xb, yb, prof):
        """Forward, loss, backward for one batch; returns the batch's mean loss (before the update)."""
        m = xb.shape[0]
        out = self._forward(xb, True, prof)
        t0 = _now() if prof else 0
        grad = self._grad[:m]
        if self._fused:
            probs = self._probs[:m]
            loss = self.loss.value_and_grad_from_logits(out, yb, probs, grad, self._row_loss[:m])
            self._last_output = probs
        else:
            loss = self.loss.value_and_grad(out, yb, grad, self._row_loss[:m])
            self._last_output = out
        if prof:
            prof.add(None, "loss", t0, _now(), m)
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer = self.layers[i]
            t0 = _now() if prof else 0
            if i == last and self._fused:
                grad = layer.backward(grad, i > 0, grad_is_dz=True)
            else:
                grad = layer.backward(grad, i > 0)
            if prof:
                prof.add(i, "backward", t0, _now(), m)
        return loss

    # --- weights, config, files --------------------------------------------------------------------
    def get_weights(self):
        self._sync_host()
        return [p.copy() for layer in self.layers for p in layer.params]

    def set_weights(self, weights):
        params = [p for layer in self.layers for p in layer.params]
        if len(weights) != len(params):
            raise ValueError(f"set_weights needs {len(params)} arrays, received: {len(weights)}")
        for i, (p, w) in enumerate(zip(params, weights)):
            if np.shape(w) != p.shape:
                raise ValueError(f"weight {i} must have shape {p.shape}, received: {np.shape(w)}")
        for p, w in zip(params, weights):
            p[...] = w
        self._weights_changed()

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name, "input_dim": getattr(self, "input_dim", None),
                "layers": [{"class": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
                "loss": self.loss.get_config() if self.loss is not None else None,
                "optimizer": self.optimizer.get_config() if self.optimizer is not None else None}

    def save(self, path):
        """Write architecture, weights and optimizer state to ``path`` (.npz), atomically."""
        if not self.built:
            raise ValueError("build or fit the model before saving it")
        self._sync_host()
        return saving.save_model(self, path)

    def load_weights(self, path):
        """Load parameters saved from a model of the same architecture; on any error nothing changes."""
        saving.load_weights(self, path)

    def summary(self, print_fn=print):
        lines = [f'Model: "{self.name}"', f"{'Layer':40s} {'Output':>10s} {'Params':>10s}"]
        total = 0
        for i, layer in enumerate(self.layers):
            total += layer.param_count()
            lines.append(f"{f'[{i}] ' + layer.describe():40s} {layer.output_dim or '?':>10} {layer.param_count():>10,}")
        lines.append(f"Total params: {total:,} ({self.dtype.name}, {total * self.dtype.itemsize / 1024:.1f} KiB)")
        print_fn("\n".join(lines))
        return "\n".join(lines)


def _check_device(device):
    """``"cpu"`` or ``"cuda"``; ``"cuda"`` only where a GPU (or the CUDA simulator) can run the kernels."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', received: device={device!r}")
    if device == "cuda":
        from jitnn.cuda.runtime import require

        require()
    return device


def _no_csr_on_gpu(x):
    if isinstance(x, CSRMatrix):
        raise ValueError("CSRMatrix input runs on the CPU only: use device='cpu' or pass a dense array")


def _metric_key(name):
    return {"acc": "accuracy"}.get(name, name) if isinstance(name, str) else getattr(name, "__name__", "metric")


class _Progress:
    """A one-line, tqdm-style progress bar; redrawn at most 10 times a second; silent at verbose=0."""

    def __init__(self, epoch, epochs, steps, verbose):
        self.verbose, self.steps, self.last = verbose, steps, 0.0
        self.t0 = time.perf_counter()
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", file=sys.stdout)

    def update(self, step, loss):
        if self.verbose != 1:
            return
        now = time.perf_counter()
        if now - self.last < 0.1 and step < self.steps:
            return
        self.last = now
        done = int(30 * step / self.steps)
        bar = "=" * done + (">" if done < 30 else "") + "." * max(0, 29 - done)
        sys.stdout.write(f"\r{step}/{self.steps} [{bar}] - {now - self.t0:.1f}s - loss: {loss:.4f}")
        sys.stdout.flush()

    def close(self, logs, seconds):
        if not self.verbose:
            return
        items = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        end = "\r" if self.verbose == 1 else ""
        sys.stdout.write(f"{end}{self.steps}/{self.steps} [{'=' * 30}] - {seconds:.1f}s - {items}\n")
        sys.stdout.flush()


__all__ = ["NonFiniteLossError", "Sequential"]
