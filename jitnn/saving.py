"""Model files: plain arrays plus a JSON architecture record in one .npz, written atomically, no pickle.

Layout: ``__architecture__`` (the JSON as uint8 bytes), ``layer{i}/{param}`` for every parameter, and
``optimizer/{key}`` for the optimizer state (``iterations``, and ``{slot}/{index}`` once it has moments).
The record's ``config`` holds the model's ``get_config()`` and, for a compiled model, ``metrics``: the
metric names ``jitnn.metrics.get`` knows (optional when reading: older files have none).

Trust model (docs/reliability.md): a model file may be hostile. Nothing is ever unpickled. Reading goes
in an order that allocates nothing the file has not declared and the architecture does not need:
1. the zip directory; every member name must be one the format defines, stored or deflated;
2. the architecture record (at most ARCHITECTURE_MAX_BYTES), checked field by field;
3. every array's .npy header, against the shape the architecture implies, and its stored size against
   that shape (so a deflated member cannot inflate beyond it); members nobody uses are never read;
4. the arrays, cast to the model's dtype and checked finite *after* the cast (1e45 is inf in float32),
   optimizer second moments also >= 0;
5. only then a model is built and assigned. Any problem raises ``ModelFileError`` (a ``ValueError``)
   naming the file and what is wrong, and leaves an existing model unchanged.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import stat
import struct
import tempfile
import warnings
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from jitnn import losses as losses_mod
from jitnn import metrics as metrics_mod
from jitnn import optimizers as optimizers_mod
from jitnn.config import FLOAT_DTYPES
from jitnn.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    LeakyReLU,
    MaxPooling2D,
    Reshape,
)
from jitnn.layers.base import as_shape

FORMAT = "jitnn.sequential/1"
LAYER_TYPES = {cls.__name__: cls for cls in (
    Dense, Dropout, Activation, LeakyReLU, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
    Flatten, Reshape, BatchNormalization)}
ARCHITECTURE_MAX_BYTES = 4 << 20
MAX_METRICS = 64  # a record listing more is refused before any is looked up
# Second moments (running means or sums of g^2) are never negative: a negative one makes sqrt NaN.
NONNEGATIVE_SLOTS = ("v", "vmax", "ms", "accum")
_TMP_PREFIX = ".tmp-jitnn-"


# The config fields save writes for each layer class and their JSON types: a file may hold nothing else
# (a constructor's own checks are looser, e.g. Dense(use_bias="yes") is truthy).
_ACTIVATION = (str, dict, type(None))
_NAME = (str, type(None))
_SHAPE = (list, type(None))  # a declared input_shape; the constructor checks its entries
_POOL_FIELDS = {"pool_size": (list, int), "strides": (list, int, type(None)), "padding": (str,), "input_shape": _SHAPE,
                "name": _NAME}
_LAYER_FIELDS = {
    "Dense": {"units": (int,), "activation": _ACTIVATION, "input_dim": (int, type(None)), "use_bias": (bool,),
              "kernel_regularizer": (dict, float, int, type(None)), "name": (str, type(None))},
    "Dropout": {"rate": (float, int), "seed": (int, type(None)), "name": (str, type(None))},
    "Activation": {"activation": _ACTIVATION, "name": (str, type(None))},
    "LeakyReLU": {"negative_slope": (float, int), "name": (str, type(None))},
    "Conv2D": {"filters": (int,), "kernel_size": (list, int), "strides": (list, int), "padding": (str,),
               "dilation_rate": (list, int), "activation": _ACTIVATION, "use_bias": (bool,),
               "kernel_regularizer": (dict, float, int, type(None)), "input_shape": _SHAPE, "name": _NAME},
    "MaxPooling2D": _POOL_FIELDS,
    "AveragePooling2D": _POOL_FIELDS,
    "GlobalAveragePooling2D": {"input_shape": _SHAPE, "name": _NAME},
    "Flatten": {"input_shape": _SHAPE, "name": _NAME},
    "Reshape": {"target_shape": (list,), "input_shape": _SHAPE, "name": _NAME},
    "BatchNormalization": {"momentum": (float, int), "epsilon": (float, int), "center": (bool,), "scale": (bool,),
                           "input_shape": _SHAPE, "name": _NAME},
}


class ModelFileError(ValueError):
    """A model file is corrupt, truncated, hostile or does not match the model; nothing was changed."""


# --- writing ---------------------------------------------------------------------------------------

def _host_tag():
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"


def _pid_alive(pid):
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows: keep every temporary
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True


def _remove_stale_temporaries(folder, base):
    """Delete ``.tmp-jitnn-<base>-<host>-<pid>-*.npz`` left by a save of ours that was killed.

    Only this user's files from this host whose process is gone: a live save (ours or another
    process's, here or on another host sharing the folder) is never touched.
    """
    head = f"{_TMP_PREFIX}{base}-{_host_tag()}-"
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(".npz")):
            continue
        pid = name[len(head):].split("-", 1)[0]
        try:
            st = entry.stat(follow_symlinks=False)
            if (pid.isdigit() and not _pid_alive(int(pid)) and stat.S_ISREG(st.st_mode)
                    and st.st_uid == (os.getuid() if hasattr(os, "getuid") else st.st_uid)):
                os.unlink(entry.path)
        except OSError:
            pass


def _new_file_mode():
    """The mode ``open()`` would give a new file: 0666 less the umask (read without changing it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def _atomic_savez(path, arrays):
    """Write ``arrays`` to ``path`` so that readers see the old file or the new one, never a mix.

    A symlink is followed (its target is replaced, the link stays); a replaced file keeps its mode, a new
    one gets the usual 0666-less-umask; temporaries of killed earlier saves of this file are removed.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    target = os.path.realpath(path)
    folder, base = os.path.split(target)
    os.makedirs(folder, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = _new_file_mode()
    _remove_stale_temporaries(folder, base)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_TMP_PREFIX}{base}-{_host_tag()}-{os.getpid()}-",
                               suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)  # mkstemp made it 0600
            os.fsync(fh.fileno())
        os.replace(tmp, target)  # atomic on POSIX and Windows: readers see the old file or the new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return path


def _fsync_dir(folder):
    """Make the rename itself durable (POSIX); not possible, nor needed, on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def weights_of(layer):
    """(name, array) of every weight a file holds for ``layer``: its parameters, then its state (moving
    statistics), in ``weight_shapes`` order."""
    return [*zip(layer.param_names, layer.params), *zip(layer.state_names, layer.state)]


def save_model(model, path):
    """Write ``model`` (architecture, weights, optimizer state) to ``path`` atomically; returns the path."""
    config = model.get_config()
    if model.loss is not None:
        config["metrics"] = _metric_names(model)
    record = {"format": FORMAT, "config": config}
    arrays = {"__architecture__": np.frombuffer(json.dumps(record).encode(), np.uint8)}
    for i, layer in enumerate(model.layers):
        for name, p in weights_of(layer):
            arrays[f"layer{i}/{name}"] = p
    if model.optimizer is not None:
        for key, value in model.optimizer.state_arrays().items():
            arrays[f"optimizer/{key}"] = np.asarray(value)
    _refuse_unloadable(arrays)
    return _atomic_savez(path, arrays)


def _refuse_unloadable(arrays):
    """ValueError naming the first array ``load_model`` would refuse (NaN or inf, or a negative second
    moment or variance), so that ``save`` never writes a file that cannot be loaded back (a fit with
    ``nan_guard=False`` can leave such weights)."""
    for key, a in arrays.items():
        if a.dtype.kind != "f":
            continue
        if not np.all(np.isfinite(a)):
            raise ValueError(f"cannot save: {key} contains NaN or inf, and load_model refuses such a file "
                             "(the weights or optimizer state of a diverged fit; train again or set_weights)")
        group, _, rest = key.partition("/")
        nonnegative = key.endswith("/moving_variance") or (group == "optimizer" and rest.split("/")[0]
                                                            in NONNEGATIVE_SLOTS)
        if nonnegative and a.size and a.min() < 0:
            raise ValueError(f"cannot save: {key} has negative values, and load_model refuses a negative "
                             "second moment or variance")


def _metric_names(model):
    """The compiled metrics by the names ``metrics.get`` knows; a custom function cannot be saved (the
    file holds no code) and is left out with a warning."""
    names = []
    for given, fn in model.metrics:
        name = given if isinstance(given, str) else getattr(fn, "__name__", "")
        try:
            known = metrics_mod.get(name) is fn
        except ValueError:
            known = False
        if known:
            names.append(name)
        else:
            warnings.warn(f"metric {name or fn!r} is not a jitnn metric and is not saved: compile the loaded "
                          "model again with it", RuntimeWarning, stacklevel=4)
    return names


# --- reading: the zip and the .npy headers ---------------------------------------------------------

# What zipfile and numpy raise on a damaged member (a bad CRC is BadZipFile, bad deflate data zlib.error)
_READ_ERRORS = (ValueError, zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError,
                struct.error, OverflowError)


class _Archive:
    """The members of a model file, by name, read only on request and only up to their declared size."""

    def __init__(self, path):
        path = os.fspath(path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path += ".npz"
        if not os.path.exists(path):
            raise FileNotFoundError(f"no model file at {path!r}")
        self.path = path
        fh = open(path, "rb")  # noqa: SIM115 (closed with the ZipFile); a permission error stays an OSError
        try:
            self.zf = zipfile.ZipFile(fh)
            infos = self.zf.infolist()
        except _READ_ERRORS as e:
            fh.close()
            raise self.error(f"not a readable jitnn model file (corrupt or truncated): {e}") from None
        self._fh = fh
        self.members = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                self.close()
                raise self.error(f"unexpected member {name!r}: not part of the jitnn format")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
                self.close()
                raise self.error(f"member {name!r} is encrypted or uses compression method "
                                 f"{info.compress_type}; jitnn writes stored or deflated members only")
            if name[:-4] in self.members:
                self.close()
                raise self.error(f"member {name!r} appears twice")
            self.members[name[:-4]] = info

    def error(self, what):
        return ModelFileError(f"{self.path}: {what}")

    def close(self):
        self.zf.close()
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open(self, key):
        return self.zf.open(self.members[key])

    def header(self, key):
        """(shape, fortran_order, dtype, data_bytes) from the member's .npy header, data not read."""
        info = self.members[key]
        try:
            with self._open(key) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version in ((2, 0), (3, 0)):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                offset = fh.tell()
        except _READ_ERRORS + (SyntaxError, TypeError) as e:
            raise self.error(f"{key}: unreadable array header: {e}") from None
        if dtype.hasobject or dtype.kind not in "fiu" or dtype.subdtype is not None or dtype.names:
            raise self.error(f"{key} has dtype {dtype}; only plain numbers are read (no pickled objects)")
        count = 1
        for n in shape:
            count *= n
        data = count * dtype.itemsize
        if info.file_size != offset + data:
            raise self.error(f"{key} declares shape {shape} ({dtype}, {data} bytes) but stores "
                             f"{info.file_size - offset} bytes")
        return shape, fortran, dtype, data

    def read(self, key, shape, dtype, kinds="f"):
        """Member ``key`` as a new array of ``dtype``, after checking its header declares ``shape``."""
        got_shape, fortran, got_dtype, nbytes = self.header(key)
        if tuple(got_shape) != tuple(shape):
            raise self.error(f"{key} has shape {tuple(got_shape)}, the model expects {tuple(shape)}")
        if got_dtype.kind not in kinds:
            want = "a float" if kinds == "f" else "an integer"
            raise self.error(f"{key} has dtype {got_dtype}, expected {want} array")
        try:
            with self._open(key) as fh:
                fh.read(self.members[key].file_size - nbytes)  # the header, parsed above
                raw = fh.read(nbytes)
        except _READ_ERRORS as e:
            raise self.error(f"{key}: corrupt data: {e}") from None
        if len(raw) != nbytes:
            raise self.error(f"{key}: truncated ({len(raw)} of {nbytes} bytes)")
        a = np.frombuffer(raw, got_dtype).reshape(shape, order="F" if fortran else "C")
        with np.errstate(over="ignore", invalid="ignore"):
            return a.astype(dtype, order="C")  # a new, writeable, C-ordered copy (frombuffer is read-only)

    def record(self):
        """The architecture record as a dict whose ``format`` is ours."""
        key = "__architecture__"
        if key not in self.members:
            raise self.error("no architecture record: not a jitnn model file")
        shape, _, dtype, nbytes = self.header(key)
        if dtype != np.uint8 or len(shape) != 1 or nbytes > ARCHITECTURE_MAX_BYTES:
            raise self.error(f"the architecture record must be at most {ARCHITECTURE_MAX_BYTES} bytes of "
                             f"uint8, received: shape={shape}, dtype={dtype}")
        raw = self.read(key, shape, np.uint8, kinds="u")
        try:
            record = json.loads(raw.tobytes().decode())
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise self.error(f"corrupt architecture record: {str(e)[:200]}") from None
        if not isinstance(record, dict):
            raise self.error(f"the architecture record must be a JSON object, received: {type(record).__name__}")
        if record.get("format") != FORMAT:
            raise self.error(f"unknown format {str(record.get('format'))[:80]!r}, expected {FORMAT!r}")
        return record


# --- reading: the architecture ---------------------------------------------------------------------

def _field(where, cfg, key, types, path_error, optional=False):
    if not isinstance(cfg, dict):
        raise path_error(f"{where} must be a JSON object, received: {type(cfg).__name__}")
    if key not in cfg:
        if optional:
            return None
        raise path_error(f"{where} has no {key!r}")
    value = cfg[key]
    if optional and value is None:
        return None
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise path_error(f"{where}.{key} has the wrong type: {type(value).__name__} {str(value)[:80]!r}")
    return value


def _input_shape(cfg, error):
    """The model's per-sample input shape: ``input_shape`` when the record has it (files from before it
    existed hold ``input_dim`` only), which must agree with ``input_dim``."""
    input_dim = _field("config", cfg, "input_dim", (int,), error)
    if input_dim < 1:
        raise error(f"config.input_dim must be a positive int, received: {input_dim}")
    shape = _field("config", cfg, "input_shape", (list,), error, optional=True)
    if shape is None:
        return (input_dim,)
    try:
        shape = as_shape(shape)
    except ValueError as e:
        raise error(f"config.input_shape: {str(e)[:200]}") from None
    if math.prod(shape) != input_dim:
        raise error(f"config.input_shape {shape} does not hold input_dim={input_dim} features")
    return shape


def _build_layers(cfg, error):
    """The layers (constructed, not built), each one's weight shapes ``[(name, shape, trainable)]`` for the
    shape it receives (``Layer.weight_shapes``, which ``build`` uses too), and the input shape."""
    input_shape = _input_shape(cfg, error)
    dtype = _field("config", cfg, "dtype", (str,), error)
    if dtype not in FLOAT_DTYPES:
        raise error(f"config.dtype must be {' or '.join(map(repr, FLOAT_DTYPES))}, received: {dtype[:40]!r}")
    _field("config", cfg, "name", (str,), error, optional=True)
    specs = _field("config", cfg, "layers", (list,), error)
    if not specs:
        raise error("config.layers is empty")
    layers, shapes, shape = [], [], input_shape
    for i, spec in enumerate(specs):
        where = f"config.layers[{i}]"
        cls_name = _field(where, spec, "class", (str,), error)
        if cls_name not in LAYER_TYPES:
            raise error(f"{where}.class is {cls_name[:40]!r}; known: {sorted(LAYER_TYPES)}")
        c = dict(_field(where, spec, "config", (dict,), error))
        fields = _LAYER_FIELDS[cls_name]
        for key in c:
            if key not in fields:
                raise error(f"{where}.config has an unknown field {str(key)[:40]!r}")
            _field(f"{where}.config", c, key, fields[key], error)
        if cls_name == "Dense":
            declared = c.pop("input_dim", None)
            if declared is not None and (declared,) != shape:
                raise error(f"{where} declares input_dim={str(declared)[:40]}, but receives {shape}")
        try:
            layer = LAYER_TYPES[cls_name](**c)
            if layer.declared_input_shape not in (None, shape):
                raise ValueError(f"it declares input_shape={layer.declared_input_shape}, but receives {shape}")
            shapes.append(layer.weight_shapes(shape))
            shape = layer.compute_output_shape(shape)
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError, OverflowError) as e:
            raise error(f"{where}: invalid {cls_name} config: {str(e)[:200]}") from None
        if cls_name == "BatchNormalization":  # checked in the dtype the kernels use: 1e39 is inf in float32
            with np.errstate(over="ignore", under="ignore"):
                eps = float(np.dtype(dtype).type(layer.epsilon))
            if not (math.isfinite(eps) and eps > 0):
                raise error(f"{where}.config.epsilon={layer.epsilon!r} is {eps!r} in {dtype}: it must be a positive "
                            f"finite {dtype}")
        layers.append(layer)
    return layers, shapes, np.dtype(dtype), input_shape


def _optimizer(cfg, error):
    """(loss, optimizer) from the record, constructed, or (None, None) for an uncompiled model."""
    loss_cfg = _field("config", cfg, "loss", (dict,), error, optional=True)
    opt_cfg = _field("config", cfg, "optimizer", (dict,), error, optional=True)
    if loss_cfg is None and opt_cfg is None:
        return None, None
    if loss_cfg is None or opt_cfg is None:
        raise error("config has a loss without an optimizer or an optimizer without a loss (compile sets both)")
    try:
        loss = losses_mod.get(loss_cfg)
        opt = optimizers_mod.get(opt_cfg)
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError, OverflowError,
            NotImplementedError) as e:
        raise error(f"config.loss/optimizer: {str(e)[:200]}") from None
    return loss, opt


def _metrics(cfg, error, compiled):
    """The metric names of the record (optional: files written before metrics were saved have none)."""
    names = _field("config", cfg, "metrics", (list,), error, optional=True)
    if names is None:
        return []
    if not compiled and names:
        raise error("config has metrics but no loss (compile sets both)")
    if len(names) > MAX_METRICS:
        raise error(f"config.metrics lists {len(names)} metrics, at most {MAX_METRICS} are read")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise error(f"config.metrics[{i}] has the wrong type: {type(name).__name__} {str(name)[:80]!r}")
        try:
            metrics_mod.get(name)
        except ValueError:
            raise error(f"config.metrics[{i}] is {name[:40]!r}, not a jitnn metric") from None
    return names


def _read_params(archive, shapes, dtype):
    """{key: array} for every parameter the architecture declares, cast to ``dtype``, finite."""
    return {key: _finite(archive, key, archive.read(key, shape, dtype), key.endswith("/moving_variance"))
            for key, shape in shapes.items()}


def _finite(archive, key, a, nonnegative=False):
    if not np.all(np.isfinite(a)):
        raise archive.error(f"{key} contains NaN or inf (in {a.dtype}; a float64 file value beyond "
                            "float32's range becomes inf)")
    if nonnegative and a.size and a.min() < 0:
        raise archive.error(f"{key} has negative values: a second moment or variance cannot be negative")
    return a


def _param_keys(shapes, trainable=None):
    """{member: shape} of every weight (or only the trainable ones, or only the state) in file order."""
    return {f"layer{i}/{name}": shape for i, layer in enumerate(shapes) for name, shape, train in layer
            if trainable is None or train == trainable}


def _check_members(archive, expected):
    """No member the format does not define for this architecture (such members are never read)."""
    extra = sorted(set(archive.members) - set(expected) - {"__architecture__"})
    if extra:
        raise archive.error(f"unexpected members {extra[:5]}{' ...' if len(extra) > 5 else ''}: "
                            "not part of this architecture")
    missing = sorted(k for k in expected if not k.startswith("optimizer/") and k not in archive.members)
    if missing:
        raise archive.error(f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))


def _read_optimizer_state(archive, opt, param_shapes, dtype):
    """The optimizer's state arrays from the file, validated: {} (none saved), only ``iterations``
    (an optimizer that never stepped: it builds on its first step), or every slot of every array."""
    keys = [k for k in archive.members if k.startswith("optimizer/")]
    if not keys:
        return {}
    if "optimizer/iterations" not in archive.members:
        raise archive.error("optimizer state without optimizer/iterations")
    it = archive.read("optimizer/iterations", (), np.int64, kinds="iu")
    if int(it) < 0:
        raise archive.error(f"optimizer/iterations must be >= 0, received: {int(it)}")
    state = {"iterations": it}
    if len(keys) == 1:
        return state
    for s in opt.slots:
        for i, shape in enumerate(param_shapes):
            key = f"optimizer/{s}/{i}"
            if key not in archive.members:
                raise archive.error(f"missing {key} ({type(opt).__name__} state for parameter array {i})")
            state[f"{s}/{i}"] = _finite(archive, key, archive.read(key, shape, dtype), s in NONNEGATIVE_SLOTS)
    return state


def _optimizer_keys(opt, n_params):
    if opt is None:
        return set()
    return {"optimizer/iterations"} | {f"optimizer/{s}/{i}" for s in opt.slots for i in range(n_params)}


class _Plan:
    """What a file declares, validated before any array is read: the record, layers, loss, optimizer,
    and the shape of every parameter; members outside the plan are refused unread."""

    def __init__(self, archive):
        record = archive.record()
        self.cfg = _field("record", record, "config", (dict,), archive.error)
        self.layers, shapes, self.dtype, self.input_shape = _build_layers(self.cfg, archive.error)
        self.loss, self.optimizer = _optimizer(self.cfg, archive.error)
        self.metrics = _metrics(self.cfg, archive.error, self.loss is not None)
        self.params = _param_keys(shapes)  # every weight the file holds, state included
        self.trainable = _param_keys(shapes, trainable=True)  # the ones the optimizer state follows
        _check_members(archive, set(self.params) | _optimizer_keys(self.optimizer, len(self.trainable)))


class ModelFile(NamedTuple):
    """What ``read_model_file`` found in a file, every part validated (steps 1-4 of the module
    docstring); jitnn.loading builds the model from it (step 5)."""

    name: str | None
    layers: list  # constructed, not built
    dtype: np.dtype
    input_shape: tuple
    loss: object  # None for a file saved uncompiled
    optimizer: object
    metrics: list
    values: dict  # "layer{i}/{param}" -> array of ``dtype``
    optimizer_state: dict  # what ``Optimizer.load_state_arrays`` takes; {} when there is none


def read_model_file(path) -> ModelFile:
    """Read and validate a file written by ``save``; ModelFileError if it is corrupt, hostile or
    inconsistent (see the module docstring). Builds no model: ``jitnn.load_model`` does (jitnn/loading.py)."""
    with _Archive(path) as archive:
        plan = _Plan(archive)
        values = _read_params(archive, plan.params, plan.dtype)
        state = {} if plan.optimizer is None else \
            _read_optimizer_state(archive, plan.optimizer, list(plan.trainable.values()), plan.dtype)
    return ModelFile(plan.cfg.get("name"), plan.layers, plan.dtype, plan.input_shape, plan.loss, plan.optimizer,
                     plan.metrics, values, state)


def assign_weights(model, values):
    """Write ``values`` ("layer{i}/{param}" -> array, shapes already checked) into a built ``model``."""
    for i, layer in enumerate(model.layers):
        for name, p in weights_of(layer):
            p[...] = values[f"layer{i}/{name}"]
    model.weights_changed()


def restore_optimizer(model, state):
    """Give a compiled ``model``'s optimizer the ``optimizer_state`` of a ModelFile."""
    if not state:
        return
    opt = model.optimizer
    if len(state) == 1:
        opt.iterations = int(state["iterations"])
        return
    opt.build([p for layer in model.layers for p in layer.params])
    opt.load_state_arrays(state)


def load_weights(model, path):
    """Assign the parameters saved in ``path`` to ``model`` (same parameter shapes); all or nothing.
    The file is validated as load_model validates it (optimizer state included, though not used)."""
    shapes = {f"layer{i}/{name}": p.shape for i, layer in enumerate(model.layers) for name, p in weights_of(layer)}
    with _Archive(path) as archive:
        plan = _Plan(archive)
        for key, shape in shapes.items():
            if key not in plan.params:
                raise archive.error(f"missing {key}: the file's architecture has {len(plan.params)} "
                                    f"parameter arrays, this model has {len(shapes)}")
            if tuple(plan.params[key]) != tuple(shape):
                raise archive.error(f"{key} has shape {tuple(plan.params[key])}, the model expects {tuple(shape)}")
        if len(plan.params) != len(shapes):
            raise archive.error(f"the file has {len(plan.params)} parameter arrays, this model {len(shapes)}")
        values = _read_params(archive, shapes, model.dtype)
        if plan.optimizer is not None:  # read only to refuse a damaged file whichever way it is loaded
            _read_optimizer_state(archive, plan.optimizer, list(plan.trainable.values()), plan.dtype)
    assign_weights(model, values)
