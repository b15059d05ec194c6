"""How one model is shared: between threads, and what it may share with other models.

``Sequential`` inherits these rules (docs/reliability.md, "Thread safety" and "Careless reuse"):
- ``predict`` runs on per-thread inference copies of the layers (``Layer.inference_copy``: shared
  weights, own buffers), made again when the weights or the structure changed;
- weight writes (an optimizer step, ``set_weights``, a restore) hold ``_lock`` and bump ``_writes``
  before and after (odd while a write is under way): ``predict`` checks the count around its work and,
  when the weights changed meanwhile, runs again holding the lock, so its result always comes from one
  set of weights; structure changes (build, to, compile) bump ``_structure``;
- one ``fit`` at a time, and no build/compile/to/load from another thread meanwhile;
- a layer or an optimizer belongs to one live model.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

# Which model each layer and optimizer belongs to (weakly: a model that is gone frees them). A layer in
# two models would be rebuilt by the second (the first's weights re-drawn); an optimizer in two would mix
# their moments. Both are refused, with what to do instead.
OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


NEW_OPTIMIZER = ("its moments and step count would mix the two models' gradients: give each model its "
                 "own, e.g. optimizer='adam' or a new jitnn.optimizers.Adam(...)")


class Sharing:
    """The thread and ownership state of a model, and the checks that use it (see the module docstring)."""

    def _init_thread_state(self):
        self._lock = threading.RLock()
        self._local = threading.local()
        self._writes = self._structure = self._write_depth = 0
        self._trainer = None  # the thread running fit, if any

    def __getstate__(self):  # copy.deepcopy / pickle: locks and thread-local copies are per object
        state = dict(vars(self))
        for key in ("_lock", "_local", "_trainer"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_thread_state()
        for layer in self.layers:  # a copy's layers and optimizer are its own
            OWNERS[layer] = weakref.ref(self)
        if self.optimizer is not None:
            OWNERS[self.optimizer] = weakref.ref(self)

    def _claim(self, obj, what, instead):
        """Make ``obj`` (a layer or an optimizer) this model's; ValueError if another live model has it."""
        ref = OWNERS.get(obj)
        owner = ref() if ref is not None else None
        if owner is not None and owner is not self:
            label = obj.describe() if hasattr(obj, "describe") else repr(obj)[:80]
            raise ValueError(f"this {what} ({label}) already belongs to model {owner.name!r}; one {what} "
                             f"cannot serve two models ({instead})")
        OWNERS[obj] = weakref.ref(self)

    def _begin_write(self):
        self._lock.acquire()
        self._write_depth += 1
        if self._write_depth == 1:
            self._writes += 1

    def _end_write(self):
        self._write_depth -= 1
        if self._write_depth == 0:
            self._writes += 1
        self._lock.release()

    @contextlib.contextmanager
    def writing_weights(self) -> Iterator[None]:
        """Hold concurrent ``predict`` calls off the weights while the block writes them (the training
        loop's restores use it; ``apply_gradients`` and ``set_weights`` do the same)."""
        self._begin_write()
        try:
            yield
        finally:
            self._end_write()

    def _structure_changed(self):
        self._structure += 1

    def _refuse_while_training(self, what):
        """RuntimeError when another thread's fit is using this model (changing it would corrupt that fit)."""
        trainer = self._trainer
        if trainer is not None and trainer is not threading.current_thread():
            raise RuntimeError(f"cannot {what} model {self.name!r} while thread {trainer.name!r} is training it "
                               "(fit); wait for that fit to return, or use a copy (copy.deepcopy(model))")

    @contextlib.contextmanager
    def _training(self):
        """The body of one ``fit``: RuntimeError if this model is training already (here or elsewhere)."""
        with self._lock:
            trainer = self._trainer
            if trainer is not None:
                who = "this thread (fit called inside fit)" if trainer is threading.current_thread() \
                    else f"thread {trainer.name!r}"
                raise RuntimeError(f"model {self.name!r} is already being trained by {who}; two fits of one model "
                                   "would corrupt its weights and optimizer state: train a copy "
                                   "(copy.deepcopy(model)) or wait for the first fit to return")
            self._trainer = threading.current_thread()
        try:
            yield
        finally:
            self._trainer = None

    def _inference_layers(self, batch):
        """This thread's inference copies of the layers and its output buffer, for ``batch`` rows.

        Made again when the model's structure or weights changed since (a pruned Dense caches a CSR copy
        of its weights); the buffers of the previous copies are kept."""
        local, key = self._local, (self._structure, self._writes)
        if getattr(local, "key", None) != key:
            old = getattr(local, "layers", None)
            fresh = [layer.inference_copy() for layer in self.layers]
            if old is not None and len(old) == len(fresh):
                for new, prev in zip(fresh, old):
                    if type(new) is type(prev):
                        new.__dict__.update((k, v) for k, v in vars(prev).items() if k.startswith("_buf"))
                        new.capacity = prev.capacity
            local.layers, local.key, local.rows = fresh, key, 0
        layers = local.layers
        if batch > local.rows:  # buffers only grow: a batch no larger than one served before fits (~5 us a layer)
            for layer in layers:
                layer.allocate(batch)
            local.rows = batch
        probs = getattr(local, "probs", None)
        if self.fused and (probs is None or probs.shape[0] < batch or probs.shape[1] != self.output_dim
                            or probs.dtype != self.dtype or self.ops.name != local.device):
            local.probs = probs = self.ops.zeros((batch, self.output_dim), self.dtype)
            local.device = self.ops.name
        return layers, probs


__all__ = ["NEW_OPTIMIZER", "OWNERS", "Sharing"]
