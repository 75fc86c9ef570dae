"""Dropout(rate, scaling="inference"): the notes' dropout, literally (issue 26 item 3)."""

import json

import numpy as np
import pytest

from normlab import InvalidParameterError
from normlab.layers import AlphaDropout, Dense, Dropout, SpatialDropout2D, deserialize, serialize
from normlab.models import Sequential, load_model, save_model
from normlab.testing import check_layer_gradients


def test_training_keeps_with_probability_p_unscaled_and_inference_multiplies_by_p(rng):
    rate = 0.3
    layer = Dropout(rate, scaling="inference", seed=5)
    x = rng.uniform(1, 2, (400, 50))
    y = layer(x, training=True)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])  # no 1/p in training
    assert kept.mean() == pytest.approx(1 - rate, abs=0.01)
    np.testing.assert_array_equal(layer(x), x * (1 - rate))  # h_test = p h, i.e. W_test = p W
    # the notes' h~ over many draws: E[h~] = p h, the inference output
    draws = np.mean([layer(x[:1], training=True) for _ in range(4000)], axis=0)
    np.testing.assert_allclose(draws, x[:1] * (1 - rate), rtol=0.05)


def test_same_mask_as_inverted_dropout_for_the_same_seed(rng):
    x = rng.standard_normal((8, 6))
    notes, inverted = Dropout(0.5, scaling="inference", seed=3), Dropout(0.5, seed=3)
    np.testing.assert_array_equal(notes(x, training=True) != 0, inverted(x, training=True) != 0)


def test_gives_the_same_network_as_inverted_dropout_after_rescaling_the_weights(rng):
    # inverted dropout with next-layer weights W  ==  the notes' dropout with weights W / p, bias unchanged
    rate, p = 0.4, 0.6
    x = rng.standard_normal((16, 5))

    def net(scaling, seed):
        return Sequential([Dense(7, activation="relu", dtype="float64"), Dropout(rate, seed=seed, scaling=scaling, dtype="float64"),
                           Dense(3, dtype="float64")])

    inv, notes = net("inverted", 11), net("inference", 11)
    inv.build((None, 5), seed=0)
    notes.build((None, 5), seed=0)
    w_first, b_first, w_next, b_next = inv.get_weights()
    notes.set_weights([w_first, b_first, w_next / p, b_next])
    np.testing.assert_allclose(notes.predict(x, verbose=0), inv.predict(x, verbose=0), rtol=1e-13, atol=1e-13)
    for _ in range(3):  # training calls draw the same masks: the same function in training too
        a = x
        b = x
        for l_inv, l_notes in zip(inv.layers, notes.layers):
            a, b = l_inv(a, training=True), l_notes(b, training=True)
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13)


def test_backward_is_the_mask_float64_gradient_check(rng):
    layer = Dropout(0.5, scaling="inference", seed=1, dtype="float64")
    x = rng.standard_normal((6, 4))
    with layer.fixed_noise():
        errors = check_layer_gradients(layer, x)
    assert errors["x"] < 1e-8
    y = layer(x, training=True)
    np.testing.assert_array_equal(layer.backward(np.ones_like(y)), (y != 0).astype(float))


def test_config_round_trip_and_keras_config_unchanged_by_default(tmp_path, rng):
    layer = Dropout(0.25, scaling="inference", seed=2)
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert clone.scaling == "inference" and clone.get_config() == layer.get_config()
    assert "scaling" not in Dropout(0.25).get_config()  # Keras's config
    spatial = SpatialDropout2D(0.2, scaling="inference")
    assert deserialize(serialize(spatial)).scaling == "inference"
    model = Sequential([Dense(4), Dropout(0.5, scaling="inference", seed=0), Dense(2)])
    x = rng.standard_normal((3, 5)).astype(np.float32)
    model.build((None, 5), seed=0)
    save_model(model, tmp_path / "d.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "d.npz").predict(x, verbose=0), model.predict(x, verbose=0))


def test_invalid_scaling_and_alpha_dropout_refuses_it():
    with pytest.raises(InvalidParameterError, match="'scaling' parameter of Dropout"):
        Dropout(0.5, scaling="notes")
    with pytest.raises(TypeError, match="AlphaDropout"):
        AlphaDropout(0.5, scaling="inference")
