"""Fused optimizer updates: one kernel per family, one pass over memory per step.

Every kernel reads ``g`` once and rewrites ``w`` and its moments in the same pass, over flat
1-D C-contiguous arrays of one dtype (float32 or float64). Scalars arrive as float64 and are cast to
the array dtype once, before the loop (``w.dtype.type(x)`` compiles in numba). For float32 that keeps
eight lanes per AVX2 register instead of four. Measured single-threaded on this Zen 3 against the
same kernels computing in float64: Adam, AMSGrad and RMSprop run 2.5-3x faster on cache-resident
arrays (Adam, 32K elements: 15 vs 41 us) and about 2x on 2M elements (1.3 vs 2.6 ms); SGD, nearly
all loads and stores, 1.2-1.7x. The cost is a few float32 ulps per step, the size of storage rounding.

Regularization is fused into the read of the gradient, Keras convention (penalty
``l1*sum|w| + l2*sum w^2``): the effective gradient is ``g + l1*sign(w) + 2*l2*w``. ``l1 = l2 = 0``
skips it, so the update is then exactly the unregularized one.

The moment buffers are double-buffered: each driver reads the moments from its input buffers and writes
the new ones to the output buffers it is given (``*_out``), leaving the inputs as they were. The caller
(jitnn.optimizers) makes the outputs its state once the step is accepted, by swapping the two sets, so
a step the NaN guard rejects leaves the optimizer's state untouched at no cost: copying the old moments
aside in the same pass, as before, had cost three more write streams (784x512 float32 Adam on 2 threads:
0.37 ms against 0.26 ms double-buffered and 0.23 ms for the weights' snapshot alone; +9% on a batch-64
epoch). An output buffer is written before it is read in each element's iteration, so it holds nothing
of value between steps; it must not be the input buffer itself (the loops would then take LLVM's scalar,
alias-checked version, with other roundings).

The NaN guard's snapshot of the weights rides in the same pass (issue 14): every driver takes
``snapshot`` (a flat array of w's length, or empty for none) that receives w's value from before the
step, copied chunk by chunk just before that chunk's update (``keep``: the chunk is then in L1), where a
separate pass over all the weights would read them from memory a second time (~8% of a batch-64 step).
Each driver returns how many new weights are NaN
or inf (a compare and an integer add per element, on values already in registers). The compare is
``|w| < inf``, false for NaN and inf: numba's ``math.isfinite(x)`` tests ``x - x``, which ``reassoc``
lets LLVM fold to 0 when x is an expression such as ``w - lr*g`` (it then never fires). A count above 0
means the step made a weight non-finite; the training loop then copies the snapshot back
(jitnn/training.py).

Layout: each family is a serial ``_<name>_block`` (the math, on one contiguous block) and a driver
that casts the scalars and runs the block over ``prange`` chunks of ``CHUNK`` elements, so every
element is written by exactly one iteration. Arrays of at most ``SERIAL_MAX`` elements skip the
parallel region: waking the thread pool costs more than updating a bias vector. The blocks index
slices from 0, which lets LLVM drop numba's negative-index wraparound and vectorize (``range(lo, hi)``
over the whole array stays scalar). There are no bounds checks, so each driver checks the lengths
once and raises ValueError rather than write out of bounds.
"""

import math

import numpy as np
from numba import njit, prange

from jitnn.config import JIT, PJIT

CHUNK = 4096  # elements per parallel iteration: 16-32 KiB of each array, enough to amortize scheduling
SERIAL_MAX = 2 * CHUNK  # at most this many elements run serially: waking the pool costs ~3-4 us


@njit(**JIT, inline="always")
def regularized(gi, wi, l1, l2x2):
    """g + l1*sign(w) + 2*l2*w, with sign(0) = 0 as in Keras."""
    if wi > 0:
        gi += l1
    elif wi < 0:
        gi -= l1
    return gi + l2x2 * wi


# ---------------------------------------------------------------------------------------------------
# The update of one element, per family: the CPU blocks below and the CUDA kernels (jitnn/cuda/kernels.py)
# both call these, so the two devices run one formula. They inline into the loops, which still vectorize.


@njit(**JIT, inline="always")
def sgd_element(wi, gi, vi, lr, mu, nesterov):
    """(w, velocity) after one SGD step; ``mu == 0``: plain SGD, the velocity is returned unchanged."""
    if mu == 0:
        return wi - lr * gi, vi
    v = mu * vi - lr * gi
    if nesterov:
        return wi + (mu * v - lr * gi), v
    return wi + v, v


@njit(**JIT, inline="always")
def adagrad_element(wi, gi, ai, lr, eps):
    """(w, accum) after one Adagrad step."""
    a = ai + gi * gi
    return wi - lr * gi / (math.sqrt(a) + eps), a


@njit(**JIT, inline="always")
def rmsprop_element(wi, gi, si, lr, rho, one_m_rho, eps):
    """(w, ms) after one RMSprop step."""
    s = rho * si + one_m_rho * gi * gi
    return wi - lr * gi / (math.sqrt(s) + eps), s


@njit(**JIT, inline="always")
def adam_moments(gi, mi, vi, b1, one_m_b1, b2, one_m_b2):
    """Adam's (m, v) after one step."""
    return b1 * mi + one_m_b1 * gi, b2 * vi + one_m_b2 * gi * gi


@njit(**JIT, inline="always")
def adam_weight(wi, mi, vi, step, inv_sqrt_bc2, eps, decay):
    """w after one Adam step, the bias corrections folded into ``step`` and ``inv_sqrt_bc2``."""
    return wi - decay * wi - step * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


# ---------------------------------------------------------------------------------------------------
# SGD


@njit(**JIT, inline="always")
def keep(snapshot, w):
    """snapshot[:] = w when a snapshot is kept (``snapshot`` empty otherwise), in a pass of its own.

    Not inside the update loop: there LLVM versions the vectorized loop on a runtime check that the
    snapshot does not overlap w, and an *empty* snapshot whose pointer happened to fall within w's range
    sent the chunk down the scalar version, whose rounding differs in a few elements (62 of 20603 in
    float32 Adam): the same seed then gave different bits depending on the heap. The chunk is in L1
    when the update loop reads it again, so the copy adds no memory traffic.
    """
    if snapshot.size > 0:
        for i in range(w.size):
            snapshot[i] = w[i]


@njit(**JIT)
def _sgd_block(w, g, velocity, snapshot, velocity_out, lr, mu, nesterov, l1, l2x2, reg):
    # three loops, so that each one's branches in sgd_element are decided before it starts
    keep(snapshot, w)
    bad = 0
    if mu == 0:
        for i in range(w.size):
            wi = w[i]
            gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
            wn = sgd_element(wi, gi, gi, lr, mu, False)[0]
            w[i] = wn
            bad += not abs(wn) < math.inf
    elif nesterov:
        for i in range(w.size):
            wi = w[i]
            gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
            wn, velocity_out[i] = sgd_element(wi, gi, velocity[i], lr, mu, True)
            w[i] = wn
            bad += not abs(wn) < math.inf
    else:
        for i in range(w.size):
            wi = w[i]
            gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
            wn, velocity_out[i] = sgd_element(wi, gi, velocity[i], lr, mu, False)
            w[i] = wn
            bad += not abs(wn) < math.inf
    return bad


@njit(**PJIT)
def sgd_update(w, g, velocity, lr, momentum, nesterov, l1, l2, snapshot, velocity_out):
    """SGD with (Nesterov) momentum (Sutskever et al., https://proceedings.mlr.press/v28/sutskever13.html).

    plain (momentum == 0): w -= lr*g, ``velocity`` and ``velocity_out`` unused (may be empty);
    momentum:  v = momentum*v - lr*g;  w += v;
    nesterov:  v = momentum*v - lr*g;  w += momentum*v - lr*g      (the new v into ``velocity_out``).
    """
    dt = w.dtype.type
    lr_, mu, l1_, l2x2 = dt(lr), dt(momentum), dt(l1), dt(2.0 * l2)
    reg = l1 != 0.0 or l2 != 0.0
    n = w.size
    if g.size != n or (momentum != 0.0 and (velocity.size != n or velocity_out.size != n)):
        raise ValueError("sgd_update: w, g, velocity and velocity_out (with momentum) must have the same length")
    if snapshot.size != 0 and snapshot.size != n:
        raise ValueError("sgd_update: snapshot must be empty or of w's length")
    if momentum == 0.0:  # never read; empty slices keep the chunk slicing below valid
        velocity, velocity_out = velocity[:0], velocity_out[:0]
    if n <= SERIAL_MAX:
        return _sgd_block(w, g, velocity, snapshot, velocity_out, lr_, mu, nesterov, l1_, l2x2, reg)
    bad = 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        bad += _sgd_block(w[lo:hi], g[lo:hi], velocity[lo:hi], snapshot[lo:hi], velocity_out[lo:hi], lr_, mu,
                          nesterov, l1_, l2x2, reg)
    return bad


# ---------------------------------------------------------------------------------------------------
# Adagrad


@njit(**JIT)
def _adagrad_block(w, g, accum, snapshot, accum_out, lr, eps, l1, l2x2, reg):
    keep(snapshot, w)
    bad = 0
    for i in range(w.size):
        wi = w[i]
        gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
        wn, accum_out[i] = adagrad_element(wi, gi, accum[i], lr, eps)
        w[i] = wn
        bad += not abs(wn) < math.inf
    return bad


@njit(**PJIT)
def adagrad_update(w, g, accum, lr, eps, l1, l2, snapshot, accum_out):
    """Adagrad (Duchi et al., https://jmlr.org/papers/v12/duchi11a.html).

    accum += g^2;  w -= lr*g / (sqrt(accum) + eps)      (the new accum into ``accum_out``).
    """
    dt = w.dtype.type
    lr_, eps_, l1_, l2x2 = dt(lr), dt(eps), dt(l1), dt(2.0 * l2)
    reg = l1 != 0.0 or l2 != 0.0
    n = w.size
    if g.size != n or accum.size != n or accum_out.size != n:
        raise ValueError("adagrad_update: w, g, accum and accum_out must have the same length")
    if snapshot.size != 0 and snapshot.size != n:
        raise ValueError("adagrad_update: snapshot must be empty or of w's length")
    if n <= SERIAL_MAX:
        return _adagrad_block(w, g, accum, snapshot, accum_out, lr_, eps_, l1_, l2x2, reg)
    bad = 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        bad += _adagrad_block(w[lo:hi], g[lo:hi], accum[lo:hi], snapshot[lo:hi], accum_out[lo:hi], lr_, eps_, l1_,
                              l2x2, reg)
    return bad


# ---------------------------------------------------------------------------------------------------
# RMSprop


@njit(**JIT)
def _rmsprop_block(w, g, ms, snapshot, ms_out, lr, rho, one_m_rho, eps, l1, l2x2, reg):
    keep(snapshot, w)
    bad = 0
    for i in range(w.size):
        wi = w[i]
        gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
        wn, ms_out[i] = rmsprop_element(wi, gi, ms[i], lr, rho, one_m_rho, eps)
        w[i] = wn
        bad += not abs(wn) < math.inf
    return bad


@njit(**PJIT)
def rmsprop_update(w, g, ms, lr, rho, eps, l1, l2, snapshot, ms_out):
    """RMSprop (Tieleman & Hinton, http://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf).

    ms = rho*ms + (1-rho)*g^2;  w -= lr*g / (sqrt(ms) + eps)      (the new ms into ``ms_out``).
    """
    dt = w.dtype.type
    lr_, rho_, one_m_rho, eps_ = dt(lr), dt(rho), dt(1.0 - rho), dt(eps)
    l1_, l2x2 = dt(l1), dt(2.0 * l2)
    reg = l1 != 0.0 or l2 != 0.0
    n = w.size
    if g.size != n or ms.size != n or ms_out.size != n:
        raise ValueError("rmsprop_update: w, g, ms and ms_out must have the same length")
    if snapshot.size != 0 and snapshot.size != n:
        raise ValueError("rmsprop_update: snapshot must be empty or of w's length")
    if n <= SERIAL_MAX:
        return _rmsprop_block(w, g, ms, snapshot, ms_out, lr_, rho_, one_m_rho, eps_, l1_, l2x2, reg)
    bad = 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        bad += _rmsprop_block(w[lo:hi], g[lo:hi], ms[lo:hi], snapshot[lo:hi], ms_out[lo:hi], lr_, rho_, one_m_rho,
                              eps_, l1_, l2x2, reg)
    return bad


# ---------------------------------------------------------------------------------------------------
# Adam, AMSGrad, AdamW


@njit(**JIT)
def _adam_block(w, g, m, v, vmax, snapshot, m_out, v_out, vmax_out, step, inv_sqrt_bc2, b1, one_m_b1, b2, one_m_b2,
                eps, decay, amsgrad, l1, l2x2, reg):
    # each of w, g, m, v (vmax) is read once and w, m_out, v_out (vmax_out, snapshot) written once per element
    keep(snapshot, w)
    bad = 0
    if amsgrad:
        for i in range(w.size):
            wi = w[i]
            gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
            mi, vi = adam_moments(gi, m[i], v[i], b1, one_m_b1, b2, one_m_b2)
            m_out[i] = mi
            v_out[i] = vi
            # np.maximum propagates NaN like torch.maximum and vectorizes to an unconditional store; the
            # builtin max() keeps the loop scalar and a ternary becomes a masked store (vmaskmovps,
            # microcoded on Zen 3): either is about 3x slower.
            vi = np.maximum(vmax[i], vi)
            vmax_out[i] = vi
            wn = adam_weight(wi, mi, vi, step, inv_sqrt_bc2, eps, decay)
            w[i] = wn
            bad += not abs(wn) < math.inf
    else:
        for i in range(w.size):
            wi = w[i]
            gi = regularized(g[i], wi, l1, l2x2) if reg else g[i]
            mi, vi = adam_moments(gi, m[i], v[i], b1, one_m_b1, b2, one_m_b2)
            m_out[i] = mi
            v_out[i] = vi
            wn = adam_weight(wi, mi, vi, step, inv_sqrt_bc2, eps, decay)
            w[i] = wn
            bad += not abs(wn) < math.inf
    return bad


@njit(**PJIT)
def adam_update(w, g, m, v, vmax, lr, beta1, beta2, eps, t, weight_decay, amsgrad, l1, l2, snapshot, m_out, v_out,
                vmax_out):
    """Adam, AMSGrad and AdamW in one pass (Kingma & Ba, https://arxiv.org/abs/1412.6980).

    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  (AMSGrad: vmax = max(vmax, v), used in place of v)
    m_hat = m / (1-b1^t);  v_hat = v / (1-b2^t);
    w -= lr*wd*w (AdamW, decoupled, https://arxiv.org/abs/1711.05101; 0 = off);
    w -= lr*m_hat / (sqrt(v_hat) + eps)      (eps outside the sqrt, as in the paper and PyTorch).
    ``t`` is the 1-based optimizer step, the same for every parameter array of that step; ``vmax`` and
    ``vmax_out`` are used only when ``amsgrad`` (Reddi et al., https://openreview.net/forum?id=ryQu7f-RZ;
    may be empty). The new m, v (vmax) go to ``m_out``, ``v_out`` (``vmax_out``).
    """
    dt = w.dtype.type
    # Bias corrections folded into two scalars, once: lr*m_hat = step*m, sqrt(v_hat) = sqrt(v)*inv_sqrt_bc2.
    step = dt(lr / (1.0 - beta1**t))
    inv_sqrt_bc2 = dt(1.0 / math.sqrt(1.0 - beta2**t))
    b1, one_m_b1, b2, one_m_b2 = dt(beta1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2)
    eps_, decay = dt(eps), dt(lr * weight_decay)  # w - (lr*wd)*w keeps float32 digits 1 - lr*wd would lose
    l1_, l2x2 = dt(l1), dt(2.0 * l2)
    reg = l1 != 0.0 or l2 != 0.0
    n = w.size
    if (g.size != n or m.size != n or v.size != n or m_out.size != n or v_out.size != n
            or (amsgrad and (vmax.size != n or vmax_out.size != n))):
        raise ValueError("adam_update: w, g, m, v, m_out, v_out (and vmax, vmax_out with amsgrad) must have the "
                         "same length")
    if snapshot.size != 0 and snapshot.size != n:
        raise ValueError("adam_update: snapshot must be empty or of w's length")
    if not amsgrad:
        vmax, vmax_out = vmax[:0], vmax_out[:0]
    if n <= SERIAL_MAX:
        return _adam_block(w, g, m, v, vmax, snapshot, m_out, v_out, vmax_out, step, inv_sqrt_bc2, b1, one_m_b1,
                           b2, one_m_b2, eps_, decay, amsgrad, l1_, l2x2, reg)
    bad = 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        bad += _adam_block(w[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], vmax[lo:hi], snapshot[lo:hi], m_out[lo:hi],
                           v_out[lo:hi], vmax_out[lo:hi], step, inv_sqrt_bc2, b1, one_m_b1, b2, one_m_b2, eps_,
                           decay, amsgrad, l1_, l2x2, reg)
    return bad
