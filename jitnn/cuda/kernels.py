"""CUDA kernels behind jitnn.backend.cuda: activations, dropout, gathers, bias gradients, losses, metrics, updates.

Wherever the math is per element or per row, a CUDA kernel calls the CPU's own ``@njit`` function
(numba compiles it again for the GPU): ``activate_scalar``/``derivative_scalar`` from
jitnn.kernels.elementwise, the loss row functions from jitnn.kernels.losses, dropout's counter
hash. Both devices therefore run the same arithmetic, and the same dropout seed drops the same units.

Threading: elementwise kernels are grid-stride loops over the flattened (N, D) array (consecutive
threads take consecutive elements of a row: coalesced). Row kernels (softmax, losses) run one thread
per sample: the output layer is narrow (10 classes here), so a warp per row would idle most lanes.
Reductions are deterministic: ``column_sums`` and ``accumulate`` sum in a fixed order (no atomics on
floats), so a run repeats bit for bit.
"""

from __future__ import annotations

import math

from numba import float64, njit

from jitnn.config import JIT
from jitnn.cuda.runtime import cuda, device_function
from jitnn.kernels import dropout as KD
from jitnn.kernels import elementwise as KE
from jitnn.kernels import losses as KL
from jitnn.kernels import metrics as KM
from jitnn.kernels import optim as KO
from jitnn.kernels import reductions as KR

activate_scalar = device_function(KE.activate_scalar)
derivative_scalar = device_function(KE.derivative_scalar)
regularized = device_function(KO.regularized)
sgd_element = device_function(KO.sgd_element)
adagrad_element = device_function(KO.adagrad_element)
rmsprop_element = device_function(KO.rmsprop_element)
adam_moments = device_function(KO.adam_moments)
adam_weight = device_function(KO.adam_weight)
dropout_element = device_function(KD.dropout_element)
softmax_row = device_function(KR.softmax_row)
backprop_softmax_row = device_function(KR.backprop_softmax_row)
mse_row = device_function(KL.mse_row)
mae_row = device_function(KL.mae_row)
bce_probs_row = device_function(KL.bce_probs_row)
xent_probs_int_row = device_function(KL.xent_probs_int_row)
xent_probs_dense_row = device_function(KL.xent_probs_dense_row)
sigmoid_bce_logits_row = device_function(KL.sigmoid_bce_logits_row)
softmax_xent_int_row = device_function(KL.softmax_xent_int_row)
softmax_xent_dense_row = device_function(KL.softmax_xent_dense_row)
weight_row = device_function(KL.weight_row)
argmax_row = device_function(KM.argmax_row)
threshold_hits_row = device_function(KM.threshold_hits_row)

THREADS = 256  # per block for the 1-D kernels
MAX_BLOCKS = 65535  # grid-stride loops cover the rest
COL_TILE = 32  # column_sums: columns per block (one warp wide) ...
ROW_LANES = 8  # ... and the row lanes that split each column's sum


def blocks(n):
    """Blocks of THREADS for ``n`` items (at least 1, so an empty launch stays legal)."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS)))


def launch(kernel, n, *args, stream=0):
    """``kernel[blocks(n), THREADS, stream](*args)``: the 1-D launch every kernel here uses."""
    kernel[blocks(n), THREADS, stream](*args)


def on_device(fn):
    """``fn`` as an inlined ``@njit`` function made a device function (``device_function``): numba inlines
    it into each kernel's IR, so it lowers without a device (``cuda.jit(device=True)`` asks the driver for
    the GPU's compute capability, which ``jitnn.cuda.ptx`` has no driver to answer)."""
    return device_function(njit(**JIT, inline="always")(fn))


@on_device
def unravel4(e, d1, d2, d3):
    """(a, b, c, d) of flat index ``e`` into a C-order (_, d1, d2, d3) array: an image element (n, y, x, c)
    of the grid-stride loops over (N, H, W, C) arrays (channels fastest, so consecutive threads coalesce)."""
    d = e % d3
    p = e // d3
    c = p % d2
    p //= d2
    return p // d1, p % d1, c, d


# ---------------------------------------------------------------------------------------------------
# Activations


@cuda.jit
def activate(x, out, code, param):
    """out = f(x) elementwise (``out`` may be ``x``)."""
    n, d = x.shape
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        out[i, j] = activate_scalar(code, x[i, j], param)


@cuda.jit
def backprop_activation(da, z, a, code, param, dz):
    """dz = da * f'(z), f' read from the output ``a`` where it suffices (pass ``a`` as ``z`` then)."""
    n, d = da.shape
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        dz[i, j] = da[i, j] * derivative_scalar(code, z[i, j], a[i, j], param)


@cuda.jit
def softmax_rows(z, out):
    """out[i] = softmax(z[i]), max-subtracted; one thread per row (``out`` may be ``z``)."""
    i = cuda.grid(1)
    if i < z.shape[0]:
        softmax_row(z[i], out[i])


@cuda.jit
def backprop_softmax_rows(probs, dprobs, dz):
    """dz[i] = p[i] * (dp[i] - sum_j dp[i, j] p[i, j]); one thread per row."""
    i = cuda.grid(1)
    if i < probs.shape[0]:
        backprop_softmax_row(probs[i], dprobs[i], dz[i])


# ---------------------------------------------------------------------------------------------------
# Dropout (the CPU layer's hash: the same seed and step drop the same units on either device)


@cuda.jit
def dropout_forward(x, rate, seed, mask, out):
    """mask = u >= rate; out = x * mask / (1 - rate)."""
    n, d = x.shape
    scale = 1.0 / (1.0 - rate)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        mask[i, j], out[i, j] = dropout_element(x[i, j], seed, i * d + j, rate, scale)


@cuda.jit
def backprop_dropout(grad, mask, rate, dx):
    """dx = grad * mask / (1 - rate)."""
    n, d = grad.shape
    scale = 1.0 / (1.0 - rate)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        dx[i, j] = grad[i, j] * scale if mask[i, j] else 0


# ---------------------------------------------------------------------------------------------------
# Batches: gathered on the device from the resident training set and a device permutation


@cuda.jit
def gather_rows(src, order, start, dst):
    """dst[i, :] = src[order[start + i], :] for the rows of ``dst``."""
    n, d = dst.shape
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        dst[i, j] = src[order[start + i], j]


@cuda.jit
def gather_items(src, order, start, dst):
    """dst[i] = src[order[start + i]] (1-D labels)."""
    i = cuda.grid(1)
    if i < dst.shape[0]:
        dst[i] = src[order[start + i]]


# ---------------------------------------------------------------------------------------------------
# Reductions


@cuda.jit
def column_sums(x, out):
    """out[j] = sum_i x[i, j] (bias gradients). Blocks of (COL_TILE, ROW_LANES) threads: lane r sums
    rows r, r + ROW_LANES, ... of its column (coalesced across the warp), then lane 0 adds the lanes'
    partials in order. Fixed order, no atomics: the same sums every run."""
    part = cuda.shared.array((ROW_LANES, COL_TILE), float64)
    tx = cuda.threadIdx.x
    r = cuda.threadIdx.y
    j = cuda.blockIdx.x * COL_TILE + tx
    n, d = x.shape
    s = 0.0  # partial sums in float64
    if j < d:
        for i in range(r, n, ROW_LANES):
            s += x[i, j]
    part[r, tx] = s
    cuda.syncthreads()
    if r == 0 and j < d:
        t = 0.0
        for q in range(ROW_LANES):
            t += part[q, tx]
        out[j] = t


def launch_column_sums(x, out, stream=0):
    column_sums[(max(1, -(-x.shape[1] // COL_TILE)),), (COL_TILE, ROW_LANES), stream](x, out)


@cuda.jit
def accumulate(values, n, acc, slot):
    """acc[slot] += sum(values[:n]), one block, a fixed tree order (the epoch's loss and metric sums
    stay on the device; the host reads ``acc`` only at logging intervals)."""
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    s = 0.0
    for i in range(t, n, THREADS):
        s += values[i]
    buf[t] = s
    cuda.syncthreads()
    width = THREADS // 2
    while width > 0:
        if t < width:
            buf[t] += buf[t + width]
        cuda.syncthreads()
        width //= 2
    if t == 0:
        acc[slot] += buf[0]


def launch_accumulate(values, n, acc, slot, stream=0):
    accumulate[1, THREADS, stream](values, n, acc, slot)


# ---------------------------------------------------------------------------------------------------
# Losses: one thread per sample, running the CPU's row function, with the CPU drivers' arguments (the
# scale, 1/(N D) or 1/N, is computed from the shapes, as the CPU drivers do). row_loss is float64.


@cuda.jit
def mse(pred, y, grad, row_loss):
    i = cuda.grid(1)
    n, d = pred.shape
    if i < n:
        row_loss[i] = mse_row(pred[i], y[i], grad[i], 2.0 / (n * d))


@cuda.jit
def mae(pred, y, grad, row_loss):
    i = cuda.grid(1)
    n, d = pred.shape
    if i < n:
        row_loss[i] = mae_row(pred[i], y[i], grad[i], 1.0 / (n * d))


@cuda.jit
def bce_probs(p, y, grad, row_loss, eps):
    i = cuda.grid(1)
    n, d = p.shape
    if i < n:
        row_loss[i] = bce_probs_row(p[i], y[i], grad[i], 1.0 / (n * d), eps)


@cuda.jit
def xent_probs_int(p, labels, grad, row_loss, eps):
    i = cuda.grid(1)
    n = p.shape[0]
    if i < n:
        row_loss[i] = xent_probs_int_row(p[i], labels[i], grad[i], 1.0 / n, eps)


@cuda.jit
def xent_probs_dense(p, y, grad, row_loss, eps):
    i = cuda.grid(1)
    n = p.shape[0]
    if i < n:
        row_loss[i] = xent_probs_dense_row(p[i], y[i], grad[i], 1.0 / n, eps)


@cuda.jit
def sigmoid_bce_logits(z, y, probs, dz, row_loss):
    i = cuda.grid(1)
    n, d = z.shape
    if i < n:
        row_loss[i] = sigmoid_bce_logits_row(z[i], y[i], probs[i], dz[i], 1.0 / (n * d))


@cuda.jit
def softmax_xent_int(z, labels, probs, dz, row_loss):
    i = cuda.grid(1)
    n = z.shape[0]
    if i < n:
        row_loss[i] = softmax_xent_int_row(z[i], labels[i], probs[i], dz[i], 1.0 / n)


@cuda.jit
def softmax_xent_dense(z, y, probs, dz, row_loss):
    i = cuda.grid(1)
    n = z.shape[0]
    if i < n:
        row_loss[i] = softmax_xent_dense_row(z[i], y[i], probs[i], dz[i], 1.0 / n)


@cuda.jit
def weight_rows(grad, row_loss, weights):
    """Sample weights after a loss: grad[i] *= w_i, row_loss[i] *= w_i (the CPU's row function)."""
    i = cuda.grid(1)
    if i < grad.shape[0]:
        row_loss[i] = row_loss[i] * weight_row(grad[i], weights[i])


# ---------------------------------------------------------------------------------------------------
# Metrics: each row's value (a hit, a fraction of hits, an error) into a float64 row array, summed by
# ``accumulate``; the row functions are the CPU metric kernels' own (jitnn.kernels.metrics).


@cuda.jit
def argmax_hits_int(pred, labels, hits):
    """hits[i] = 1 if argmax_j pred[i, j] == labels[i] (first maximum wins, as np.argmax)."""
    i = cuda.grid(1)
    if i < pred.shape[0]:
        hits[i] = 1.0 if argmax_row(pred[i]) == labels[i] else 0.0


@cuda.jit
def argmax_hits_dense(pred, y, hits):
    """hits[i] = 1 if argmax_j pred[i, j] == argmax_j y[i, j]."""
    i = cuda.grid(1)
    if i < pred.shape[0]:
        hits[i] = 1.0 if argmax_row(pred[i]) == argmax_row(y[i]) else 0.0


@cuda.jit
def threshold_hits(pred, y, threshold, hits):
    """hits[i] = #{j : (pred[i, j] > t) == (y[i, j] > t)} / D: the row's share, so that every metric's
    sum divides by the number of samples."""
    i = cuda.grid(1)
    if i < pred.shape[0]:
        hits[i] = threshold_hits_row(pred[i], y[i], threshold) / pred.shape[1]


@cuda.jit
def mse_rows(pred, y, scratch, rows):
    """rows[i] = mean_j (p - y)^2 (the metric: ``scratch`` receives a zero gradient)."""
    i = cuda.grid(1)
    if i < pred.shape[0]:
        rows[i] = mse_row(pred[i], y[i], scratch[i], 0.0)


@cuda.jit
def mae_rows(pred, y, scratch, rows):
    """rows[i] = mean_j |p - y|."""
    i = cuda.grid(1)
    if i < pred.shape[0]:
        rows[i] = mae_row(pred[i], y[i], scratch[i], 0.0)


# ---------------------------------------------------------------------------------------------------
# Optimizers: the element updates of jitnn.kernels.optim, one thread per element of flat arrays.
# Scalars arrive in the array's dtype (cast on the host once per step).


@cuda.jit
def sgd_update(w, g, velocity, lr, mu, nesterov, l1, l2x2, reg):
    for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
        gi = regularized(g[i], w[i], l1, l2x2) if reg else g[i]
        vi = velocity[i] if mu != 0 else gi  # plain SGD: no velocity buffer (empty), none read
        wi, vi = sgd_element(w[i], gi, vi, lr, mu, nesterov)
        w[i] = wi
        if mu != 0:
            velocity[i] = vi


@cuda.jit
def adagrad_update(w, g, accum, lr, eps, l1, l2x2, reg):
    for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
        gi = regularized(g[i], w[i], l1, l2x2) if reg else g[i]
        w[i], accum[i] = adagrad_element(w[i], gi, accum[i], lr, eps)


@cuda.jit
def rmsprop_update(w, g, ms, lr, rho, one_m_rho, eps, l1, l2x2, reg):
    for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
        gi = regularized(g[i], w[i], l1, l2x2) if reg else g[i]
        w[i], ms[i] = rmsprop_element(w[i], gi, ms[i], lr, rho, one_m_rho, eps)


@cuda.jit
def adam_update(w, g, m, v, vmax, step, inv_sqrt_bc2, b1, one_m_b1, b2, one_m_b2, eps, decay, amsgrad,
                l1, l2x2, reg):
    """Adam/AMSGrad/AdamW with the bias corrections folded into ``step`` and ``inv_sqrt_bc2``."""
    for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
        wi = w[i]
        gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
        mi, vi = adam_moments(gi, m[i], v[i], b1, one_m_b1, b2, one_m_b2)
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vm = vmax[i]
            if math.isnan(vm) or vm > vi:  # max that propagates NaN, as np.maximum in the CPU block
                vi = vm
            vmax[i] = vi
        w[i] = adam_weight(wi, mi, vi, step, inv_sqrt_bc2, eps, decay)
