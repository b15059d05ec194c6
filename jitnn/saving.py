"""Model files: plain arrays plus a JSON architecture record in one .npz, written atomically, no pickle.

Layout: ``__architecture__`` (the JSON as uint8 bytes), ``layer{i}/{param}`` for every parameter, and
``optimizer/{key}`` for the optimizer state when there is one. Loading validates everything into
temporaries first, so a corrupt or mismatched file raises ``ValueError`` and changes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "jitnn.sequential/1"


def _atomic_savez(path, arrays):
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_model(model, path):
    """Write ``model`` (architecture, weights, optimizer state) to ``path`` atomically; returns the path."""
    record = {"format": FORMAT, "config": model.get_config()}
    arrays = {"__architecture__": np.frombuffer(json.dumps(record).encode(), np.uint8)}
    for i, layer in enumerate(model.layers):
        for name, p in zip(layer.param_names, layer.params):
            arrays[f"layer{i}/{name}"] = p
    if model.optimizer is not None:
        for key, value in model.optimizer.state_arrays().items():
            arrays[f"optimizer/{key}"] = np.asarray(value)
    return _atomic_savez(path, arrays)


def read_file(path):
    """(record, arrays) from a model file, or ValueError naming what is wrong with it."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise ValueError(f"{path}: not a readable jitnn model file (corrupt or truncated): {e}") from None
    if "__architecture__" not in arrays:
        raise ValueError(f"{path}: no architecture record: not a jitnn model file")
    try:
        record = json.loads(arrays.pop("__architecture__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt architecture record: {e}") from None
    if record.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {record.get('format')!r}, expected {FORMAT!r}")
    return record, arrays


def check_weights(model, arrays, path):
    """The new parameter values for ``model`` from ``arrays``, validated; nothing is assigned."""
    new = []
    for i, layer in enumerate(model.layers):
        for name, p in zip(layer.param_names, layer.params):
            key = f"layer{i}/{name}"
            if key not in arrays:
                raise ValueError(f"{path}: missing {key} ({layer.describe()})")
            a = arrays[key]
            if a.shape != p.shape:
                raise ValueError(f"{path}: {key} has shape {a.shape}, the model expects {p.shape}")
            if a.dtype.kind != "f":
                raise ValueError(f"{path}: {key} has dtype {a.dtype}, expected a float array")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{path}: {key} contains NaN or inf")
            new.append((p, a))
    return new
