"""scikit-learn's bundled 8 x 8 handwritten digits: the built-in default dataset."""

from __future__ import annotations

import numpy as np

from ._common import as_split, import_sklearn

__all__ = ["load_digits"]

_SPLIT_SEED = 0
_N_TEST = 360


def load_digits():
    """Load the 1797 8 x 8 handwritten digits shipped with scikit-learn.

    Nothing is downloaded: the data are part of the scikit-learn package
    (``pip install "normlab[datasets]"``).

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        ``x_train`` is float32 of shape (1437, 64) and ``x_test`` of shape
        (360, 64): the 8 x 8 images as rows, pixel values 0 to 16 divided by 16
        so that they lie in [0, 1]. ``y_train`` (1437,) and ``y_test`` (360,)
        are int64 labels 0 to 9. Use ``x.reshape(-1, 8, 8)`` for images.

    Notes
    -----
    The split is fixed and stratified: 360 test samples (20 %), 35 to 37 per
    class in proportion to the class sizes, taken in the order of
    ``numpy.random.default_rng(0).permutation(1797)``; the train and test
    sets each keep that shuffled order.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_digits()
    >>> x_train.shape, x_test.shape
    ((1437, 64), (360, 64))
    """
    datasets = import_sklearn("sklearn.datasets", "load_digits")
    bunch = datasets.load_digits()
    x = bunch.data.astype(np.float32) / np.float32(16.0)
    y = bunch.target
    train, test = _stratified_split(y, _N_TEST, np.random.default_rng(_SPLIT_SEED))
    return as_split(x[train], y[train], x[test], y[test])


def _stratified_split(y, n_test, rng):
    """Indices (train, test), each in a random order, with ``n_test`` test
    samples shared among the classes in proportion to their sizes (largest
    remainders get the leftover samples)."""
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n_test / len(y)
    k = np.floor(quota).astype(int)
    k[np.argsort(k - quota, kind="stable")[: n_test - k.sum()]] += 1
    order = rng.permutation(len(y))
    ranked = y[order]
    # rank of each sample among those of its class, in the permuted order
    rank = np.empty(len(y), dtype=int)
    for c in classes:
        where = ranked == c
        rank[where] = np.arange(where.sum())
    is_test = rank < k[np.searchsorted(classes, ranked)]
    return order[~is_test], order[is_test]
