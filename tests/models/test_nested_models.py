"""Models used as layers of other models (Keras's ``Sequential([base_model, Dense(10)])``), and model JSON."""

import json
import pickle

import numpy as np
import pytest

import normlab
from normlab import Input, Model, Sequential, layers
from normlab.models import model_from_json


def _pair(seed=0):
    """A nested model and the same layers in one flat model, with the same weights."""
    inner = Sequential([Input((4,)), layers.Dense(5, name="n_d1"), layers.BatchNormalization(name="n_bn"),
                        layers.Activation("relu", name="n_act")], name="inner", seed=seed)
    inp = Input((5,))
    head = Model(inp, layers.Dense(3, activation="softmax", name="n_out")(layers.Dense(6, activation="tanh",
                                                                                        name="n_d2")(inp)),
                 name="head", seed=seed + 1)
    nested = Sequential([inner, head], name="outer")
    flat = Sequential([Input((4,)), layers.Dense(5), layers.BatchNormalization(), layers.Activation("relu"),
                       layers.Dense(6, activation="tanh"), layers.Dense(3, activation="softmax")])
    flat.set_weights(nested.get_weights())
    return nested, flat


def _data(rng, n=24):
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_nested_trains_as_the_flat_model(rng):
    nested, flat = _pair()
    x, y = _data(rng)
    for m in (nested, flat):
        m.compile(normlab.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    h1 = nested.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    h2 = flat.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    assert h1["loss"] == h2["loss"]
    for a, b in zip(nested.get_weights(), flat.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(nested.predict(x, verbose=0), flat.predict(x, verbose=0))
    # the nested models' own arrays are the ones trained
    np.testing.assert_array_equal(nested.layers[0].model.get_layer("n_d1").kernel, flat.layers[0].kernel)


def test_nested_gradients_match_central_differences(rng):
    inner = Sequential([Input((3,)), layers.Dense(4, activation="tanh", dtype="float64")], name="g_inner")
    model = Sequential([inner, layers.Dense(2, dtype="float64")], name="g_outer")
    model.compile("sgd", "mse")
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    grads = model.compute_gradients(x, y)
    kernel = inner.layers[0].params["kernel"]
    analytic = grads[(model.layers[0], "layer0_kernel")]  # the nested model's weights, keyed layer<i>_<key>
    numeric = np.zeros_like(kernel)
    eps = 1e-6
    for idx in np.ndindex(kernel.shape):
        old = kernel[idx]
        kernel[idx] = old + eps
        up = model.compute_loss_value(x, y)
        kernel[idx] = old - eps
        down = model.compute_loss_value(x, y)
        kernel[idx] = old
        numeric[idx] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_freezing_a_nested_model(rng):
    base = Sequential([Input((4,)), layers.Dense(5)], name="frozen_base")
    model = Sequential([base, layers.Dense(1)], name="top")
    base.trainable = False
    assert not base.layers[0].trainable
    assert len(model.trainable_weights) == 2 and len(model.weights) == 4
    before = [w.copy() for w in base.weights]
    model.compile("adam", "mse")
    model.fit(rng.random((16, 4)), rng.random((16, 1)), epochs=2, verbose=0)
    for a, b in zip(before, base.weights):
        np.testing.assert_array_equal(a, b)


def test_functional_model_called_in_a_functional_model(rng):
    inp = Input((4,))
    base = Model(inp, layers.Dense(3, activation="relu")(inp), name="f_base")
    outer_in = Input((4,))
    h = base(outer_in)
    model = Model(outer_in, layers.Add()([h, layers.Dense(3)(outer_in)]), name="f_outer")
    model.compile("sgd", "mse")
    x, y = rng.random((8, 4)), rng.random((8, 3))
    model.fit(x, y, epochs=1, verbose=0)
    dense = next(layer for layer in model.layers if type(layer) is layers.Dense)
    np.testing.assert_allclose(model(x), base(x) + dense(x), rtol=1e-6)
    assert model.layers[0].layers == base.layers  # the nested layer stands for the model


@pytest.mark.parametrize("how", ["file", "pickle"])
def test_nested_model_through_normlab_file(how, rng, tmp_path):
    nested, _ = _pair()
    x, y = _data(rng)
    nested.compile("adam", "sparse_categorical_crossentropy")
    nested.fit(x, y, batch_size=8, epochs=1, verbose=0)
    if how == "file":
        nested.save(tmp_path / "m.npz")
        loaded = normlab.load_model(tmp_path / "m.npz")
    else:
        loaded = pickle.loads(pickle.dumps(nested))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), nested.predict(x, verbose=0))
    # optimizer state included: training goes on identically
    h1 = nested.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    h2 = loaded.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    assert h1 == h2


def test_keras_file_refuses_a_nested_model(tmp_path):
    pytest.importorskip("h5py")
    nested, _ = _pair()
    with pytest.raises(ValueError, match="'inner'"):
        nested.save(tmp_path / "m.keras")


def test_to_json_round_trip_and_no_weights():
    nested, _ = _pair()
    text = nested.to_json()
    entry = json.loads(text)
    assert entry["class_name"] == "Sequential"
    assert [e["class_name"] for e in entry["config"]["layers"]] == ["Sequential", "Functional"]
    revived = model_from_json(text)
    assert revived.built and revived.to_json() == text
    assert [w.shape for w in revived.weights] == [w.shape for w in nested.weights]
    inp = Input((3,))
    functional = Model(inp, layers.Dense(2)(inp), name="json_f")
    assert json.loads(functional.to_json())["class_name"] == "Functional"
    assert model_from_json(functional.to_json(indent=2)).get_config() == functional.get_config()


@pytest.mark.parametrize("text, match", [
    ("not json", "not valid JSON"),
    ('{"class_name": "Lambda", "config": {}}', "expected a model's JSON"),
    ('[1, 2]', "expected a model's JSON"),
    ('{"class_name": "Sequential", "config": 3}', "must be a JSON object"),
])
def test_model_from_json_refuses(text, match):
    with pytest.raises(ValueError, match=match):
        model_from_json(text)


def test_model_from_json_custom_objects():
    class JsonCustom(layers.Layer):
        pass

    model = Sequential([Input((2,)), JsonCustom()])
    assert isinstance(model_from_json(model.to_json(), custom_objects={"JsonCustom": JsonCustom}).layers[0],
                      JsonCustom)
    with pytest.raises(ValueError, match="not a registered normlab layer"):
        model_from_json(model.to_json(), custom_objects={"JsonCustom": dict})
    with pytest.raises(TypeError, match="json_string"):
        model_from_json(None)


def test_model_cannot_nest_itself():
    model = Sequential([layers.Dense(2)], name="self_nest")
    with pytest.raises(ValueError, match="cannot be a layer of itself"):
        model.add(model)


def test_freezing_a_nested_layer_after_compile_needs_a_new_compile(rng):
    inner = Sequential([Input((4,)), layers.Dense(3)], name="late_inner")
    model = Sequential([inner, layers.Dense(1)], name="late_outer")
    model.compile("sgd", "mse")
    x, y = rng.random((8, 4)), rng.random((8, 1))
    model.fit(x, y, verbose=0)
    inner.layers[0].trainable = False
    with pytest.raises(RuntimeError, match="call compile"):
        model.fit(x, y, verbose=0)
    model.compile("sgd", "mse")
    kernel = inner.layers[0].kernel.copy()
    model.fit(x, y, verbose=0)
    np.testing.assert_array_equal(kernel, inner.layers[0].kernel)


def test_weights_are_listed_layer_by_layer(rng):
    """Keras's order: each (nested) layer's parameters then its buffers; get/set_weights use it too."""
    inner = Sequential([Input((3,)), layers.BatchNormalization(name="o_bn"), layers.Dense(2, name="o_d")],
                       name="order_inner")
    model = Sequential([inner, layers.Dense(1, name="o_top")], name="order_outer")
    bn, dense = inner.layers
    expected = [bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance, dense.kernel, dense.bias,
                model.layers[1].kernel, model.layers[1].bias]
    assert all(a is b for a, b in zip(model.weights, expected)) and len(model.weights) == 8
    values = [rng.random(w.shape) + 0.5 for w in model.get_weights()]
    model.set_weights(values)
    for w, v in zip(expected, values):
        np.testing.assert_allclose(w, v, rtol=1e-6)
    bad = list(values)
    bad[3] = -bad[3]
    with pytest.raises(ValueError, match="must be >= 0"):  # the nested batch norm's variance is checked too
        model.set_weights(bad)
    inner.trainable = False
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 6


def test_nested_model_through_onnx_and_batchnorm_folding(rng, tmp_path):
    """The tools that read a model's program see the nested model's layers (ONNX export, BN folding, recompute)."""
    inner = Sequential([Input((4,)), layers.Dense(3), layers.BatchNormalization(), layers.Activation("relu")],
                       name="tools_inner")
    inp = Input((4,))
    model = Model(inp, layers.Dense(2)(inner(inp)), name="tools_outer")
    model.compile("sgd", "mse")
    x = rng.random((16, 4)).astype(np.float32)
    model.fit(x, rng.random((16, 2)), verbose=0)
    stats = normlab.models.recompute_batchnorm_statistics(model, x)
    assert len(stats) == 1
    folded = normlab.models.fold_batchnorm(model)
    assert folded.folded_pairs == 1
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model.export(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_nested_dropout_resumes_bit_for_bit(rng, tmp_path):
    """A nested model's random layers keep their generators through the model file (exact resume)."""
    inner = Sequential([Input((4,)), layers.Dense(6), layers.Dropout(0.5, seed=3)], name="drop_inner")
    model = Sequential([inner, layers.Dense(1)], name="drop_outer")
    model.compile("adam", "mse")
    x, y = rng.random((16, 4)), rng.random((16, 1))
    model.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    model.save(tmp_path / "d.npz")
    loaded = normlab.load_model(tmp_path / "d.npz")
    h1 = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False).history["loss"]
    h2 = loaded.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False).history["loss"]
    assert h1 == h2
    with pytest.raises(ValueError, match="not one of its random layers"):
        model.layers[0].set_rng_state({"layers": {"0": None}})
