"""Datasets: an IDX reader, Fashion-MNIST from the Debian package, scikit-learn's 8x8 digits, one-hot.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` with ``x`` float in [0, 1] (rows are
samples) and ``y`` int64 class labels. No kernels here: loading happens once, outside the hot path.
"""

from __future__ import annotations

import gzip
import math
import os
import types
import zlib

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import config

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "JITNN_FASHION_MNIST"
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


_CHUNK = 1 << 20


def _open_idx(path: str):
    """The file as a binary stream, gunzipped when it starts with the gzip magic bytes (whatever its name)."""
    f = open(path, "rb")  # noqa: SIM115 (returned to the caller, who closes it)
    magic = f.read(2)
    f.seek(0)
    return (gzip.GzipFile(fileobj=f, mode="rb"), f) if magic == _GZIP_MAGIC else (f, f)


def _read_up_to(stream, path: str, limit: int) -> bytes:
    """At most ``limit`` bytes, read in chunks: memory follows the data present, not a declared size
    (a header may declare exabytes; a gzip stream may inflate without end)."""
    parts, have = [], 0
    try:
        while have < limit:
            chunk = stream.read(min(_CHUNK, limit - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from None
    return b"".join(parts)


# ((x_train, y_train), (x_test, y_test)), as the loaders return them
TrainTest = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a native-endian numpy array of its declared shape.

    Memory follows the bytes present: a header declaring more than the file holds is reported as
    truncated after reading what is there, and a gzip stream is inflated no further than declared."""
    path = os.fspath(path)
    stream, raw = _open_idx(path)
    try:
        head = _read_up_to(stream, path, 4)
        if len(head) < 4:
            raise ValueError(f"{path}: not an IDX file: {len(head)} bytes, shorter than the 4-byte magic number")
        if head[0] != 0 or head[1] != 0:
            raise ValueError(f"{path}: not an IDX file: magic number {head[:4].hex()} does not start with 0000")
        code, ndim = head[2], head[3]
        if code not in IDX_DTYPES:
            known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
            raise ValueError(f"{path}: unknown IDX type code 0x{code:02X} (expected one of {known})")
        if ndim == 0:
            raise ValueError(f"{path}: IDX header declares 0 dimensions")
        dims = _read_up_to(stream, path, 4 * ndim)
        if len(dims) < 4 * ndim:
            raise ValueError(f"{path}: truncated header: {ndim} dimensions need {4 + 4 * ndim} bytes, "
                             f"file has {4 + len(dims)}")
        shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
        dtype = np.dtype(IDX_DTYPES[code])
        expected = math.prod(shape) * dtype.itemsize  # Python ints: (2**32-1)**3 must not wrap negative
        data = _read_up_to(stream, path, expected + 1)
    finally:
        stream.close()
        raw.close()
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        found = len(data) if len(data) < expected else "more"
        raise ValueError(f"{path}: {what}: shape {shape} of {dtype.name} needs {expected} data bytes, "
                         f"found {found}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _fashion_dir(path) -> str:
    """The directory to read Fashion-MNIST from: the argument, then $JITNN_FASHION_MNIST, then Debian's."""
    if path is not None:
        return os.fspath(path)
    return config.fashion_mnist_dir_setting() or FASHION_MNIST_DIR


def _find_fashion_files(directory: str) -> dict[str, str]:
    """Map each Fashion-MNIST part to its file (``.gz`` preferred); FileNotFoundError if any is missing."""
    found, missing = {}, []
    for part, stem in _FASHION_FILES.items():
        for name in (stem + ".gz", stem):
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate):
                found[part] = candidate
                break
        else:
            missing.append(stem + "[.gz]")
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {directory!r} (missing: {', '.join(missing)}). "
            f"Install it with `{FASHION_MNIST_INSTALL}`, or point ${FASHION_MNIST_ENV} (or path=) at a "
            "directory holding the four IDX files."
        )
    return found


def _images(x: np.ndarray, dtype, flatten: bool, normalize: bool) -> np.ndarray:
    """uint8 images -> ``dtype``, scaled to [0, 1] when ``normalize``; one row per image when ``flatten``,
    else channels-last (n, rows, cols, 1), the layout Conv2D takes (a view: no copy)."""
    dtype = np.dtype(dtype)
    if normalize and not np.issubdtype(dtype, np.floating):
        raise ValueError(f"normalize=True needs a floating dtype, received: dtype={dtype.name!r}")
    out = x.astype(dtype)
    if normalize:
        out /= dtype.type(255)
    return out.reshape(len(out), -1) if flatten else out[..., None]


def load_fashion_mnist(path: str | os.PathLike | None = None, dtype: DTypeLike = "float32",
                       flatten: bool = True, normalize: bool = True) -> TrainTest:
    """Fashion-MNIST (60000 train / 10000 test 28x28 images, 10 classes) from the IDX files on disk.

    Images come as rows of 784 features, or with ``flatten=False`` as (n, 28, 28, 1) for Conv2D."""
    files = _find_fashion_files(_fashion_dir(path))
    parts = {part: read_idx(file) for part, file in files.items()}
    splits = []
    for split in ("train", "test"):
        x, y = parts["x_" + split], parts["y_" + split]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{files['x_' + split]} / {files['y_' + split]}: images {x.shape} and labels {y.shape} "
                "do not pair up (expected (n, rows, cols) and (n,))"
            )
        splits.append((_images(x, dtype, flatten, normalize), y.astype(np.int64)))
    return splits[0], splits[1]


def fashion_mnist_load_data(path: str | os.PathLike | None = None) -> TrainTest:
    """Keras' ``fashion_mnist.load_data()``: ``((x_train, y_train), (x_test, y_test))`` as stored, uint8
    images of shape (N, 28, 28) and their labels, for scripts that scale and reshape them themselves."""
    (x, y), (xt, yt) = load_fashion_mnist(path, dtype="uint8", flatten=False, normalize=False)
    return (x[..., 0], y), (xt[..., 0], yt)  # Keras' (N, 28, 28): no channel axis


fashion_mnist = types.SimpleNamespace(load_data=fashion_mnist_load_data)  # keras.datasets.fashion_mnist


def _stratified_split(y: np.ndarray, test_size: float, rng: np.random.Generator):
    """Train and test indices holding each class in proportion, both in shuffled order."""
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = round(test_size * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_digits(dtype: DTypeLike = "float32", test_size: float = 0.2, seed: int | None = 0) -> TrainTest:
    """scikit-learn's bundled 8x8 digits (1797 samples, 10 classes), x/16, split stratified by ``seed``."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), received: test_size={test_size!r}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn: `pip install scikit-learn`") from None
    bunch = _sk_load_digits()
    x = (bunch.data / 16.0).astype(dtype)
    y = bunch.target.astype(np.int64)
    train, test = _stratified_split(y, test_size, np.random.default_rng(seed))
    return (x[train], y[train]), (x[test], y[test])


def load_dataset(name: str = "auto", dtype: DTypeLike = "float32",
                 ) -> tuple[str, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(name, (x_train, y_train), (x_test, y_test))`` for "fashion_mnist", "digits" or "auto".

    "auto" takes Fashion-MNIST when its files are installed and falls back to digits otherwise (a corrupt
    Fashion-MNIST install still raises: falling back would hide it).
    """
    if name == "fashion_mnist":
        return (name, *load_fashion_mnist(dtype=dtype))
    if name == "digits":
        return (name, *load_digits(dtype=dtype))
    if name == "auto":
        try:
            return ("fashion_mnist", *load_fashion_mnist(dtype=dtype))
        except FileNotFoundError:
            return ("digits", *load_digits(dtype=dtype))
    raise ValueError(
        f"unknown dataset; expected 'fashion_mnist', 'digits' or 'auto', received: name={name!r}"
    )


def one_hot(y: ArrayLike, num_classes: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """Integer labels of shape ``s`` -> one-hot array of shape ``s + (num_classes,)``."""
    y = np.asarray(y)
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"one_hot needs integer labels, received dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise ValueError(f"one_hot needs integer labels, received: {y[bad].flat[0].item()!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, received: num_classes={num_classes!r}")
    if y.size and y.min() < 0:
        raise ValueError(f"one_hot needs labels >= 0, received: {y.min().item()!r}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    elif y.size and y.max() >= num_classes:
        raise ValueError(f"label {y.max().item()!r} out of range for num_classes={num_classes}")
    out = np.zeros(y.shape + (int(num_classes),), dtype=dtype)
    np.put_along_axis(out, y.astype(np.intp)[..., None], 1, axis=-1)
    return out
