"""Hostile ``.keras`` files (normlab.models.keras_format.load_keras): every malformed or code-carrying
file raises ModelFileError naming the cause, with memory bounded by the file's size.

Edits of the committed files Keras wrote (tests/models/data/keras).
"""

import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from normlab.models.keras_format import load_keras
from normlab.models.saving import ModelFileError

DATA = os.path.join(os.path.dirname(__file__), "data", "keras")
# Keras and normlab both compute in float32; the issue's bar is 1e-6 relative (to the outputs' scale)
RTOL = 1e-6

try:
    import h5py
except ImportError:  # reading and writing .keras files needs it
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="h5py is not installed (pip install 'normlab[keras]')")


def data(shape, n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape).astype(np.float32)


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


@needs_h5py
def test_an_optimizer_layout_that_does_not_fit_is_skipped_with_a_warning(tmp_path):
    def drop(f):
        del f["optimizer/vars/5"]
        f["optimizer/vars/5"] = np.zeros(3, np.float32)

    write(tmp_path / "m.keras", with_weights(drop))
    with pytest.warns(UserWarning, match="starts afresh"):
        model = load_keras(tmp_path / "m.keras")
    assert int(model.optimizer.get_state()["iterations"]) == 0
