"""StandardScaler and MinMaxScaler (issue 4): the notes' formulas, scikit-learn, layers."""

import json

import numpy as np
import pytest

import normlab
from normlab import InvalidParameterError
from normlab.layers import Dense, Normalization, Rescaling, deserialize, serialize
from normlab.preprocessing import MinMaxScaler, NotFittedError, StandardScaler


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal([0.0, 100.0, -3.0, 7.0], [1.0, 25.0, 0.01, 0.0], size=(200, 4))
    return x  # the last feature is constant


# ------------------------------------------------------------------ the notes' formulas
def test_formulas_of_the_notes():
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 20, size=(50, 3))
    np.testing.assert_allclose(
        MinMaxScaler().fit_transform(x), (x - x.min(0)) / (x.max(0) - x.min(0)), rtol=1e-12, atol=1e-15
    )
    mu, sigma = x.mean(0), x.std(0)
    np.testing.assert_allclose(StandardScaler().fit_transform(x), (x - mu) / sigma, rtol=1e-12, atol=1e-14)
    z = StandardScaler().fit_transform(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-13)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-12)


# ------------------------------------------------------------------ against scikit-learn
@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False), (False, False)])
def test_standard_scaler_matches_sklearn(data, with_mean, with_std):
    skp = pytest.importorskip("sklearn.preprocessing")
    ours = StandardScaler(with_mean=with_mean, with_std=with_std).fit(data)
    ref = skp.StandardScaler(with_mean=with_mean, with_std=with_std).fit(data)
    for attr in ("mean_", "var_", "scale_"):
        a, b = getattr(ours, attr), getattr(ref, attr)
        assert (a is None) == (b is None), attr
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=attr)
    assert ours.n_samples_seen_ == ref.n_samples_seen_ and ours.n_features_in_ == ref.n_features_in_
    test = np.random.default_rng(2).normal(size=(10, 4)) * 5
    np.testing.assert_allclose(ours.transform(test), ref.transform(test), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.inverse_transform(test), ref.inverse_transform(test), rtol=1e-12)


@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 1), (2.5, 7)])
def test_min_max_scaler_matches_sklearn(data, feature_range):
    skp = pytest.importorskip("sklearn.preprocessing")
    ours = MinMaxScaler(feature_range).fit(data)
    ref = skp.MinMaxScaler(feature_range=feature_range).fit(data)
    for attr in ("data_min_", "data_max_", "data_range_", "scale_", "min_"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(ref, attr), rtol=1e-12, err_msg=attr)
    test = np.random.default_rng(3).normal(size=(10, 4)) * 50
    np.testing.assert_allclose(ours.transform(test), ref.transform(test), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.inverse_transform(test), ref.inverse_transform(test), rtol=1e-12)
    y = ours.transform(data)
    np.testing.assert_allclose(y[:, :3].min(0), feature_range[0], atol=1e-12)
    np.testing.assert_allclose(y[:, :3].max(0), feature_range[1], atol=1e-12)
    np.testing.assert_allclose(y[:, 3], feature_range[0])  # constant feature -> lower bound


# ------------------------------------------------------------------ round trips and dtypes
@pytest.mark.parametrize("scaler", [StandardScaler(), MinMaxScaler((-2, 3)), StandardScaler(with_mean=False)])
def test_round_trip(data, scaler):
    y = scaler.fit_transform(data)
    np.testing.assert_allclose(scaler.inverse_transform(y), data, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y, type(scaler)(**scaler.get_config()).fit(data).transform(data))


def test_dtypes_and_images_per_channel():
    x32 = np.random.default_rng(4).uniform(0, 255, size=(6, 5, 4, 3)).astype(np.float32)
    s = StandardScaler().fit(x32)
    assert s.transform(x32).dtype == np.float32 and s.mean_.dtype == np.float64
    flat = x32.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(s.mean_, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.var_, flat.var(0), rtol=1e-10)
    np.testing.assert_allclose(s.transform(x32).reshape(-1, 3), (flat - flat.mean(0)) / flat.std(0), rtol=1e-5, atol=1e-5)
    m = MinMaxScaler().fit(np.arange(12).reshape(4, 3))
    out = m.transform(np.arange(12).reshape(4, 3))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.repeat([[0.0], [1 / 3], [2 / 3], [1.0]], 3, axis=1))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("cls", [StandardScaler, MinMaxScaler])
def test_errors(cls, data):
    s = cls()
    for method in ("transform", "inverse_transform", "to_layer"):
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(s, method)(data) if method != "to_layer" else s.to_layer()
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    with pytest.raises(ValueError, match="2-D"):
        s.fit(data[:, 0])
    with pytest.raises(ValueError, match="NaN"):
        s.fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="empty"):
        s.fit(np.ones((0, 3)))
    with pytest.raises(TypeError, match="real numbers"):
        s.fit(np.array([["a", "b"]]))
    s.fit(data)
    with pytest.raises(ValueError, match="X has 3 features.*fitted with 4"):
        s.transform(data[:, :3])
    with pytest.raises(ValueError, match="NaN or inf"):
        s.transform(np.full((2, 4), np.inf))


@pytest.mark.parametrize(
    "make,param",
    [
        (lambda: MinMaxScaler((1, 0)), "feature_range"),
        (lambda: MinMaxScaler((0, 0)), "feature_range"),
        (lambda: MinMaxScaler("01"), "feature_range"),
        (lambda: MinMaxScaler((0, float("inf"))), "feature_range"),
        (lambda: StandardScaler(with_mean="yes"), "with_mean"),
        (lambda: StandardScaler(with_std=1), "with_std"),
    ],
)
def test_invalid_hyperparameters(make, param):
    with pytest.raises(InvalidParameterError, match=f"The '{param}' parameter of"):
        make()


# ------------------------------------------------------------------ layers and saving
def test_to_layer_equivalence_and_config(data):
    test = np.random.default_rng(5).normal(size=(9, 4)) * 10
    s = StandardScaler().fit(data)
    layer = s.to_layer(dtype="float64")
    assert isinstance(layer, Normalization)
    np.testing.assert_allclose(layer(test), s.transform(test), rtol=1e-12, atol=1e-12)
    inv = s.to_layer(dtype="float64", invert=True)
    np.testing.assert_allclose(inv(test), s.inverse_transform(test), rtol=1e-12)
    m = MinMaxScaler((-1, 1)).fit(data)
    r = m.to_layer(dtype="float64")
    assert isinstance(r, Rescaling)
    np.testing.assert_allclose(r(test), m.transform(test), rtol=1e-12, atol=1e-12)
    # the (0, 1) case written out: scale 1 / (max - min), offset -min / (max - min)
    m01 = MinMaxScaler().fit(data[:, :3])
    lo, hi = data[:, :3].min(0), data[:, :3].max(0)
    r01 = m01.to_layer()
    np.testing.assert_allclose(r01.scale, 1 / (hi - lo))
    np.testing.assert_allclose(r01.offset, -lo / (hi - lo))
    for lay in (layer, r):
        clone = deserialize(json.loads(json.dumps(serialize(lay))))
        np.testing.assert_allclose(clone(test), lay(test), rtol=1e-12)
    for sc in (s, m):
        assert type(sc).from_config(json.loads(json.dumps(sc.get_config()))).get_config() == sc.get_config()


def test_scaler_layers_saved_with_the_model(data, tmp_path):
    x = data.astype(np.float32)
    model = normlab.Sequential([StandardScaler().fit(x).to_layer(), MinMaxScaler().fit(x).to_layer(), Dense(2)])
    model.build((None, 4), seed=0)
    model.save(tmp_path / "scaled.npz")
    loaded = normlab.load_model(tmp_path / "scaled.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
