"""Datasets, all offline: nothing is downloaded and nothing is cached.

Every ``load_*`` function returns ``(x_train, y_train), (x_test, y_test)``,
the tuple layout of ``keras.datasets``, in normlab's convention: float32
inputs (images scaled to [0, 1]) and int64 labels, with a fixed train/test
split. (``keras.datasets`` itself returns MNIST unscaled, as uint8.)

For Keras scripts, ``mnist.load_data()`` and ``fashion_mnist.load_data()``
return what ``keras.datasets.mnist.load_data()`` and
``keras.datasets.fashion_mnist.load_data()`` return: uint8 images (0 to 255)
and uint8 labels, read from the same local files.

- :func:`load_digits`: scikit-learn's bundled 8 x 8 digits, x (1437, 64) / (360, 64);
  the built-in default.
- :func:`load_mnist`, :func:`load_fashion_mnist`: IDX files (gzipped or not)
  found in ``path``, ``$NORMLAB_DATA/<name>/``, for Fashion-MNIST the folder
  of Debian's ``dataset-fashion-mnist`` package, or Keras's download cache
  (``~/.keras/datasets/``, MNIST as ``mnist.npz``); x (60000, 28, 28) / (10000, 28, 28).
- :func:`load_mnist1d`: MNIST-1D generated procedurally, x (4000, 40) / (1000, 40).
- :func:`load_moons`, :func:`load_circles`, :func:`load_linearly_separable`:
  the 2-D toy sets of scikit-learn's MLP-alpha example, x (60, 2) / (40, 2).

scikit-learn is an optional dependency: ``pip install "normlab[datasets]"``.
"""

from . import fashion_mnist, mnist
from .digits import load_digits
from .mnist import DEBIAN_FASHION_MNIST_DIR, load_fashion_mnist, load_mnist
from .mnist1d import load_mnist1d
from .toy import load_circles, load_linearly_separable, load_moons

__all__ = [
    "load_digits",
    "load_mnist",
    "load_fashion_mnist",
    "load_mnist1d",
    "load_moons",
    "load_circles",
    "load_linearly_separable",
    "DEBIAN_FASHION_MNIST_DIR",
    "mnist",
    "fashion_mnist",
]
