"""BatchNormalization folding for inference (as NN-512 does while packing weights).

In inference BN is one affine map per channel, y = x * s + (beta - mean * s), s = gamma / sqrt(var + eps),
so a BN right after a Conv2D or Dense without activation folds into that layer's weights and bias
(``kernels.normalization.fold_batchnorm``): W' = W * s, b' = (b - mean) * s + beta. An Activation layer
right after the BN then moves into the folded layer's epilogue when it is elementwise: the whole
Conv2D → BN → ReLU block becomes one kernel call.
"""

from __future__ import annotations

from jitnn.kernels.normalization import fold_batchnorm
from jitnn.layers.activation import Activation
from jitnn.layers.conv import Conv2D
from jitnn.layers.dense import Dense
from jitnn.layers.normalization import BatchNormalization

FOLDABLE = (Conv2D, Dense)


def clone(layer, **changes):
    """A new, unbuilt layer of the same class and config, with ``changes`` applied."""
    cfg = {**layer.get_config(), **changes}
    return type(layer)(**cfg)


def fold_plan(layers, to_host):
    """(new layers, their weights in ``Sequential.get_weights`` order) with each BatchNormalization that
    directly follows a Conv2D/Dense without activation folded into it. Layers are not built."""
    out, weights, i = [], [], 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, FOLDABLE) and isinstance(nxt, BatchNormalization) and layer.activation.identity:
            host = [to_host(a) for a in (layer.W, nxt.gamma, nxt.beta, nxt.moving_mean, nxt.moving_variance)]
            bias = to_host(layer.b) if layer.use_bias else None
            w, b = fold_batchnorm(host[0], bias, *host[1:], nxt.epsilon)
            act, i = layer.activation.get_config(), i + 2
            after = layers[i] if i < len(layers) else None
            if isinstance(after, Activation) and after.activation.in_epilogue:
                act, i = after.activation.get_config(), i + 1
            out.append(clone(layer, use_bias=True, activation=act))
            weights += [w, b]
            continue
        out.append(clone(layer))
        weights += [to_host(a) for a in (*layer.params, *layer.state)]
        i += 1
    return out, weights


__all__ = ["FOLDABLE", "clone", "fold_plan"]
