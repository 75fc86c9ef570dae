"""Keras 3's Input tests, ported (keras/src/layers/core/input_layer_test.py).

normlab has ``Input`` (the function, returning a symbolic tensor) and the
``InputLayer`` class (``normlab.models.InputLayer``); both are tested.
Sparse and ragged inputs are not supported (docs/keras.md).
"""

import numpy as np
import pytest

import normlab
from normlab import Input, layers
from normlab.models import InputLayer


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


def test_input_tensor():
    """Keras: InputLayerTest.testing_input_tensor."""
    input_tensor = Input(batch_shape=(2, 3), dtype="float32")
    layer = InputLayer(input_tensor=input_tensor)
    assert layer.dtype == "float32"
    assert layer.batch_shape == (2, 3)
    assert layer.trainable is True
    assert layer.output is input_tensor
    assert layer.output.ndim == input_tensor.ndim
    assert layer.output.dtype == "float32"


def test_input_shape_deprecated():
    """Keras: InputLayerTest.test_input_shape_deprecated."""
    with pytest.warns(UserWarning, match="Argument `input_shape` is deprecated. Use `shape` instead."):
        layer = InputLayer(input_shape=(2, 3), batch_size=4, dtype="float32")
    assert layer.batch_shape[0] == 4
    assert layer.batch_shape[1:] == (2, 3)
    assert layer.dtype == "float32"


def test_call_method():
    """Keras: InputLayerTest.test_call_method."""
    assert InputLayer(shape=(32,)).call() is None


def test_input_layer_numpy_shape():
    """Keras: InputLayerTest.test_numpy_shape (on the class)."""
    assert InputLayer(shape=(np.int64(32),)).batch_shape == (None, 32)


def test_invalid_arg_combinations():
    """Keras: InputLayerTest.test_invalid_arg_combinations (float16 is refused by normlab's Input as well)."""
    input_tensor = Input(batch_shape=(2, 3), dtype="float32")
    with pytest.raises(ValueError, match="cannot provide an incompatible `shape`"):
        InputLayer(shape=(2, 4), input_tensor=input_tensor)
    with pytest.raises(ValueError, match="cannot provide an incompatible `batch_shape`"):
        InputLayer(batch_shape=(2, 4), input_tensor=input_tensor)
    with pytest.raises(ValueError, match="cannot provide an incompatible `batch_size`"):
        InputLayer(batch_size=5, input_tensor=input_tensor)
    with pytest.raises(ValueError, match="cannot provide an incompatible `dtype`"):
        InputLayer(dtype="float64", input_tensor=input_tensor)
    with pytest.raises(ValueError, match="cannot provide an incompatible `sparse`"):
        InputLayer(sparse=True, input_tensor=input_tensor)
    InputLayer(shape=(3,), batch_size=2, sparse=False, dtype="float32", input_tensor=input_tensor)


def test_input_layer_first_in_sequential():
    """Not a Keras test: Keras's Sequential([InputLayer(shape=...), ...]) is built at once, as with Input."""
    model = normlab.Sequential([InputLayer(shape=(3,)), layers.Dense(4)])
    assert model.built and model.input_shape == (None, 3) and len(model.layers) == 1
    assert model(np.ones((2, 3))).shape == (2, 4)
