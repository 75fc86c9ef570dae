"""Keras 3's Sequential tests, ported (keras/src/models/sequential_test.py).

Each test names the Keras test it ports. ``backend.KerasTensor((3, 2))`` is
``normlab.Input(batch_shape=(3, 2))``. Keras-only structure (TimeDistributed,
dict and list inputs, Lambda layers, Keras's ``model._functional``) is listed as strict xfails with their reasons, and in
docs/keras.md.
"""

import pickle

import numpy as np
import pytest

import normlab
from normlab import Input, Sequential, layers

rng = np.random.default_rng(0)


def test_basic_flow_with_input(capsys):
    """Keras: SequentialTest.test_basic_flow_with_input."""
    model = Sequential(name="seq")
    model.add(Input(shape=(2,), batch_size=3))
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    model.summary()
    assert "seq" in capsys.readouterr().out
    assert len(model.layers) == 2
    assert model.built
    assert len(model.weights) == 4
    assert model(rng.random((3, 2))).shape == (3, 5)
    assert model(Input(batch_shape=(3, 2))).shape == (3, 5)
    model = Sequential(layers=[Input(shape=(2,), batch_size=3), layers.Dense(4), layers.Dense(5)])
    assert len(model.layers) == 2 and model.built and len(model.weights) == 4
    assert model(rng.random((3, 2))).shape == (3, 5)
    model.pop()
    assert len(model.layers) == 1 and model.built and len(model.weights) == 2
    assert model(rng.random((3, 2))).shape == (3, 4)


def test_legacy_flow_with_input_shape():
    """Keras: SequentialTest.test_legacy_flow_with_input_shape (input_shape, input_dim, later ones ignored)."""
    for first in (lambda: layers.Dense(4, input_shape=(2,)), lambda: layers.Dense(4, input_dim=2)):
        with pytest.warns(UserWarning):
            model = Sequential(name="seq")
            model.add(first())
        model.add(layers.Dense(5))
        assert len(model.layers) == 2 and model.built and len(model.weights) == 4
    with pytest.warns(UserWarning):
        model = Sequential(name="seq")
        model.add(layers.Dense(4, input_shape=(2,)))
        model.add(layers.Dense(5, input_shape=(3, 4)))
    assert len(model.layers) == 2 and model.built and len(model.weights) == 4


def test_basic_flow_deferred(capsys):
    """Keras: SequentialTest.test_basic_flow_deferred."""
    model = Sequential(name="seq")
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    model.summary()
    assert len(model.layers) == 2
    y = model(rng.random((3, 2)))
    assert model.built
    model.summary()
    assert y.shape == (3, 5)
    assert model(Input(batch_shape=(3, 2))).shape == (3, 5)
    model = Sequential(layers=[layers.Dense(4), layers.Dense(5)])
    assert model(rng.random((3, 2))).shape == (3, 5)
    model.pop()
    assert len(model.layers) == 1 and model.built and len(model.weights) == 2
    assert model(rng.random((3, 2))).shape == (3, 4)


@pytest.mark.xfail(strict=True, raises=AttributeError, reason="normlab has no TimeDistributed layer")
def test_basic_flow_as_a_submodel():
    """Keras: SequentialTest.test_basic_flow_as_a_submodel (an unbuilt Sequential inside TimeDistributed)."""
    submodel = Sequential()
    submodel.add(layers.Flatten())
    assert not submodel.built
    inputs = Input((None, 4))
    normlab.Model(inputs, layers.TimeDistributed(submodel)(inputs))


@pytest.mark.parametrize("first", ["functional", "sequential"])
def test_basic_flow_with_model_as_first_layer(first, capsys):
    """Keras: SequentialTest.test_basic_flow_with_functional_model_as_first_layer and
    test_basic_flow_with_sequential_model_as_first_layer (Keras's model._functional has no counterpart)."""
    if first == "functional":
        inputs = Input((16, 16, 3))
        inner = normlab.Model(inputs, layers.Conv2D(4, 3, padding="same")(inputs))
    else:
        inner = Sequential([Input((16, 16, 3)), layers.Conv2D(4, 3, padding="same")])
    model = Sequential([inner, layers.Flatten(), layers.Dense(1)])
    model.summary()
    assert len(model.layers) == 3
    assert model.built
    assert all(layer.built for layer in model.layers)
    assert tuple(model(rng.random((1, 16, 16, 3))).shape) == (1, 1)
    assert model(Input(batch_shape=(1, 16, 16, 3))).shape == (1, 1)


def test_nested_sequential():
    """Keras: SequentialTest.test_nested_sequential."""
    inner = Sequential([layers.Dense(3), layers.Dense(4)])
    model = Sequential([Input((2,)), inner, layers.Dense(1)])
    assert model.built and inner.built
    assert model(rng.random((5, 2))).shape == (5, 1)
    assert len(model.weights) == 6


@pytest.mark.xfail(strict=True, raises=(TypeError, ValueError),
                   reason="normlab layers and models take one array (merge layers a list); no dict inputs")
def test_dict_and_list_inputs():
    """Keras: SequentialTest.test_dict_inputs / test_list_inputs (a custom layer that passes a dict through)."""
    class DictLayer(layers.Layer):
        def call(self, inputs, training):
            return inputs

    y = Sequential([DictLayer()])({"a": rng.random((3, 2)), "b": rng.random((3, 2))})
    assert isinstance(y, dict)


def test_errors():
    """Keras: SequentialTest.test_errors (normlab's messages)."""
    model = Sequential()
    model.add(Input(shape=(2,), batch_size=3))
    with pytest.raises(ValueError, match="Input can only be the first entry"):
        model.add(Input(shape=(2,), batch_size=3))
    model = Sequential()
    model.add(layers.Dense(2, name="dense_err"))
    with pytest.raises(ValueError, match="unique"):
        model.add(layers.Dense(2, name="dense_err"))
    with pytest.raises(ValueError, match="no layers"):
        Sequential()(rng.random((3, 2)))
    model = Sequential()
    model.add(Input(shape=(2,), batch_size=3))
    model.add(layers.Dense(2))
    with pytest.raises(ValueError, match="does not match"):
        model.build((3, 4))
    model.build((3, 2))


def test_shape_inference_failure(capsys):
    """Keras: SequentialTest.test_shape_inference_failure (a custom layer without its own output shape)."""
    class DynamicLayer(layers.Layer):
        def call(self, inputs, training):
            return inputs + 1.0

    model = Sequential([DynamicLayer()])
    x = rng.random((3, 2))
    np.testing.assert_allclose(model(x), x + 1, rtol=1e-6)
    model.summary()


def _round_trip(model):
    config = model.get_config()
    revived = Sequential.from_config(config)
    assert revived.get_config() == config
    return revived


def test_serialization():
    """Keras: SequentialTest.test_serialization (unbuilt deferred, built deferred, with an Input)."""
    model = Sequential(name="seq")
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    assert len(_round_trip(model).layers) == 2
    model.build((2, 3))
    assert len(_round_trip(model).layers) == 2
    model = Sequential(name="seq")
    model.add(Input(shape=(2,), batch_size=3))
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    model.add(layers.Dense(6))
    assert len(_round_trip(model).layers) == 3


@pytest.mark.xfail(strict=True, raises=AttributeError, reason="normlab has no Lambda layer (files never run code)")
def test_serialization_with_lambda_layer():
    """Keras: SequentialTest.test_serialization_with_lambda_layer."""
    Sequential([layers.Lambda(lambda x: x[:, -3:, :])])


def test_functional_properties():
    """Keras: SequentialTest.test_functional_properties (input_shape, output_shape; Keras's model.inputs and
    model.outputs, symbolic tensors of a Sequential, have no normlab counterpart)."""
    model = Sequential(name="seq")
    model.add(Input(shape=(2,)))
    model.add(layers.Dense(4))
    assert model.input_shape == (None, 2)
    assert model.output_shape == (None, 4)


def test_training_arg():
    """Keras: SequentialTest.test_training_arg."""
    class CustomLayer(layers.Layer):
        def call(self, inputs, training=False):
            return inputs * 0.0 if training else inputs

    model = Sequential([CustomLayer()])
    np.testing.assert_allclose(model(np.ones((4, 20))), 1.0)
    np.testing.assert_allclose(model(np.ones((4, 20)), training=False), 1.0)
    np.testing.assert_allclose(model(np.ones((4, 20)), training=True), 0.0)


def test_pickleable():
    """Keras: SequentialTest.test_pickleable."""
    model = Sequential(name="seq")
    model.add(layers.Dense(4))
    model.build((None, 3))
    assert len(pickle.loads(pickle.dumps(model)).layers) == 1


def test_bad_layer():
    """Keras: SequentialTest.test_bad_layer (the first half: a non-layer is refused)."""
    with pytest.raises(ValueError, match="Only instances of"):
        Sequential(name="seq").add({})


def test_compute_output_shape():
    """Keras: SequentialTest.test_compute_output_shape."""
    assert Sequential([layers.Dense(4), layers.Dense(8)]).compute_output_shape((1, 2)) == (1, 8)


def test_hasattr():
    """Keras: SequentialTest.test_hasattr (normlab answers None, not AttributeError, before an input is known)."""
    model = Sequential()
    assert model.input_shape is None and model.output_shape is None
    model = Sequential([layers.Input((4,)), layers.Dense(8)])
    assert model.input_shape == (None, 4) and model.output_shape == (None, 8)


def test_pop_uncompiles_and_fit_works_after_compile_again():
    """Not a Keras test: pop() on a compiled model leaves it to be compiled again, then training works."""
    model = Sequential([Input((3,)), layers.Dense(4), layers.Dense(2)])
    model.compile("sgd", "mse")
    model.fit(rng.random((8, 3)), rng.random((8, 2)), epochs=1, verbose=0)
    model.pop()
    assert not model.compiled
    model.compile("sgd", "mse")
    model.fit(rng.random((8, 3)), rng.random((8, 4)), epochs=1, verbose=0)


def test_layers_setter():
    """Keras: SequentialTest.test_layers_setter."""
    with pytest.raises(AttributeError, match=r"Use `add\(\)` and `pop\(\)`"):
        Sequential().layers = [layers.Dense(4)]
