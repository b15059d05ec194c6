"""Training callbacks (Keras conventions): History, ProgbarLogger, EarlyStopping, ModelCheckpoint.

A callback sees the model and the epoch's logs dict ({"loss": .., "accuracy": .., "val_loss": ..}).
The batch hooks receive the running means of the epoch so far: every batch on the CPU; on a GPU the
values the host read last (jitnn.training: the host reads the device every ``sync_every`` batches).
"""

from __future__ import annotations

import math
import numbers
import os
import string
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from jitnn import metrics

if TYPE_CHECKING:  # the model imports this module
    from jitnn.model import Sequential

Hook = Callable[..., object] | None  # a LambdaCallback hook: (epoch or batch, logs) or (logs), or None


class Callback:
    """Base class: override the hooks you need."""

    def set_model(self, model: Sequential) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        """The fit's settings, as Keras passes them: ``{"epochs": .., "steps": .., "verbose": ..}``."""
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Before training batch ``batch`` (0-based, within the epoch); calls ``on_batch_begin`` (Keras)."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """After batch ``batch``'s update, with the running logs; calls ``on_batch_end`` (Keras)."""
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_train_end(self, logs: dict | None = None) -> None:
        pass


class History(Callback):
    """``history.history["loss"]`` etc.: one value per epoch; ``history.epoch``: the epoch indices."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))


class ProgbarLogger(Callback):
    """A one-line, tqdm-style progress bar per epoch; redrawn at most 10 times a second.

    ``verbose=1``: the bar, then the epoch's logs; ``verbose=2``: one line per epoch. ``fit(verbose=...)``
    adds one; the bar shows the running loss the batch hook receives."""

    def __init__(self, verbose: int = 1):
        if isinstance(verbose, bool) or verbose not in (1, 2):
            raise ValueError(f"ProgbarLogger verbose must be 1 (a bar) or 2 (a line per epoch), received: "
                             f"verbose={verbose!r}")
        self.verbose = verbose
        self.steps, self.epochs = 0, 0

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.epochs, self.steps = params["epochs"], params["steps"]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.t0 = time.perf_counter()
        self.last = 0.0
        print(f"Epoch {epoch + 1}/{self.epochs}", file=sys.stdout)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
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

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
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

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False):
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

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait, self.stopped_epoch, self.best_weights = 0, None, None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
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

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
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

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
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


# ---------------------------------------------------------------------------------------------------
# Keras' other everyday callbacks: learning-rate control, a CSV log, stopping on NaN, hooks from lambdas.


def _set_lr(model, value: float) -> None:
    from jitnn.optimizers import LearningRateSchedule

    opt = model.optimizer
    if isinstance(opt.learning_rate, LearningRateSchedule):
        raise TypeError(f"the optimizer's learning rate is a schedule ({type(opt.learning_rate).__name__}); "
                        "a callback can only change a float learning rate")
    opt.learning_rate = float(value)


def _finite_number(name: str, value, low: float = -math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < low or (low_open and value == low):
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low}, "
                         f"received: {name}={value!r}")
    return float(value)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, received: {name}={value!r}")
    return int(value)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by ``min_delta`` for
    ``patience`` epochs; then wait ``cooldown`` epochs before counting again; never below ``min_lr``."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        self.factor = _finite_number("factor", factor, 0.0, low_open=True)
        if self.factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau needs a factor < 1.0, received: factor={factor!r}")
        self.monitor, self.verbose = monitor, verbose
        self.patience, self.cooldown = _count("patience", patience), _count("cooldown", cooldown)
        self.min_delta = abs(_finite_number("min_delta", min_delta))
        self.min_lr = _finite_number("min_lr", min_lr, 0.0)
        self.mode = _better(mode, monitor)
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.cooldown_counter = 0, 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        lr = float(self.model.optimizer.current_learning_rate())
        logs["learning_rate"] = lr
        current = logs.get(self.monitor)
        if current is None:
            import warnings

            warnings.warn(f"ReduceLROnPlateau monitors {self.monitor!r}, which the logs lack: {sorted(logs)}",
                          stacklevel=2)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.mode == "min":
            improved = current < self.best - self.min_delta
        else:
            improved = current > self.best + self.min_delta
        if improved:
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience and lr > self.min_lr:
                new_lr = max(lr * self.factor, self.min_lr)
                _set_lr(self.model, new_lr)
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr:.4g}.")
                self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate before each epoch to ``schedule(epoch, lr)`` (or ``schedule(epoch)``).

    ``epoch`` counts from 0. With a training loop that calls no ``on_epoch_begin``, the rate of epoch
    e + 1 is set at the end of epoch e; an error the schedule raises for it surfaces only if that epoch
    runs, and the last epoch's rate is put back when training ends.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0):
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, received: schedule={schedule!r}")
        self.schedule, self.verbose = schedule, verbose
        self._applied = None  # (epoch, the rate before it was applied)
        self._pending_error = None  # (epoch, exception) of a rate set ahead of its epoch

    def _rate(self, epoch: int, lr: float) -> float:
        try:
            new = self.schedule(epoch, lr)
        except TypeError:  # a one-argument schedule, as Keras allows
            new = self.schedule(epoch)
        if isinstance(new, bool) or not isinstance(new, (int, float, np.integer, np.floating)) \
                or not math.isfinite(new) or new <= 0:
            raise ValueError(f"schedule({epoch}) must return a positive finite float, received: {new!r}")
        return float(new)

    def _apply(self, epoch: int, ahead: bool = False) -> None:
        before = float(self.model.optimizer.current_learning_rate())
        _set_lr(self.model, self._rate(epoch, before))
        self._applied = (epoch, before)
        if self.verbose and not ahead:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{self.model.optimizer.current_learning_rate():.4g}.")

    def _raise_pending(self, epoch: int) -> None:
        if self._pending_error is not None and self._pending_error[0] == epoch:
            raise self._pending_error[1]

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._applied, self._pending_error = None, None
        self._apply(0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._raise_pending(epoch)
        if self._applied is not None and self._applied[0] == epoch:
            return
        if self._applied is not None:  # set for another epoch: undo it first
            _set_lr(self.model, self._applied[1])
        self._apply(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._raise_pending(epoch)  # this epoch ran, without the rate its schedule failed to give
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.current_learning_rate())
        self._pending_error = None
        try:
            self._apply(epoch + 1, ahead=True)
        # The user's schedule may know no epoch + 1: that is an error only if the epoch runs.
        except Exception as e:  # noqa: BLE001
            self._pending_error = (epoch + 1, e)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._applied is not None and self._pending_error is None:
            _set_lr(self.model, self._applied[1])  # the rate set ahead was for an epoch that never ran
        self._applied, self._pending_error = None, None


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row (``epoch`` then the keys in sorted order) to ``filename``."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be one character, received: separator={separator!r}")
        self.filename, self.sep, self.append = str(filename), separator, bool(append)
        self._file, self._keys = None, None

    def on_train_begin(self, logs: dict | None = None) -> None:
        import os

        has_rows = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        # Open for the whole fit, one flushed row per epoch: closed in on_train_end.
        mode = "a" if self.append else "w"
        self._file = open(self.filename, mode, newline="", encoding="utf-8")  # noqa: SIM115
        self._keys = None
        self._header_written = has_rows

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import csv

        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
        writer = csv.writer(self._file, delimiter=self.sep, lineterminator="\n")
        if not self._header_written:
            writer.writerow(["epoch"] + self._keys)
            self._header_written = True
        writer.writerow([epoch] + [_csv_value(logs.get(k, "NA")) for k in self._keys])
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _csv_value(v):
    return repr(float(v)) if isinstance(v, (float, np.floating)) else v


class TerminateOnNaN(Callback):
    """Stop training (``model.stop_training = True``) when the loss in the logs is NaN or infinite.

    With it, ``fit`` turns a non-finite loss (or weight) into the end of training instead of
    NonFiniteLossError: the weights stay those of the last good step and fit returns its History."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.terminated = False

    def _check(self, where, logs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            if not getattr(self, "terminated", False):  # the epoch's loss repeats the batch's: say it once
                print(f"{where}: Invalid loss, terminating training")  # Keras's words
            self.terminated = True
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check(f"Batch {batch}", logs)

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check(f"Batch {batch}", logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._check(f"Epoch {epoch + 1}", logs)


class LambdaCallback(Callback):
    """A callback from plain functions: ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_batch_begin(batch, logs)``, ``on_train_batch_end(batch, logs)`` (``on_batch_begin``/
    ``on_batch_end``: Keras' older names, run for training batches too), ``on_train_begin(logs)``,
    ``on_train_end(logs)``. Each hook given is called once at its event; the others do nothing."""

    HOOKS = ("on_epoch_begin", "on_epoch_end", "on_batch_begin", "on_batch_end", "on_train_batch_begin",
             "on_train_batch_end", "on_train_begin", "on_train_end")

    def __init__(self, on_epoch_begin: Hook = None, on_epoch_end: Hook = None, on_batch_begin: Hook = None,
                 on_batch_end: Hook = None, on_train_batch_begin: Hook = None, on_train_batch_end: Hook = None,
                 on_train_begin: Hook = None, on_train_end: Hook = None):
        fns = (on_epoch_begin, on_epoch_end, on_batch_begin, on_batch_end, on_train_batch_begin,
               on_train_batch_end, on_train_begin, on_train_end)
        given = dict(zip(self.HOOKS, fns))
        for name, fn in given.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, received: {name}={fn!r}")
        self.hooks = {k: v for k, v in given.items() if v is not None}

    def _run(self, name, *args):
        fn = self.hooks.get(name)
        if fn is not None:
            fn(*args)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._run("on_train_begin", logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._run("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._run("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._run("on_epoch_end", epoch, logs)

    # A loop calls on_train_batch_*; on_batch_* is the older name for the same event (Keras routes one
    # to the other), so the function given under either name runs once per training batch.
    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._run("on_train_batch_begin", batch, logs)
        self._run("on_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._run("on_train_batch_end", batch, logs)
        self._run("on_batch_end", batch, logs)


__all__ = ["CSVLogger", "Callback", "EarlyStopping", "History", "LambdaCallback", "LearningRateScheduler",
           "ModelCheckpoint", "ProgbarLogger", "ReduceLROnPlateau", "TerminateOnNaN"]
