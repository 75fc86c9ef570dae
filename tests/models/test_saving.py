import io
import json
import os
import stat

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


# ------------------------------------------------------------------ writing
def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_save_keeps_the_permissions_of_an_existing_file(tmp_path):
    x, y = data()
    m = make()
    m.fit(x, y, epochs=1, verbose=0, seed=0)
    path = tmp_path / "m.npz"
    m.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # as open() would create it
    for mode in (0o644, 0o640, 0o600, 0o664):
        path.chmod(mode)
        m.save(path)
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_save_through_a_symlink_replaces_its_target(tmp_path):
    x, y = data()
    m = make()
    m.fit(x, y, epochs=1, verbose=0, seed=0)
    store = tmp_path / "store"
    store.mkdir()
    target = store / "model.npz"
    target.write_bytes(b"old")
    target.chmod(0o644)
    link = tmp_path / "latest.npz"
    link.symlink_to(os.path.relpath(target, tmp_path))
    m.save(link)
    assert link.is_symlink() and os.readlink(link) == os.path.relpath(target, tmp_path)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    np.testing.assert_array_equal(normlab.load_model(link).predict(x), m.predict(x))
    # the temporary file was written beside the target, and is gone
    assert sorted(p.name for p in store.iterdir()) == ["model.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.npz", "store"]
    # a dangling link: its target is created, as open() would
    dangling = tmp_path / "next.npz"
    dangling.symlink_to(store / "new.npz")
    m.save(dangling)
    assert dangling.is_symlink() and (store / "new.npz").is_file()


def test_save_refuses_non_finite_values(tmp_path):
    m = make()
    m.build((None, 6))
    m.layers[1].buffers["moving_variance"][0] = np.inf
    with pytest.raises(ValueError, match="layers/1/buffers/moving_variance.*NaN or inf"):
        m.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    x, y = data()
    m = make()
    m.fit(x, y, epochs=1, verbose=0, seed=0)
    path = tmp_path / "m.npz"
    m.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


# ------------------------------------------------------------- round trips
def test_functional_round_trip_with_generators_and_a_wrapper(tmp_path):
    from normlab.layers import Add, Dropout, WeightNormalization

    def build():
        inp = normlab.Input((6,))
        h = Dense(6)(inp)
        h = Dropout(0.3, seed=5)(h)
        h = Add()([h, inp])
        out = WeightNormalization(Dense(3, activation="softmax"))(h)
        m = normlab.Model(inp, out, seed=0)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return m

    x, y = data()
    a = build()
    a.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=1)
    a.save(tmp_path / "f.npz")
    b = normlab.load_model(tmp_path / "f.npz")
    assert b.get_config() == a.get_config()
    # loading checked each build through instance attributes, all removed again
    assert not any({"add_weight", "build_from_shape", "build"} & set(vars(o)) for o in [b, *b.layers, b.layers[-1].layer])
    np.testing.assert_array_equal(b.predict(x), a.predict(x))
    # the generators, slots and step counts came back: training goes on identically
    a.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=2)
    b.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=2)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_functional_model_with_unknown_input_sizes_round_trips(tmp_path):
    from normlab.layers import Conv1D, GlobalAveragePooling1D

    inp = normlab.Input((None, 3))
    h = GlobalAveragePooling1D()(Conv1D(4, 3)(inp))
    m = normlab.Model(inp, Dense(2, activation="softmax")(h))
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((8, 10, 3)).astype(np.float32)
    m.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    m.save(tmp_path / "c.npz")
    back = normlab.load_model(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    assert back.predict(np.zeros((2, 20, 3), np.float32)).shape == (2, 2)


def test_float64_model_and_compile_false(tmp_path):
    m = normlab.Sequential([Dense(4, dtype="float64"), BatchNormalization(), Dense(2)])
    m.build((None, 3))
    m.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).standard_normal((8, 3))
    m.fit(x, np.zeros((8, 2)), epochs=1, verbose=0)
    m.save(tmp_path / "d.npz")
    back = normlab.load_model(tmp_path / "d.npz", compile=False)
    assert not back.compiled and back.dtype == np.float64
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
