"""MNIST / Fashion-MNIST loaders: synthetic full-size IDX folders, the search
order path -> $NORMLAB_DATA -> Debian folder, broken files, and the real
Fashion-MNIST files of Debian's ``dataset-fashion-mnist`` package."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from normlab import InvalidParameterError
from normlab.datasets import DEBIAN_FASHION_MNIST_DIR, load_fashion_mnist, load_mnist
from normlab.datasets import mnist as mnist_module

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


def test_not_found_without_any_folder(no_env):
    with pytest.raises(FileNotFoundError, match=r"no path was given and \$NORMLAB_DATA is not set"):
        load_mnist()


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
