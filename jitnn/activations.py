"""Activation functions by name, resolved to the kernel codes that the GEMM epilogue and layers share.

- relu: Nair & Hinton 2010, https://www.cs.toronto.edu/~hinton/absps/reluICML.pdf
- leaky_relu: Maas et al. 2013, https://ai.stanford.edu/~amaas/papers/relu_hybrid_icml2013_final.pdf
- sigmoid, tanh: the classic squashing functions.
- softmax: row-wise, max-subtracted; fused with categorical cross-entropy when it ends the model.
- swish / silu: Ramachandran et al. 2017, https://arxiv.org/abs/1710.05941
- gelu (tanh approximation): Hendrycks & Gimpel 2016, https://arxiv.org/abs/1606.08415
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jitnn.kernels.elementwise import CODES, GELU, LINEAR, SWISH

SOFTMAX = -1  # not elementwise: handled by the row kernels, never by the GEMM epilogue


@dataclass(frozen=True)
class Activation:
    """A resolved activation: ``name``, kernel ``code`` and its parameter (leaky_relu's slope)."""

    name: str
    code: int
    param: float = 0.0
    # What layers and backends ask of it, derived once (read on every training step):
    # needs_preactivation: f'(z) cannot be computed from f(z) alone, so the layer must keep z;
    # identity: f(z) = z, the backends return their input instead of copying it;
    # rowwise: softmax, each output depends on the whole row, so it runs after the product, never in it;
    # in_epilogue: a GEMM can apply it while writing its result (elementwise, backward needs only f(z)).
    needs_preactivation: bool = field(init=False, repr=False, compare=False)
    identity: bool = field(init=False, repr=False, compare=False)
    rowwise: bool = field(init=False, repr=False, compare=False)
    in_epilogue: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        derived = {"needs_preactivation": self.code in (SWISH, GELU), "identity": self.code == LINEAR,
                   "rowwise": self.code == SOFTMAX}
        derived["in_epilogue"] = not derived["rowwise"] and not derived["needs_preactivation"]
        for k, v in derived.items():
            object.__setattr__(self, k, v)  # frozen: set once, here

    def get_config(self):
        return self.name if self.name != "leaky_relu" else {"name": self.name, "alpha": self.param}


def LeakyReLU(alpha: float = 0.01) -> Activation:
    """x if x > 0 else alpha * x (Maas et al. 2013)."""
    if not 0 <= alpha < 1:
        raise ValueError(f"LeakyReLU needs 0 <= alpha < 1, received: alpha={alpha}")
    return Activation("leaky_relu", CODES["leaky_relu"], float(alpha))


NAMES = sorted(set(CODES) | {"softmax"})
LINEAR_ACTIVATION = Activation("linear", LINEAR)


def get(identifier) -> Activation:
    """Resolve None, a name, {"name": ..., "alpha": ...} or an Activation."""
    if identifier is None:
        return LINEAR_ACTIVATION
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, dict):
        if identifier.get("name") == "leaky_relu":
            return LeakyReLU(identifier.get("alpha", 0.01))
        identifier = identifier.get("name")
    if not isinstance(identifier, str):
        raise TypeError(f"activation must be a name or None, received: {identifier!r}")
    name = identifier.lower()
    if name == "softmax":
        return Activation("softmax", SOFTMAX)
    if name == "leaky_relu":
        return LeakyReLU()
    if name == "silu":
        name = "swish"
    if name not in CODES:
        raise ValueError(f"unknown activation {identifier!r}; expected one of {NAMES}")
    return Activation(name, CODES[name])
