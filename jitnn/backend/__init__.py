"""Backends: one ``Ops`` implementation per device (jitnn/backend/ops.py is the interface).

``get("cpu")`` is always there; ``get("cuda")`` imports numba-cuda on first use and raises
``jitnn.cuda.CudaUnavailableError`` (saying why) where no GPU or simulator can run the kernels.
"""

from __future__ import annotations

from jitnn.backend.cpu import CPU
from jitnn.backend.ops import Ops

DEVICES = ("cpu", "cuda")


def get(device) -> Ops:
    """The Ops for ``device`` (``"cpu"``, ``"cuda"``, or an Ops, returned as is)."""
    if isinstance(device, Ops):
        return device
    if device == "cpu":
        return CPU
    if device == "cuda":
        from jitnn.cuda.runtime import require

        require()
        from jitnn.backend.cuda import CUDA

        return CUDA
    raise ValueError(f"device must be 'cpu' or 'cuda', received: device={device!r}")


__all__ = ["CPU", "DEVICES", "Ops", "get"]
