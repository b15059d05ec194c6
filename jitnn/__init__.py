"""jitnn: neural networks at native speed with Numba, and a profiler that shows where the time goes."""

from jitnn.config import get_num_threads, set_num_threads
from jitnn.linalg import gemm, matmul

__version__ = "0.1.0"

__all__ = ["gemm", "matmul", "set_num_threads", "get_num_threads", "__version__"]
