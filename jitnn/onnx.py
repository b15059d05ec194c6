"""ONNX export: ``jitnn.onnx.export(model, "model.onnx")`` writes a built ``Sequential`` as an ONNX graph.

The graph takes one input named ``"input"`` (float32, or float64 for a float64 model) of shape
``[N, *input_shape]`` (``[N, input_dim]`` for flat features, ``[N, H, W, C]`` for images: channels-last,
as jitnn) with a dynamic batch dimension ``N``, and gives one output ``"output"`` of shape
``[N, *output_shape]``: what ``model.predict`` returns (probabilities after a softmax/sigmoid head).
Conv2D and the poolings transpose to ONNX's NCHW around their node and back (runtimes fuse the pairs
of transposes between consecutive convolutions); BatchNormalization is its inference affine map.
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
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jitnn import activations
from jitnn.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    LeakyReLU,
    MaxPooling2D,
    Reshape,
)
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

    def int64s(self, values: Sequence[int], hint: str) -> str:
        """An int64 constant (shapes, axes)."""
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name


CONVERTERS: dict[type, Callable[..., str]] = {}


def converter(layer_type: type) -> Callable[[Callable[..., str]], Callable[..., str]]:
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


def activation(graph: Graph, act: activations.Activation, x: str, hint: str) -> str:
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


def _nchw(graph: Graph, x: str, hint: str, op: str, inputs=(), **attrs) -> str:
    """``op`` on the NHWC tensor ``x`` through ONNX's NCHW layout: Transpose, op, Transpose back."""
    t = graph.node("Transpose", [x], f"{hint}/nchw", perm=[0, 3, 1, 2])
    y = graph.node(op, [t, *inputs], f"{hint}/{op.lower()}", **attrs)
    return graph.node("Transpose", [y], f"{hint}/nhwc", perm=[0, 2, 3, 1])


@converter(Conv2D)
def convert_conv2d(layer: Conv2D, graph: Graph, x: str) -> str:
    """One Conv (weights as (F, C, KH, KW), explicit pads: Keras' "same" puts the odd pixel bottom/right)."""
    hint = layer.name or "conv2d"
    top, bottom, left, right = layer.pads
    inputs = [graph.weight(np.asarray(layer.W).transpose(3, 2, 0, 1), f"{hint}/kernel")]
    if layer.use_bias:
        inputs.append(graph.weight(layer.b, f"{hint}/bias"))
    z = _nchw(graph, x, hint, "Conv", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
              dilations=list(layer.dilation_rate), pads=[top, left, bottom, right])
    return activation(graph, layer.activation, z, hint)


def _pool_pads(layer) -> list[int]:
    h, w = layer.input_shape[:2]
    (oh, ow), (top, left) = layer.output_shape[:2], layer.pads
    bottom = max((oh - 1) * layer.strides[0] + layer.pool_size[0] - h, 0) - top
    right = max((ow - 1) * layer.strides[1] + layer.pool_size[1] - w, 0) - left
    return [top, left, bottom, right]


@converter(MaxPooling2D)
def convert_maxpool(layer: MaxPooling2D, graph: Graph, x: str) -> str:
    """MaxPool: padded cells never win (ONNX pads max pooling with -inf)."""
    return _nchw(graph, x, layer.name or "maxpool", "MaxPool", kernel_shape=list(layer.pool_size),
                 strides=list(layer.strides), pads=_pool_pads(layer))


@converter(AveragePooling2D)
def convert_avgpool(layer: AveragePooling2D, graph: Graph, x: str) -> str:
    """AveragePool with count_include_pad=0: the mean of the real cells, as Keras."""
    return _nchw(graph, x, layer.name or "avgpool", "AveragePool", kernel_shape=list(layer.pool_size),
                 strides=list(layer.strides), pads=_pool_pads(layer), count_include_pad=0)


@converter(GlobalAveragePooling2D)
def convert_global_avgpool(layer: GlobalAveragePooling2D, graph: Graph, x: str) -> str:
    hint = layer.name or "global_avgpool"
    t = graph.node("Transpose", [x], f"{hint}/nchw", perm=[0, 3, 1, 2])
    return graph.node("Flatten", [graph.node("GlobalAveragePool", [t], f"{hint}/pool")], hint, axis=1)


@converter(Flatten)
def convert_flatten(layer: Flatten, graph: Graph, x: str) -> str:
    """Row-major over the channels-last sample: the same order as jitnn's."""
    return graph.node("Flatten", [x], layer.name or "flatten", axis=1)


@converter(Reshape)
def convert_reshape(layer: Reshape, graph: Graph, x: str) -> str:
    hint = layer.name or "reshape"
    return graph.node("Reshape", [x, graph.int64s([-1, *layer.output_shape], f"{hint}/shape")], hint)


@converter(BatchNormalization)
def convert_batchnorm(layer: BatchNormalization, graph: Graph, x: str) -> str:
    """Inference: x * s + (beta - moving_mean * s), s = gamma / sqrt(moving_variance + epsilon), over the
    last axis (broadcast), computed in float64 as ``fold_batchnorm`` does."""
    hint = layer.name or "batchnorm"
    s = np.asarray(layer.gamma, np.float64) / np.sqrt(np.asarray(layer.moving_variance, np.float64) + layer.epsilon)
    shift = np.asarray(layer.beta, np.float64) - np.asarray(layer.moving_mean, np.float64) * s
    scaled = graph.node("Mul", [x, graph.weight(s, f"{hint}/scale")], f"{hint}/scaled")
    return graph.node("Add", [scaled, graph.weight(shift, f"{hint}/shift")], hint)


@converter(LeakyReLU)
def convert_leaky_relu(layer: LeakyReLU, graph: Graph, x: str) -> str:
    return activation(graph, layer.activation, x, layer.name or "leaky_relu")


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
    inputs = [helper.make_tensor_value_info(INPUT_NAME, elem, ["N", *model.input_shape])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, elem, ["N", *model.output_shape])]
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
