"""Packaging: one version, an SPDX license, the typing marker, the extras each optional module needs."""

import importlib.metadata
import os

import pytest

import jitnn

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_one_version_an_spdx_license_and_py_typed():
    cfg = pyproject()
    assert "version" not in cfg["project"] and cfg["project"]["dynamic"] == ["version"]
    assert cfg["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jitnn.version.__version__"}
    assert importlib.metadata.version("jitnn") == jitnn.__version__
    assert cfg["project"]["license"] == "MIT"
    assert any(r.startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in cfg["build-system"]["requires"])
    assert os.path.exists(os.path.join(os.path.dirname(jitnn.__file__), "py.typed"))
    assert "py.typed" in cfg["tool"]["setuptools"]["package-data"]["jitnn"]


def test_extras_cover_the_optional_modules_and_dev_installs_them():
    cfg_extras = pyproject()["project"]["optional-dependencies"]
    names = {k: {r.split(">")[0].split("=")[0].split("[")[0] for r in v} for k, v in cfg_extras.items()}
    assert names["onnx"] == {"onnx", "onnxruntime"} and names["plot"] == {"matplotlib"}
    assert names["sklearn"] == {"scikit-learn"} and names["pprof"] == {"protobuf"}
    for extra in ("onnx", "plot", "sklearn", "pprof"):
        assert names[extra] <= names["dev"], extra  # so CI runs their tests
    assert {"torch", "scipy", "ruff"} <= names["dev"]
