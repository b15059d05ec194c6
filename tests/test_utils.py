"""jitnn.utils.to_categorical against an independent one-hot (np.eye rows) and Keras' shape rules."""

import numpy as np
import pytest

from jitnn.utils import to_categorical


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (5, 1), (3, 4), (2, 3, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8"])
def test_matches_eye_rows(shape, dtype):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, shape)
    out = to_categorical(y, num_classes=5, dtype=dtype)
    keep = shape[:-1] if len(shape) > 1 and shape[-1] == 1 else shape
    assert out.shape == keep + (5,) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, np.eye(5, dtype=dtype)[y.reshape(keep)])


def test_defaults_and_label_types():
    out = to_categorical([2, 0, 1.0, np.uint8(3)])
    assert out.dtype == np.float32 and out.shape == (4, 4)
    np.testing.assert_array_equal(out.argmax(axis=1), [2, 0, 1, 3])
    np.testing.assert_array_equal(to_categorical([True, False]), [[0, 1], [1, 0]])
    assert to_categorical([], num_classes=3).shape == (0, 3)


@pytest.mark.parametrize("y, kw, match", [
    ([0, 1.5], {}, "integer class labels"), ([0, np.nan], {}, "integer class labels"), (["a"], {}, "<U1"),
    ([0, -1], {}, "label -1"), ([0, 3], {"num_classes": 3}, "label 3"),
    ([0], {"num_classes": 0}, "num_classes=0"),
    ([0], {"num_classes": 2.0}, "num_classes=2.0"), ([], {}, "num_classes=None")])
def test_bad_input_names_it(y, kw, match):
    with pytest.raises(ValueError, match=match):
        to_categorical(y, **kw)
