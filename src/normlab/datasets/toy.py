"""The three 2-D toy problems of scikit-learn's example "Varying regularization
in Multi-layer Perceptron" (``examples/neural_networks/plot_mlp_alpha.py``):
moons, circles and a linearly separable pair of blobs.

Each is built as in the example, standardized with ``StandardScaler`` fitted
on the whole set (as the example did before it moved the scaler into its
pipeline; pass ``standardize=False`` to scale with training statistics
yourself), then split with ``train_test_split(test_size=0.4,
random_state=42)``: 60 train and 40 test points with the defaults.

scikit-learn is needed (``pip install "normlab[datasets]"``).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval, validate_params
from ._common import SEED, as_split, import_sklearn

__all__ = ["load_moons", "load_circles", "load_linearly_separable"]

_TEST_SIZE = 0.4
_SPLIT_SEED = 42
_N_SAMPLES = Interval(numbers.Integral, 5, None)


def _finish(x, y, standardize, caller):
    model_selection = import_sklearn("sklearn.model_selection", caller)
    if standardize:
        preprocessing = import_sklearn("sklearn.preprocessing", caller)
        x = preprocessing.StandardScaler().fit_transform(x)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x, y, test_size=_TEST_SIZE, random_state=_SPLIT_SEED
    )
    return as_split(x_train, y_train, x_test, y_test)


def load_moons(n_samples=100, noise=0.3, seed=0, *, standardize=True):
    """Two interleaving half circles, as in scikit-learn's MLP-alpha example.

    Parameters
    ----------
    n_samples : int, default=100
        Total number of points (split 60 / 40 % into train / test).
    noise : float, default=0.3
        Standard deviation of the Gaussian noise added to the points.
    seed : int, default=0
        ``random_state`` of ``sklearn.datasets.make_moons``.
    standardize : bool, default=True
        Scale each feature to zero mean and unit variance over the whole set.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        float32 inputs of shape (n, 2) and int64 labels 0 or 1; with the
        defaults, 60 training and 40 test points.
    """
    validate_params(
        "load_moons",
        {"n_samples": [_N_SAMPLES], "noise": [Interval(numbers.Real, 0, None)],
         "seed": [SEED], "standardize": [Boolean()]},
        {"n_samples": n_samples, "noise": noise, "seed": seed, "standardize": standardize},
    )
    datasets = import_sklearn("sklearn.datasets", "load_moons")
    x, y = datasets.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _finish(x, y, standardize, "load_moons")


def load_circles(n_samples=100, noise=0.2, factor=0.5, seed=1, *, standardize=True):
    """A small circle inside a large one, as in scikit-learn's MLP-alpha example.

    Parameters
    ----------
    n_samples : int, default=100
        Total number of points (split 60 / 40 % into train / test).
    noise : float, default=0.2
        Standard deviation of the Gaussian noise added to the points.
    factor : float, default=0.5
        Ratio of the inner circle's radius to the outer one's, in [0, 1).
    seed : int, default=1
        ``random_state`` of ``sklearn.datasets.make_circles``.
    standardize : bool, default=True
        Scale each feature to zero mean and unit variance over the whole set.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        float32 inputs of shape (n, 2) and int64 labels (1 for the inner
        circle); with the defaults, 60 training and 40 test points.
    """
    validate_params(
        "load_circles",
        {"n_samples": [_N_SAMPLES], "noise": [Interval(numbers.Real, 0, None)],
         "factor": [Interval(numbers.Real, 0, 1, closed="left")],
         "seed": [SEED], "standardize": [Boolean()]},
        {"n_samples": n_samples, "noise": noise, "factor": factor, "seed": seed,
         "standardize": standardize},
    )
    datasets = import_sklearn("sklearn.datasets", "load_circles")
    x, y = datasets.make_circles(
        n_samples=n_samples, noise=noise, factor=factor, random_state=seed
    )
    return _finish(x, y, standardize, "load_circles")


def load_linearly_separable(n_samples=100, seed=0, *, standardize=True):
    """Two noisy Gaussian blobs, the third set of scikit-learn's MLP-alpha example.

    Built as in the example::

        x, y = make_classification(n_features=2, n_redundant=0, n_informative=2,
                                   random_state=seed, n_clusters_per_class=1)
        x += 2 * np.random.RandomState(2).uniform(size=x.shape)

    Despite the name (kept from the example), the uniform noise makes a few
    points overlap.

    Parameters
    ----------
    n_samples : int, default=100
        Total number of points (split 60 / 40 % into train / test).
    seed : int, default=0
        ``random_state`` of ``sklearn.datasets.make_classification``; 0 is the
        example's. The added noise always uses ``RandomState(2)``, as there.
    standardize : bool, default=True
        Scale each feature to zero mean and unit variance over the whole set.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        float32 inputs of shape (n, 2) and int64 labels 0 or 1; with the
        defaults, 60 training and 40 test points.
    """
    validate_params(
        "load_linearly_separable",
        {"n_samples": [_N_SAMPLES], "seed": [SEED], "standardize": [Boolean()]},
        {"n_samples": n_samples, "seed": seed, "standardize": standardize},
    )
    datasets = import_sklearn("sklearn.datasets", "load_linearly_separable")
    x, y = datasets.make_classification(
        n_samples=n_samples, n_features=2, n_redundant=0, n_informative=2,
        random_state=seed, n_clusters_per_class=1,
    )
    x += 2 * np.random.RandomState(2).uniform(size=x.shape)
    return _finish(x, y, standardize, "load_linearly_separable")
