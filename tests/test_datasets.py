"""jitnn.datasets: IDX round trips and corruption, Fashion-MNIST (real and synthetic), digits, one_hot."""

import gzip
import os
import sys

import numpy as np
import pytest

from jitnn import datasets
from jitnn.datasets import IDX_DTYPES, load_dataset, load_digits, load_fashion_mnist, one_hot, read_idx

SHAPES = [(7,), (3, 5), (2, 3, 4)]


def idx_bytes(arr, code):
    """An IDX file's bytes for ``arr`` stored with type ``code``."""
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def sample_array(code, shape, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(IDX_DTYPES[code])
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


# --- read_idx -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("code", sorted(IDX_DTYPES), ids=lambda c: f"0x{c:02X}")
def test_read_idx_round_trip(tmp_path, code, shape, gz):
    arr = sample_array(code, shape)
    path = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(arr, code), gz)
    out = read_idx(path)
    assert out.shape == shape
    assert out.dtype == np.dtype(IDX_DTYPES[code]).newbyteorder("=")
    assert out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_read_idx_zero_length_dimension(tmp_path):
    arr = np.zeros((0, 4), dtype=np.uint8)
    assert read_idx(write(tmp_path / "empty.idx", idx_bytes(arr, 0x08))).shape == (0, 4)


def test_gzip_is_detected_by_magic_bytes_not_name(tmp_path):
    arr = sample_array(0x0C, (3, 4))
    gz_without_suffix = write(tmp_path / "data.idx", idx_bytes(arr, 0x0C), gz=True)
    plain_with_suffix = write(tmp_path / "data-unpacked.idx.gz", idx_bytes(arr, 0x0C), gz=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), arr)
    np.testing.assert_array_equal(read_idx(plain_with_suffix), arr)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_payload_raises(tmp_path, gz):
    data = idx_bytes(sample_array(0x0D, (4, 5)), 0x0D)
    path = write(tmp_path / "cut.idx", data[:-3], gz)
    with pytest.raises(ValueError, match=r"cut\.idx.*truncated.*80 data bytes, found 77"):
        read_idx(path)


def test_trailing_bytes_raise(tmp_path):
    path = write(tmp_path / "long.idx", idx_bytes(sample_array(0x08, (6,)), 0x08) + b"\0")
    with pytest.raises(ValueError, match=r"long\.idx.*trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_a_huge_declared_shape_is_reported_truthfully(tmp_path, gz):
    """Issue 14: (2**32-1)**3 float64 overflowed int64 and read "needs -8589934591 data bytes"."""
    dims = np.array([2**32 - 1] * 3, ">u4").tobytes()
    path = write(tmp_path / "huge.idx", bytes([0, 0, 0x0E, 3]) + dims + b"\0" * 16, gz)
    need = (2**32 - 1) ** 3 * 8
    with pytest.raises(ValueError, match=rf"huge\.idx: truncated: .* needs {need} data bytes, found 16$"):
        read_idx(path)


def test_a_gzip_bomb_is_inflated_no_further_than_declared(tmp_path):
    """A 10-byte payload declared, 256 MiB of zeros behind it: read stops after 11 bytes."""
    import gzip
    import tracemalloc

    path = tmp_path / "bomb.idx"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 0x08, 1]) + np.array([10], ">u4").tobytes())
        zeros = bytes(1 << 24)
        for _ in range(16):
            f.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_truncated_header_raises(tmp_path):
    data = idx_bytes(sample_array(0x08, (2, 3, 4)), 0x08)
    path = write(tmp_path / "head.idx", data[:10])  # magic + 1.5 of 3 dimension words
    with pytest.raises(ValueError, match=r"head\.idx.*truncated header"):
        read_idx(path)


@pytest.mark.parametrize("data", [b"", b"\0\0"], ids=["empty", "2-bytes"])
def test_too_short_for_magic_raises(tmp_path, data):
    with pytest.raises(ValueError, match=r"short\.idx.*not an IDX file"):
        read_idx(write(tmp_path / "short.idx", data))


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x07\x08\x01", b"PK\x03\x04"])
def test_wrong_magic_raises(tmp_path, magic):
    path = write(tmp_path / "magic.idx", magic + np.asarray([1], ">u4").tobytes() + b"\0")
    with pytest.raises(ValueError, match=r"magic\.idx.*magic number"):
        read_idx(path)


@pytest.mark.parametrize("code", [0x00, 0x0A, 0x0F, 0xFF])
def test_unknown_type_code_raises(tmp_path, code):
    path = write(tmp_path / "code.idx", bytes([0, 0, code, 1]) + np.asarray([1], ">u4").tobytes() + b"\0")
    with pytest.raises(ValueError, match=r"code\.idx.*type code"):
        read_idx(path)


def test_zero_dimensions_raises(tmp_path):
    with pytest.raises(ValueError, match="0 dimensions"):
        read_idx(write(tmp_path / "scalar.idx", bytes([0, 0, 0x08, 0]) + b"\x05"))


def test_corrupt_gzip_raises(tmp_path):
    packed = gzip.compress(idx_bytes(sample_array(0x08, (50, 50)), 0x08))
    path = tmp_path / "broken.idx.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"broken\.idx\.gz.*gzip"):
        read_idx(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")


# --- Fashion-MNIST on a synthetic directory --------------------------------------------------------------

def make_fashion_dir(directory, n_train=12, n_test=5, gz=True, seed=0):
    """The four Fashion-MNIST files with random content; test files un-gzipped when ``gz`` is False."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        zipped = gz or split == "train"
        suffix = ".gz" if zipped else ""
        write(directory / f"{split}-images-idx3-ubyte{suffix}", idx_bytes(x, 0x08), zipped)
        write(directory / f"{split}-labels-idx1-ubyte{suffix}", idx_bytes(y, 0x08), zipped)
        parts[split] = (x, y)
    return parts


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "mixed-plain"])
def test_fashion_mnist_synthetic(tmp_path, gz):
    parts = make_fashion_dir(tmp_path / "fm", gz=gz)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(tmp_path / "fm")
    assert x_train.shape == (12, 784) and x_test.shape == (5, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    np.testing.assert_allclose(x_train, parts["train"][0].reshape(12, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, parts["t10k"][1])


def test_fashion_mnist_options(tmp_path):
    parts = make_fashion_dir(tmp_path / "fm")
    (x, _), _ = load_fashion_mnist(tmp_path / "fm", dtype="uint8", flatten=False, normalize=False)
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.uint8  # channels-last images for Conv2D
    np.testing.assert_array_equal(x[..., 0], parts["train"][0])
    (x64, _), _ = load_fashion_mnist(tmp_path / "fm", dtype="float64")
    assert x64.dtype == np.float64 and x64.max() <= 1.0
    with pytest.raises(ValueError, match="floating dtype"):
        load_fashion_mnist(tmp_path / "fm", dtype="int32")


def test_fashion_mnist_env_var_overrides_default(tmp_path, monkeypatch):
    make_fashion_dir(tmp_path / "fm", n_train=3)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "fm"))
    (x_train, _), _ = load_fashion_mnist()
    assert x_train.shape == (3, 784)


def test_fashion_mnist_missing_dir_names_install_command(tmp_path, monkeypatch):
    missing = tmp_path / "not-here"
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(missing)
    assert str(missing) in str(info.value)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match="not-here"):
        load_fashion_mnist()


def test_fashion_mnist_one_missing_file_is_named(tmp_path):
    make_fashion_dir(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: t10k-labels-idx1-ubyte\[\.gz\]\)"):
        load_fashion_mnist(tmp_path / "fm")


def test_fashion_mnist_mismatched_counts_raise(tmp_path):
    make_fashion_dir(tmp_path / "fm")
    labels = np.zeros(11, dtype=np.uint8)  # 12 images
    write(tmp_path / "fm" / "train-labels-idx1-ubyte.gz", idx_bytes(labels, 0x08), gz=True)
    with pytest.raises(ValueError, match="do not pair up"):
        load_fashion_mnist(tmp_path / "fm")


# --- the real Fashion-MNIST (the Debian package) ---------------------------------------------------------

@pytest.fixture(scope="module")
def fashion():
    directory = os.environ.get(datasets.FASHION_MNIST_ENV) or datasets.FASHION_MNIST_DIR
    if not os.path.isdir(directory):
        pytest.skip(f"Fashion-MNIST not installed at {directory} ({datasets.FASHION_MNIST_INSTALL})")
    return load_fashion_mnist()


def test_real_fashion_mnist(fashion):
    (x_train, y_train), (x_test, y_test) = fashion
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert x_test.min() >= 0.0 and x_test.max() <= 1.0
    np.testing.assert_array_equal(np.unique(y_train), np.arange(10))
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1000))


# --- digits ---------------------------------------------------------------------------------------------

@pytest.fixture
def sklearn():
    return pytest.importorskip("sklearn", reason="load_digits needs scikit-learn")


def test_digits(sklearn):
    (x_train, y_train), (x_test, y_test) = load_digits()
    assert len(x_train) + len(x_test) == 1797 and abs(len(x_test) - 0.2 * 1797) <= 10
    assert x_train.shape[1] == 64 and x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # stratified: every class keeps its share of the test set, to within one sample
    everything = np.bincount(np.concatenate([y_train, y_test]))
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - 0.2 * everything) <= 1)
    # a partition of the original samples: nothing lost, nothing duplicated
    from sklearn.datasets import load_digits as sk_load

    original = np.column_stack([sk_load().data / 16.0, sk_load().target]).astype(np.float32)
    ours = np.column_stack([np.vstack([x_train, x_test]), np.concatenate([y_train, y_test])])
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(original, axis=0))
    assert len(ours) == len(original)


def test_digits_is_deterministic_per_seed(sklearn):
    (a, _), _ = load_digits(seed=3)
    (b, _), _ = load_digits(seed=3)
    (c, _), _ = load_digits(seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_digits_options(sklearn):
    (x_train, _), (x_test, _) = load_digits(dtype="float64", test_size=0.5)
    assert x_train.dtype == np.float64 and abs(len(x_test) - 898) <= 10
    with pytest.raises(ValueError, match="test_size"):
        load_digits(test_size=1.0)


def test_digits_without_sklearn_names_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import raise ImportError
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits()


# --- load_dataset ---------------------------------------------------------------------------------------

def test_load_dataset_named(tmp_path, monkeypatch, sklearn):
    name, (x_train, _), _ = load_dataset("digits")
    assert name == "digits" and x_train.shape[1] == 64
    make_fashion_dir(tmp_path / "fm", n_train=4)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "fm"))
    name, (x_train, _), _ = load_dataset("fashion_mnist", dtype="float64")
    assert name == "fashion_mnist" and x_train.shape == (4, 784) and x_train.dtype == np.float64


def test_load_dataset_auto_prefers_fashion_mnist(tmp_path, monkeypatch):
    make_fashion_dir(tmp_path / "fm", n_train=4)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "fm"))
    name, (x_train, _), _ = load_dataset("auto")
    assert name == "fashion_mnist" and x_train.shape == (4, 784)


def test_load_dataset_auto_falls_back_to_digits(tmp_path, monkeypatch, sklearn):
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "absent"))
    name, (x_train, _), _ = load_dataset("auto")
    assert name == "digits" and x_train.shape[1] == 64


def test_load_dataset_auto_does_not_hide_corrupt_data(tmp_path, monkeypatch):
    make_fashion_dir(tmp_path / "fm")
    (tmp_path / "fm" / "train-images-idx3-ubyte.gz").write_bytes(b"\0\0\x08\x03garbage")
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "fm"))
    with pytest.raises(ValueError, match="train-images"):
        load_dataset("auto")


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="received: name='mnist'"):
        load_dataset("mnist")


# --- one_hot --------------------------------------------------------------------------------------------

def test_one_hot_values():
    out = one_hot([2, 0, 1, 2])
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[2, 0, 1, 2]])
    assert out.dtype == np.float32


def test_one_hot_options():
    out = one_hot(np.array([[1, 0], [3, 1]], dtype=np.uint8), num_classes=5, dtype="float64")
    assert out.shape == (2, 2, 5) and out.dtype == np.float64
    np.testing.assert_array_equal(out.argmax(-1), [[1, 0], [3, 1]])
    np.testing.assert_array_equal(one_hot([1.0, 0.0]), [[0, 1], [1, 0]])  # integral floats are labels
    assert one_hot([], num_classes=4).shape == (0, 4)
    assert one_hot(np.array([], dtype=np.int64)).shape == (0, 0)


@pytest.mark.parametrize(
    "labels, num_classes, message",
    [
        ([0, 1.5, 2], None, "integer labels, received: 1.5"),
        ([0, np.nan], None, "integer labels, received: nan"),
        (["a", "b"], None, "integer labels"),
        ([True, False], None, "integer labels"),
        ([0, -2, 1], None, "labels >= 0, received: -2"),
        ([0, 3, 1], 3, "label 3 out of range for num_classes=3"),
        ([0, 1], 0, "num_classes=0"),
        ([0, 1], 2.5, "num_classes=2.5"),
    ],
)
def test_one_hot_errors(labels, num_classes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        one_hot(labels, num_classes)
