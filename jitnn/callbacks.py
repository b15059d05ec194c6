"""Training callbacks (Keras conventions): History, EarlyStopping, ModelCheckpoint.

A callback sees the model and the epoch's logs dict ({"loss": .., "accuracy": .., "val_loss": ..}).
"""

from __future__ import annotations

import math
import numbers
import os
import string

import numpy as np

from jitnn import metrics


class Callback:
    """Base class: override the hooks you need."""

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
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
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a log key (str), received: monitor={monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral):
            raise TypeError(f"patience must be an int, received: patience={patience!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, received: patience={patience}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) or not math.isfinite(min_delta):
            raise TypeError(f"min_delta must be a finite number, received: min_delta={min_delta!r}")
        if not isinstance(restore_best_weights, (bool, np.bool_)):
            raise TypeError(f"restore_best_weights must be a bool, received: {restore_best_weights!r}")
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
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"filepath must be a str or path, received: filepath={filepath!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a log key (str), received: monitor={monitor!r}")
        if not isinstance(save_best_only, (bool, np.bool_)):
            raise TypeError(f"save_best_only must be a bool, received: save_best_only={save_best_only!r}")
        filepath = os.fspath(filepath)
        # Check the {fields} now, not after the first epoch: each must be "epoch" or a log key jitnn
        # writes ("loss", a jitnn metric name, either with "val_"), used without attribute or index access.
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(filepath) if f is not None]
        except ValueError as e:
            raise ValueError(f"filepath is not a valid format string ({e}), received: filepath={filepath!r}") from None
        for field in fields:
            key = field.removeprefix("val_")
            known = field == "epoch" or key == "loss"
            if not known and key.isidentifier() and key != "acc":  # logs say "accuracy" for "acc"
                try:
                    metrics.get(key)
                    known = True
                except ValueError:
                    pass
            if not known:
                raise ValueError(f"filepath field {{{field}}} is not a key ModelCheckpoint can fill: use {{epoch}}, "
                                 f"{{loss}}, {{val_loss}} or a metric name such as {{accuracy}}, received: "
                                 f"filepath={filepath!r}")
        self.filepath, self.monitor, self.save_best_only = filepath, monitor, bool(save_best_only)
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
