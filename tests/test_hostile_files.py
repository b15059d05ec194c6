"""Hostile model files against load_model and load_weights (issue 14, defect 5; docs/reliability.md).

Every case must end in one of two ways: ``ModelFileError`` (a ``ValueError``) naming the problem, with
an existing model left unchanged, or (only for byte flips that touch nothing the format reads, such as
a zip timestamp) a model identical to the original. Nothing may be unpickled, and no case may allocate
more than the arrays the architecture declares (peak measured with tracemalloc, which sees numpy's
allocations). ~600 cases; a few seconds.
"""

import io
import json
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

from jitnn import ModelFileError, Sequential, load_model, optimizers
from jitnn.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D

FEATURES, HIDDEN, CLASSES = 6, 16, 3
# every array of the model in float64, twice (file copy and model copy), plus the model's gradients,
# optimizer moments, and 1 MiB for zip/JSON bookkeeping: far below what any hostile declaration asked
PARAMS = FEATURES * HIDDEN + HIDDEN + HIDDEN * CLASSES + CLASSES
PEAK_LIMIT = 8 * 8 * PARAMS + (1 << 20)


def make_model(seed=0):
    model = Sequential([Dense(HIDDEN, activation="relu", input_dim=FEATURES), Dropout(0.1),
                        Dense(CLASSES, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizers.Adam(0.01))
    model.build(FEATURES, seed=seed)
    return model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(path, bytes, {member: array}, record) of a trained model's file (Adam moments included)."""
    model = make_model()
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, FEATURES)), rng.integers(0, CLASSES, 8), epochs=1, batch_size=8, verbose=0)
    path = model.save(tmp_path_factory.mktemp("good") / "good.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    record = json.loads(arrays["__architecture__"].tobytes())
    return path, open(path, "rb").read(), arrays, record


@pytest.fixture(scope="module")
def victim():
    """A model that failed loads must leave exactly as it was."""
    model = make_model(seed=7)
    return model, model.get_weights()


def attempt(path, victim_model, before, outcomes, reference=None):
    """load_model and load_weights on ``path``: a ModelFileError (and ``victim_model`` unchanged), or
    an intact load equal to ``reference``; the peak of traced memory stays under PEAK_LIMIT."""
    for loader in ("load_model", "load_weights"):
        tracemalloc.start()
        try:
            if loader == "load_model":
                loaded = load_model(path)
            else:
                victim_model.load_weights(path)
                loaded = victim_model
        except ModelFileError as e:
            assert str(path) in str(e)
            outcomes["clear error"] += 1
        else:
            assert reference is not None, f"{loader} accepted a hostile file {path}"
            for a, b in zip(loaded.get_weights(), reference, strict=True):
                np.testing.assert_array_equal(a, b)
            outcomes["loaded intact"] += 1
            if loader == "load_weights":
                victim_model.set_weights(before)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < PEAK_LIMIT, f"{loader}({path}) peaked at {peak} traced bytes"
        for a, b in zip(victim_model.get_weights(), before, strict=True):
            np.testing.assert_array_equal(a, b)


def write(path, arrays, compression=zipfile.ZIP_STORED):
    """An .npz of ``arrays`` (name -> array or raw bytes of a member), as np.savez would write it."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, value in arrays.items():
            if isinstance(value, bytes):
                zf.writestr(name if name.endswith(".npy") else name + ".npy", value)
                continue
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=True)
            zf.writestr(name + ".npy", buf.getvalue())
    return path


def with_record(arrays, record):
    raw = record if isinstance(record, bytes) else json.dumps(record).encode()
    return dict(arrays, __architecture__=np.frombuffer(raw, np.uint8))


@pytest.fixture
def outcomes():
    return {"clear error": 0, "loaded intact": 0}


def test_seeded_byte_flips(good, victim, tmp_path, outcomes):
    path, data, _, _ = good
    model, before = victim
    reference = load_model(path).get_weights()
    rng = np.random.default_rng(2024)
    for case in range(200):
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), size=rng.integers(1, 9)):
            flipped[pos] ^= int(rng.integers(1, 256))
        bad = tmp_path / f"flip{case}.npz"
        bad.write_bytes(bytes(flipped))
        attempt(bad, model, before, outcomes, reference)
    assert outcomes["clear error"] > 300  # nearly every flip lands in a CRC-checked or parsed byte


def test_truncations(good, victim, tmp_path, outcomes):
    _, data, _, _ = good
    model, before = victim
    cuts = sorted(set(np.linspace(0, len(data) - 1, 120).astype(int)) | set(range(len(data) - 30, len(data))))
    for cut in cuts:
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        attempt(bad, model, before, outcomes)
    assert outcomes["loaded intact"] == 0


def _record_mutations(record):
    """(name, record) pairs: every field of the architecture record made wrong in type or value."""
    def edit(fn):
        r = json.loads(json.dumps(record))
        fn(r)
        return r

    cfg_values = {"input_dim": ["6", 6.5, True, 0, -1, None, [6], 10**30],
                  "dtype": ["float16", "object", 32, None, "O"],
                  "layers": [None, {}, [], "Dense", [None], [[]], [{"class": "Dense"}]],
                  "name": [5, ["x"]],
                  "loss": ["mse", 5, {"name": "nope"}, {"name": "mse", "bogus": 1}, {}],
                  "optimizer": ["adam", 7, {"name": "nope"}, {"name": "adam", "beta_1": "x"},
                               {"name": "adam", "learning_rate": {"class": "LearningRateSchedule", "config": {}}},
                               {"name": "adam", "learning_rate": {"class": "CosineDecay", "config": []}},
                               {"name": "adam", "learning_rate": -1.0}, {"name": "adam", "nesterov": True}],
                  "metrics": ["accuracy", {"name": "accuracy"}, [5], ["nope"], [None], [["acc"]], ["x" * 10**5],
                              ["acc"] * 65]}
    for key, values in cfg_values.items():
        for v in values:
            yield f"config.{key}={v!r}", edit(lambda r, k=key, v=v: r["config"].__setitem__(k, v))
        if key not in ("name", "metrics"):  # the optional fields
            yield f"config without {key}", edit(lambda r, k=key: r["config"].pop(k))
    layer_values = {"units": [0, -3, "16", 16.0, True, None, 30000, 2**40],
                    "activation": ["nope", 3, {"name": 3}, ["relu"], {"name": "leaky_relu", "alpha": "x"}],
                    "use_bias": ["yes"], "kernel_regularizer": ["x", {"l1": -1}, [1]],
                    "input_dim": [7, "6"], "bogus": [1]}
    for key, values in layer_values.items():
        for v in values:
            yield f"layers[0].{key}={v!r}", edit(
                lambda r, k=key, v=v: r["config"]["layers"][0]["config"].__setitem__(k, v))
    for v in [None, "Dense", 5, [], {"class": "Dense"}, {"class": "Conv2D", "config": {}},
              {"class": "__class__", "config": {}}, {"class": "Dropout", "config": {"rate": 2}},
              {"class": "Dropout", "config": {"rate": "0.1"}}, {"class": "Activation", "config": []}]:
        yield f"layers[1]={v!r}", edit(lambda r, v=v: r["config"]["layers"].__setitem__(1, v))
    yield "layers[0].config=None", edit(lambda r: r["config"]["layers"][0].__setitem__("config", None))
    yield "extra layer", edit(lambda r: r["config"]["layers"].append(r["config"]["layers"][0]))
    yield "format", edit(lambda r: r.__setitem__("format", "jitnn.sequential/2"))
    yield "no config", edit(lambda r: r.pop("config"))
    yield "config list", edit(lambda r: r.__setitem__("config", []))
    for raw in [b"[]", b"null", b"5", b'"x"', b"{", b"\xff\xfe", b"[" * 100000 + b"]" * 100000,
                b'{"format": "jitnn.sequential/1", "config": ' + b"[" * 50000 + b"]" * 50000 + b"}",
                b'{"format": 1' + b"1" * 10000 + b"}", b"NaN", b""]:
        yield f"raw {raw[:12]!r}", raw


def test_hostile_architecture_records(good, victim, tmp_path, outcomes):
    _, _, arrays, record = good
    model, before = victim
    cases = list(_record_mutations(record))
    for i, (name, mutated) in enumerate(cases):
        bad = write(tmp_path / f"record{i}.npz", with_record(arrays, mutated))
        try:
            attempt(bad, model, before, outcomes)
        except AssertionError as e:
            raise AssertionError(f"case {name}: {e}") from None
    assert outcomes["clear error"] == 2 * len(cases) and len(cases) > 80


def _hostile_members(arrays, record):
    """(name, {member: value}, compression) of files whose records are fine but whose arrays are not."""
    k0 = arrays["layer0/kernel"]
    big = json.loads(json.dumps(record))
    big["config"]["layers"][0]["config"]["units"] = 30000
    big["config"]["input_dim"] = 30000
    yield "30000x30000 Dense declared, small arrays", with_record(arrays, big), zipfile.ZIP_STORED
    yield "unused deflated member of 64 MiB", dict(arrays, junk=np.zeros(1 << 23)), zipfile.ZIP_DEFLATED
    yield "unused member, path-like name", dict(arrays, **{"../../evil": np.zeros(3)}), zipfile.ZIP_STORED
    yield "member not .npy", dict(arrays, **{"readme.txt": b"hello"}), zipfile.ZIP_STORED
    big_k0 = dict(arrays, **{"layer0/kernel": np.zeros((FEATURES, 30000), np.float32)})
    yield "kernel larger than declared, deflated", big_k0, zipfile.ZIP_DEFLATED
    for dtype in ["float16", "float64", ">f4", "longdouble"]:  # accepted kinds, cast to float32: fine
        yield f"kernel as {dtype} (loads)", dict(arrays, **{"layer0/kernel": k0.astype(dtype)}), None
    yield "kernel 1e45 in float64", dict(arrays, **{"layer0/kernel": np.full(k0.shape, 1e45)}), zipfile.ZIP_STORED
    yield "kernel NaN", dict(arrays, **{"layer0/kernel": np.full(k0.shape, np.nan, np.float32)}), zipfile.ZIP_STORED
    yield "kernel -inf", dict(arrays, **{"layer0/kernel": np.full(k0.shape, -np.inf, np.float32)}), zipfile.ZIP_STORED
    for dtype in ["int32", "complex64", "bool", "U3", "S4", "datetime64[s]", [("a", "f4"), ("b", "f4")]]:
        yield f"kernel as {dtype}", dict(arrays, **{"layer0/kernel": np.zeros(k0.shape, dtype)}), zipfile.ZIP_STORED
    yield "kernel transposed", dict(arrays, **{"layer0/kernel": k0.T.copy()}), zipfile.ZIP_STORED
    yield "kernel 0-d", dict(arrays, **{"layer0/kernel": np.float32(1)}), zipfile.ZIP_STORED
    yield "kernel missing", {k: v for k, v in arrays.items() if k != "layer0/kernel"}, zipfile.ZIP_STORED
    for key in [k for k in arrays if k.startswith("optimizer/") and k != "optimizer/iterations"][:4]:
        slot = key.split("/")[1]
        yield f"{key} NaN", dict(arrays, **{key: np.full_like(arrays[key], np.nan)}), zipfile.ZIP_STORED
        yield f"{key} missing", {k: v for k, v in arrays.items() if k != key}, zipfile.ZIP_STORED
        if slot == "v":
            yield f"{key} negative", dict(arrays, **{key: -np.ones_like(arrays[key])}), zipfile.ZIP_STORED
    for it in [np.int64(-1), np.float64(3.0), np.array([1, 2]), np.uint64(2**64 - 1), b"\x93NUMPY"]:
        yield f"iterations={it!r}", dict(arrays, **{"optimizer/iterations": it}), zipfile.ZIP_STORED
    yield "optimizer state without iterations", {k: v for k, v in arrays.items()
                                                 if k != "optimizer/iterations"}, zipfile.ZIP_STORED
    yield "optimizer slot of another optimizer", dict(arrays, **{"optimizer/velocity/0": k0}), zipfile.ZIP_STORED
    obj = np.array([{"x": 1}, None], dtype=object)
    yield "object array (pickle)", dict(arrays, **{"layer0/kernel": obj}), zipfile.ZIP_STORED
    header = io.BytesIO()
    np.lib.format.write_array(header, k0)
    raw = header.getvalue()
    lying = raw.replace(b"(6, 16)", b"(6, 1600000)")
    yield "npy header lies about shape", dict(arrays, **{"layer0/kernel": lying}), 0
    yield "npy header garbage", dict(arrays, **{"layer0/kernel": raw[:10] + b"{'descr': __import__('os')}"}), 0
    yield "npy bad magic", dict(arrays, **{"layer0/kernel": b"\x93NUMPZ" + raw[6:]}), zipfile.ZIP_STORED
    yield "npy version 9", dict(arrays, **{"layer0/kernel": raw[:6] + b"\x09\x00" + raw[8:]}), zipfile.ZIP_STORED
    yield "npy short data", dict(arrays, **{"layer0/kernel": raw[:-4]}), zipfile.ZIP_STORED
    yield "npy long data", dict(arrays, **{"layer0/kernel": raw + b"\0" * 4}), zipfile.ZIP_STORED
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        yield f"compression method {method}", arrays, method


class _Boom:
    def __reduce__(self):
        return (open, (os.path.join(os.environ.get("JITNN_PICKLE_CANARY", "/nonexistent"), "pwned"), "w"))


def test_hostile_members(good, victim, tmp_path, outcomes, monkeypatch):
    _, _, arrays, record = good
    model, before = victim
    cases = list(_hostile_members(arrays, record))
    canary = tmp_path / "canary"
    canary.mkdir()
    monkeypatch.setenv("JITNN_PICKLE_CANARY", str(canary))
    cases.append(("pickled payload", dict(arrays, **{"layer0/kernel": np.array([_Boom()], dtype=object)}), 0))
    raw_pickle = pickle.dumps(_Boom())
    cases.append(("raw pickle member", dict(arrays, **{"layer0/kernel": raw_pickle}), 0))
    for i, (name, members, compression) in enumerate(cases):
        bad = write(tmp_path / f"member{i}.npz", members, compression or zipfile.ZIP_STORED)
        try:
            if "(loads)" in name:
                attempt(bad, model, before, outcomes, reference=[
                    np.asarray(members[k], np.float32) for k in ("layer0/kernel", "layer0/bias", "layer2/kernel",
                                                                  "layer2/bias")])
            else:
                attempt(bad, model, before, outcomes)
        except AssertionError as e:
            raise AssertionError(f"case {name}: {e}") from None
    assert not os.listdir(canary), "a pickle in a model file was executed"
    assert len(cases) > 40


def test_an_encrypted_member_is_refused(good, victim, tmp_path, outcomes):
    _, data, _, _ = good
    model, before = victim
    flagged = bytearray(data)
    # set the "encrypted" bit in every local and central header (zipfile then wants a password)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := flagged.find(sig, start)) >= 0:
            flagged[start + off] |= 1
            start += 4
    bad = tmp_path / "encrypted.npz"
    bad.write_bytes(bytes(flagged))
    attempt(bad, model, before, outcomes)
    assert outcomes["clear error"] == 2


def test_a_failed_load_over_a_trained_model_keeps_its_optimizer(good, tmp_path):
    """load_weights touches parameters only, and only after every array is valid."""
    path, _, arrays, _ = good
    model = make_model(seed=3)
    state = model.optimizer.state_arrays()
    bad = write(tmp_path / "nan.npz", dict(arrays, **{"layer2/bias": np.full(CLASSES, np.nan, np.float32)}))
    with pytest.raises(ModelFileError, match="layer2/bias contains NaN"):
        model.load_weights(bad)
    assert model.optimizer.state_arrays().keys() == state.keys()
    model.load_weights(path)
    for a, b in zip(model.get_weights(), load_model(path).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# --- convolutional models: Conv2D, BatchNormalization, pooling records and members ------------------------


def make_cnn(seed=0):
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(8, 8, 2)), BatchNormalization(),
                        MaxPooling2D(2), Flatten(), Dense(CLASSES, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizers.Adam(0.01))
    model.build((8, 8, 2), seed=seed)
    return model


def _cnn_mutations(arrays, record):
    """(name, {member: value}) of CNN files with a hostile Conv2D, BatchNormalization or pooling record,
    or a hostile BatchNormalization member."""
    def edit(i, key, value):
        r = json.loads(json.dumps(record))
        r["config"]["layers"][i]["config"][key] = value
        return with_record(arrays, r)

    conv = {"filters": [0, -4, "4", 30000, 2**40], "kernel_size": [0, [3], [3, 3, 3], 10**6, "3", [3, -1]],
            "strides": [0, [1, 0], -2], "padding": ["bogus", 1], "dilation_rate": [0, [1, -1]],
            "activation": ["nope"]}
    for key, values in conv.items():
        for v in values:
            yield f"Conv2D {key}={v!r}", edit(0, key, v)
    # 1e39 and 1e-50 pass as float64 numbers and are inf and 0 in the model's float32
    for v in [0, -1e-3, "x", None, True, 1e39, 1e-50]:
        yield f"BatchNormalization epsilon={v!r}", edit(1, "epsilon", v)
    for v in [-0.5, 2, "x"]:
        yield f"BatchNormalization momentum={v!r}", edit(1, "momentum", v)
    for v in [0, [2, 0], 10**6, "2"]:
        yield f"MaxPooling2D pool_size={v!r}", edit(2, "pool_size", v)
    r = json.loads(json.dumps(record))
    r["config"]["layers"][1]["config"]["epsilon"] = float("inf")  # json writes Infinity, and reads it back
    yield "BatchNormalization epsilon=inf", with_record(arrays, r)
    var = arrays["layer1/moving_variance"]
    yield "moving_variance negative", dict(arrays, **{"layer1/moving_variance": -np.ones_like(var)})
    yield "moving_variance NaN", dict(arrays, **{"layer1/moving_variance": np.full_like(var, np.nan)})
    yield "moving_mean 1e45 (float64)", dict(arrays, **{"layer1/moving_mean": np.full(var.shape, 1e45)})
    yield "gamma missing", {k: v for k, v in arrays.items() if k != "layer1/gamma"}
    yield "gamma of another width", dict(arrays, **{"layer1/gamma": np.ones(5, np.float32)})
    yield "conv kernel transposed", dict(arrays, **{"layer0/kernel": arrays["layer0/kernel"].T.copy()})


def test_hostile_cnn_files(tmp_path, outcomes):
    """Each hostile Conv2D / BatchNormalization / pooling record or member: ModelFileError from both
    loaders, and a CNN they were loaded into unchanged."""
    model = make_cnn()
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 8, 8, 2)), rng.integers(0, CLASSES, 8), epochs=1, batch_size=8, verbose=0)
    path = model.save(tmp_path / "cnn.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    record = json.loads(arrays["__architecture__"].tobytes())
    victim_model = make_cnn(seed=7)
    before = victim_model.get_weights()
    attempt(path, victim_model, before, outcomes, reference=model.get_weights())  # the good file loads
    cases = list(_cnn_mutations(arrays, record))
    for i, (name, members) in enumerate(cases):
        bad = write(tmp_path / f"cnn{i}.npz", members)
        try:
            attempt(bad, victim_model, before, outcomes)
        except AssertionError as e:
            raise AssertionError(f"case {name}: {e}") from None
    assert outcomes["clear error"] == 2 * len(cases) and len(cases) > 30
