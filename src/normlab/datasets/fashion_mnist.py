"""Fashion-MNIST the Keras way: ``fashion_mnist.load_data()`` returns uint8 arrays.

The files are found as for :func:`normlab.datasets.load_fashion_mnist`
(``$NORMLAB_DATA/fashion-mnist/``, Debian's ``dataset-fashion-mnist``
package, Keras's cache ``~/.keras/datasets/fashion-mnist/``); nothing is
downloaded.
"""

from __future__ import annotations

from .mnist import _FASHION, _read_uint8

__all__ = ["load_data"]


def load_data():
    """Load Fashion-MNIST as ``keras.datasets.fashion_mnist.load_data()`` does: uint8 arrays.

    Labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
    6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        ``x_train``: uint8, shape (60000, 28, 28), pixel values 0 to 255;
        ``y_train``: uint8, shape (60000,), labels 0 to 9; ``x_test`` and
        ``y_test``: the 10000 images and labels of the official test set.
        Writable copies; nothing is scaled or shuffled.

    Raises
    ------
    FileNotFoundError
        If the four IDX files are nowhere searched; the message lists the
        folders and says how to install them
        (``sudo apt-get install dataset-fashion-mnist``).
    ValueError
        If a file is truncated or not the expected IDX file; the message
        names the file.

    Examples
    --------
    >>> from normlab.datasets import fashion_mnist
    >>> (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, y_train.dtype  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'))
    """
    return _read_uint8(_FASHION, None)
