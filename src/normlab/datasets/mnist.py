"""MNIST and Fashion-MNIST from local files (nothing is downloaded).

Two APIs read the same files:

- ``load_mnist()`` / ``load_fashion_mnist()``: normlab's convention, float32
  images scaled to [0, 1] and int64 labels, optionally flattened;
- ``mnist.load_data()`` / ``fashion_mnist.load_data()``: Keras's, uint8
  images (0 to 255) and uint8 labels, exactly as ``keras.datasets`` returns
  them, so a Keras script runs with only its imports changed.

The files are looked for, in this order, in

1. the ``path`` argument (the folder itself, then its ``mnist/`` or
   ``fashion-mnist/`` subfolder), when given;
2. ``$NORMLAB_DATA/mnist/`` or ``$NORMLAB_DATA/fashion-mnist/`` (one
   subfolder per dataset, because both use the same file names);
3. for Fashion-MNIST, :data:`DEBIAN_FASHION_MNIST_DIR`, where Debian's
   ``dataset-fashion-mnist`` package installs it
   (``apt-get install dataset-fashion-mnist``);
4. Keras's download cache, where a Keras user may already have the data:
   ``<keras home>/datasets/mnist.npz`` for MNIST and
   ``<keras home>/datasets/fashion-mnist/`` for Fashion-MNIST, the keras home
   being ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when the home
   folder is not writable), as in Keras.

A folder qualifies when it holds the four IDX files (gzipped or not); a
MNIST folder may hold Keras's ``mnist.npz`` instead. The first that
qualifies is used. Every file is checked (magic numbers, sizes, label range)
and the ``.npz`` is read without pickle, with its members' sizes bounded
before anything is decompressed.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._validation import Boolean, Instance, NoneOk, validate_params
from ._common import as_split
from ._idx import read_idx

__all__ = ["load_mnist", "load_fashion_mnist", "load_data", "DEBIAN_FASHION_MNIST_DIR", "ENV_VAR"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four
#: gzipped IDX files (``dpkg -L dataset-fashion-mnist``).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Environment variable naming a data folder with ``mnist/`` and
#: ``fashion-mnist/`` subfolders.
ENV_VAR = "NORMLAB_DATA"

_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10
_NPZ_NAME = "mnist.npz"


class _Part(NamedTuple):
    key: str
    stem: str  # canonical file name without ".gz"
    ndim: int
    count: int
    npz_key: str


_PARTS = (
    _Part("train images", "train-images-idx3-ubyte", 3, 60000, "x_train"),
    _Part("train labels", "train-labels-idx1-ubyte", 1, 60000, "y_train"),
    _Part("test images", "t10k-images-idx3-ubyte", 3, 10000, "x_test"),
    _Part("test labels", "t10k-labels-idx1-ubyte", 1, 10000, "y_test"),
)


class _Spec(NamedTuple):
    name: str  # "MNIST", for messages
    subdir: str  # the $NORMLAB_DATA subfolder
    how_to_get: str
    debian: bool  # searched in DEBIAN_FASHION_MNIST_DIR
    npz: bool  # a folder may hold Keras's mnist.npz instead of the IDX files


_MNIST = _Spec(
    "MNIST", "mnist",
    "download the four MNIST IDX files (from the MNIST page of Yann LeCun, or any mirror of it) "
    "into $NORMLAB_DATA/mnist/ and set NORMLAB_DATA, or pass their folder as path=... "
    "(for `normlab train`: path in the [data] table). No system package ships MNIST; with Keras "
    "installed (pip install keras), keras.datasets.mnist.load_data() downloads {npz} once, "
    "and normlab finds it there",
    debian=False, npz=True,
)
_FASHION = _Spec(
    "Fashion-MNIST", "fashion-mnist",
    "install them on Debian or Ubuntu with `sudo apt-get install dataset-fashion-mnist` "
    f"(they land in {DEBIAN_FASHION_MNIST_DIR}, searched automatically), or download "
    "the four IDX files from https://github.com/zalandoresearch/fashion-mnist into "
    "$NORMLAB_DATA/fashion-mnist/ and set NORMLAB_DATA, or pass their folder as path=... "
    "(for `normlab train`: path in the [data] table)",
    debian=True, npz=False,
)


def keras_datasets_dir() -> Path:
    """The folder where Keras caches its datasets (``<keras home>/datasets``).

    The keras home is ``$KERAS_HOME`` if set, else ``~/.keras``; Keras falls
    back to ``/tmp/.keras`` when that is not writable, and so does this.
    """
    home = os.environ.get("KERAS_HOME")
    if home is None:
        user = os.path.expanduser("~")
        home = os.path.join(user if os.access(user, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if os.path.exists(home) and not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "datasets"


def _candidates(stem: str) -> list[str]:
    # "train-images-idx3-ubyte" is the official name; some mirrors write
    # "train-images.idx3-ubyte". Plain files are preferred over gzipped ones.
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def _find_in(folder: Path) -> tuple[dict, list]:
    found, missing = {}, []
    for part in _PARTS:
        for name in _candidates(part.stem):
            if (folder / name).is_file():
                found[part.key] = folder / name
                break
        else:
            missing.append(part.stem + "[.gz]")
    return found, missing


def _search(spec: _Spec, path, npz_name: str) -> list[tuple[Path, str, str | None]]:
    """``(folder, origin, npz file name or None)`` in search order."""
    npz = _NPZ_NAME if spec.npz else None
    folders = []
    if path is not None:
        root = Path(path).expanduser()
        if spec.npz and root.suffix == ".npz" and root.is_file():  # the .npz itself
            folders.append((root.parent, "path argument", root.name))
        folders.append((root, "path argument", npz))
        folders.append((root / spec.subdir, "path argument", npz))
    env = os.environ.get(ENV_VAR)
    if env:
        folders.append((Path(env).expanduser() / spec.subdir, f"${ENV_VAR}", npz))
    if spec.debian:
        folders.append((Path(DEBIAN_FASHION_MNIST_DIR), "Debian package dataset-fashion-mnist", None))
    keras = keras_datasets_dir()
    if spec.npz:
        npz_path = keras / Path(npz_name).expanduser()  # an absolute name stays absolute, as in Keras
        entry = (npz_path.parent, "Keras's dataset cache", npz_path.name)
        # load_data(path=...) names its file explicitly: searched first
        if npz_name != _NPZ_NAME:
            folders.insert(0, entry)
        else:
            folders.append(entry)
    else:
        folders.append((keras / spec.subdir, "Keras's dataset cache", None))
    return folders


def _not_found(spec: _Spec, folders, partial) -> FileNotFoundError:
    files = ", ".join(p.stem + "[.gz]" for p in _PARTS)
    searched = []
    for folder, origin, npz in folders:
        what = f"  {folder / npz}  ({origin})" if origin == "Keras's dataset cache" and npz else f"  {folder}  ({origin})"
        searched.append(what)
    also = f", or Keras's {_NPZ_NAME}" if spec.npz else ""
    msg = f"Could not find the {spec.name} IDX files ({files}){also}.\nSearched:\n" + "\n".join(searched) + "\n"
    for folder, missing in partial:
        msg += f"{folder} is missing: {', '.join(missing)}\n"
    npz = keras_datasets_dir() / _NPZ_NAME
    return FileNotFoundError(msg + f"To fix this, {spec.how_to_get.format(npz=npz)}.")


def _locate(spec: _Spec, path, npz_name: str):
    """``("idx", {part key: file})`` or ``("npz", file)`` for the first folder that qualifies.

    In one folder, complete IDX files win over an ``.npz``.
    """
    folders = _search(spec, path, npz_name)
    partial = []
    for folder, _, npz in folders:
        if not folder.is_dir():
            continue
        found, missing = _find_in(folder)
        if not missing:
            return "idx", found
        if npz is not None and (folder / npz).is_file():
            return "npz", folder / npz
        if found:
            partial.append((folder, missing))
    raise _not_found(spec, folders, partial)


# Upper bound of one member of mnist.npz: the array's bytes plus a generous .npy header.
_NPY_HEADER_MAX = 4096


def _read_npz(file: Path, spec: _Spec) -> dict:
    """The four arrays of Keras's ``mnist.npz``, read without pickle and with bounded sizes."""
    try:
        with zipfile.ZipFile(file) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            for part in _PARTS:
                info = infos.get(part.npz_key + ".npy")
                if info is None:
                    raise ValueError(
                        f"{file}: has no array {part.npz_key!r} (it holds "
                        f"{', '.join(sorted(n.removesuffix('.npy') for n in infos)[:8]) or 'nothing'}); "
                        f"expected x_train, y_train, x_test and y_test as in Keras's {_NPZ_NAME}."
                    )
                shape = (part.count,) + (_IMAGE_SHAPE if part.ndim == 3 else ())
                limit = int(np.prod(shape)) + _NPY_HEADER_MAX
                if info.file_size > limit:
                    raise ValueError(
                        f"{file}: array {part.npz_key!r} is {info.file_size} bytes, more than the "
                        f"{limit} of {part.count} uint8 {spec.name} {part.key}. Is this another dataset?"
                    )
        with np.load(file, allow_pickle=False) as data:
            arrays = {part.key: data[part.npz_key] for part in _PARTS}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{file}: is not a readable .npz archive ({exc}). Delete it and get it again.") from None
    except ValueError as exc:
        if str(exc).startswith(str(file)):
            raise
        raise ValueError(f"{file}: could not be read as Keras's {_NPZ_NAME} ({exc}).") from None
    for part in _PARTS:
        a = arrays[part.key]
        if a.dtype != np.uint8:
            raise ValueError(f"{file}: array {part.npz_key!r} has dtype {a.dtype}, expected uint8 as in "
                             f"Keras's {_NPZ_NAME}.")
        if a.ndim != part.ndim:
            raise ValueError(f"{file}: array {part.npz_key!r} has shape {a.shape}, expected {part.ndim} "
                             f"dimension(s) for {part.key}.")
    return {part.key: (arrays[part.key], f"{file}[{part.npz_key}]") for part in _PARTS}


def _read_uint8(spec: _Spec, path, npz_name: str = _NPZ_NAME) -> tuple:
    """``(x_train, y_train), (x_test, y_test)`` as checked, writable uint8 arrays."""
    kind, where = _locate(spec, path, npz_name)
    if kind == "npz":
        arrays = _read_npz(where, spec)
    else:
        arrays = {part.key: (read_idx(where[part.key], ndim=part.ndim), str(where[part.key])) for part in _PARTS}
    out = {}
    for part in _PARTS:
        a, source = arrays[part.key]
        if len(a) != part.count:
            raise ValueError(
                f"{source}: holds {len(a)} {part.key}, expected {part.count} for {spec.name}. "
                "Is this another dataset, or a subset of it?"
            )
        if part.ndim == 3 and a.shape[1:] != _IMAGE_SHAPE:
            raise ValueError(
                f"{source}: holds images of {a.shape[1]} x {a.shape[2]} pixels, "
                f"expected 28 x 28 for {spec.name}."
            )
        if part.ndim == 1 and a.size and int(a.max()) >= _NUM_CLASSES:
            raise ValueError(
                f"{source}: holds label {int(a.max())}, expected labels 0 to 9 for {spec.name}. "
                "Are the image and label files mixed up with another dataset?"
            )
        out[part.key] = np.array(a, dtype=np.uint8, order="C")  # writable, as Keras's arrays are
    return (out["train images"], out["train labels"]), (out["test images"], out["test labels"])


def _load(spec: _Spec, path, flatten, caller):
    validate_params(
        caller,
        {"path": [NoneOk(), Instance(str, os.PathLike, label="a str or os.PathLike")],
         "flatten": [Boolean()]},
        {"path": path, "flatten": flatten},
    )
    (x_train, y_train), (x_test, y_test) = _read_uint8(spec, path)

    def images(a):
        x = a.astype(np.float32)
        x /= np.float32(255.0)
        return x.reshape(len(a), -1) if flatten else x

    return as_split(images(x_train), y_train, images(x_test), y_test)


def load_data(path: str | os.PathLike = _NPZ_NAME):
    """Load MNIST as ``keras.datasets.mnist.load_data()`` does: uint8 arrays.

    Parameters
    ----------
    path : str or os.PathLike, default="mnist.npz"
        As in Keras, the name of the cached ``.npz`` file in Keras's dataset
        cache (``~/.keras/datasets/``); an absolute path names the file
        itself. Nothing is downloaded: the IDX files in
        ``$NORMLAB_DATA/mnist/`` are used first, then this file (see the
        module notes for the whole search).

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        ``x_train``: uint8, shape (60000, 28, 28), pixel values 0 to 255;
        ``y_train``: uint8, shape (60000,), digits 0 to 9; ``x_test`` and
        ``y_test``: the 10000 images and labels of the official test set.
        The arrays are writable copies; nothing is scaled or shuffled.

    Raises
    ------
    FileNotFoundError
        If no searched place holds the data; the message lists the places
        searched and how to get the files.
    ValueError
        If a file is truncated, not an IDX or ``.npz`` file, or holds arrays
        of the wrong dtype, shape or label range. The message names the file.

    Examples
    --------
    >>> from normlab.datasets import mnist
    >>> (x_train, y_train), (x_test, y_test) = mnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'))
    """
    validate_params("mnist.load_data", {"path": [Instance(str, os.PathLike, label="a str or os.PathLike")]},
                    {"path": path})
    return _read_uint8(_MNIST, None, os.fspath(path))


_DOC_COMMON = """
    Parameters
    ----------
    path : str or os.PathLike, optional
        A folder holding the four IDX files (``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
        ``t10k-labels-idx1-ubyte``, each optionally gzipped with a ``.gz``
        suffix){npz}, or a folder with a ``{subdir}/`` subfolder holding them.
        When ``None`` or when they are not there, the search goes on as
        described in the Notes.
    flatten : bool, default=False
        Return images as rows of 784 values instead of 28 x 28 arrays.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        ``x_train`` is float32 of shape (60000, 28, 28) (or (60000, 784) with
        ``flatten=True``), pixel intensities scaled to [0, 1] by dividing by
        255; ``y_train`` is int64 of shape (60000,) with labels 0 to 9. The
        test arrays hold the 10000 images of the official test set
        (``t10k-*``). The split is the published one; nothing is shuffled.
        (Keras's ``load_data`` returns the same data unscaled, as uint8: see
        ``normlab.datasets.{module}.load_data``.)

    Raises
    ------
    FileNotFoundError
        If no searched folder holds the files; the message lists the
        folders searched and how to get the files.
    ValueError
        If a file is truncated, is not an unsigned-byte IDX file (wrong
        magic number, e.g. a PNG image or an HTML page), or holds the wrong
        number or size of images, or labels outside 0 to 9. The message names
        the file.
"""


def load_mnist(path=None, *, flatten=False):
    return _load(_MNIST, path, flatten, "load_mnist")


load_mnist.__doc__ = (
    """Load the MNIST handwritten digits from local files, as float32 in [0, 1].
"""
    + _DOC_COMMON.format(subdir="mnist", module="mnist", npz=" or Keras's ``mnist.npz``")
    + """
    Notes
    -----
    The files are looked for in ``path``, then in ``$NORMLAB_DATA/mnist/``,
    then as ``mnist.npz`` in Keras's dataset cache (``~/.keras/datasets/``
    or ``$KERAS_HOME/datasets/``). Nothing is downloaded.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_mnist("~/data/mnist")  # doctest: +SKIP
    """
)


def load_fashion_mnist(path=None, *, flatten=False):
    return _load(_FASHION, path, flatten, "load_fashion_mnist")


load_fashion_mnist.__doc__ = (
    """Load Fashion-MNIST (Zalando's article images) from local IDX files, as float32 in [0, 1].

    Labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
    6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.
"""
    + _DOC_COMMON.format(subdir="fashion-mnist", module="fashion_mnist", npz="")
    + f"""
    Notes
    -----
    The files are looked for in ``path``, then in
    ``$NORMLAB_DATA/fashion-mnist/``, then in ``{DEBIAN_FASHION_MNIST_DIR}``,
    where Debian's package installs them::

        sudo apt-get install dataset-fashion-mnist

    then in Keras's dataset cache (``~/.keras/datasets/fashion-mnist/``).
    Nothing is downloaded.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train.dtype  # doctest: +SKIP
    ((60000, 28, 28), dtype('float32'), dtype('int64'))
    """
)
