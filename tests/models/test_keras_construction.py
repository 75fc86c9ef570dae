"""Keras 3's ways of constructing a model (issue 22, part 1): ``Input`` first in ``Sequential``."""

import numpy as np
import pytest

import normlab
from normlab import layers as L


def convnet(seed=None):
    # keras.io "Simple MNIST convnet", smaller
    return normlab.Sequential([
        normlab.Input(shape=(12, 12, 1)),
        L.Conv2D(4, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ], seed=seed)


def test_an_input_first_builds_the_sequential_model_at_construction():
    model = convnet()
    assert model.built and model.input_shape == (None, 12, 12, 1)
    assert model.count_params() == 4 * 9 + 4 + (5 * 5 * 4) * 10 + 10
    assert [w.dtype for w in model.get_weights()] == [np.float32] * 4


def test_seed_gives_the_same_initial_weights():
    a, b, c = convnet(seed=3), convnet(seed=3), convnet(seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_add_after_an_input_builds_the_new_layer_or_refuses_it():
    model = normlab.Sequential([normlab.Input((5,))])
    assert not model.built  # no layers yet
    model.add(L.Dense(3))
    assert model.built and model.layers[0].params["kernel"].shape == (5, 3)
    with pytest.raises(ValueError, match="Reshape"):
        model.add(L.Reshape((2, 2)))
    assert len(model.layers) == 1  # a layer that does not fit is not added


def test_input_must_come_first_and_be_an_input():
    with pytest.raises(ValueError, match="an Input can only be the first entry"):
        normlab.Sequential([L.Dense(3), normlab.Input((5,))])
    inp = normlab.Input((5,))
    with pytest.raises(TypeError, match="must be the Input itself"):
        normlab.Sequential([L.Dense(3)(inp)])
    with pytest.raises(TypeError, match="'seed'"):
        normlab.Sequential([normlab.Input((5,)), L.Dense(3)], seed="abc")


def test_unknown_sizes_build_on_the_first_batch():
    model = normlab.Sequential([normlab.Input((None, 3)), L.Dense(2)])
    assert not model.built
    out = model.predict(np.ones((4, 7, 3), np.float32))
    assert out.shape == (4, 7, 2)


def test_a_model_built_from_an_input_trains_saves_and_loads(tmp_path):
    model = convnet(seed=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    model.save(tmp_path / "m.npz")
    back = normlab.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_summary_in_keras_3_layout():
    # the numbers of keras.io's "Simple MNIST convnet" summary
    model = normlab.Sequential([
        normlab.Input(shape=(28, 28, 1)),
        L.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ])
    lines = []
    model.summary(print_fn=lines.append)
    assert len(lines) == 1  # one string, as Keras hands print_fn
    text = lines[0].split("\n")
    assert text[0] == 'Model: "sequential"' or text[0].startswith('Model: "')
    assert text[1].startswith("┏") and text[2].startswith("┃ Layer (type)") and "┃ Output Shape" in text[2]
    assert text[2].rstrip("┃ ").endswith("Param #")
    assert "│ conv2d_" in lines[0] or "│ conv2d " in lines[0]
    assert any("(None, 26, 26, 32)" in t and t.rstrip("│ ").endswith("320") for t in text)
    assert any("(None, 11, 11, 64)" in t and t.rstrip("│ ").endswith("18,496") for t in text)
    assert text[-3:] == [" Total params: 34,826 (136.04 KB)", " Trainable params: 34,826 (136.04 KB)",
                         " Non-trainable params: 0 (0.00 B)"]
    assert max(len(t) for t in text[1:-3]) == 89  # Keras's 88 columns and the closing border


def test_summary_counts_moving_statistics_and_optimizer_state_as_keras():
    model = normlab.Sequential([normlab.Input((4,)), L.Dense(3), L.BatchNormalization(), L.Dense(2)], seed=0)
    model.compile("adam", "mse")
    lines = []
    model.summary(print_fn=lines.append)
    assert " Non-trainable params: 6 (24.00 B)" in lines[0] and "Optimizer params" not in lines[0]
    model.train_on_batch(np.ones((4, 4), np.float32), np.zeros((4, 2), np.float32))
    model.summary(print_fn=lines.append)
    trainable = 15 + 6 + 8
    assert f" Optimizer params: {2 * trainable + 2:,}" in lines[1]  # Adam: two slots a weight, iteration, rate
    assert f" Total params: {trainable + 6 + 2 * trainable + 2:,}" in lines[1]


def test_a_functional_summary_has_keras_connected_to_column():
    inputs = normlab.Input((8,))
    h = L.Dense(8, name="d")(inputs)
    outputs = L.Add(name="sum")([h, inputs])
    lines = []
    normlab.Model(inputs, outputs).summary(print_fn=lines.append)
    assert "┃ Connected to" in lines[0] and "d[0][0]," in lines[0] and "input_layer[0][0]" in lines[0]
    with pytest.raises(TypeError, match="'print_fn'"):
        normlab.Model(inputs, outputs).summary(print_fn=3)
