"""MNIST and Fashion-MNIST from local IDX files (nothing is downloaded).

The four files of each dataset are looked for, in this order, in

1. the ``path`` argument (the folder itself, then its ``mnist/`` or
   ``fashion-mnist/`` subfolder),
2. ``$NORMLAB_DATA/mnist/`` or ``$NORMLAB_DATA/fashion-mnist/`` (one
   subfolder per dataset, because both use the same file names),
3. for Fashion-MNIST only, :data:`DEBIAN_FASHION_MNIST_DIR`, where Debian's
   ``dataset-fashion-mnist`` package installs it
   (``apt-get install dataset-fashion-mnist``).

The first folder that holds all four files is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._validation import Boolean, Instance, NoneOk, validate_params
from ._common import as_split
from ._idx import read_idx

__all__ = ["load_mnist", "load_fashion_mnist", "DEBIAN_FASHION_MNIST_DIR", "ENV_VAR"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four
#: gzipped IDX files (``dpkg -L dataset-fashion-mnist``).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Environment variable naming a data folder with ``mnist/`` and
#: ``fashion-mnist/`` subfolders.
ENV_VAR = "NORMLAB_DATA"

_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10


class _Part(NamedTuple):
    key: str
    stem: str  # canonical file name without ".gz"
    ndim: int
    count: int


_PARTS = (
    _Part("train images", "train-images-idx3-ubyte", 3, 60000),
    _Part("train labels", "train-labels-idx1-ubyte", 1, 60000),
    _Part("test images", "t10k-images-idx3-ubyte", 3, 10000),
    _Part("test labels", "t10k-labels-idx1-ubyte", 1, 10000),
)


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


def _search_folders(path, subdir: str, debian_dir: str | None) -> list[tuple[Path, str]]:
    folders = []
    if path is not None:
        root = Path(path).expanduser()
        folders.append((root, "path argument"))
        folders.append((root / subdir, "path argument"))
    env = os.environ.get(ENV_VAR)
    if env:
        folders.append((Path(env).expanduser() / subdir, f"${ENV_VAR}"))
    if debian_dir is not None:
        folders.append((Path(debian_dir), "Debian package dataset-fashion-mnist"))
    return folders


def _not_found(name: str, subdir: str, folders, partial, how_to_get: str) -> FileNotFoundError:
    files = ", ".join(p.stem + "[.gz]" for p in _PARTS)
    if folders:
        searched = "\n".join(f"  {folder}  ({origin})" for folder, origin in folders)
    else:
        searched = f"  (none: no path was given and ${ENV_VAR} is not set)"
    msg = f"Could not find the {name} IDX files ({files}).\nSearched:\n{searched}\n"
    for folder, missing in partial:
        msg += f"{folder} is missing: {', '.join(missing)}\n"
    msg += (
        f"To fix this, {how_to_get}, then pass the folder as path=..., or put the "
        f"files in $NORMLAB_DATA/{subdir}/ and set NORMLAB_DATA."
    )
    return FileNotFoundError(msg)


def _load(name, subdir, path, flatten, debian_dir, how_to_get, caller):
    validate_params(
        caller,
        {"path": [NoneOk(), Instance(str, os.PathLike, label="a str or os.PathLike")],
         "flatten": [Boolean()]},
        {"path": path, "flatten": flatten},
    )
    folders = _search_folders(path, subdir, debian_dir)
    partial = []
    for folder, _ in folders:
        if not folder.is_dir():
            continue
        found, missing = _find_in(folder)
        if not missing:
            break
        if found:
            partial.append((folder, missing))
    else:
        raise _not_found(name, subdir, folders, partial, how_to_get)

    arrays = {}
    for part in _PARTS:
        file = found[part.key]
        a = read_idx(file, ndim=part.ndim)
        if len(a) != part.count:
            raise ValueError(
                f"{file}: holds {len(a)} {part.key}, expected {part.count} for {name}. "
                "Is this another dataset, or a subset of it?"
            )
        if part.ndim == 3 and a.shape[1:] != _IMAGE_SHAPE:
            raise ValueError(
                f"{file}: holds images of {a.shape[1]} x {a.shape[2]} pixels, "
                f"expected 28 x 28 for {name}."
            )
        if part.ndim == 1 and a.size and int(a.max()) >= _NUM_CLASSES:
            raise ValueError(
                f"{file}: holds label {int(a.max())}, expected labels 0 to 9 for {name}. "
                "Are the image and label files mixed up with another dataset?"
            )
        arrays[part.key] = a

    def images(a):
        x = a.astype(np.float32)
        x /= np.float32(255.0)
        return x.reshape(len(a), -1) if flatten else x

    return as_split(
        images(arrays["train images"]), arrays["train labels"],
        images(arrays["test images"]), arrays["test labels"],
    )


_DOC_COMMON = """
    Parameters
    ----------
    path : str or os.PathLike, optional
        A folder holding the four IDX files (``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
        ``t10k-labels-idx1-ubyte``, each optionally gzipped with a ``.gz``
        suffix), or a folder with a ``{subdir}/`` subfolder holding them.
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

    Raises
    ------
    FileNotFoundError
        If no searched folder holds all four files; the message lists the
        folders searched and how to get the files.
    ValueError
        If a file is truncated, is not an unsigned-byte IDX file (wrong
        magic number, e.g. a PNG image or an HTML page), or holds the wrong
        number or size of images, or labels outside 0 to 9. The message names
        the file.
"""


def load_mnist(path=None, *, flatten=False):
    return _load(
        "MNIST", "mnist", path, flatten, None,
        "download the four MNIST IDX files (from the MNIST page of Yann LeCun, "
        "or any mirror of it)",
        "load_mnist",
    )


load_mnist.__doc__ = (
    """Load the MNIST handwritten digits from local IDX files.
"""
    + _DOC_COMMON.format(subdir="mnist")
    + """
    Notes
    -----
    The files are looked for in ``path``, then in ``$NORMLAB_DATA/mnist/``.
    Nothing is downloaded.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_mnist("~/data/mnist")  # doctest: +SKIP
    """
)


def load_fashion_mnist(path=None, *, flatten=False):
    return _load(
        "Fashion-MNIST", "fashion-mnist", path, flatten, DEBIAN_FASHION_MNIST_DIR,
        "install them on Debian or Ubuntu with `sudo apt-get install dataset-fashion-mnist` "
        f"(they land in {DEBIAN_FASHION_MNIST_DIR}, searched automatically), or download "
        "the four IDX files from https://github.com/zalandoresearch/fashion-mnist",
        "load_fashion_mnist",
    )


load_fashion_mnist.__doc__ = (
    """Load Fashion-MNIST (Zalando's article images) from local IDX files.

    Labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
    6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.
"""
    + _DOC_COMMON.format(subdir="fashion-mnist")
    + f"""
    Notes
    -----
    The files are looked for in ``path``, then in
    ``$NORMLAB_DATA/fashion-mnist/``, then in ``{DEBIAN_FASHION_MNIST_DIR}``,
    where Debian's package installs them::

        sudo apt-get install dataset-fashion-mnist

    Nothing is downloaded.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train.dtype  # doctest: +SKIP
    ((60000, 28, 28), dtype('float32'), dtype('int64'))
    """
)
