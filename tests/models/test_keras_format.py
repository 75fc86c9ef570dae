"""Keras 3 ``.keras`` files both ways (normlab.models.keras_format), and pickling models.

Without Keras the reader is checked against committed files written by Keras
(tests/models/data/keras, made by make_fixtures.py there) and their Keras
predictions; with Keras installed the round trips run live. Reading and
writing need h5py; the pickling tests need neither.

The other files of this suite: test_keras_format_layers.py (every layer, both ways),
test_keras_format_compile.py (losses and metrics), test_keras_format_weights.py (weights files),
test_keras_format_hostile.py (malformed and code-carrying files).
"""

import importlib.util
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import normlab
from normlab import layers as L
from normlab.models.base import BaseModel
from normlab.models.keras_format import _reduce_model, is_keras_path, load_keras, save_keras

DATA = os.path.join(os.path.dirname(__file__), "data", "keras")
FIXTURES = ("mlp", "cnn", "residual")
# Keras and normlab both compute in float32; the issue's bar is 1e-6 relative (to the outputs' scale)
RTOL = 1e-6

try:
    import h5py
except ImportError:  # reading and writing .keras files needs it; pickling does not
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="h5py is not installed (pip install 'normlab[keras]')")


def close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = np.max(np.abs(a))
    np.testing.assert_allclose(b, a, rtol=RTOL, atol=RTOL * scale)
    return float(np.max(np.abs(a - b)) / scale)


def data(shape, n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape).astype(np.float32)


def normlab_mlp():
    m = normlab.Sequential([L.Dense(16, use_bias=False), L.BatchNormalization(), L.Activation("relu"), L.Dropout(0.3),
                            L.Dense(8, activation="tanh"), L.BatchNormalization(momentum=0.9, epsilon=1e-5),
                            L.Dropout(0.2), L.Dense(3, activation="softmax")], name="mlp")
    m.compile(optimizer=normlab.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = data((8,))
    m.fit(x, np.arange(len(x)) % 3, epochs=2, batch_size=16, verbose=0, seed=0)
    return m, x


def normlab_cnn():
    m = normlab.Sequential([L.Conv2D(4, 3, padding="same", use_bias=False), L.BatchNormalization(),
                            L.Activation("relu"), L.MaxPooling2D(), L.Conv2D(6, 3, activation="relu"),
                            L.BatchNormalization(center=False), L.AveragePooling2D(), L.Flatten(),
                            L.Dense(4, activation="softmax")], name="cnn")
    m.compile(optimizer=normlab.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    x = data((8, 8, 2))
    m.fit(x, np.eye(4, dtype=np.float32)[np.arange(len(x)) % 4], epochs=2, batch_size=16, verbose=0, seed=0)
    return m, x


def normlab_residual():
    inp = normlab.Input((6,))
    h = L.Dense(6, name="proj")(inp)
    a = L.Activation("relu")(L.BatchNormalization()(L.Dense(6, use_bias=False)(h)))
    h = L.Add()([h, a])
    b = L.Activation("gelu")(L.LayerNormalization()(L.Dense(6)(h)))
    h = L.Add()([h, b])
    c = L.Dropout(0.1)(L.Concatenate()([h, inp]))
    m = normlab.Model(inp, L.Dense(2)(c), name="residual")
    m.compile(optimizer="rmsprop", loss="mse")
    x = data((6,))
    m.fit(x, x[:, :2] * 2, epochs=2, batch_size=16, verbose=0, seed=0)
    return m, x


NORMLAB_MODELS = {"mlp": normlab_mlp, "cnn": normlab_cnn, "residual": normlab_residual}


def test_keras_paths_are_told_by_their_extension(tmp_path):
    assert is_keras_path("m.keras") and is_keras_path(tmp_path / "m.keras") and is_keras_path(b"m.keras")
    assert not is_keras_path("m.npz") and not is_keras_path("m.keras.npz") and not is_keras_path("keras")


# ---------------------------------------------------------------- pickling (no h5py needed)
WIRED = "__reduce__" in vars(BaseModel)


def dumps(model) -> bytes:
    """``pickle.dumps(model)``; through a dispatch table until BaseModel.__reduce__ calls _reduce_model."""
    if WIRED:
        return pickle.dumps(model)
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf)
    pickler.dispatch_table = {normlab.Sequential: _reduce_model, normlab.Model: _reduce_model}
    pickler.dump(model)
    return buf.getvalue()


@pytest.mark.skipif(not WIRED, reason="BaseModel.__reduce__ is not wired to keras_format._reduce_model yet")
def test_pickle_dumps_a_model():
    model, x = normlab_mlp()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(x), model.predict(x))


@pytest.mark.parametrize("name", sorted(NORMLAB_MODELS))
def test_pickle_goes_through_the_model_file_format(name):
    model, x = NORMLAB_MODELS[name]()
    fn, (blob,) = _reduce_model(model)
    assert blob[:2] == b"PK"  # normlab's npz: JSON and arrays, no pickle inside
    back = pickle.loads(dumps(model))
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    assert type(back) is type(model) and back.compiled
    assert type(back.optimizer) is type(model.optimizer)
    for k, v in model.optimizer.get_state().items():
        np.testing.assert_array_equal(back.optimizer.get_state()[k], v)


def test_pickle_an_unbuilt_model_keeps_config_and_compile():
    model = normlab.Sequential([L.Dense(4), L.BatchNormalization(momentum=0.5), L.Dense(2)], name="unbuilt")
    model.compile(optimizer=normlab.optimizers.SGD(0.1), loss="mse")
    fn, args = _reduce_model(model)
    back = fn(*args)
    assert not back.built and back.compiled and back.name == "unbuilt"
    assert back.get_config() == model.get_config()
    assert back.optimizer.get_config() == model.optimizer.get_config()


# ---------------------------------------------------------------- the files Keras wrote


@pytest.mark.parametrize("name", FIXTURES)
@needs_h5py
def test_reads_files_written_by_keras(name):
    model = load_keras(os.path.join(DATA, f"{name}.keras"))
    x, y = np.load(os.path.join(DATA, f"{name}_x.npy")), np.load(os.path.join(DATA, f"{name}_y.npy"))
    close(y, model.predict(x))
    assert model.compiled  # the fixtures are compiled (Adam, SGD, RMSprop)
    assert isinstance(model, normlab.Model if name == "residual" else normlab.Sequential)


@needs_h5py
def test_fixture_mapping_details():
    mlp = load_keras(os.path.join(DATA, "mlp.keras"))
    bn = mlp.layers[5]
    assert type(bn).__name__ == "BatchNormalization" and bn.momentum == 0.9 and bn.epsilon == 1e-5
    assert type(mlp.layers[4].kernel_regularizer).__name__ == "L2"
    assert type(mlp.optimizer).__name__ == "Adam" and type(mlp.loss).__name__ == "SparseCategoricalCrossentropy"
    cnn = load_keras(os.path.join(DATA, "cnn.keras"), compile=False)
    assert not cnn.compiled
    assert "beta" not in cnn.layers[5].params  # center=False: Keras stores gamma, moving mean and variance only


@pytest.mark.parametrize("name", FIXTURES)
@needs_h5py
def test_keras_file_rewritten_by_normlab_reads_back_identically(name, tmp_path):
    model = load_keras(os.path.join(DATA, f"{name}.keras"))
    path = tmp_path / "again.keras"
    save_keras(model, path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    back = load_keras(path)
    x = np.load(os.path.join(DATA, f"{name}_x.npy"))
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


@pytest.mark.parametrize("name", sorted(NORMLAB_MODELS))
@needs_h5py
def test_normlab_models_through_keras_files(name, tmp_path):
    model, x = NORMLAB_MODELS[name]()
    path = tmp_path / f"{name}.keras"
    save_keras(model, path)
    back = load_keras(path)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    assert [type(l).__name__ for l in back.layers] == [type(l).__name__ for l in model.layers]
    assert type(back.optimizer) is type(model.optimizer)


OPTIMIZERS = {
    "Adam": lambda o: o.Adam(0.01), "Adam-amsgrad": lambda o: o.Adam(0.01, amsgrad=True),
    "AdamW": lambda o: o.AdamW(0.01),
    "SGD": lambda o: o.SGD(0.05, momentum=0.9), "SGD-plain": lambda o: o.SGD(0.05),
    "RMSprop": lambda o: o.RMSprop(0.01, momentum=0.5, centered=True), "Adagrad": lambda o: o.Adagrad(0.1),
    "Nadam": lambda o: o.Nadam(0.01), "Lion": lambda o: o.Lion(0.001),
    "Adamax": lambda o: o.Adamax(0.01, beta_2=0.99), "Adadelta": lambda o: o.Adadelta(0.5, rho=0.9),
    "Ftrl": lambda o: o.Ftrl(0.1, l1_regularization_strength=0.001, initial_accumulator_value=0.2),
    "Lamb": lambda o: o.Lamb(0.01),
    "Adafactor": lambda o: o.Adafactor(0.05, relative_step=False),
}
# each optimizer as soon as normlab has it
OPTIMIZERS = {k: v for k, v in OPTIMIZERS.items() if hasattr(normlab.optimizers, k.split("-")[0])}


def test_every_optimizer_both_libraries_have_is_mapped_and_tested():
    from normlab.models._keras_compile import _mapped_optimizers

    keras_3_15 = ("Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "Lamb", "Lion", "Muon",
                  "Nadam", "RMSprop", "SGD")
    have = sorted(o for o in keras_3_15 if isinstance(getattr(normlab.optimizers, o, None), type))
    assert sorted(_mapped_optimizers()) == have, "an optimizer Keras 3 has lacks its state layout (_rule_slot_order)"
    assert sorted({k.split("-")[0] for k in OPTIMIZERS}) == have


def trained(optimizer, x, y):
    model = normlab.Sequential([L.Dense(4, activation="tanh"), L.BatchNormalization(), L.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    return model


@needs_h5py
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_through_a_keras_file(name, tmp_path):
    x, y = data((5,), n=32), data((2,), n=32, seed=1)
    model = trained(OPTIMIZERS[name](normlab.optimizers), x, y)
    save_keras(model, tmp_path / "m.keras")
    back = load_keras(tmp_path / "m.keras")
    state, restored = model.optimizer.get_state(), back.optimizer.get_state()
    assert sorted(restored) == sorted(state) and int(restored["iterations"]) == 4
    for k in state:
        np.testing.assert_array_equal(restored[k], state[k])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    back.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


#: Keras 3's base-optimizer features: moving averages and gradient accumulation (48 samples: 3 calls an epoch)
KERAS_BASE_FEATURES = {
    "Adam-ema-accumulate": lambda o: o.Adam(0.01, use_ema=True, gradient_accumulation_steps=2),
    "SGD-ema-overwrite": lambda o: o.SGD(0.05, momentum=0.9, use_ema=True, ema_momentum=0.9,
                                         ema_overwrite_frequency=2),
    "RMSprop-accumulate": lambda o: o.RMSprop(0.01, momentum=0.5, gradient_accumulation_steps=4),
}


@needs_h5py
@pytest.mark.parametrize("name", sorted(KERAS_BASE_FEATURES))
def test_ema_and_gradient_accumulation_through_a_keras_file(name, tmp_path):
    x, y = data((5,), n=48), data((2,), n=48, seed=1)
    model = normlab.Sequential([L.Dense(4, activation="tanh"), L.BatchNormalization(), L.Dense(2)])
    model.compile(optimizer=KERAS_BASE_FEATURES[name](normlab.optimizers), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)  # 3 calls: mid-accumulation for n = 2, 4
    save_keras(model, tmp_path / "m.keras")
    opt = model.optimizer
    steps = opt.gradient_accumulation_steps or 1
    with zipfile.ZipFile(tmp_path / "m.keras") as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        # Keras's iteration counts calls; the averages and accumulators precede the rule's slots
        assert int(f["optimizer/vars/0"][()]) == 3 == opt.iterations * steps + opt.accumulation_step
        n_slots = len([k for k in opt.get_state() if "/" in k])
        assert len(f["optimizer/vars"]) == 2 + n_slots
        first = opt.get_state()["average/0" if opt.use_ema else "gradient_accumulator/0"]
        np.testing.assert_array_equal(f["optimizer/vars/2"][()], first)  # the first Dense kernel
    back = load_keras(tmp_path / "m.keras")
    assert back.optimizer.get_config() == opt.get_config()
    state, restored = opt.get_state(), back.optimizer.get_state()
    assert sorted(restored) == sorted(state)
    for k in state:
        np.testing.assert_array_equal(restored[k], state[k])
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    back.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    for a, b in zip(model.optimizer.get_state().values(), back.optimizer.get_state().values()):
        np.testing.assert_array_equal(a, b)


@needs_h5py
def test_keras_optimizer_state_is_read():
    model = load_keras(os.path.join(DATA, "mlp.keras"))
    state = model.optimizer.get_state()
    assert int(state["iterations"]) == 8  # two epochs of four batches
    assert all(np.any(v != 0) for k, v in state.items() if k.startswith("velocity/"))


def branches(framework, layers, inp):
    """Branches of different depths: Keras's model.layers puts the deeper branch first, whatever the call order."""
    a = layers.Dense(3, name="a")(inp)
    c = layers.Dense(2, name="c")(layers.Dense(4, name="b")(inp))
    return framework.Model(inp, layers.Dense(2, name="out")(layers.Concatenate(name="cat")([a, c])))


def test_layers_are_named_in_keras_order():
    from normlab.models._keras_mapping import _keras_order

    # the graph of branches(): Keras 3.15's model.layers is [input, b, a, c, cat, out]
    inbound = {"input": [], "a": ["input"], "b": ["input"], "c": ["b"], "cat": ["a", "c"], "out": ["cat"]}
    assert _keras_order(inbound, "out") == ["input", "b", "a", "c", "cat", "out"]
    # ties at one depth go by a walk from the output that takes inputs in argument order
    inbound = {"input": [], "x": ["input"], "y": ["input"], "add": ["y", "x"]}
    assert _keras_order(inbound, "add") == ["input", "y", "x", "add"]


@needs_h5py
def test_branches_through_a_keras_file(tmp_path):
    model = branches(normlab, L, normlab.Input((5,)))
    model.compile(optimizer="adam", loss="mse")
    x, y = data((5,), n=32), data((2,), n=32, seed=1)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    save_keras(model, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        names = [e["name"] for e in json.loads(zf.read("config.json"))["config"]["layers"]]
    assert names == ["input_layer", "b", "a", "c", "cat", "out"]
    back = load_keras(tmp_path / "m.keras")
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    for k, v in model.optimizer.get_state().items():
        np.testing.assert_array_equal(back.optimizer.get_state()[k], v)


@needs_h5py
def test_instance_normalization_is_keras_group_normalization(tmp_path):
    model = normlab.Sequential([L.Conv1D(4, 3), L.InstanceNormalization(), L.GlobalAveragePooling1D(), L.Dense(2)])
    x = data((10, 3))
    model.build((None, 10, 3))
    save_keras(model, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        entry = json.loads(zf.read("config.json"))["config"]["layers"][2]
    assert entry["class_name"] == "GroupNormalization" and entry["config"]["groups"] == -1
    np.testing.assert_array_equal(load_keras(tmp_path / "m.keras").predict(x), model.predict(x))


# every layer, each way: tests/models/test_keras_format_layers.py


@needs_h5py
def test_load_model_and_save_choose_the_keras_format_by_extension(tmp_path):
    model, x = normlab_mlp()
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        assert "config.json" in zf.namelist()  # Keras's layout, chosen by the extension
    np.testing.assert_array_equal(normlab.load_model(tmp_path / "m.keras").predict(x), model.predict(x))
    model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        assert "normlab_header.npy" in zf.namelist()  # normlab's own format keeps its extension
    x, y = np.load(os.path.join(DATA, "cnn_x.npy")), np.load(os.path.join(DATA, "cnn_y.npy"))
    close(y, normlab.load_model(os.path.join(DATA, "cnn.keras")).predict(x))


# ---------------------------------------------------------------- saving refusals (per layer: test_keras_format_layers.py)
@needs_h5py
def test_an_unbuilt_model_is_refused_on_saving(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        save_keras(normlab.Sequential([L.Dense(2)]), tmp_path / "m.keras")


# ---------------------------------------------------------------- live Keras
def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax" if importlib.util.find_spec("jax") else "torch")
    return pytest.importorskip("keras")


def keras_predict(model, x):
    """Keras's inference output (an eager call: predict's compilation takes seconds per model)."""
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))


def _keras_fixture_models():
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(DATA, "make_fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"mlp": module.mlp, "cnn": module.cnn, "residual": module.residual}


@pytest.mark.parametrize("name", FIXTURES)
@needs_h5py
def test_keras_to_normlab_to_keras(name, tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(1)
    model, shape, _ = _keras_fixture_models()[name]()
    x = data(shape, n=32, seed=1)
    # moving statistics away from their initial values without training the weights
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.linspace(-0.5, 0.5, n).astype("float32"))
            layer.moving_variance.assign(np.linspace(0.5, 2.0, n).astype("float32"))
    expected = keras_predict(model, x)
    model.save(tmp_path / "k.keras")
    ours = load_keras(tmp_path / "k.keras")
    close(expected, ours.predict(x))
    save_keras(ours, tmp_path / "n.keras")
    again = keras.saving.load_model(tmp_path / "n.keras")
    close(expected, keras_predict(again, x))


@pytest.mark.parametrize("name", sorted(NORMLAB_MODELS))
@needs_h5py
def test_normlab_to_keras(name, tmp_path):
    keras = _keras()
    model, x = NORMLAB_MODELS[name]()
    save_keras(model, tmp_path / "n.keras")
    theirs = keras.saving.load_model(tmp_path / "n.keras")
    close(model.predict(x), keras_predict(theirs, x))
    assert type(theirs.optimizer).__name__ == type(model.optimizer).__name__


@needs_h5py
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_resumes_across_keras_and_normlab(name, tmp_path):
    """Keras trains, normlab goes on from its file; normlab trains, Keras goes on: the same as staying put."""
    keras = _keras()
    x, y = data((5,), n=32), data((2,), n=32, seed=1)
    keras.utils.set_random_seed(0)
    theirs = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    theirs.compile(optimizer=OPTIMIZERS[name](keras.optimizers), loss="mse")
    theirs.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    theirs.save(tmp_path / "k.keras")
    ours = load_keras(tmp_path / "k.keras")
    for m in (theirs, ours):
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    scale = np.max(np.abs(keras_predict(theirs, x)))
    # float32 training steps apart from each other: rounding differences grow a little with each step
    np.testing.assert_allclose(ours.predict(x), keras_predict(theirs, x), rtol=0, atol=1e-5 * scale)
    save_keras(ours, tmp_path / "n.keras")
    again = keras.saving.load_model(tmp_path / "n.keras")
    assert int(again.optimizer.iterations) == int(ours.optimizer.iterations) == 8
    for m in (again, ours):
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_allclose(keras_predict(again, x), ours.predict(x), rtol=0, atol=1e-5 * scale)


@needs_h5py
@pytest.mark.parametrize("start", ["normlab", "keras"])
def test_ema_and_gradient_accumulation_resume_across_keras_and_normlab(start, tmp_path):
    """Adam(use_ema, gradient_accumulation_steps=2) stopped mid-accumulation goes on the same on the other side."""
    keras = _keras()
    x, y = data((5,), n=48), data((2,), n=48, seed=1)
    kwargs = dict(learning_rate=0.01, use_ema=True, gradient_accumulation_steps=2)
    if start == "normlab":
        first = normlab.Sequential([normlab.Input((5,)), L.Dense(4, activation="tanh"), L.Dense(2)], seed=0)
        first.compile(optimizer=normlab.optimizers.Adam(**kwargs), loss="mse")
    else:
        keras.utils.set_random_seed(0)
        first = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
        first.compile(optimizer=keras.optimizers.Adam(**kwargs), loss="mse")
    first.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)  # 3 calls: one update, one accumulated
    if start == "normlab":
        save_keras(first, tmp_path / "m.keras")
        ours, theirs = first, keras.saving.load_model(tmp_path / "m.keras")
    else:
        first.save(tmp_path / "m.keras")
        # Keras reloads its own file too: Keras 3.15 (JAX) cannot fit a use_ema model a second time
        # ("Attempt to donate the same buffer twice"), and resuming from the file is what is compared
        ours, theirs = load_keras(tmp_path / "m.keras"), keras.saving.load_model(tmp_path / "m.keras")
    assert int(theirs.optimizer.iterations) == int(ours.optimizer.iterations) == 1
    assert ours.optimizer.accumulation_step == 1
    for m in (theirs, ours):
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert int(theirs.optimizer.iterations) == int(ours.optimizer.iterations) == 4  # 9 calls
    expected = keras_predict(theirs, x)
    scale = np.max(np.abs(expected))
    # float32 steps computed apart: rounding differences of a few ulps, grown over a handful of steps
    np.testing.assert_allclose(ours.predict(x), expected, rtol=0, atol=1e-5 * scale)
    for v, a in zip(theirs.optimizer.variables[2:], _keras_ordered_state(ours, theirs)):
        np.testing.assert_allclose(a, keras.ops.convert_to_numpy(v), rtol=0, atol=1e-5 * max(1, np.max(np.abs(a))))


def _keras_ordered_state(ours, theirs):
    """normlab's averages, accumulators, momenta and velocities in the order of Keras's optimizer variables."""
    from normlab.models._keras_mapping import _slot_order

    opt, state = ours.optimizer, ours.optimizer.get_state()
    n = len(ours.trainable_weights)
    assert len(theirs.optimizer.variables) == 2 + len(_slot_order("Adam", opt.get_config(), n))
    # a Sequential of Dense layers: normlab's trainable order is Keras's
    return [state[f"{slot}/{i}"] for slot, i in _slot_order("Adam", opt.get_config(), n)]


@needs_h5py
def test_branches_with_keras(tmp_path):
    keras = _keras()
    x, y = data((5,), n=32), data((2,), n=32, seed=1)
    keras.utils.set_random_seed(0)
    theirs = branches(keras, keras.layers, keras.Input((5,)))
    theirs.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    theirs.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    theirs.save(tmp_path / "k.keras")
    ours = load_keras(tmp_path / "k.keras")
    close(keras_predict(theirs, x), ours.predict(x))
    save_keras(ours, tmp_path / "n.keras")
    again = keras.saving.load_model(tmp_path / "n.keras")
    close(keras_predict(theirs, x), keras_predict(again, x))
    for m in (again, ours):
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    scale = np.max(np.abs(ours.predict(x)))
    np.testing.assert_allclose(keras_predict(again, x), ours.predict(x), rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("middle", ["renorm", "rms_scaling"])
def test_batch_renorm_and_rms_scaling_round_trip(middle, tmp_path):
    pytest.importorskip("h5py")
    from normlab import layers as L

    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 2)).astype("float32")
    mid = (L.BatchNormalization(renorm=True, renorm_clipping={"rmax": 2.0, "dmax": 1.0}) if middle == "renorm"
           else L.LayerNormalization(rms_scaling=True))
    model = normlab.Sequential([normlab.Input((6,)), L.Dense(4), mid, L.Dense(2)], seed=0)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=2, verbose=0, seed=0)
    model.save(tmp_path / "m.keras")
    back = normlab.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)  # renorm's moving_stddev and renorm buffers included
    keras = pytest.importorskip("keras")
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    ours = model.predict(x, verbose=0)
    assert np.max(np.abs(theirs.predict(x, verbose=0) - ours)) <= 1e-6 * np.max(np.abs(ours))
