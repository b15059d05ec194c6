"""Matrix products: dense (``gemm``, ``matmul``, ``gemm_into``) and sparse-times-dense (``spmm`` ...).

    dense.py   the BLIS GEMM's entry points: validation, views, the per-thread packing workspace
    sparse.py  CSR x dense products (spmm, spmm_t, dense_spmm, spmv); the matrices are jitnn.sparse's
    views.py   what both share: strided views of operands and outputs, per-thread scratch

The arithmetic lives in jitnn/kernels/; these modules validate, pick kernels and allocate outputs.
"""

from jitnn.linalg.dense import (
    BLOCKS,
    compile_seconds,
    compiled_gemm,
    compiled_kernels,
    gemm,
    gemm_into,
    matmul,
    workspace,
)
from jitnn.linalg.sparse import dense_spmm, spmm, spmm_t, spmv

__all__ = ["BLOCKS", "compile_seconds", "compiled_gemm", "compiled_kernels", "dense_spmm", "gemm", "gemm_into",
           "matmul", "spmm", "spmm_t", "spmv", "workspace"]
