"""Training callbacks (Keras conventions): History, ProgbarLogger, EarlyStopping, ModelCheckpoint.

A callback sees the model and the epoch's logs dict ({"loss": .., "accuracy": .., "val_loss": ..}).
The batch hooks receive the running means of the epoch so far: every batch on the CPU; on a GPU the
values the host read last (jitnn.training: the host reads the device every ``sync_every`` batches).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np


class Callback:
    """Base class: override the hooks you need."""

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        """The fit's settings, as Keras passes them: ``{"epochs": .., "steps": .., "verbose": ..}``."""
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        """Before training batch ``batch`` (0-based, within the epoch); calls ``on_batch_begin`` (Keras)."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        """After batch ``batch``'s update, with the running logs; calls ``on_batch_end`` (Keras)."""
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class History(Callback):
    """``history.history["loss"]`` etc.: one value per epoch; ``history.epoch``: the epoch indices."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))


class ProgbarLogger(Callback):
    """A one-line, tqdm-style progress bar per epoch; redrawn at most 10 times a second.

    ``verbose=1``: the bar, then the epoch's logs; ``verbose=2``: one line per epoch. ``fit(verbose=...)``
    adds one; the bar shows the running loss the batch hook receives."""

    def __init__(self, verbose=1):
        self.verbose = verbose
        self.steps, self.epochs = 0, 0

    def set_params(self, params):
        super().set_params(params)
        self.epochs, self.steps = params["epochs"], params["steps"]

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.last = 0.0
        print(f"Epoch {epoch + 1}/{self.epochs}", file=sys.stdout)

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if self.verbose != 1 or not logs:
            return
        now = time.perf_counter()
        if now - self.last < 0.1 and step < self.steps:
            return
        self.last = now
        done = int(30 * step / self.steps)
        bar = "=" * done + (">" if done < 30 else "") + "." * max(0, 29 - done)
        sys.stdout.write(f"\r{step}/{self.steps} [{bar}] - {now - self.t0:.1f}s - loss: {logs['loss']:.4f}")
        sys.stdout.flush()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.t0
        items = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items())
        end = "\r" if self.verbose == 1 else ""
        sys.stdout.write(f"{end}{self.steps}/{self.steps} [{'=' * 30}] - {seconds:.1f}s - {items}\n")
        sys.stdout.flush()


def _better(mode, monitor):
    if mode == "auto":
        mode = "max" if ("acc" in monitor and "loss" not in monitor) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', received: mode={mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``restore_best_weights`` puts back the weights of the best epoch when training stops.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        if patience < 0:
            raise ValueError(f"patience must be >= 0, received: patience={patience}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(float(min_delta))
        self.mode = _better(mode, monitor)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_weights = 0, None, None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in (logs or {}):
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which the logs lack: {sorted(logs or {})}")
        value = logs[self.monitor]
        improved = (value < self.best - self.min_delta) if self.mode == "min" else (value > self.best + self.min_delta)
        if improved:
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = [w.copy() for w in self.model.get_weights()]
        else:
            self.wait += 1
            if self.wait >= max(self.patience, 1):  # Keras: stop after `patience` epochs without gain
                self.stopped_epoch = epoch
                self.model.stop_training = True
                if self.restore_best_weights and self.best_weights is not None:
                    self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model to ``filepath`` (``{epoch}`` and log keys may be formatted in) after each epoch,
    or only when ``monitor`` improves with ``save_best_only``. Saves are atomic."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        self.filepath, self.monitor, self.save_best_only = str(filepath), monitor, save_best_only
        self.mode = _better(mode, monitor)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None or not np.isfinite(value):
                return
            if not ((value < self.best) if self.mode == "min" else (value > self.best)):
                return
            self.best = value
        self.model.save(path)
