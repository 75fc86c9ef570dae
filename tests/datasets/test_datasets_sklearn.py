"""Loaders built on scikit-learn: digits and the three toy sets of the
MLP-alpha example; and the error when scikit-learn is missing."""

import sys

import numpy as np
import pytest

from normlab import InvalidParameterError
from normlab.datasets import load_circles, load_digits, load_linearly_separable, load_moons

TOY = [load_moons, load_circles, load_linearly_separable]


@pytest.fixture(autouse=True)
def _needs_sklearn(request):
    if "no_sklearn" not in request.node.name:
        pytest.importorskip("sklearn")


def _check_split(split, n_train, n_test, n_features):
    (x_train, y_train), (x_test, y_test) = split
    assert x_train.shape == (n_train, n_features) and x_test.shape == (n_test, n_features)
    assert y_train.shape == (n_train,) and y_test.shape == (n_test,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64


def test_digits():
    split = load_digits()
    _check_split(split, 1437, 360, 64)
    (x_train, y_train), (x_test, y_test) = split
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    from sklearn.datasets import load_digits as sk_digits

    full = sk_digits()
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([y_train, y_test])), np.bincount(full.target)
    )
    # stratified: each class gives its share of the 360 test samples, to within one
    quota = np.bincount(full.target) * 360 / len(full.target)
    assert np.all(np.abs(np.bincount(y_test) - quota) < 1)
    # every sample lands once: the rows are a permutation of the full set
    x = np.concatenate([x_train, x_test]) * 16
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(key(x), key(full.data.astype(np.float32)))
    again = load_digits()
    np.testing.assert_array_equal(again[0][0], x_train)
    np.testing.assert_array_equal(again[1][1], y_test)


@pytest.mark.parametrize("loader", TOY)
def test_toy_shapes_and_determinism(loader):
    split = loader()
    _check_split(split, 60, 40, 2)
    assert set(np.unique(split[0][1])) == {0, 1}
    again = loader()
    for a, b in zip(split[0] + split[1], again[0] + again[1]):
        np.testing.assert_array_equal(a, b)
    _check_split(loader(n_samples=200), 120, 80, 2)


def _example_datasets():
    # The recipe of scikit-learn's examples/neural_networks/plot_mlp_alpha.py.
    from sklearn.datasets import make_circles, make_classification, make_moons

    x, y = make_classification(
        n_features=2, n_redundant=0, n_informative=2, random_state=0, n_clusters_per_class=1
    )
    x += 2 * np.random.RandomState(2).uniform(size=x.shape)
    return [
        make_moons(noise=0.3, random_state=0),
        make_circles(noise=0.2, factor=0.5, random_state=1),
        (x, y),
    ]


@pytest.mark.parametrize("standardize", [True, False])
def test_toy_sets_reproduce_the_example(standardize):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    for loader, (x, y) in zip(TOY, _example_datasets()):
        if standardize:
            x = StandardScaler().fit_transform(x)
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.4, random_state=42)
        (a_train, b_train), (a_test, b_test) = loader(standardize=standardize)
        np.testing.assert_allclose(a_train, x_train, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a_test, x_test, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(b_train, y_train)
        np.testing.assert_array_equal(b_test, y_test)


@pytest.mark.parametrize(
    "loader, kwargs, name",
    [
        (load_moons, {"n_samples": 0}, "n_samples"),
        (load_moons, {"noise": -1.0}, "noise"),
        (load_circles, {"factor": 1.0}, "factor"),
        (load_circles, {"seed": "a"}, "seed"),
        (load_linearly_separable, {"standardize": 1}, "standardize"),
    ],
)
def test_toy_invalid_arguments(loader, kwargs, name):
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of {loader.__name__}"):
        loader(**kwargs)


@pytest.mark.parametrize("loader", [load_digits] + TOY)
def test_no_sklearn_gives_install_hint(loader, monkeypatch):
    for mod in ["sklearn", "sklearn.datasets", "sklearn.model_selection", "sklearn.preprocessing"]:
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r'pip install "normlab\[datasets\]"') as info:
        loader()
    assert loader.__name__ in str(info.value)
