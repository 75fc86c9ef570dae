"""Keras 3 ``.keras`` files both ways (normlab.models.keras_format), and pickling models.

Without Keras the reader is checked against committed files written by Keras
(tests/models/data/keras, made by make_fixtures.py there) and their Keras
predictions; with Keras installed the round trips run live. Reading and
writing need h5py; the pickling tests need neither.
"""

import importlib.util
import io
import json
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

import normlab
from normlab import layers as L
from normlab.models.base import BaseModel
from normlab.models.keras_format import _reduce_model, is_keras_path, load_keras, save_keras
from normlab.models.saving import ModelFileError

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
}


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


@needs_h5py
def test_an_optimizer_layout_that_does_not_fit_is_skipped_with_a_warning(tmp_path):
    def drop(f):
        del f["optimizer/vars/5"]
        f["optimizer/vars/5"] = np.zeros(3, np.float32)

    write(tmp_path / "m.keras", with_weights(drop))
    with pytest.warns(UserWarning, match="starts afresh"):
        model = load_keras(tmp_path / "m.keras")
    assert int(model.optimizer.get_state()["iterations"]) == 0


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
        if "config.json" not in zf.namelist():
            pytest.skip("model.save does not choose the .keras format yet (models/base.py)")
    np.testing.assert_array_equal(normlab.load_model(tmp_path / "m.keras").predict(x), model.predict(x))
    model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        assert "normlab_header.npy" in zf.namelist()  # normlab's own format keeps its extension
    x, y = np.load(os.path.join(DATA, "cnn_x.npy")), np.load(os.path.join(DATA, "cnn_y.npy"))
    close(y, normlab.load_model(os.path.join(DATA, "cnn.keras")).predict(x))


# ---------------------------------------------------------------- saving refusals
@pytest.mark.parametrize("layer, match", [
    (lambda: L.NoisyDense(3), "NoisyDense"),
    (lambda: L.WeightNormalization(L.Dense(3)), "WeightNormalization"),
    (lambda: L.BatchNormalization(virtual_batch_size=2), "virtual_batch_size"),
    (lambda: L.BatchNormalization(unbiased_moving_variance=True), "unbiased_moving_variance"),
])
@needs_h5py
def test_layers_keras_lacks_are_refused_on_saving(layer, match, tmp_path):
    model = normlab.Sequential([L.Dense(4), layer()])
    model.build((None, 5))
    with pytest.raises(ValueError, match=match):
        save_keras(model, tmp_path / "m.keras")
    assert not os.listdir(tmp_path)


@needs_h5py
def test_an_unbuilt_model_is_refused_on_saving(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        save_keras(normlab.Sequential([L.Dense(2)]), tmp_path / "m.keras")


# ---------------------------------------------------------------- hostile files
def members(name="mlp"):
    with zipfile.ZipFile(os.path.join(DATA, f"{name}.keras")) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def write(path, parts, compression=zipfile.ZIP_STORED, extra=()):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for n, b in list(parts.items()) + list(extra):
            zf.writestr(n, b)
    return path


def with_config(edit, name="mlp"):
    parts = members(name)
    config = json.loads(parts["config.json"])
    edit(config)
    parts["config.json"] = json.dumps(config).encode()
    return parts


def with_weights(edit, name="mlp"):
    parts = members(name)
    buf = io.BytesIO(parts["model.weights.h5"])
    with h5py.File(buf, "r+") as f:
        edit(f)
    parts["model.weights.h5"] = buf.getvalue()
    return parts


def refused(path, match):
    with pytest.raises(ModelFileError, match=match):
        load_keras(path)


def layer_entry(class_name, config=None, module="keras.layers", registered_name=None):
    return {"module": module, "class_name": class_name, "config": config or {"name": "x"},
            "registered_name": registered_name}


@pytest.mark.parametrize("entry, match", [
    (layer_entry("Lambda", {"name": "l", "function": {"class_name": "__lambda__", "config": {"value": "AAAA"}}}),
     "Lambda layer holds Python code"),
    (layer_entry("MyLayer", registered_name="Custom>MyLayer", module="my_package"), "my_package"),
    (layer_entry("Dense", {"name": "d", "units": 3}, module="os"), "module 'os'"),
    (layer_entry("Dense", {"name": "d", "units": 3}, module="builtins"), "module 'builtins'"),
    (layer_entry("Dense", {"name": "d", "units": 3}, registered_name="evil>Dense"), "registered custom object"),
    (layer_entry("Dense", {"name": "d", "units": 3,
                           "activation": {"class_name": "__lambda__", "config": {"value": "x"}}}), "serialized object"),
    (layer_entry("Dense", {"name": "d", "units": 3, "kernel_initializer": {"module": "builtins", "class_name": "eval",
                                                                          "config": {}}}), "module 'builtins'"),
    (layer_entry("Dense", {"name": "d", "units": 3, "activation": "swish"}), "activation 'swish'"),
    (layer_entry("Dense", {"name": "d", "units": 3, "kernel_constraint": {"module": "keras.constraints",
                                                                         "class_name": "Radial", "config": {}}}),
     "constraint 'Radial', which normlab does not have"),
    (layer_entry("LSTM", {"name": "r", "units": 3}), "'LSTM' layer, which normlab does not have"),
    (layer_entry("Sequential", {"name": "inner", "layers": []}, module="keras"), "nested model"),
])
@needs_h5py
def test_code_custom_and_unknown_objects_are_refused(entry, match, tmp_path):
    path = write(tmp_path / "m.keras", with_config(lambda c: c["config"]["layers"].insert(2, entry)))
    refused(path, match)


@needs_h5py
def test_a_subclassed_model_is_refused(tmp_path):
    def edit(c):
        c.update(module="my_models", class_name="MyModel", registered_name="my>MyModel")

    refused(write(tmp_path / "m.keras", with_config(edit)), "my_models")


@needs_h5py
def test_functional_configs_are_checked(tmp_path):
    def shared(c):  # a layer called twice
        layers = c["config"]["layers"]
        layers[1]["inbound_nodes"].append(layers[1]["inbound_nodes"][0])

    refused(write(tmp_path / "a.keras", with_config(shared, "residual")), "called 2 times")

    def forward_reference(c):
        layers = c["config"]["layers"]
        layers[1]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = layers[-1]["name"]

    refused(write(tmp_path / "b.keras", with_config(forward_reference, "residual")), "not an earlier layer")

    def two_inputs(c):
        c["config"]["input_layers"] = [["features", 0, 0], ["other", 0, 0]]

    refused(write(tmp_path / "c.keras", with_config(two_inputs, "residual")), "one input and one output")


@needs_h5py
def test_shapes_that_disagree_with_the_config_are_refused(tmp_path):
    def wrong(f):
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = np.zeros((8, 15), np.float32)

    refused(write(tmp_path / "m.keras", with_weights(wrong)), r"shape \(8, 15\)")


@needs_h5py
def test_a_huge_config_is_refused_before_anything_is_allocated(tmp_path):
    def huge(c):
        c["config"]["layers"][1]["config"]["units"] = 10**9

    path = write(tmp_path / "m.keras", with_config(huge))
    tracemalloc.start()
    try:
        refused(path, r"shape \(8, 16\)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


@needs_h5py
def test_statistics_from_the_config_are_bounded_by_the_file_size(tmp_path):
    def huge(c):  # Normalization(mean=0.5) on 10**9 features would fill 8 GB of buffers from two numbers
        c["config"]["layers"][0]["config"]["batch_shape"] = [None, 10**9]
        c["config"]["layers"].insert(1, layer_entry("Normalization", {"name": "n", "axis": -1, "mean": 0.5,
                                                                      "variance": 2.0}))

    path = write(tmp_path / "m.keras", with_config(huge))
    tracemalloc.start()
    try:
        refused(path, "more than the file's size allows")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


@needs_h5py
def test_huge_declared_dataset_shapes_are_refused_before_reading(tmp_path):
    def huge(f):  # a chunked, compressed dataset declares 4 TB in a few KB
        f.create_dataset("layers/dense/vars/9", shape=(10**6, 10**6), dtype="f4", chunks=(1, 1000), compression="gzip")

    refused(write(tmp_path / "m.keras", with_weights(huge)), "declare more bytes")


@needs_h5py
def test_unexpected_datasets_groups_and_links_are_refused(tmp_path):
    refused(write(tmp_path / "a.keras", with_weights(lambda f: f.create_dataset("layers/dense/vars/2", data=[1.0]))),
            "no layer of the config has")
    refused(write(tmp_path / "b.keras", with_weights(lambda f: f.create_group("layers/surprise"))),
            "no layer of the config has")

    def external(f):
        f["layers/dense/vars/extra"] = h5py.ExternalLink("/etc/passwd", "/x")

    refused(write(tmp_path / "c.keras", with_weights(external)), "ExternalLink")

    def soft(f):
        f["layers/dense/vars/alias"] = h5py.SoftLink("/layers/dense/vars/0")

    refused(write(tmp_path / "d.keras", with_weights(soft)), "SoftLink")

    def external_storage(f):
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", shape=(8, 16), dtype="f4", external=[("/etc/hostname", 0, 512)])

    refused(write(tmp_path / "e.keras", with_weights(external_storage)), "outside the file")


@needs_h5py
def test_nan_weights_are_refused(tmp_path):
    def nan(f):
        f["layers/dense/vars/0"][0, 0] = np.nan

    refused(write(tmp_path / "m.keras", with_weights(nan)), "NaN or inf")


@needs_h5py
def test_zip_members_are_checked(tmp_path):
    refused(write(tmp_path / "a.keras", members(), extra=[("evil.py", b"import os")]), "unexpected members")
    refused(write(tmp_path / "b.keras", members(), extra=[("config.json", b"{}")]), "repeats a member")
    parts = members()
    del parts["model.weights.h5"]
    refused(write(tmp_path / "c.keras", parts), "no model.weights.h5")
    parts = members()
    parts["model.weights.npz"] = parts.pop("model.weights.h5")
    refused(write(tmp_path / "d.keras", parts), "npz layout")


@needs_h5py
def test_a_compression_bomb_is_refused_before_inflating(tmp_path):
    parts = members()
    parts["model.weights.h5"] = bytes(20 * 2**20)  # 20 MB of zeros deflate to about 20 KB
    path = write(tmp_path / "m.keras", parts, compression=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 2**20
    tracemalloc.start()
    try:
        refused(path, "declares .* bytes, more than")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


@needs_h5py
def test_deep_and_invalid_json_is_refused(tmp_path):
    parts = members()
    parts["config.json"] = b"[" * 100000 + b"]" * 100000
    refused(write(tmp_path / "a.keras", parts), "nested more than")
    parts["config.json"] = b'{"a": NaN}'
    refused(write(tmp_path / "b.keras", parts), "NaN")
    parts["config.json"] = b"\xff\xfe"
    refused(write(tmp_path / "c.keras", parts), "not valid JSON")


@needs_h5py
def test_keras_2_files_are_named_as_such(tmp_path):
    parts = members()
    parts["metadata.json"] = json.dumps({"keras_version": "2.13.1"}).encode()
    refused(write(tmp_path / "a.keras", parts), "Keras 2.13.1")

    def keras2(f):
        f.move("layers", "_layer_checkpoint_dependencies")

    refused(write(tmp_path / "b.keras", with_weights(keras2)), "Keras 2's layout")


@needs_h5py
def test_files_that_are_not_keras_archives(tmp_path):
    (tmp_path / "empty.keras").write_bytes(b"")
    refused(tmp_path / "empty.keras", "empty")
    (tmp_path / "text.keras").write_bytes(b"<html>not found</html>")
    refused(tmp_path / "text.keras", "not a zip")
    refused(write(tmp_path / "npz.keras", {"normlab_header.npy": b"x"}), "unexpected members")


@needs_h5py
def test_truncated_and_corrupted_files_raise_model_file_error_only(tmp_path):
    blob = open(os.path.join(DATA, "mlp.keras"), "rb").read()
    rng = np.random.default_rng(0)
    path = tmp_path / "m.keras"
    cuts = list(range(0, len(blob), max(1, len(blob) // 40)))
    for n in cuts:
        path.write_bytes(blob[:n])
        with pytest.raises(ModelFileError):
            load_keras(path)
    for _ in range(40):
        b = bytearray(blob)
        for i in rng.integers(0, len(b), 8):
            b[i] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(b))
        try:
            load_keras(path)  # a flip inside padding or an unread dataset may leave a valid file
        except ModelFileError:
            pass


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


# ------------------------------------------------------------ weights files
def _weights_model(seed=0, optimizer="adam"):
    m = normlab.Sequential([normlab.Input((5,)), L.Dense(4, activation="tanh"), L.BatchNormalization(), L.Dense(2)],
                           seed=seed)
    m.compile(optimizer=optimizer, loss="mse")
    return m


@pytest.mark.parametrize("suffix", [".weights.h5", ".npz", ".weights"])
def test_weights_round_trip_bit_for_bit(suffix, tmp_path):
    from normlab.models.keras_format import load_weights, save_weights

    if suffix == ".weights.h5" and h5py is None:
        pytest.skip("h5py is not installed")
    x, y = data((5,), n=32), data((2,), n=32, seed=1)
    model = _weights_model()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    path = tmp_path / f"m{suffix}"
    save_weights(model, path)
    with pytest.raises(FileExistsError):
        save_weights(model, path, overwrite=False)
    other = _weights_model(seed=1)
    other.build((None, 5))
    load_weights(other, path)
    for a, b in zip(model.get_weights(), other.get_weights()):  # moving statistics included
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    # Keras's file carries the optimizer's variables (normlab's npz is weights only)
    assert other.optimizer.iterations == (4 if suffix == ".weights.h5" else 0)
    if suffix == ".weights.h5":
        for m in (model, other):
            m.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        np.testing.assert_array_equal(other.predict(x), model.predict(x))


@pytest.mark.parametrize("suffix", [".weights.h5", ".npz"])
def test_bad_weights_files_raise_model_file_error_and_change_nothing(suffix, tmp_path):
    from normlab.models.keras_format import load_weights, save_weights

    if suffix == ".weights.h5" and h5py is None:
        pytest.skip("h5py is not installed")
    x, y = data((5,), n=32), data((2,), n=32, seed=1)
    source = _weights_model(seed=3)
    source.fit(x, y, batch_size=16, epochs=1, verbose=0)
    good = tmp_path / f"good{suffix}"
    save_weights(source, good)
    wider = normlab.Sequential([normlab.Input((5,)), L.Dense(6, activation="tanh"), L.BatchNormalization(),
                                L.Dense(2)], seed=0)
    wider.compile(optimizer="adam", loss="mse")
    save_weights(wider, tmp_path / f"wider{suffix}")
    fewer = normlab.Sequential([normlab.Input((5,)), L.Dense(4, activation="tanh"), L.Dense(2)], seed=0)
    fewer.compile(optimizer="adam", loss="mse")
    save_weights(fewer, tmp_path / f"fewer{suffix}")
    raw = good.read_bytes()
    (tmp_path / f"truncated{suffix}").write_bytes(raw[: len(raw) // 2])
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    (tmp_path / f"text{suffix}").write_bytes(b"not a weights file" * 20)
    if suffix == ".npz":
        arrays = dict(np.load(good))
        bad_nan = dict(arrays)
        bad_nan["layers/0/params/kernel"] = np.full_like(arrays["layers/0/params/kernel"], np.nan)
        np.savez(tmp_path / f"nan{suffix}", **bad_nan)
        np.savez(tmp_path / f"extra{suffix}", **arrays, surplus=np.zeros(3, np.float32))
        # a member declaring a terabyte: refused from its header, nothing allocated
        with zipfile.ZipFile(tmp_path / f"huge{suffix}", "w") as z:
            for k, v in arrays.items():
                member = io.BytesIO()
                if k == "layers/0/params/kernel":
                    np.lib.format.write_array_header_1_0(
                        member, {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20)})
                    member.write(b"\0" * 64)
                else:
                    np.save(member, v)
                z.writestr(k + ".npy", member.getvalue())
    else:
        with h5py.File(tmp_path / f"nan{suffix}", "w") as f, h5py.File(good, "r") as g:
            for k in g:
                g.copy(g[k], f, k)
            arr = f["layers/dense/vars/0"][()]
            del f["layers/dense/vars/0"]
            f["layers/dense/vars/0"] = np.full_like(arr, np.nan)
        with h5py.File(tmp_path / f"extra{suffix}", "w") as f, h5py.File(good, "r") as g:
            for k in g:
                g.copy(g[k], f, k)
            f["layers/dense/vars/9"] = np.zeros(3, np.float32)
        with h5py.File(tmp_path / f"huge{suffix}", "w") as f, h5py.File(good, "r") as g:
            for k in g:
                g.copy(g[k], f, k)
            del f["layers/dense/vars/0"]
            f.create_dataset("layers/dense/vars/0", shape=(1 << 20, 1 << 20), dtype="float32")  # no data written
    model = _weights_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before, state = model.get_weights(), model.optimizer.get_state()
    for name in ("wider", "fewer", "truncated", "empty", "text", "nan", "extra", "huge"):
        tracemalloc.start()
        with pytest.raises(ModelFileError):
            load_weights(model, tmp_path / f"{name}{suffix}")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 << 20, name
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)
        after = model.optimizer.get_state()
        assert all(np.array_equal(state[k], after[k]) for k in state), name
    with pytest.raises(ValueError, match="not built"):
        load_weights(normlab.Sequential([L.Dense(4), L.BatchNormalization(), L.Dense(2)]), good)
    load_weights(model, good)  # the good file still loads
    for a, b in zip(source.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@needs_h5py
@pytest.mark.parametrize("start", ["normlab", "keras"])
def test_weights_files_with_keras(start, tmp_path):
    """normlab's .weights.h5 loads into Keras's model of the same layers, and Keras's into normlab's."""
    from normlab.models.keras_format import load_weights, save_weights

    keras = _keras()
    x, y = data((5,), n=32), data((2,), n=32, seed=1)
    ours = _weights_model()
    keras.utils.set_random_seed(0)
    theirs = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                               keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    theirs.compile(optimizer="adam", loss="mse")
    path = tmp_path / "m.weights.h5"
    if start == "normlab":
        ours.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        save_weights(ours, path)
        theirs.load_weights(path)
    else:
        theirs.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        theirs.save_weights(path)
        ours.build((None, 5))
        load_weights(ours, path)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    close(ours.predict(x), keras_predict(theirs, x))


def test_loss_reduction_and_ignore_class_travel_in_keras_files(tmp_path):
    pytest.importorskip("h5py")
    from normlab import layers as L

    model = normlab.Sequential([normlab.Input((4,)), L.Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer="sgd",
                  loss=normlab.losses.SparseCategoricalCrossentropy(ignore_class=2, reduction="sum"))
    model.save(tmp_path / "m.keras")
    back = normlab.load_model(tmp_path / "m.keras")
    assert (back.loss.reduction, back.loss.ignore_class) == ("sum", 2)
    keras = pytest.importorskip("keras")
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    assert (theirs.loss.reduction, theirs.loss.ignore_class) == ("sum", 2)
