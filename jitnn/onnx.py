"""ONNX export: ``jitnn.onnx.export(model, "model.onnx")`` writes a built ``Sequential`` as an ONNX graph.

The graph takes one input named ``"input"`` (float32, or float64 for a float64 model) of shape
``[N, input_dim]`` with a dynamic batch dimension ``N``, and gives one output ``"output"`` of shape
``[N, output_dim]``: what ``model.predict`` returns (probabilities after a softmax/sigmoid head).
The default opset is 17 (onnxruntime >= 1.12 and most runtimes read it); any opset from 13 (Softmax
over the last axis) to the installed onnx package's newest works. From opset 20 GELU is one ``Gelu``
node (``approximate="tanh"``); below, its tanh formula in elementary nodes.

Adding a layer means one converter: a function ``(layer, graph, x) -> name of its output`` registered
with ``@converter(LayerClass)``; it adds nodes and weights through ``graph`` (``node``, ``weight``).

Requires the ``onnx`` package (``pip install 'jitnn[onnx]'``, which also installs onnxruntime).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jitnn.layers import Activation, Dense, Dropout
from jitnn.model import Sequential

DEFAULT_OPSET = 17
MIN_OPSET = 13
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class Graph:
    """What a converter writes into: nodes, weights (initializers) and unique value names."""

    def __init__(self, opset: int, dtype: np.dtype):
        self.opset, self.dtype = opset, np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set()

    def name(self, hint: str) -> str:
        """A value name not used yet, from ``hint``."""
        name, k = hint, 1
        while name in self._used:
            name, k = f"{hint}_{k}", k + 1
        self._used.add(name)
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        """Add one ``op`` node; returns the name of its (single) output."""
        out = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(f"{hint}/{op}"), **attrs))
        return out

    def weight(self, array: np.ndarray, hint: str) -> str:
        """Add a constant tensor (in the graph's dtype); returns its name."""
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, self.dtype), name))
        return name

    def scalar(self, value: float, hint: str) -> str:
        return self.weight(np.asarray(value), hint)


CONVERTERS: dict[type, Callable[..., str]] = {}


def converter(layer_type: type):
    """Register ``fn(layer, graph, x) -> output name`` as the converter of ``layer_type``."""
    def register(fn):
        CONVERTERS[layer_type] = fn
        return fn
    return register


# --- activations ----------------------------------------------------------------------------------------


def _gelu_tanh(graph: Graph, x: str, hint: str) -> str:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), jitnn's formula, in elementary nodes."""
    if graph.opset >= 20:
        return graph.node("Gelu", [x], hint, approximate="tanh")
    def const(value, suffix):
        return graph.scalar(value, f"{hint}/{suffix}")

    cube = graph.node("Mul", [graph.node("Mul", [x, x], f"{hint}/x2"), x], f"{hint}/x3")
    cx3 = graph.node("Mul", [cube, const(0.044715, "c")], f"{hint}/cx3")
    inner = graph.node("Add", [x, cx3], f"{hint}/inner")
    scaled = graph.node("Mul", [inner, const(math.sqrt(2 / math.pi), "k")], f"{hint}/scaled")
    t = graph.node("Tanh", [scaled], f"{hint}/tanh")
    one_plus = graph.node("Add", [t, const(1.0, "one")], f"{hint}/1p")
    half_x = graph.node("Mul", [x, const(0.5, "half")], f"{hint}/halfx")
    return graph.node("Mul", [half_x, one_plus], hint)


def activation(graph: Graph, act, x: str, hint: str) -> str:
    """The nodes of a resolved ``jitnn.activations.Activation`` (``act.name``, ``act.param``) on ``x``."""
    name = act.name
    if name == "linear":
        return x
    if name in ("relu", "sigmoid", "tanh"):
        return graph.node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[name], [x], hint)
    if name == "softmax":
        return graph.node("Softmax", [x], hint, axis=-1)
    if name == "leaky_relu":
        return graph.node("LeakyRelu", [x], hint, alpha=float(act.param))
    if name == "swish":
        return graph.node("Mul", [x, graph.node("Sigmoid", [x], f"{hint}/sigmoid")], hint)
    if name == "gelu":
        return _gelu_tanh(graph, x, hint)
    raise TypeError(f"no ONNX conversion for the activation {name!r}")


# --- layers ---------------------------------------------------------------------------------------------


@converter(Dense)
def convert_dense(layer: Dense, graph: Graph, x: str) -> str:
    """Z = X W + b as one Gemm (MatMul without a bias), then the activation."""
    hint = layer.name or "dense"
    w = graph.weight(layer.W, f"{hint}/kernel")
    if layer.use_bias:
        z = graph.node("Gemm", [x, w, graph.weight(layer.b, f"{hint}/bias")], f"{hint}/z")
    else:
        z = graph.node("MatMul", [x, w], f"{hint}/z")
    return activation(graph, layer.activation, z, hint)


@converter(Activation)
def convert_activation(layer: Activation, graph: Graph, x: str) -> str:
    return activation(graph, layer.activation, x, layer.name or "activation")


@converter(Dropout)
def convert_dropout(layer: Dropout, graph: Graph, x: str) -> str:
    """Inverted dropout is the identity at inference: no node."""
    return x


# --- the model ------------------------------------------------------------------------------------------


def to_onnx(model: Sequential, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The ONNX model of a built ``Sequential`` (see the module docstring), checked by ``onnx.checker``."""
    if not isinstance(model, Sequential):
        raise TypeError(f"export needs a jitnn.Sequential, received: {type(model).__name__}")
    if not model.built:
        raise ValueError("build or fit the model before exporting it (its weights do not exist yet)")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int in [{MIN_OPSET}, {newest}], received: opset={opset!r}")
    model.get_weights()  # on a GPU model, brings the device weights back into the arrays read here
    graph = Graph(opset, model.dtype)
    graph.name(INPUT_NAME)
    x = INPUT_NAME
    for i, layer in enumerate(model.layers):
        convert = CONVERTERS.get(type(layer))
        if convert is None:
            raise TypeError(f"layer {i} ({type(layer).__name__}) has no ONNX converter; registered: "
                            f"{sorted(t.__name__ for t in CONVERTERS)}")
        x = convert(layer, graph, x)
    elem = _ELEM[model.dtype]
    nodes = graph.nodes
    if x == INPUT_NAME or not nodes or nodes[-1].output[0] != x:
        nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name="output/Identity"))
    else:
        nodes[-1].output[0] = OUTPUT_NAME
    inputs = [helper.make_tensor_value_info(INPUT_NAME, elem, ["N", model.input_dim])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, elem, ["N", model.output_dim])]
    g = helper.make_graph(nodes, model.name, inputs, outputs, initializer=graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(g, opset_imports=opsets, producer_name="jitnn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model: Sequential, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Write ``model`` to ``path`` as ONNX (input ``"input"``, output ``"output"``); returns the proto."""
    proto = to_onnx(model, opset)
    onnx.save_model(proto, os.fspath(path))
    return proto


__all__ = ["CONVERTERS", "DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "Graph", "activation", "converter",
           "export", "to_onnx"]
