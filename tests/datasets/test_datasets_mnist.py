"""MNIST / Fashion-MNIST loaders: synthetic full-size IDX folders and Keras
``mnist.npz`` files, the search order path -> $NORMLAB_DATA -> Debian folder
-> Keras's cache, broken and hostile files, Keras's ``load_data`` API (uint8),
and the real Fashion-MNIST files of Debian's ``dataset-fashion-mnist`` package."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from normlab import InvalidParameterError
from normlab.datasets import DEBIAN_FASHION_MNIST_DIR, load_fashion_mnist, load_mnist
from normlab.datasets import fashion_mnist
from normlab.datasets import mnist as mnist_module
from normlab.datasets import mnist as keras_mnist  # the same module, named as a Keras script names it

N_TRAIN, N_TEST = 60000, 10000
NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def idx_bytes(a):
    header = bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(a, dtype=np.uint8).tobytes()


def synthetic_images(n):
    # distinct, cheap uint8 images (uint8 arithmetic wraps around)
    rows = (np.arange(n) % 251).astype(np.uint8)
    cols = (np.arange(784) % 256).astype(np.uint8)
    return np.add.outer(rows, cols).reshape(n, 28, 28)


def synthetic_labels(n, offset):
    return ((np.arange(n) + offset) % 10).astype(np.uint8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Full-size image files written once (plain and gzipped); folders built
    from them with symlinks, so each test writes only small label files."""
    root = tmp_path_factory.mktemp("idx-store")
    arrays = {"train_x": synthetic_images(N_TRAIN), "test_x": synthetic_images(N_TEST)}
    for key, a in arrays.items():
        data = idx_bytes(a)
        (root / NAMES[key]).write_bytes(data)
        (root / (NAMES[key] + ".gz")).write_bytes(gzip.compress(data, compresslevel=1))
    return root, arrays


def make_folder(store, folder, *, offset=0, gz=False, dotted=False):
    """A complete dataset folder; labels are shifted by ``offset`` so that
    tests can tell folders apart."""
    root, _ = store
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""

    def name(key):
        n = NAMES[key]
        return (n.replace("-idx", ".idx") if dotted else n) + suffix

    for key in ("train_x", "test_x"):
        os.symlink(root / (NAMES[key] + suffix), folder / name(key))
    for key, n in (("train_y", N_TRAIN), ("test_y", N_TEST)):
        data = idx_bytes(synthetic_labels(n, offset))
        (folder / name(key)).write_bytes(gzip.compress(data) if gz else data)
    return folder


def replace(folder, key, payload):
    target = Path(folder) / NAMES[key]
    target.unlink()
    target.write_bytes(payload)
    return target


@pytest.fixture(autouse=True)
def keras_home(monkeypatch, tmp_path):
    """An empty Keras home, whatever ~/.keras holds on this machine."""
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No $NORMLAB_DATA and an empty Debian folder, whatever the machine has."""
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no-debian"))


# ---------------------------------------------------------------- loading

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_load_from_path(store, tmp_path, no_env, gz):
    _, arrays = store
    folder = make_folder(store, tmp_path / "mnist", gz=gz)
    (x_train, y_train), (x_test, y_test) = load_mnist(folder)
    assert x_train.shape == (N_TRAIN, 28, 28) and x_test.shape == (N_TEST, 28, 28)
    assert y_train.shape == (N_TRAIN,) and y_test.shape == (N_TEST,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_test.dtype == np.float32 and y_test.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    for i in (0, 1, 12345, N_TRAIN - 1):
        np.testing.assert_array_equal(x_train[i], arrays["train_x"][i].astype(np.float32) / 255)
    np.testing.assert_array_equal(x_test[-1], arrays["test_x"][-1].astype(np.float32) / 255)
    np.testing.assert_array_equal(y_train, synthetic_labels(N_TRAIN, 0))
    np.testing.assert_array_equal(y_test, synthetic_labels(N_TEST, 0))


def test_flatten_dotted_names_and_subfolder(store, tmp_path, no_env):
    make_folder(store, tmp_path / "data" / "fashion-mnist", dotted=True, gz=True)
    (x_train, _), (x_test, _) = load_fashion_mnist(str(tmp_path / "data"), flatten=True)
    assert x_train.shape == (N_TRAIN, 784) and x_test.shape == (N_TEST, 784)
    assert x_train.flags.c_contiguous


# ----------------------------------------------------------- search order

def test_search_order_path_then_env_then_debian(store, tmp_path, monkeypatch):
    given = make_folder(store, tmp_path / "given", offset=1)
    make_folder(store, tmp_path / "env" / "fashion-mnist", offset=2)
    debian = make_folder(store, tmp_path / "debian", offset=3)
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST_DIR", str(debian))

    def first_label():
        return int(load_fashion_mnist(path)[1][1][0])

    path = given
    assert first_label() == 1
    path = tmp_path / "missing"  # a path without the files: go on to $NORMLAB_DATA
    assert first_label() == 2
    path = None
    assert first_label() == 2
    monkeypatch.delenv("NORMLAB_DATA")
    assert first_label() == 3


def test_mnist_ignores_the_fashion_folders(store, tmp_path, monkeypatch):
    debian = make_folder(store, tmp_path / "debian")
    make_folder(store, tmp_path / "env" / "fashion-mnist")
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST_DIR", str(debian))
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match="mnist"):
        load_mnist()
    make_folder(store, tmp_path / "env" / "mnist", offset=4)
    assert load_mnist()[1][1][0] == 4


def test_not_found_says_how_to_get_the_files(tmp_path, no_env, monkeypatch):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(partial)
    msg = str(info.value)
    for name in NAMES.values():
        assert name in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "NORMLAB_DATA" in msg and str(tmp_path / "env" / "fashion-mnist") in msg
    assert str(partial) in msg and "missing" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "path=" in msg


def test_not_found_without_any_folder(no_env, keras_home):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist()
    msg = str(info.value)
    assert "Could not find the MNIST IDX files" in msg and "mnist.npz" in msg
    assert str(keras_home / "datasets" / "mnist.npz") in msg  # where Keras would have cached it
    assert "$NORMLAB_DATA/mnist/" in msg and "[data]" in msg and "No system package ships MNIST" in msg


def test_invalid_arguments(no_env):
    with pytest.raises(InvalidParameterError, match="'path' parameter of load_mnist"):
        load_mnist(42)
    with pytest.raises(InvalidParameterError, match="'flatten' parameter of load_fashion_mnist"):
        load_fashion_mnist(flatten="yes")


# ---------------------------------------------------------- broken files

@pytest.fixture
def good(store, tmp_path, no_env):
    return make_folder(store, tmp_path / "good")


def _load_error(folder, *fragments):
    with pytest.raises(ValueError) as info:
        load_mnist(folder)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def test_truncated_label_file(good):
    data = idx_bytes(synthetic_labels(N_TRAIN, 0))
    f = replace(good, "train_y", data[: len(data) // 2])
    _load_error(good, str(f), "truncated")


def test_truncated_gzipped_image_file(store, tmp_path, no_env):
    folder = make_folder(store, tmp_path / "gz", gz=True)
    f = folder / (NAMES["test_x"] + ".gz")
    data = f.read_bytes()
    f.unlink()
    f.write_bytes(data[: len(data) // 3])
    _load_error(folder, str(f), "truncated")


def test_png_instead_of_images(good):
    f = replace(good, "test_x", b"\x89PNG\r\n\x1a\n" + bytes(100))
    _load_error(good, str(f), "PNG", "00 00 08 03")


def test_wrong_magic(good):
    data = bytearray(idx_bytes(synthetic_labels(N_TEST, 0)))
    data[2] = 0x0C
    f = replace(good, "test_y", bytes(data))
    _load_error(good, str(f), "0x0C", "0x08")


def test_images_and_labels_swapped(good):
    f = replace(good, "train_y", idx_bytes(synthetic_images(10)))
    _load_error(good, str(f), "expected 1", "swapped")


def test_wrong_number_of_labels(good):
    f = replace(good, "train_y", idx_bytes(synthetic_labels(N_TRAIN - 1, 0)))
    _load_error(good, str(f), "59999", "expected 60000")


def test_wrong_image_size(good):
    f = replace(good, "test_x", idx_bytes(np.zeros((N_TEST, 27, 27), dtype=np.uint8)))
    _load_error(good, str(f), "27 x 27", "28 x 28")


def test_label_out_of_range(good):
    labels = synthetic_labels(N_TEST, 0)
    labels[7] = 10
    f = replace(good, "test_y", idx_bytes(labels))
    _load_error(good, str(f), "label 10", "0 to 9")


# ------------------------------------------------------ the real files

_DEBIAN_FILES = [Path(DEBIAN_FASHION_MNIST_DIR) / (n + ".gz") for n in NAMES.values()]


@pytest.mark.skipif(
    not all(f.is_file() for f in _DEBIAN_FILES),
    reason=(
        f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST_DIR}; install Debian's package "
        "with `apt-get install dataset-fashion-mnist` to run this test"
    ),
)
def test_real_fashion_mnist_from_debian(monkeypatch):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # Published facts: balanced classes; first images are an ankle boot (9)
    # in both sets; the pixel mean and std used everywhere to normalize it.
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert y_train[0] == 9 and y_test[0] == 9
    assert abs(x_train.mean(dtype=np.float64) - 0.2860) < 1e-3
    assert abs(x_train.std(dtype=np.float64) - 0.3530) < 1e-3


# ------------------------------------------- Keras's API: load_data (uint8)

NPZ_KEYS = {"train_x": "x_train", "train_y": "y_train", "test_x": "x_test", "test_y": "y_test"}


@pytest.fixture(scope="module")
def npz_store(store, tmp_path_factory):
    """A full-size ``mnist.npz`` laid out as Keras writes it (uint8, uncompressed), labels offset by 5."""
    _, arrays = store
    path = tmp_path_factory.mktemp("npz-store") / "mnist.npz"
    np.savez(path, x_train=arrays["train_x"], y_train=synthetic_labels(N_TRAIN, 5),
             x_test=arrays["test_x"], y_test=synthetic_labels(N_TEST, 5))
    return path


def put_npz(npz_store, target):
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(npz_store, target)
    return target


def write_npz(target, **overrides):
    """A small ``.npz`` with the four keys (wrong sizes unless overridden): for hostile-file tests."""
    arrays = {"x_train": np.zeros((3, 28, 28), np.uint8), "y_train": np.zeros(3, np.uint8),
              "x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.zeros(2, np.uint8)}
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **arrays)
    return target


def test_load_data_returns_uint8_as_keras_does(store, tmp_path, monkeypatch):
    # keras/src/datasets/mnist.py, load_data's docstring example: the four shapes (and the
    # documented uint8 dtype, pixel values 0 to 255)
    _, arrays = store
    make_folder(store, tmp_path / "env" / "mnist", gz=True)
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    (x_train, y_train), (x_test, y_test) = keras_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for a in (x_train, y_train, x_test, y_test):
        assert a.dtype == np.uint8 and a.flags.c_contiguous and a.flags.writeable
    np.testing.assert_array_equal(x_train, arrays["train_x"])
    np.testing.assert_array_equal(x_test, arrays["test_x"])
    np.testing.assert_array_equal(y_train, synthetic_labels(N_TRAIN, 0))
    # the same data as normlab's own loader, which scales it
    (xf, yf), _ = load_mnist()
    np.testing.assert_array_equal(xf[:100], x_train[:100].astype(np.float32) / 255)
    np.testing.assert_array_equal(yf, y_train)


def test_fashion_load_data_from_each_place(store, tmp_path, monkeypatch, keras_home):
    # keras/src/datasets/fashion_mnist.py, load_data's docstring example: the four shapes
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    debian = tmp_path / "debian"
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST_DIR", str(debian))
    # Keras caches the four gzipped IDX files in <keras home>/datasets/fashion-mnist/
    make_folder(store, keras_home / "datasets" / "fashion-mnist", offset=7, gz=True)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == y_train.dtype == np.uint8 and y_test[0] == 7
    make_folder(store, debian, offset=8, gz=True)  # the Debian package comes before Keras's cache
    assert fashion_mnist.load_data()[1][1][0] == 8
    make_folder(store, tmp_path / "env" / "fashion-mnist", offset=9)  # and $NORMLAB_DATA before both
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    assert fashion_mnist.load_data()[1][1][0] == 9


def test_keras_cached_mnist_npz(store, npz_store, tmp_path, monkeypatch, keras_home, no_env):
    _, arrays = store
    put_npz(npz_store, keras_home / "datasets" / "mnist.npz")
    (x_train, y_train), (x_test, y_test) = keras_mnist.load_data()
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8 and x_train.flags.writeable
    np.testing.assert_array_equal(x_test, arrays["test_x"])
    np.testing.assert_array_equal(y_train, synthetic_labels(N_TRAIN, 5))
    # normlab's loader (and so `normlab train`) finds it too, and scales it
    (xf, yf), _ = load_mnist()
    assert xf.dtype == np.float32 and yf.dtype == np.int64 and yf[0] == 5
    np.testing.assert_array_equal(xf[-1], arrays["train_x"][-1] / np.float32(255))
    # IDX files in $NORMLAB_DATA/mnist/ come first
    make_folder(store, tmp_path / "env" / "mnist", offset=2)
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    assert keras_mnist.load_data()[1][1][0] == 2
    # ... unless load_data is given a file explicitly (Keras: a name in its cache; absolute: the file)
    other = put_npz(npz_store, tmp_path / "elsewhere" / "other.npz")
    assert keras_mnist.load_data(path=str(other))[1][1][0] == 5
    monkeypatch.delenv("NORMLAB_DATA")
    with pytest.raises(FileNotFoundError, match="no-such.npz"):
        keras_mnist.load_data(path="no-such.npz")


def test_npz_in_a_folder_or_given_as_path(npz_store, tmp_path, monkeypatch, no_env):
    put_npz(npz_store, tmp_path / "env" / "mnist" / "mnist.npz")
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    assert keras_mnist.load_data()[1][1][0] == 5
    monkeypatch.delenv("NORMLAB_DATA")
    direct = put_npz(npz_store, tmp_path / "d" / "digits.npz")
    assert load_mnist(direct)[1][1][0] == 5
    assert load_mnist(tmp_path / "env")[1][1][0] == 5  # path= a folder with a mnist/ subfolder holding mnist.npz


def test_load_data_rejects_a_bad_path_argument(no_env):
    with pytest.raises(InvalidParameterError, match="'path' parameter of mnist.load_data"):
        keras_mnist.load_data(path=3)


def test_load_data_not_found_message(tmp_path, no_env, keras_home):
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist.load_data()
    msg = str(info.value)
    assert "Could not find the Fashion-MNIST IDX files" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(keras_home / "datasets" / "fashion-mnist") in msg and "Keras's dataset cache" in msg
    assert "$NORMLAB_DATA/fashion-mnist/" in msg and "[data]" in msg


# ---------------------------------------------- broken and hostile .npz files

def _npz_error(path, *fragments):
    with pytest.raises(ValueError) as info:
        keras_mnist.load_data(path=str(path))
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def test_npz_pickled_object_array_is_refused_without_running_it(tmp_path, no_env):
    # keras/src/datasets/npz_utils_test.py, LoadNpzTest.test_rejects_pickle_gadget: a member
    # whose unpickling would run code is refused, and the code does not run
    marker = tmp_path / "marker"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = np.empty(1, dtype=object)
    payload[0] = Exploit()
    path = write_npz(tmp_path / "evil.npz", y_train=payload)
    _npz_error(path, str(path), "mnist.npz")
    assert not marker.exists()


def test_npz_wrong_contents(tmp_path, no_env):
    full_train = np.zeros((N_TRAIN, 28, 28), np.uint8)
    _npz_error(write_npz(tmp_path / "a.npz", y_test=None), "no array 'y_test'", "x_train, y_train, x_test and y_test")
    _npz_error(write_npz(tmp_path / "b.npz", y_train=np.zeros(3, np.int64)), "'y_train' has dtype int64",
               "expected uint8")
    _npz_error(write_npz(tmp_path / "c.npz", y_train=np.zeros((3, 1), np.uint8)), "'y_train' has shape (3, 1)")
    _npz_error(write_npz(tmp_path / "d.npz", x_train=full_train[:100]), "d.npz[x_train]",
               "holds 100 train images, expected 60000")
    path = tmp_path / "e.npz"
    path.write_bytes(b"<html>not found</html>")
    _npz_error(path, str(path), "not a readable .npz archive")


def test_npz_member_larger_than_mnist_is_refused_before_reading(tmp_path, no_env, monkeypatch):
    # A member declaring more bytes than 60000 images is refused from the archive's directory,
    # before np.load decompresses anything: a highly compressible "bomb" costs nothing.
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x_train=np.zeros((N_TRAIN + 100, 28, 28), np.uint8), y_train=np.zeros(1, np.uint8),
                        x_test=np.zeros(1, np.uint8), y_test=np.zeros(1, np.uint8))
    assert path.stat().st_size < 200_000
    loads = []
    monkeypatch.setattr(mnist_module.np, "load", lambda *a, **k: loads.append(a))
    _npz_error(path, "'x_train' is", "more than the", "Is this another dataset?")
    assert loads == []


def test_keras_datasets_dir_follows_keras(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert mnist_module.keras_datasets_dir() == tmp_path / "kh" / "datasets"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert mnist_module.keras_datasets_dir() == tmp_path / "home" / ".keras" / "datasets"
    # a Keras home that cannot be written to: Keras caches in /tmp/.keras instead
    real_access, home = os.access, str(tmp_path / "home")
    monkeypatch.setattr(mnist_module.os, "access", lambda p, mode: False if str(p).startswith(home) else real_access(p, mode))
    assert mnist_module.keras_datasets_dir() == Path("/tmp/.keras/datasets")


@pytest.mark.skipif(
    not all(f.is_file() for f in _DEBIAN_FILES),
    reason=f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_the_keras_way(monkeypatch):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8
    assert x_train.min() == 0 and x_train.max() == 255
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert y_train[0] == 9 and y_test[0] == 9
    (xf, yf), _ = load_fashion_mnist()
    np.testing.assert_array_equal(xf[:500], x_train[:500] / np.float32(255))
    np.testing.assert_array_equal(yf, y_train)
