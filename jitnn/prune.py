"""Magnitude pruning: zero the smallest weights of every Dense kernel and run inference on CSR weights.

Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
https://arxiv.org/abs/1506.02626

``prune(model, 0.95)`` returns a new model (the original is left alone) whose Dense layers keep only
the largest-magnitude 5% of their kernel weights. Biases are not pruned. The pruned model:
- predicts with ``dense_spmm(X, W_csr)``, a CSR copy of the masked kernel rebuilt lazily when W changes;
- fine-tunes with ``fit`` on a dense W: forward and backward are the dense GEMMs on the masked W, and
  after every optimizer step the mask is re-applied (W *= mask: one extra pass over each kernel per
  step), so pruned weights stay exactly zero. The optimizer's moments of pruned weights still move,
  harmlessly. A sparse training path (SDDMM gradient at the kept positions, dense @ CSRᵀ for dX) would
  skip that dense work; see docs/sparse.md.
``set_weights``/``load_weights`` on a pruned model re-apply the mask. ``save`` stores the masked dense
weights but not the mask: a reloaded model is dense, with zeros where the weights were pruned.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from jitnn.layers import Dense

if TYPE_CHECKING:  # for the annotations only: pruning works on any model with Dense layers
    from jitnn.model import Sequential


def magnitude_mask(w, sparsity):
    """A bool mask of ``w``'s shape keeping the ``size - round(sparsity * size)`` largest |w|; ties go
    to the later position in row-major order, so exactly that many are kept."""
    size = w.size
    drop = round(sparsity * size)
    order = np.argsort(np.abs(w), axis=None, kind="stable")  # ascending |w|
    mask = np.ones(size, dtype=bool)
    mask[order[:drop]] = False
    return mask.reshape(w.shape)


def prune(model: Sequential, sparsity: float = 0.95, scope: str = "layer") -> Sequential:
    """A copy of ``model`` with its Dense kernels magnitude-pruned to ``sparsity`` (the fraction zeroed).

    ``scope="layer"`` prunes each kernel to ``sparsity``; ``scope="global"`` ranks all kernel weights
    together (one threshold), so the same overall sparsity leaves small layers, such as the 64x10
    output, denser. That matters for accuracy: on Fashion-MNIST at 95%, see docs/benchmarks.md.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a float in [0, 1), received: sparsity={sparsity!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', received: scope={scope!r}")
    if not model.built:
        raise ValueError("build or fit the model before pruning it (its weights do not exist yet)")
    pruned = copy.deepcopy(model)
    pruned.profile_ = None
    dense = [layer for layer in pruned.layers if isinstance(layer, Dense)]
    if scope == "layer":
        for layer in dense:
            layer.set_mask(magnitude_mask(layer.W, float(sparsity)))
        return pruned
    flat = np.concatenate([layer.W.reshape(-1) for layer in dense])
    mask = magnitude_mask(flat, float(sparsity))
    start = 0
    for layer in dense:
        layer.set_mask(mask[start:start + layer.W.size].reshape(layer.W.shape))
        start += layer.W.size
    return pruned
