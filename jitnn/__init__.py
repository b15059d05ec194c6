"""jitnn: neural networks at native speed with Numba, and a profiler that shows where the time goes."""

from jitnn import (
    activations,
    backend,
    callbacks,
    datasets,
    initializers,
    losses,
    metrics,
    optimizers,
    peak,
    report,
    schedules,
    sparse,
    utils,
)
from jitnn.callbacks import EarlyStopping, History, ModelCheckpoint, ProgbarLogger
from jitnn.config import get_num_threads, set_num_threads
from jitnn.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    Layer,
    LeakyReLU,
    MaxPooling2D,
    Reshape,
)
from jitnn.linalg import gemm, matmul
from jitnn.loading import load_model
from jitnn.model import Sequential
from jitnn.profiler import profile
from jitnn.prune import prune
from jitnn.saving import ModelFileError
from jitnn.training import NonFiniteLossError
from jitnn.version import __version__


def __getattr__(name):
    """``jitnn.cuda`` is imported on first use: numba.cuda adds ~0.5 s to start-up that CPU users skip;
    so are the modules that need an optional package (sklearn, onnx, plot, pprof: see their extras)."""
    if name in ("cuda", "sklearn", "onnx", "plot", "pprof"):
        import importlib

        return importlib.import_module(f"jitnn.{name}")
    raise AttributeError(f"module 'jitnn' has no attribute {name!r}")


__all__ = [
    "Activation",
    "AveragePooling2D",
    "BatchNormalization",
    "Conv2D",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Flatten",
    "GlobalAveragePooling2D",
    "History",
    "Layer",
    "LeakyReLU",
    "MaxPooling2D",
    "ModelCheckpoint",
    "ModelFileError",
    "NonFiniteLossError",
    "ProgbarLogger",
    "Reshape",
    "Sequential",
    "__version__",
    "activations",
    "backend",
    "callbacks",
    "cuda",
    "datasets",
    "gemm",
    "get_num_threads",
    "initializers",
    "load_model",
    "losses",
    "matmul",
    "metrics",
    "optimizers",
    "peak",
    "profile",
    "prune",
    "report",
    "schedules",
    "set_num_threads",
    "sparse",
    "utils",
]
