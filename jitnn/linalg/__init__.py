"""Matrix products: dense (``gemm``, ``matmul``, ``gemm_into``).

    dense.py   the BLIS GEMM's entry points: validation, views, the per-thread packing workspace

The arithmetic lives in jitnn/kernels/; these modules validate, pick kernels and allocate outputs.
"""

from jitnn.linalg.dense import compile_seconds, compiled_gemm, gemm, gemm_into, matmul

__all__ = ["compile_seconds", "compiled_gemm", "gemm", "gemm_into", "matmul"]
