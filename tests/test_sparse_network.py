"""Sparse inputs and pruned weights in the network (issue 5): CSR-input Dense against the dense path,
finite differences, magnitude pruning against a masked dense reference, and the profiler's notes."""

import numpy as np
import pytest
from helpers import DTYPES, central_diff, tolerance

import jitnn
from jitnn import report
from jitnn.layers import Dense
from jitnn.model import Sequential
from jitnn.prune import magnitude_mask
from jitnn.sparse import CSRMatrix


def tol(dtype):
    return tolerance(dtype, float64=(1e-10, 1e-12))


def sparse_data(rows=97, cols=41, density=0.1, classes=3, seed=0, empty_rows=(3, 50)):
    """A random sparse design matrix (some rows all zero) and integer labels."""
    rng = np.random.default_rng(seed)
    x = (rng.random((rows, cols)) < density) * rng.standard_normal((rows, cols))
    x[[r for r in empty_rows if r < rows]] = 0
    return x, rng.integers(0, classes, rows)


def mlp(dtype, out_act="softmax"):
    return Sequential([Dense(13, "tanh"), Dense(7, "relu"), Dense(3, out_act)], dtype=dtype)


# ---------------------------------------------------------------- CSR input == dense input


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [16, 97])
def test_csr_training_matches_dense(dtype, batch_size):
    x, y = sparse_data()
    models = []
    for xin in (x.astype(dtype), CSRMatrix.from_dense(x, dtype=dtype)):
        m = mlp(dtype)
        m.compile("sparse_categorical_crossentropy", "adam", ["accuracy"])
        h = m.fit(xin, y, epochs=3, batch_size=batch_size, seed=7, verbose=0)
        models.append((m, h))
    (md, hd), (ms, hs) = models
    for wd, ws in zip(md.get_weights(), ms.get_weights()):
        np.testing.assert_allclose(ws, wd, **tol(dtype))
    np.testing.assert_allclose(hs.history["loss"], hd.history["loss"], **tol(dtype))
    xs = CSRMatrix.from_dense(x, dtype=dtype)
    np.testing.assert_allclose(ms.predict(xs, batch_size=10), md.predict(x.astype(dtype), batch_size=10),
                               **tol(dtype))
    np.testing.assert_allclose(ms.evaluate(xs, y), md.evaluate(x.astype(dtype), y), **tol(dtype))


@pytest.mark.parametrize("act", ["linear", "relu", "softmax", "gelu"])
def test_csr_dense_layer_forward_matches_dense(act):
    x, _ = sparse_data(rows=20, cols=9)
    outs = []
    for xin in (x, CSRMatrix.from_dense(x)):
        layer = Dense(5, act, bias_initializer="glorot_uniform")
        layer.build(9, np.float64, np.random.default_rng(3))
        layer.allocate(20)
        outs.append(layer.forward(xin, True).copy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-12, atol=1e-12)


def test_csr_dense_gradient_finite_differences():
    """dW and db of a CSR-input Dense (tanh) against central differences of sum(A * G), float64."""
    x, _ = sparse_data(rows=6, cols=5, density=0.4, empty_rows=(2,))
    xs = CSRMatrix.from_dense(x)
    layer = Dense(4, "tanh", bias_initializer="glorot_uniform")
    layer.build(5, np.float64, np.random.default_rng(0))
    layer.allocate(6)
    g = np.random.default_rng(1).standard_normal((6, 4))

    def objective():
        return float(np.sum(layer.forward(xs, True) * g))

    objective()
    assert layer.backward(g, need_input_grad=False) is None
    analytic = [layer.dW.copy(), layer.db.copy()]
    for p, grad in zip((layer.W, layer.b), analytic):
        np.testing.assert_allclose(grad, central_diff(objective, p), rtol=1e-6, atol=1e-9)


def test_csr_fit_validates_inputs():
    x, y = sparse_data()
    xs = CSRMatrix.from_dense(x)
    m = mlp(np.float64)
    m.compile("sparse_categorical_crossentropy", "adam")
    with pytest.raises(ValueError, match="different lengths"):
        m.fit(xs, y[:-1], verbose=0)
    bad = xs.copy()
    bad.data[5] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        m.fit(bad, y, verbose=0)
    m.fit(xs, y, verbose=0, seed=0)
    with pytest.raises(ValueError, match="features"):
        m.predict(CSRMatrix.from_dense(x[:, :-1]))


def test_csr_float32_data_into_float64_model():
    x, y = sparse_data()
    m = mlp(np.float64)
    m.compile("sparse_categorical_crossentropy", "sgd")
    m.fit(CSRMatrix.from_dense(x, dtype=np.float32), y, epochs=1, verbose=0, seed=0)
    assert m.predict(CSRMatrix.from_dense(x, dtype=np.float32)).dtype == np.float64


# ---------------------------------------------------------------- pruning


def trained(dtype=np.float64, seed=0):
    x, y = sparse_data(seed=seed, density=0.5)
    m = mlp(dtype)
    m.compile("sparse_categorical_crossentropy", "adam", ["accuracy"])
    m.fit(x.astype(dtype), y, epochs=2, batch_size=16, seed=seed, verbose=0)
    return m, x.astype(dtype), y


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 0.999])
def test_prune_sparsity_exact(sparsity):
    m, _, _ = trained()
    before = m.get_weights()
    p = jitnn.prune(m, sparsity)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)  # the original is left alone
    for layer, orig in zip(p.layers, m.layers):
        size = layer.W.size
        kept = size - round(sparsity * size)
        assert layer.mask.sum() == kept
        assert layer.sparse_kernel().nnz == kept
        # the kept weights are the largest in magnitude
        w = np.abs(orig.W)
        assert w[layer.mask].min(initial=np.inf) >= w[~layer.mask].max(initial=0)
        np.testing.assert_array_equal(layer.W[layer.mask], orig.W[layer.mask])
        assert not layer.W[~layer.mask].any()


def test_magnitude_mask_ties_keep_exact_count():
    mask = magnitude_mask(np.ones((4, 5)), 0.5)
    assert mask.sum() == 10


@pytest.mark.parametrize("dtype", DTYPES)
def test_pruned_predictions_match_masked_dense(dtype):
    m, x, _ = trained(dtype)
    p = jitnn.prune(m, 0.8)
    ref = mlp(dtype)
    ref.build(x.shape[1])
    ref.set_weights([w for layer in p.layers for w in layer.params])
    np.testing.assert_allclose(p.predict(x, batch_size=32), ref.predict(x, batch_size=32), **tol(dtype))
    # sparse input into a pruned model: spmm on the masked dense kernel
    np.testing.assert_allclose(p.predict(CSRMatrix.from_dense(x)), ref.predict(x), **tol(dtype))


def test_fine_tuning_keeps_zeros():
    m, x, y = trained()
    p = jitnn.prune(m, 0.9)
    masks = [layer.mask.copy() for layer in p.layers]
    before = p.get_weights()
    p.fit(x, y, epochs=3, batch_size=16, seed=1, verbose=0)
    for layer, mask, w0 in zip(p.layers, masks, before[::2]):
        assert not layer.W[~mask].any()
        assert not np.array_equal(layer.W[mask], w0[mask])  # the kept weights did train
        # inference uses the refreshed CSR kernel
        np.testing.assert_array_equal(layer.sparse_kernel().to_dense(), layer.W)
    p.fit(CSRMatrix.from_dense(x), y, epochs=1, batch_size=16, seed=1, verbose=0)
    for layer, mask in zip(p.layers, masks):
        assert not layer.W[~mask].any()
    p.set_weights([np.ones_like(w) for w in p.get_weights()])
    for layer, mask in zip(p.layers, masks):
        np.testing.assert_array_equal(layer.W, mask.astype(layer.W.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pruning_a_cnn_prunes_its_dense_layers(dtype):
    """Issue 12: a CNN prunes like an MLP. Its Dense kernels keep their largest weights (predictions equal
    the same net with those weights zeroed, through the CSR inference kernel), the conv kernels and all
    biases are left whole, and fine-tuning keeps the zeros."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 9, 9, 2)).astype(dtype), rng.integers(0, 3, 40)

    def cnn():
        return Sequential([jitnn.Conv2D(4, 3, activation="relu", input_shape=(9, 9, 2)), jitnn.MaxPooling2D(2),
                           jitnn.Flatten(), Dense(12, "relu"), Dense(3, "softmax")], dtype=dtype)

    m = cnn()
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    m.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0)
    p = jitnn.prune(m, 0.75)
    dense = [layer for layer in p.layers if isinstance(layer, Dense)]
    for layer in dense:
        assert (layer.W == 0).sum() == round(0.75 * layer.W.size)
    np.testing.assert_array_equal(p.layers[0].W, m.layers[0].W)  # the conv kernel is not pruned
    ref = cnn()
    ref.build((9, 9, 2))
    ref.set_weights(p.get_weights())
    np.testing.assert_allclose(p.predict(x, batch_size=16), ref.predict(x, batch_size=16), **tol(dtype))
    p.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    p.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0)
    for layer in dense:
        assert not layer.W[~layer.mask].any()
        np.testing.assert_array_equal(layer.sparse_kernel().to_dense(), layer.W)


def test_prune_validates():
    m, _, _ = trained()
    for bad in (-0.1, 1.0, True, "0.5"):
        with pytest.raises(ValueError, match="sparsity"):
            jitnn.prune(m, bad)
    with pytest.raises(ValueError, match="build or fit"):
        jitnn.prune(mlp(np.float64))


# ---------------------------------------------------------------- profiler


def test_profile_notes_for_sparse_layers():
    x, y = sparse_data(density=0.1)
    xs = CSRMatrix.from_dense(x)
    m = mlp(np.float64)
    m.compile("sparse_categorical_crossentropy", "adam")
    m.fit(xs, y, epochs=1, batch_size=16, seed=0, verbose=0, profile=True)
    notes = m.layers[0].profile_notes()
    assert notes["input_nnz_per_row"] == pytest.approx(xs.nnz / xs.shape[0])
    assert notes["input_load_factor"] == pytest.approx(xs.load_factor)
    assert m.layers[1].profile_notes() == {}
    # FLOPs of the CSR layer: 2 * nnz * units (+ bias and activation), not the dense count
    first = m.layers[0]
    assert first.flops(16, need_input_grad=False)["forward"] == round(2 * notes["input_nnz_per_row"] * 16
                                                                       * first.units) + 2 * 16 * first.units
    data = report.to_json(m.profile_)
    by_name = {entry["name"].split()[0]: entry for entry in data["layers"]}  # listed by cost, which varies
    assert by_name["Dense[0]"]["notes"]["input_load_factor"] == pytest.approx(xs.load_factor)
    assert "input_load_factor" in report.render_tree(m.profile_)
    p = jitnn.prune(m, 0.95)
    notes = p.layers[1].profile_notes()
    assert notes["kernel_nnz"] == p.layers[1].W.size - round(0.95 * p.layers[1].W.size)


def test_global_prune_ranks_all_kernels_together():
    model = jitnn.Sequential([jitnn.Dense(6, activation="relu", input_dim=5), jitnn.Dense(3)])
    model.build(5, seed=0)
    model.layers[1].W[...] *= 100.0  # the second kernel's weights all outrank the first's
    pruned = jitnn.prune(model, sparsity=0.5, scope="global")
    kept = [int((layer.W != 0).sum()) for layer in pruned.layers]
    total = sum(layer.W.size for layer in model.layers)
    assert sum(kept) == total - round(0.5 * total)
    assert kept[1] == model.layers[1].W.size  # every large weight survives
    with pytest.raises(ValueError, match="scope"):
        jitnn.prune(model, 0.5, scope="neuron")
