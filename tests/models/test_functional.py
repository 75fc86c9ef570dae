import json

import numpy as np
import pytest

import normlab
from normlab import initializers
from normlab.layers import Activation, Add, Average, BatchNormalization, Concatenate, Dense, Multiply, Subtract
from normlab.testing import check_layer_gradients, check_model_gradients


def residual_model(d=6, k=3, dtype=None):
    inp = normlab.Input((d,))
    h = Dense(d, use_bias=False, kernel_initializer=initializers.GlorotUniform(seed=0), dtype=dtype)(inp)
    h = BatchNormalization(gamma_initializer=initializers.RandomUniform(0.5, 1.5, seed=1))(h)
    h = Activation("tanh")(h)
    h = Dense(d, kernel_initializer=initializers.GlorotUniform(seed=2))(h)
    h = Add()([h, inp])  # skip connection
    branch = Dense(4, activation="elu", kernel_initializer=initializers.GlorotUniform(seed=3))(h)
    other = Dense(4, activation="sigmoid", kernel_initializer=initializers.GlorotUniform(seed=4))(h)
    joined = Concatenate()([branch, Multiply()([branch, other]), Subtract()([other, branch])])
    out = Dense(k, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=5))(joined)
    return normlab.Model(inp, out)


def data(rng, n=16, d=6, k=3):
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def test_graph_gradients_accumulate_over_consumers(rng):
    x, y = data(rng)
    model = residual_model(dtype="float64")  # built at construction, in the first layer's dtype
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    errs = check_model_gradients(model, x, y)
    assert len(errs) == 11
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("layer,n", [(Add(), 3), (Multiply(), 3), (Average(), 2), (Subtract(), 2), (Concatenate(axis=-1), 3)])
def test_merge_layer_gradients(layer, n, rng):
    xs = [rng.standard_normal((4, 5)) for _ in range(n)]
    y = layer(xs, training=True)
    dy = rng.standard_normal(y.shape)
    dxs = layer.backward(dy)
    for i in range(n):
        def f():
            return float(np.sum(layer(xs, training=True) * dy))
        from normlab.testing import numerical_gradient, grad_error

        assert grad_error(dxs[i], numerical_gradient(f, xs[i])) < 1e-7


def test_functional_chain_equals_sequential(rng):
    x, y = data(rng)
    x = x.astype(np.float32)  # the functional model is built (float32) before it sees x
    layers_a = [Dense(5, kernel_initializer=initializers.GlorotUniform(seed=0)), BatchNormalization(), Dense(3, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=1))]
    layers_b = [Dense(5, kernel_initializer=initializers.GlorotUniform(seed=0)), BatchNormalization(), Dense(3, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=1))]
    seq = normlab.Sequential(layers_a)
    inp = normlab.Input((6,))
    h = inp
    for l in layers_b:
        h = l(h)
    fun = normlab.Model(inp, h)
    for m in (seq, fun):
        m.compile(optimizer=normlab.optimizers.SGD(learning_rate=0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
        m.fit(x, y, epochs=3, batch_size=4, verbose=0, seed=0)
    for a, b in zip(seq.get_weights(), fun.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_config_save_load_round_trip(tmp_path, rng):
    x, y = data(rng)
    x = x.astype(np.float32)
    model = residual_model()
    model.compile(optimizer=normlab.optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)
    clone = normlab.Model.from_config(json.loads(json.dumps(model.get_config())))
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    model.save(tmp_path / "res.npz")
    back = normlab.load_model(tmp_path / "res.npz")
    assert type(back) is normlab.Model
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    back.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, verbose=0, seed=0)
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, verbose=0, seed=0)
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_graph_errors():
    inp = normlab.Input((4,))
    shared = Dense(4)
    with pytest.raises(ValueError, match="more than once"):
        normlab.Model(inp, shared(shared(inp)))
    other = normlab.Input((4,))
    with pytest.raises(ValueError, match="not the model's 'inputs'"):
        normlab.Model(inp, Add()([Dense(4)(inp), other]))
    with pytest.raises(ValueError, match="incompatible"):
        Add()([Dense(4)(inp), Dense(5)(inp)])
    with pytest.raises(TypeError, match="list of inputs"):
        Add()(inp)
    with pytest.raises(TypeError, match="one input"):
        Dense(3)([inp, inp])
    with pytest.raises(ValueError, match="Input"):
        normlab.Input((0, 3))


def test_merge_shape_errors_at_run_time(rng):
    with pytest.raises(ValueError, match="incompatible with input 0"):
        Add()([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="takes at least 2 inputs"):
        Add()([np.ones((2, 3))])


def _small_graph(seed=None, shape=(8,)):
    inputs = normlab.Input(shape)
    h = Dense(8, use_bias=False)(inputs)
    h = BatchNormalization()(h)
    h = Activation("relu")(h)
    outputs = Dense(3, activation="softmax")(Add()([h, inputs]))
    return normlab.Model(inputs, outputs, seed=seed)


def test_model_is_built_at_construction_and_saves_before_training(tmp_path, rng):
    model = _small_graph()
    assert model.built and model.dtype == np.float32
    assert model.count_params() == 8 * 8 + 4 * 8 + 8 * 3 + 3
    model.save(tmp_path / "new.npz")  # no compile, no data: the README's example
    back = normlab.load_model(tmp_path / "new.npz")
    x = rng.standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_construction_seed_gives_the_initial_weights():
    a, b, c = _small_graph(seed=3), _small_graph(seed=3), _small_graph(seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    with pytest.raises(TypeError, match="'seed' must be an int"):
        _small_graph(seed=1.5)


def test_unknown_input_size_builds_on_the_first_batch(rng):
    from normlab.layers import Conv1D, GlobalAveragePooling1D

    inputs = normlab.Input((None, 2))
    model = normlab.Model(inputs, Dense(3)(GlobalAveragePooling1D()(Conv1D(4, 3)(inputs))))
    assert not model.built
    assert model.predict(rng.standard_normal((2, 7, 2))).shape == (2, 3)
    assert model.built
