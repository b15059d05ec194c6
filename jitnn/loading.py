"""``load_model``: a Sequential rebuilt from a file that ``save`` wrote.

Its own module because it needs both sides: saving.py reads and validates the file (and builds no
model), model.py imports saving.py for ``save``. Here, above both, loading imports neither way back, so
no import circle remains.
"""

from __future__ import annotations

import os

from jitnn.model import Sequential
from jitnn.saving import assign_weights, read_model_file, restore_optimizer

__all__ = ["load_model"]


def load_model(path: str | os.PathLike) -> Sequential:
    """A Sequential rebuilt from a file written by ``save`` (compiled if it was); ModelFileError if the
    file is corrupt, hostile or inconsistent (jitnn/saving.py says what is checked, in which order)."""
    saved = read_model_file(path)
    model = Sequential(saved.layers, name=saved.name, dtype=saved.dtype)
    model.build(saved.input_shape)
    assign_weights(model, saved.values)
    if saved.loss is not None:
        model.compile(loss=saved.loss, optimizer=saved.optimizer, metrics=saved.metrics)
        restore_optimizer(model, saved.optimizer_state)
    return model
