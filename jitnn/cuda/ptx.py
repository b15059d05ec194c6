"""Compile every jitnn CUDA kernel to PTX for a chosen GPU, with no GPU needed (only NVVM).

    python -m jitnn.cuda.ptx --cc 9.0            # a table: kernel, FMAs, shared loads, local memory
    python -m jitnn.cuda.ptx --cc 9.0 --dump gemm_small_nn_float32 > k.ptx

The simulator runs kernels as Python and so accepts code the CUDA target rejects; this check lowers
each kernel through the real CUDA pipeline (typing, numba's lowering, NVVM), which is what catches
an unsupported call or a type error before a GPU does. The counts are a first look at code quality:
``local`` counts local-memory loads and stores (register tiles that spilled, or arrays indexed at
run time), ``fma`` the fused multiply-adds in the code.

Needs numba-cuda with NVVM (numba-cuda[cu12] / [cu13], or a CUDA toolkit) and NUMBA_ENABLE_CUDASIM
unset: under the simulator there is no compiler.
"""

from __future__ import annotations

import argparse
import re
import sys

from jitnn.config import FLOAT_DTYPES


def signatures(dtype_name="float32"):
    """{kernel name: (python function, argument types)} for every kernel in jitnn.cuda."""
    from numba import types as t

    from jitnn.cuda import gemm as G
    from jitnn.cuda import kernels as K

    F = getattr(t, dtype_name)
    A2, A1 = t.Array(F, 2, "A"), t.Array(F, 1, "A")
    D1, I1, B2 = t.Array(t.float64, 1, "A"), t.Array(t.int64, 1, "A"), t.Array(t.boolean, 2, "A")
    i64, f64, b = t.int64, t.float64, t.boolean
    sigs = {
        "activate": (A2, A2, i64, F), "backprop_activation": (A2, A2, A2, i64, F, A2),
        "softmax_rows": (A2, A2), "backprop_softmax_rows": (A2, A2, A2),
        "dropout_forward": (A2, f64, i64, B2, A2), "backprop_dropout": (A2, B2, f64, A2),
        "gather_rows": (A2, I1, i64, A2), "gather_items": (I1, I1, i64, I1),
        "column_sums": (A2, A1), "accumulate": (D1, i64, D1, i64),
        "mse": (A2, A2, A2, D1), "mae": (A2, A2, A2, D1), "bce_probs": (A2, A2, A2, D1, f64),
        "xent_probs_int": (A2, I1, A2, D1, f64), "xent_probs_dense": (A2, A2, A2, D1, f64),
        "sigmoid_bce_logits": (A2, A2, A2, A2, D1), "softmax_xent_int": (A2, I1, A2, A2, D1),
        "softmax_xent_dense": (A2, A2, A2, A2, D1),
        "argmax_hits_int": (A2, I1, D1), "argmax_hits_dense": (A2, A2, D1), "threshold_hits": (A2, A2, f64, D1),
        "mse_rows": (A2, A2, A2, D1), "mae_rows": (A2, A2, A2, D1),
        "sgd_update": (A1, A1, A1, F, F, b, F, F, b), "adagrad_update": (A1, A1, A1, F, F, F, F, b),
        "rmsprop_update": (A1, A1, A1, F, F, F, F, F, F, b),
        "adam_update": (A1, A1, A1, A1, A1, F, F, F, F, F, F, F, F, b, F, F, b),
    }
    out = {name: (getattr(K, name).py_func, sig) for name, sig in sigs.items()}
    out.update(conv_signatures(F))
    for tile in G.TILES:
        for ta, tb, tag in ((False, False, "nn"), (True, False, "tn"), (False, True, "nt")):
            kern = G.kernel_for(tile, ta, tb, dtype_name)[0]
            out[f"gemm_{tile}_{tag}_{dtype_name}"] = (kern.py_func, (A2, A2, A2, A1, F, F, i64, F))
    return out


def conv_signatures(F):
    """{kernel name: (python function, argument types)} for the convolution, pooling and batch-norm kernels."""
    from numba import types as t

    from jitnn.cuda import conv as CC
    from jitnn.cuda import normalization as CN
    from jitnn.cuda import pooling as CP

    A1, A2, A4 = t.Array(F, 1, "A"), t.Array(F, 2, "A"), t.Array(F, 4, "A")
    D2, I4, i64, f64 = t.Array(t.float64, 2, "A"), t.Array(t.int32, 4, "A"), t.int64, t.float64
    geo = (i64,) * 6  # window or kernel sizes, strides, (top, left) pads
    conv = (i64,) * 11  # kh, kw, sh, sw, dh, dw, pt, pl, oh, ow (+ n1 or act)
    sigs = {
        (CC, "im2col"): (A4, i64, *conv, A2), (CC, "col2im"): (A2, i64, *conv, F, A4),
        (CC, "conv2d_direct"): (A4, A2, A1, *conv[:10], i64, F, F, A2),
        (CP, "maxpool2d"): (A4, *geo, A4, I4), (CP, "backprop_maxpool2d"): (A4, I4, *geo, F, A4),
        (CP, "avgpool2d"): (A4, *geo, F, A4), (CP, "backprop_avgpool2d"): (A4, *geo, F, A4),
        (CP, "global_avgpool2d"): (A4, F, A2), (CP, "backprop_global_avgpool2d"): (A2, A4),
        (CN, "block_sums"): (A2, D2), (CN, "channel_means"): (D2, i64, A1), (CN, "block_squares"): (A2, A1, D2),
        (CN, "variance_scale_shift"): (D2, i64, A1, A1, A1, f64, A1, A1, A1),
        (CN, "scale_shift_params"): (A1, A1, A1, A1, f64, A1, A1), (CN, "scale_shift"): (A2, A1, A1, A2),
        (CN, "update_moving"): (A1, A1, A1, A1, f64), (CN, "backprop_block_sums"): (A2, A2, A1, D2),
        (CN, "backprop_coefficients"): (D2, i64, A1, A1, A1, f64, A1, A1), (CN, "backprop_input"): (A2, A2, D2, A2),
    }
    return {name: (getattr(mod, name).py_func, sig) for (mod, name), sig in sigs.items()}


def compile_all(cc=(9, 0), dtype_name="float32", names=None):
    """{name: ptx text} for the kernels (all, or ``names``); raises on the first that fails."""
    from numba import cuda

    result = {}
    for name, (fn, sig) in signatures(dtype_name).items():
        if names and name not in names:
            continue
        ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
        result[name] = ptx
    return result


def stats(ptx):
    """Counts that hint at code quality: FMAs, shared loads, local-memory traffic."""
    return {"fma": len(re.findall(r"\bfma\.rn\.f(32|64)", ptx)),
            "ld.shared": len(re.findall(r"\bld\.shared", ptx)),
            "local": len(re.findall(r"\b(ld|st)\.local", ptx))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="9.0", help="compute capability, e.g. 9.0 (H100), 8.0 (A100)")
    ap.add_argument("--dtype", default="float32", choices=list(FLOAT_DTYPES))
    ap.add_argument("--dump", help="print this kernel's PTX instead of the table")
    args = ap.parse_args(argv)
    cc = tuple(int(p) for p in args.cc.split("."))
    ptxs = compile_all(cc, args.dtype, [args.dump] if args.dump else None)
    if args.dump:
        sys.stdout.write(ptxs[args.dump])
        return 0
    print(f"{'kernel':32s} {'fma':>6s} {'ld.shared':>10s} {'local':>6s}")
    for name, ptx in ptxs.items():
        s = stats(ptx)
        print(f"{name:32s} {s['fma']:6d} {s['ld.shared']:10d} {s['local']:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
