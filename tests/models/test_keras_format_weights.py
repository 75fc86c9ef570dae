"""Weights files (normlab.models.keras_format.save_weights / load_weights): Keras's ``.weights.h5``
and normlab's ``.npz``, both ways; the live tests need Keras (pytest.importorskip("keras")).
"""

import importlib.util
import io
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

import normlab
from normlab import layers as L
from normlab.models.saving import ModelFileError

# Keras and normlab both compute in float32; the issue's bar is 1e-6 relative (to the outputs' scale)
RTOL = 1e-6

try:
    import h5py
except ImportError:  # reading and writing .keras files needs it
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


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax" if importlib.util.find_spec("jax") else "torch")
    return pytest.importorskip("keras")


def keras_predict(model, x):
    """Keras's inference output (an eager call: predict's compilation takes seconds per model)."""
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))


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
