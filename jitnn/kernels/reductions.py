"""Reductions over rows and columns: bias gradients, softmax, and every loss with its gradient.

Conventions shared by the kernels below:

- Arrays are 2-D ``(N, D)`` (any strides); outputs and scratch are passed in, nothing is allocated.
- Parallel kernels split the ROWS with ``prange``: each iteration writes only its own row of the
  outputs and its own ``row_loss[i]``, so no two iterations touch the same element.
- ``row_loss[i]`` receives the loss of sample ``i`` (Keras' ``reduction="none"``: the mean over outputs
  for mse/mae/bce, the sum over classes for categorical cross-entropy). The returned mean is a serial
  float64 sum of ``row_loss[:N]`` after the parallel loop: race-free, and bitwise identical for any
  thread count, since neither a row's arithmetic nor the final sum depends on how rows were shared.
- Scalars are carried in float64 and rounded once when stored (softmax's exp alone runs in the
  array's dtype, see ``_softmax_row``); ``grad``/``dz`` is the gradient of the returned MEAN loss.
- Each loss kernel returns its value and writes its gradient in the same pass (forward and backward
  side by side, fused); ``softmax_rows`` has its ``backprop_softmax_rows`` partner.
"""

import math

import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT
from jitnn.kernels.elementwise import sigmoid_scalar

# column_sums gives each parallel task this many adjacent columns (a few cache lines per row); the
# block a column falls in never depends on the thread count, so neither does its sum.
COL_BLOCK = 64


@njit(**JIT, inline="always")
def _mean(row_loss, n):
    """sum(row_loss[:n]) / n in float64, serial: one fixed order whatever the thread count."""
    s = 0.0
    for i in range(n):
        s += row_loss[i]
    return s / n


@njit(**PJIT)
def nonfinite_count(x):
    """#{x : x is NaN or ±inf} over a 1-D or 2-D array (prange reduction: per-thread counts, race-free)."""
    c = 0
    if x.ndim == 1:
        for i in prange(x.shape[0]):
            if not math.isfinite(x[i]):
                c += 1
    else:
        for i in prange(x.shape[0]):
            for j in range(x.shape[1]):
                if not math.isfinite(x[i, j]):
                    c += 1
    return c


@njit(**JIT)
def _column_block_sums(x, out, j0, j1):
    """out[j0:j1] = Σ_i x[i, j0:j1], rows in order (a fixed summation order)."""
    o = out[j0:j1]
    w = j1 - j0
    for jj in range(w):
        o[jj] = 0
    # columns innermost over 1-D row slices: contiguous loads LLVM vectorizes (indexing x[i, j] directly
    # in the prange body measured ~8x slower: the outlined parallel loop did not vectorize)
    for i in range(x.shape[0]):
        xi = x[i, j0:j1]
        for jj in range(w):
            o[jj] += xi[jj]


@njit(**PJIT)
def column_sums(x, out):
    """out[j] = Σ_i x[i, j] (the bias gradient); parallel over fixed blocks of COL_BLOCK columns."""
    d = x.shape[1]
    for b in prange((d + COL_BLOCK - 1) // COL_BLOCK):
        _column_block_sums(x, out, b * COL_BLOCK, min((b + 1) * COL_BLOCK, d))


@njit(**JIT, inline="always")
def _softmax_row(zi, pi):
    """pi = softmax(zi) for one row; returns logsumexp(zi) = max + log Σ exp(zi - max), never log(pi).

    exp runs in the array's dtype (expf for float32, ~1.5x faster); the sum is carried in float64.
    """
    d = zi.shape[0]
    m = zi[0]
    for j in range(1, d):
        m = max(m, zi[j])
    s = 0.0
    for j in range(d):
        e = math.exp(zi[j] - m)
        pi[j] = e
        s += e
    inv = 1.0 / s
    for j in range(d):
        pi[j] = pi[j] * inv
    return m + math.log(s)


@njit(**PJIT)
def softmax_rows(z, out):
    """out[i] = exp(z[i] - max z[i]) / Σ_j exp(z[i, j] - max z[i]); in place (out is z) is fine."""
    for i in prange(z.shape[0]):
        _softmax_row(z[i], out[i])


@njit(**PJIT)
def backprop_softmax_rows(probs, dprobs, dz):
    """dz[i] = p[i] ⊙ (dp[i] - Σ_j dp[i, j] p[i, j]), the softmax Jacobian (diag p - p pᵀ) times dp."""
    d = probs.shape[1]
    for i in prange(probs.shape[0]):
        pi, dpi, dzi = probs[i], dprobs[i], dz[i]
        s = 0.0
        for j in range(d):
            s += dpi[j] * np.float64(pi[j])
        for j in range(d):
            dzi[j] = pi[j] * (dpi[j] - s)


# ---------------------------------------------------------------------------------------------------
# Losses. Each is a row function ``_<name>_row`` (the math for one sample: writes the sample's gradient
# row, returns its loss) and a driver that runs it over the rows. The CUDA kernels in jitnn/cuda/ call
# the same row functions, one thread per row, so both devices compute each loss with the same code.


@njit(**JIT, inline="always")
def _mse_row(pi, yi, gi, g):
    d = pi.shape[0]
    s = 0.0
    for j in range(d):
        r = np.float64(pi[j]) - yi[j]
        s += r * r
        gi[j] = g * r
    return s / d


@njit(**PJIT)
def mse(pred, y, grad, row_loss):
    """L = mean_i mean_j (p - y)²;  dL/dp = 2 (p - y) / (N D)."""
    n, d = pred.shape
    g = 2.0 / (n * d)
    for i in prange(n):
        row_loss[i] = _mse_row(pred[i], y[i], grad[i], g)
    return _mean(row_loss, n)


@njit(**JIT, inline="always")
def _mae_row(pi, yi, gi, g):
    d = pi.shape[0]
    s = 0.0
    for j in range(d):
        r = np.float64(pi[j]) - yi[j]
        s += abs(r)
        if r > 0:
            gi[j] = g
        elif r < 0:
            gi[j] = -g
        else:
            gi[j] = r * g  # 0, or NaN passed through so a NaN prediction stays visible
    return s / d


@njit(**PJIT)
def mae(pred, y, grad, row_loss):
    """L = mean_i mean_j |p - y|;  dL/dp = sign(p - y) / (N D), sign(0) = 0."""
    n, d = pred.shape
    g = 1.0 / (n * d)
    for i in prange(n):
        row_loss[i] = _mae_row(pred[i], y[i], grad[i], g)
    return _mean(row_loss, n)


@njit(**JIT, inline="always")
def _bce_probs_row(pi, yi, gi, g, eps):
    d = pi.shape[0]
    hi = 1.0 - eps
    s = 0.0
    for j in range(d):
        pj = np.float64(pi[j])
        yj = np.float64(yi[j])
        pc = min(max(pj, eps), hi)
        s -= yj * math.log(pc) + (1.0 - yj) * math.log(1.0 - pc)
        if pj < eps or pj > hi:
            gi[j] = 0
        else:
            gi[j] = g * ((1.0 - yj) / (1.0 - pc) - yj / pc)
    return s / d


@njit(**PJIT)
def bce_probs(p, y, grad, row_loss, eps):
    """L = mean -(y log p̂ + (1-y) log(1-p̂)), p̂ = clip(p, eps, 1-eps);  dL/dp = (p̂-y) / (p̂(1-p̂) N D).

    The clip is flat outside [eps, 1-eps], so the gradient is 0 there (as Keras/TF differentiate it).
    """
    n, d = p.shape
    g = 1.0 / (n * d)
    for i in prange(n):
        row_loss[i] = _bce_probs_row(p[i], y[i], grad[i], g, eps)
    return _mean(row_loss, n)


@njit(**JIT, inline="always")
def _xent_probs_int_row(pi, lab, gi, inv_n, eps):
    d = pi.shape[0]
    s = 0.0
    for j in range(d):
        s += pi[j]
    if lab < 0 or lab >= d:  # unchecked label: a NaN loss nonfinite_count sees, never a wild read
        for j in range(d):
            gi[j] = np.nan
        return np.nan
    q = pi[lab] / s
    qc = min(max(q, eps), 1.0 - eps)
    gl = -1.0 / qc if eps <= q <= 1.0 - eps else 0.0
    c = -gl * q * inv_n / s  # -Σ_j g_j q_j / (S N): the normalization's share, same for every j
    for j in range(d):
        gi[j] = c
    gi[lab] = c + gl * inv_n / s
    return -math.log(qc)


@njit(**PJIT)
def xent_probs_int(p, labels, grad, row_loss, eps):
    """L = mean_i -log q̂[i, l_i], q̂ = clip(p / S, eps, 1-eps), S = Σ_j p[i, j];  dL/dp = (g - g·q) / (S N).

    g = dL_i/dq = -onehot(l_i)/q̂ where the clip is inactive, else 0. Rows are renormalized as in Keras.
    """
    n = p.shape[0]
    inv_n = 1.0 / n
    for i in prange(n):
        row_loss[i] = _xent_probs_int_row(p[i], labels[i], grad[i], inv_n, eps)
    return _mean(row_loss, n)


@njit(**JIT, inline="always")
def _xent_probs_dense_row(pi, yi, gi, inv_n, eps):
    d = pi.shape[0]
    hi = 1.0 - eps
    s = 0.0
    for j in range(d):
        s += pi[j]
    inv_s = 1.0 / s
    loss = 0.0
    gq = 0.0
    # first pass: loss and Σ g q; gi holds g (the gradient w.r.t. q) until the second pass
    for j in range(d):
        q = pi[j] * inv_s
        qc = min(max(q, eps), hi)
        yj = np.float64(yi[j])
        loss -= yj * math.log(qc)
        gj = -yj / qc if eps <= q <= hi else 0.0
        gq += gj * q
        gi[j] = gj
    for j in range(d):
        gi[j] = (gi[j] - gq) * inv_s * inv_n
    return loss


@njit(**PJIT)
def xent_probs_dense(p, y, grad, row_loss, eps):
    """L = mean_i -Σ_j y log q̂, q̂ = clip(p / S, eps, 1-eps), S = Σ_j p[i, j];  dL/dp = (g - g·q) / (S N).

    g = dL_i/dq = -y/q̂ where the clip is inactive, else 0. Rows are renormalized as in Keras.
    """
    n = p.shape[0]
    inv_n = 1.0 / n
    for i in prange(n):
        row_loss[i] = _xent_probs_dense_row(p[i], y[i], grad[i], inv_n, eps)
    return _mean(row_loss, n)


@njit(**JIT, inline="always")
def _sigmoid_bce_logits_row(zi, yi, pi, gi, g):
    d = zi.shape[0]
    s = 0.0
    for j in range(d):
        zj = np.float64(zi[j])
        yj = np.float64(yi[j])
        s += max(zj, 0.0) - zj * yj + math.log1p(math.exp(-abs(zj)))
        pj = sigmoid_scalar(zj)
        pi[j] = pj
        gi[j] = g * (pj - yj)
    return s / d


@njit(**PJIT)
def sigmoid_bce_logits(z, y, probs, dz, row_loss):
    """L = mean max(z,0) - z y + log1p(exp(-|z|)) (= BCE of sigmoid(z));  dL/dz = (sigmoid(z) - y) / (N D)."""
    n, d = z.shape
    g = 1.0 / (n * d)
    for i in prange(n):
        row_loss[i] = _sigmoid_bce_logits_row(z[i], y[i], probs[i], dz[i], g)
    return _mean(row_loss, n)


@njit(**JIT, inline="always")
def _softmax_xent_int_row(zi, lab, pi, gi, inv_n):
    d = zi.shape[0]
    lse = _softmax_row(zi, pi)
    for j in range(d):
        gi[j] = pi[j] * inv_n
    if lab < 0 or lab >= d:  # unchecked label: a NaN loss nonfinite_count sees, never a wild read
        return np.nan
    gi[lab] = (pi[lab] - 1.0) * inv_n
    return lse - zi[lab]


@njit(**PJIT)
def softmax_xent_int(z, labels, probs, dz, row_loss):
    """p = softmax(z); L = mean_i logsumexp(z_i) - z[i, l_i];  dL/dz = (p - onehot(l)) / N."""
    n = z.shape[0]
    inv_n = 1.0 / n
    for i in prange(n):
        row_loss[i] = _softmax_xent_int_row(z[i], labels[i], probs[i], dz[i], inv_n)
    return _mean(row_loss, n)


@njit(**JIT, inline="always")
def _softmax_xent_dense_row(zi, yi, pi, gi, inv_n):
    d = zi.shape[0]
    lse = _softmax_row(zi, pi)
    loss = 0.0
    sy = 0.0
    for j in range(d):
        yj = np.float64(yi[j])
        loss += yj * (lse - zi[j])
        sy += yj
    for j in range(d):
        gi[j] = (pi[j] * sy - yi[j]) * inv_n
    return loss


@njit(**PJIT)
def softmax_xent_dense(z, y, probs, dz, row_loss):
    """p = softmax(z); L = mean_i Σ_j y_ij (logsumexp(z_i) - z_ij);  dL/dz = (p Σ_j y_ij - y) / N."""
    n = z.shape[0]
    inv_n = 1.0 / n
    for i in prange(n):
        row_loss[i] = _softmax_xent_dense_row(z[i], y[i], probs[i], dz[i], inv_n)
    return _mean(row_loss, n)
