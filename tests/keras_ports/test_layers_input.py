"""Keras 3's Input tests, ported (keras/src/layers/core/input_layer_test.py).

normlab has ``Input`` (the function, returning a symbolic tensor) and no
``InputLayer`` class: the tests of ``Input``'s arguments run on it, those of
the class (its ``output``, ``input_tensor``, ``call``) are one strict xfail.
Sparse and ragged inputs are not supported (docs/keras.md).
"""

import numpy as np
import pytest

import normlab
from normlab import Input, layers


def test_input_basic():
    """Keras: InputLayerTest.test_input_basic (dense)."""
    values = Input(shape=(2, 3), batch_size=4, dtype="float32")
    assert values.shape == (4, 2, 3)
    assert values.ndim == 3


def test_input_error1():
    """Keras: InputLayerTest.test_input_error1."""
    with pytest.raises(ValueError, match="cannot pass both `shape` and `batch_shape`"):
        Input(shape=(2, 3), batch_shape=(2, 3))


def test_input_error2():
    """Keras: InputLayerTest.test_input_error2."""
    with pytest.raises(ValueError, match="cannot pass both `batch_size` and `batch_shape`"):
        Input(batch_size=4, batch_shape=(2, 3))


def test_input_error3():
    """Keras: InputLayerTest.test_input_error3."""
    with pytest.raises(ValueError, match="pass a `shape` argument"):
        Input(shape=None, batch_shape=None)


def test_numpy_shape():
    """Keras: InputLayerTest.test_numpy_shape."""
    assert Input(shape=(np.int64(32),)).shape == (None, 32)


def test_input_in_a_sequential_and_a_model():
    """Keras: the Input of input_layer_test used as models use it (first entry, functional input)."""
    inp = layers.Input(shape=(3,), batch_size=2)
    assert normlab.Sequential([inp, layers.Dense(4)]).built
    assert normlab.Model(inp, layers.Dense(4)(inp)).output_shape == (2, 4)


@pytest.mark.xfail(strict=True, raises=AttributeError, reason="normlab has no InputLayer class (use Input)")
@pytest.mark.parametrize("case", ["testing_input_tensor", "test_input_tensor_error", "test_input_shape_deprecated",
                                  "test_call_method", "test_invalid_arg_combinations"])
def test_input_layer_class(case):
    """Keras: InputLayerTest.<case> (the InputLayer class: output, input_tensor, call, input_shape=)."""
    layers.InputLayer(shape=(32,))
