"""jitnn.onnx.export: every layer and activation, run by onnxruntime (CPU) against model.predict at
several batch sizes through the one dynamic batch dimension; every file passes onnx.checker."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from jitnn import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    GlobalAveragePooling2D,
    Sequential,
)
from jitnn import onnx as jonnx
from jitnn.activations import LeakyReLU

ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh", "softmax", "swish", "gelu", LeakyReLU(0.2)]


def run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"] and sess.get_inputs()[0].shape[0] == "N"
    return sess.run(["output"], {"input": x})[0]


def check_export(model, tmp_path, opset=jonnx.DEFAULT_OPSET, batches=(1, 7, 64)):
    path = tmp_path / "model.onnx"
    proto = jonnx.export(model, path, opset=opset)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert proto.opset_import[0].version == opset
    rng = np.random.default_rng(1)
    tol = {"float32": 2e-6, "float64": 1e-12}[model.dtype.name]
    for n in batches:
        x = rng.standard_normal((n, *model.input_shape)).astype(model.dtype)
        np.testing.assert_allclose(run(path, x), model.predict(x), rtol=tol * 10, atol=tol)
    return proto


def trained(layers, input_dim=13, dtype="float32", loss="mse", seed=0):
    """A model fitted for two epochs (so the weights and biases are not their initial values)."""
    model = Sequential(layers, dtype=dtype)
    model.compile(loss=loss, optimizer="adam")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, input_dim))
    out = layers[-1].units if isinstance(layers[-1], Dense) else layers[-2].units
    y = rng.integers(0, out, 50) if loss == "categorical_crossentropy" else rng.standard_normal((50, out))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=seed)
    return model


@pytest.mark.parametrize("act", ACTIVATIONS, ids=str)
def test_dense_with_each_activation(act, tmp_path):
    model = trained([Dense(11, activation=act, input_dim=13), Dense(5, activation=act)])
    check_export(model, tmp_path)


@pytest.mark.parametrize("opset", [13, 20, onnx.defs.onnx_opset_version()])
def test_opsets_including_the_native_gelu(opset, tmp_path):
    model = trained([Dense(9, activation="gelu", input_dim=13), Dense(3)])
    proto = check_export(model, tmp_path, opset=opset)
    ops = {n.op_type for n in proto.graph.node}
    assert ("Gelu" in ops) == (opset >= 20)


def test_classifier_with_dropout_activation_layers_and_no_bias(tmp_path):
    layers = [Dense(31, input_dim=13, use_bias=False), Activation("relu"), Dropout(0.3),
              Dense(17, activation="tanh"), Dropout(0.5), Dense(4, activation="softmax")]
    model = trained(layers, loss="categorical_crossentropy")
    proto = check_export(model, tmp_path, batches=(1, 2, 129))
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["MatMul", "Relu", "Gemm", "Tanh", "Gemm", "Softmax"]  # dropout: no node


def test_float64_model(tmp_path):
    layers = [Dense(8, activation="tanh", input_dim=13), Dense(3, activation="sigmoid")]
    model = trained(layers, dtype="float64")
    proto = check_export(model, tmp_path)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_identity_only_model_has_an_output_node(tmp_path):
    model = Sequential([Dropout(0.5)])
    model.build(6)
    check_export(model, tmp_path)


def test_a_registered_converter_extends_export(tmp_path):
    class Scale(Dropout):  # a layer type export does not know
        pass

    model = Sequential([Dense(4, input_dim=3), Scale(0.1)])
    model.build(3)
    with pytest.raises(TypeError, match="Scale"):
        jonnx.to_onnx(model)
    jonnx.converter(Scale)(lambda layer, graph, x: graph.node("Mul", [x, graph.scalar(1.0, "one")], "scale"))
    try:
        check_export(model, tmp_path)
    finally:
        del jonnx.CONVERTERS[Scale]


def test_bad_calls_raise():
    with pytest.raises(ValueError, match="build or fit"):
        jonnx.to_onnx(Sequential([Dense(3)]))
    model = Sequential([Dense(3, input_dim=2)])
    model.build(2)
    for bad in (12, 10_000, "17", True):
        with pytest.raises(ValueError, match="opset"):
            jonnx.to_onnx(model, opset=bad)
    with pytest.raises(TypeError, match="Sequential"):
        jonnx.to_onnx("model")


def test_strided_conv_model_with_same_average_pooling_and_trained_batchnorm(tmp_path):
    # odd image sides, so stride 2 and "same" pad the bottom/right border, where AveragePooling2D must
    # average the real cells only (count_include_pad=0); BN after a training step, so its moving
    # statistics are neither 0 nor 1 and the exported affine map is not the identity
    model = Sequential([Conv2D(6, 3, strides=2, padding="same", activation="relu", input_shape=(15, 13, 3)),
                        BatchNormalization(momentum=0.5),
                        AveragePooling2D(pool_size=3, strides=2, padding="same"),
                        Conv2D(8, 3, padding="same", activation="tanh"), BatchNormalization(momentum=0.5),
                        GlobalAveragePooling2D(), Dense(4, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 15, 13, 3)) * 2 + 1
    model.fit(x, rng.integers(0, 4, 24), epochs=1, batch_size=8, verbose=0, seed=0)
    for bn in (model.layers[1], model.layers[4]):
        assert np.abs(np.asarray(bn.moving_mean)).max() > 1e-2
        assert np.abs(np.asarray(bn.moving_variance) - 1).max() > 1e-2
    pool = model.layers[2]
    assert pool.input_shape == (8, 7, 6) and pool.output_shape == (4, 4, 6)  # a padded border on both axes
    proto = check_export(model, tmp_path)  # batches 1, 7 and 64, onnx.checker on the saved file
    pools = [n for n in proto.graph.node if n.op_type == "AveragePool"]
    attrs = {a.name: helper.get_attribute_value(a) for a in pools[0].attribute}
    assert attrs["count_include_pad"] == 0 and list(attrs["strides"]) == [2, 2] and sum(attrs["pads"]) > 0
    assert {"Conv", "GlobalAveragePool", "Mul", "Add", "Softmax"} <= {n.op_type for n in proto.graph.node}
