import io
import json
import os
import zipfile

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.callbacks import ModelCheckpoint
from normlab.layers import Activation, BatchNormalization, Dense


def data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((3, 6)) * 2)[y] + rng.standard_normal((n, 6))
    return x.astype(np.float32), y


def make():
    m = normlab.Sequential(
        [Dense(8, use_bias=False), BatchNormalization(momentum=0.9), Activation("relu"), Dense(3, activation="softmax")]
    )
    m.compile(optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_round_trip_predictions_buffers_and_compile(tmp_path):
    x, y = data()
    m = make()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=0)
    path = tmp_path / "m.npz"
    m.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left behind
    back = normlab.load_model(path)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert back.compiled and type(back.optimizer) is optimizers.SGD
    assert back.get_config() == m.get_config()
    assert back.evaluate(x, y) == m.evaluate(x, y)


def test_resume_is_bit_for_bit(tmp_path):
    x, y = data()
    a = make()
    a.fit(x, y, epochs=4, batch_size=16, verbose=0, seed=7)
    b = make()
    b.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=7)
    b.save(tmp_path / "mid.npz")
    c = normlab.load_model(tmp_path / "mid.npz")
    c.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0, seed=7)
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_array_equal(wa, wc)


def test_truncated_corrupted_foreign_and_tampered_files(tmp_path):
    x, y = data()
    m = make()
    m.fit(x, y, epochs=1, verbose=0, seed=0)
    good = tmp_path / "good.npz"
    m.save(good)
    raw = good.read_bytes()

    cases = {}
    cases["truncated"] = raw[: len(raw) // 2]
    corrupted = bytearray(raw)
    mid = len(raw) // 3
    corrupted[mid : mid + 64] = bytes(64)
    cases["corrupted"] = bytes(corrupted)
    cases["foreign_png"] = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    cases["text"] = b"hello, I am not a model"
    buf = io.BytesIO()
    np.savez(buf, weights=np.ones(3))
    cases["foreign_npz"] = buf.getvalue()
    for name, content in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(content)
        with pytest.raises(normlab.ModelFileError) as e:
            normlab.load_model(p)
        assert str(p) in str(e.value), name

    # tampered header: an unregistered class name is refused, nothing is imported or run
    with np.load(good, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    header = json.loads(bytes(arrays["normlab_header"]).decode())
    header["config"]["layers"][0]["class_name"] = "os.system"
    arrays["normlab_header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    bad = tmp_path / "tampered.npz"
    np.savez(bad, **arrays)
    with pytest.raises(normlab.ModelFileError, match="Unknown layer 'os.system'"):
        normlab.load_model(bad)
    # tampered shapes
    header = json.loads(bytes(np.load(good)["normlab_header"]).decode())
    with np.load(good, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["layers/0/params/kernel"] = np.zeros((2, 2), np.float32)
    np.savez(bad, **arrays)
    with pytest.raises(normlab.ModelFileError, match="shape"):
        normlab.load_model(bad)
    # a newer format version is refused with a clear message
    header["format_version"] = 99
    arrays = {k: v for k, v in np.load(good, allow_pickle=False).items()}
    arrays["normlab_header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(bad, **arrays)
    with pytest.raises(normlab.ModelFileError, match="format version 99"):
        normlab.load_model(bad)


def test_object_arrays_are_never_unpickled(tmp_path):
    p = tmp_path / "pickled.npz"
    np.savez(p, normlab_header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(normlab.ModelFileError):
        normlab.load_model(p)


def test_missing_file_and_unbuilt_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        normlab.load_model(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="not built"):
        make().save(tmp_path / "x.npz")


def test_model_checkpoint_best_only(tmp_path):
    x, y = data()
    m = make()
    cb = ModelCheckpoint(str(tmp_path / "best-{epoch:02d}.npz"), monitor="loss", save_best_only=True)
    hist = m.fit(x, y, epochs=4, batch_size=16, verbose=0, seed=0, callbacks=[cb])
    losses = hist.history["loss"]
    expected = [i for i in range(4) if losses[i] == min(losses[: i + 1])]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"best-{i + 1:02d}.npz" for i in expected]
    best = normlab.load_model(cb.last_saved)
    assert best.count_params() == m.count_params()
