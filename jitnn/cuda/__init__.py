"""jitnn's GPU backend: numba-cuda kernels and device-resident training (docs/gpu.md).

    import jitnn
    jitnn.cuda.available()                       # a GPU (or NUMBA_ENABLE_CUDASIM=1) can run the kernels
    jitnn.cuda.matmul(a, b, activation="relu")   # numpy in, numpy out; device arrays stay on the device
    model = jitnn.Sequential([...], device="cuda")   # or model.to("cuda"): the same fit/predict API

Importing this package never fails: without the ``numba-cuda`` package (the ``cuda`` extra)
``available()`` is False and ``require()`` says what to install. The kernels are imported on first use.
"""

from jitnn.cuda.runtime import CudaUnavailableError, available, device_name, require, simulated


def __getattr__(name):
    if name == "matmul":
        require()
        from jitnn.cuda.gemm import matmul

        return matmul
    raise AttributeError(f"module 'jitnn.cuda' has no attribute {name!r}")


__all__ = ["CudaUnavailableError", "available", "device_name", "matmul", "require", "simulated"]
