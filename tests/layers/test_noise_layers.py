"""Dropout, noise and noisy-weight layers (issue 4): what must hold."""

import json

import numpy as np
import pytest

import normlab
from normlab import InvalidParameterError
from normlab._validation import _as_constraint
from normlab.kernels import dropout as K
from normlab.kernels.activations import SELU_ALPHA, SELU_SCALE
from normlab.layers import (
    AlphaDropout,
    Dense,
    Dropout,
    GaussianDropout,
    GaussianNoise,
    NoisyDense,
    SpatialDropout2D,
    deserialize,
    serialize,
)
from normlab.testing import check_layer_gradients

NOISE = [
    lambda **k: Dropout(0.4, **k),
    lambda **k: Dropout(0.5, noise_shape=(None, 1, None, 1), **k),
    lambda **k: AlphaDropout(0.2, **k),
    lambda **k: GaussianNoise(0.7, **k),
    lambda **k: GaussianDropout(0.3, **k),
]
NOISE_IDS = ["dropout", "dropout-noise-shape", "alpha", "gaussian-noise", "gaussian-dropout"]


def nsigma(p, n):
    """Four binomial standard deviations of a proportion."""
    return 4 * np.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------ dropout statistics
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_keep_rate_and_scale(rate):
    x = np.ones((400, 250))
    y = Dropout(rate, seed=0)(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < nsigma(1 - rate, x.size)
    np.testing.assert_array_equal(y[kept], 1 / (1 - rate))  # inverted dropout: E[y] = x
    assert abs(y.mean() - 1) < 4 * np.sqrt(rate / (1 - rate) / x.size)


def test_dropout_backward_reuses_the_forward_mask():
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((2, 30, 20))
    layer = Dropout(0.35, seed=3)
    y = layer(x, training=True)
    mask = (y != 0) / (1 - 0.35)
    np.testing.assert_allclose(y, x * mask, rtol=1e-15)
    np.testing.assert_allclose(layer.backward(dy), dy * mask, rtol=1e-15)
    # a second backward uses the same mask; a new forward draws a new one
    np.testing.assert_allclose(layer.backward(dy), dy * mask, rtol=1e-15)
    layer(x, training=True)
    assert not np.array_equal(layer.backward(dy), dy * mask)


@pytest.mark.parametrize("make", NOISE, ids=NOISE_IDS)
def test_gradient_check_with_fixed_noise(make):
    layer = make(seed=4)
    x = np.random.default_rng(2).standard_normal((3, 2, 4, 2))
    with layer.fixed_noise():
        errs = check_layer_gradients(layer, x)
    assert errs["x"] < 1e-7


def test_fixed_noise_rewinds_the_generator_and_central_differences_by_hand():
    layer = Dropout(0.5, seed=7)
    x = np.random.default_rng(3).standard_normal((6, 8))
    with layer.fixed_noise():
        y1 = layer(x, training=True)
        y2 = layer(x, training=True)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(layer(x, training=True), y1)
    # the same check by resetting the state before every forward call
    layer = Dropout(0.5, seed=7)
    layer(x[:1], training=False)  # build
    state = layer.get_rng_state()
    dy = np.random.default_rng(4).standard_normal(x.shape)

    def f(xx):
        layer.set_rng_state(state)
        return np.sum(layer(xx, training=True) * dy)

    f(x)
    dx = layer.backward(dy)
    h = 1e-6
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        num[i] = (f(x + e) - f(x - e)) / (2 * h)
    np.testing.assert_allclose(dx, num, atol=1e-8)


# ------------------------------------------------------------------ inference and edge cases
ALL = NOISE + [lambda **k: SpatialDropout2D(0.5, **k)]


@pytest.mark.parametrize("make", ALL, ids=NOISE_IDS + ["spatial"])
def test_identity_at_inference(make):
    x = np.random.default_rng(5).standard_normal((3, 4, 5, 2)).astype(np.float32)
    layer = make(seed=1)
    y = layer(x, training=False)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x)
    yt = layer(x, training=True)
    assert yt.shape == x.shape and yt.dtype == np.float32 and not np.array_equal(yt, x)


@pytest.mark.parametrize("layer", [Dropout(0.0), AlphaDropout(0.0), GaussianNoise(0.0), GaussianDropout(0)])
def test_zero_rate_is_the_identity_in_training(layer):
    x = np.random.default_rng(6).standard_normal((5, 3))
    np.testing.assert_array_equal(layer(x, training=True), x)
    dy = np.ones_like(x)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_backward_needs_a_training_forward():
    layer = Dropout(0.5)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 3)))
    layer(np.ones((2, 3)), training=False)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((2, 3)))


def test_noise_shape_broadcasting_like_keras():
    x = np.ones((50, 6, 4))
    layer = Dropout(0.5, noise_shape=(None, 1, None), seed=2)
    y = layer(x, training=True)
    assert np.all(y == y[:, :1, :])  # one draw shared along axis 1
    assert 0 < (y == 0).mean() < 1
    with pytest.raises(ValueError, match="noise_shape"):
        Dropout(0.5, noise_shape=(None, 3, None))(x, training=True)
    with pytest.raises(ValueError, match="rank"):
        Dropout(0.5, noise_shape=(None, 1))(x, training=True)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_spatial_dropout_drops_whole_channels(data_format):
    x = np.ones((40, 5, 6, 7))
    y = SpatialDropout2D(0.5, data_format=data_format, seed=0)(x, training=True)
    per_map = y.transpose(0, 3, 1, 2) if data_format == "channels_last" else y
    flat = per_map.reshape(per_map.shape[0], per_map.shape[1], -1)
    assert np.all(flat == flat[:, :, :1])  # constant over each feature map
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs((flat[:, :, 0] == 0).mean() - 0.5) < nsigma(0.5, flat.shape[0] * flat.shape[1])
    with pytest.raises(ValueError, match="4-D"):
        SpatialDropout2D(0.5)(np.ones((2, 3, 4, 5, 6)), training=True)


def test_alpha_dropout_keeps_mean_and_variance():
    x = np.random.default_rng(8).standard_normal((500, 400))
    rate = 0.3
    layer = AlphaDropout(rate, seed=9)
    y = layer(x, training=True)
    n = x.size
    assert abs(y.mean()) < 5 / np.sqrt(n) * 1.5
    assert abs(y.var() - 1) < 5 * np.sqrt(2 / n) * 1.5
    # Keras's numerics, written out: dropped entries equal a alpha' + b
    ap = -SELU_SCALE * SELU_ALPHA
    a = ((1 - rate) * (1 + rate * ap**2)) ** -0.5
    b = -a * ap * rate
    dropped = np.isclose(y, a * ap + b) & ~np.isclose(x, ap)
    np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-12)
    assert abs(dropped.mean() - rate) < nsigma(rate, n)
    dy = np.ones_like(x)
    np.testing.assert_allclose(layer.backward(dy), np.where(dropped, 0.0, a))


def test_alpha_dropout_after_selu_keeps_the_fixed_point():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2000, 100))
    w = rng.standard_normal((100, 100)) / 10  # lecun_normal
    h = Dense(100, activation="selu")
    h.build_from_shape((None, 100))
    h.params["kernel"][...] = w
    a = h(x)
    y = AlphaDropout(0.1, seed=1)(a, training=True)
    assert abs(y.mean() - a.mean()) < 0.02 and abs(y.var() - a.var()) < 0.03


def test_gaussian_noise_and_dropout_moments():
    x = np.full((300, 300), 2.0)
    y = GaussianNoise(0.5, seed=1)(x, training=True)
    assert abs((y - x).mean()) < 4 * 0.5 / 300 and abs((y - x).std() - 0.5) < 0.01
    g = GaussianDropout(0.2, seed=1)
    y = g(x, training=True) / x
    assert abs(y.mean() - 1) < 0.005 and abs(y.var() - 0.25) < 0.01
    np.testing.assert_allclose(g.backward(np.ones_like(x)), y, rtol=1e-12)


# ------------------------------------------------------------------ NoisyDense
def built_noisy(use_factorised=True, use_bias=True, activation="tanh", dtype=None, seed=0):
    layer = NoisyDense(3, activation=activation, use_bias=use_bias, use_factorised=use_factorised, seed=seed, dtype=dtype)
    layer.build_from_shape((None, 5), np.random.default_rng(seed + 100))
    return layer


@pytest.mark.parametrize("use_factorised", [True, False])
def test_noisy_dense_parameters_and_initialization(use_factorised):
    n_in = 16
    layer = NoisyDense(4, use_factorised=use_factorised, sigma=0.4)
    layer.build_from_shape((None, n_in), np.random.default_rng(0))
    assert list(layer.params) == ["mu_kernel", "sigma_kernel", "mu_bias", "sigma_bias"]
    assert layer.params["mu_kernel"].shape == (n_in, 4) and layer.params["sigma_bias"].shape == (4,)
    bound = 1 / np.sqrt(n_in) if use_factorised else np.sqrt(3 / n_in)
    sigma0 = 0.4 / np.sqrt(n_in) if use_factorised else 0.017
    assert np.abs(layer.params["mu_kernel"]).max() <= bound
    np.testing.assert_allclose(layer.params["sigma_kernel"], sigma0, rtol=1e-6)
    np.testing.assert_allclose(layer.params["sigma_bias"], sigma0, rtol=1e-6)


def test_noisy_dense_inference_uses_mu_and_training_factorized_noise():
    layer = built_noisy(activation=None)
    p = layer.params
    x = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    np.testing.assert_allclose(layer(x), x @ p["mu_kernel"] + p["mu_bias"], rtol=1e-6)
    y = layer(x, training=True)
    eps_k, eps_b = layer._cache.k.eps_kernel, layer._cache.k.eps_bias
    assert np.linalg.matrix_rank(eps_k, tol=1e-5) == 1  # f(e_in) f(e_out)^T
    e_in = eps_k[:, 0] / eps_b[0]
    np.testing.assert_allclose(np.multiply.outer(e_in, eps_b), eps_k, rtol=1e-5)
    w = p["mu_kernel"] + p["sigma_kernel"] * eps_k
    np.testing.assert_allclose(y, x @ w + p["mu_bias"] + p["sigma_bias"] * eps_b, rtol=1e-5, atol=1e-6)
    # f(e) = sign(e) sqrt|e| of standard normals: E f(e)^2 = E|e| = sqrt(2/pi)
    e = K.scale_noise(np.random.default_rng(2).standard_normal(200_000))
    assert abs(np.mean(e**2) - np.sqrt(2 / np.pi)) < 0.01


@pytest.mark.parametrize("use_factorised,use_bias,activation", [(True, True, "tanh"), (False, True, "sigmoid"), (True, False, None)])
def test_noisy_dense_gradients_with_fixed_noise(use_factorised, use_bias, activation):
    layer = built_noisy(use_factorised, use_bias, activation, dtype="float64")
    x = np.random.default_rng(3).standard_normal((7, 5))
    with layer.fixed_noise():
        errs = check_layer_gradients(layer, x)
    expected = {"x", "mu_kernel", "sigma_kernel"} | ({"mu_bias", "sigma_bias"} if use_bias else set())
    assert set(errs) == expected
    assert max(errs.values()) < 1e-7, errs


def test_noisy_dense_sigma_gradient_is_dw_times_eps_and_frozen_layer():
    layer = NoisyDense(3, seed=1, dtype="float64")
    layer.build_from_shape((None, 4), np.random.default_rng(0))
    x, dy = np.random.default_rng(1).standard_normal((5, 4)), np.random.default_rng(2).standard_normal((5, 3))
    layer(x, training=True)
    layer.zero_grads()
    dx = layer.backward(dy)
    c = layer._cache.k
    np.testing.assert_allclose(layer.grads["mu_kernel"], x.T @ dy)
    np.testing.assert_allclose(layer.grads["sigma_kernel"], (x.T @ dy) * c.eps_kernel)
    np.testing.assert_allclose(layer.grads["sigma_bias"], dy.sum(0) * c.eps_bias)
    np.testing.assert_allclose(dx, dy @ c.kernel.T)
    # the fused-loss hook and the first-layer path give the same parameter gradients
    g = {k: v.copy() for k, v in layer.grads.items()}
    layer.zero_grads()
    assert layer.backward_from_logits(dy, need_dx=False) is None
    for k in g:
        np.testing.assert_allclose(layer.grads[k], g[k])
    layer.zero_grads()
    layer._backward_params_only(dy)
    np.testing.assert_allclose(layer.grads["sigma_kernel"], g["sigma_kernel"])
    layer.trainable = False
    layer.zero_grads()
    layer(x, training=True)
    assert layer.backward(dy).shape == x.shape
    assert all(not v.any() for v in layer.grads.values())


# ------------------------------------------------------------------ randomness
def test_seed_and_build_generator_reproducibility():
    x = np.ones((20, 30))
    np.testing.assert_array_equal(Dropout(0.5, seed=3)(x, training=True), Dropout(0.5, seed=3)(x, training=True))
    assert not np.array_equal(Dropout(0.5, seed=3)(x, training=True), Dropout(0.5, seed=4)(x, training=True))

    def from_build(seed):
        layer = Dropout(0.5)
        parent = np.random.default_rng(seed)
        layer.build_from_shape((None, 30), parent)
        return layer(x, training=True), parent.random()

    (a, pa), (b, _), (c, _) = from_build(11), from_build(11), from_build(12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert pa == np.random.default_rng(11).random()  # spawning draws nothing from the parent
    # an explicit seed wins over the build generator
    layer = Dropout(0.5, seed=3, dtype="float64")
    layer.build_from_shape((None, 30), np.random.default_rng(0))
    np.testing.assert_array_equal(layer(x, training=True), Dropout(0.5, seed=3)(x, training=True))


@pytest.mark.parametrize("make", ALL + [lambda **k: NoisyDense(3, **k)], ids=NOISE_IDS + ["spatial", "noisy-dense"])
def test_rng_state_round_trips_through_json(make):
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 2))
    layer = make()
    assert layer.get_rng_state() is None
    layer(x, training=True)
    state = json.loads(json.dumps(layer.get_rng_state()))
    expected = [layer(x, training=True) for _ in range(2)]
    other = deserialize(serialize(layer))
    other.build_from_shape(x.shape)
    if layer.params:
        for k in layer.params:
            other.params[k][...] = layer.params[k]
    other.set_rng_state(state)
    for e in expected:
        np.testing.assert_array_equal(other(x, training=True), e)


def test_set_rng_state_rejects_garbage():
    layer = Dropout(0.5)
    for bad in [None, {}, {"bit_generator": "os.system"}, {"bit_generator": "PCG64", "state": 3}]:
        with pytest.raises(ValueError, match="Dropout|state"):
            layer.set_rng_state(bad)
    mt = np.random.Generator(np.random.MT19937(5))
    layer.set_rng_state(json.loads(json.dumps(mt.bit_generator.state, default=lambda a: a.tolist())))
    x = np.ones((3, 4))
    np.testing.assert_array_equal(layer(x, training=True) != 0, np.random.Generator(np.random.MT19937(5)).random((3, 4)) >= 0.5)


def _model(seed):
    m = normlab.Sequential([GaussianNoise(0.2), Dense(6, activation="relu"), Dropout(0.5), NoisyDense(2)])
    m.build((None, 4), seed=seed)
    return m


def test_model_seed_and_save_load_resume_bit_for_bit(tmp_path):
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    a, b, c = _model(5), _model(5), _model(6)
    ya = a(x, training=True)
    np.testing.assert_array_equal(ya, b(x, training=True))
    assert not np.array_equal(ya, c(x, training=True))
    a.save(tmp_path / "m.npz")
    loaded = normlab.load_model(tmp_path / "m.npz")
    for _ in range(2):
        np.testing.assert_array_equal(a(x, training=True), loaded(x, training=True))
    np.testing.assert_array_equal(a(x), loaded(x))


def test_model_fit_with_seed_is_reproducible():
    optimizers = pytest.importorskip("normlab.optimizers")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)

    def run():
        m = normlab.Sequential([GaussianNoise(0.1), Dense(8, activation="relu"), Dropout(0.3), NoisyDense(2, activation="softmax")])
        m.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy")
        h = m.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
        return h.history["loss"], m.get_weights()

    (la, wa), (lb, wb) = run(), run()
    assert la == lb
    assert all(np.array_equal(u, v) for u, v in zip(wa, wb))


# ------------------------------------------------------------------ config and validation
CONFIGURED = [
    Dropout(0.25, noise_shape=(None, 1), seed=3),
    SpatialDropout2D(0.1, data_format="channels_first"),
    AlphaDropout(0.05, seed=0),
    GaussianNoise(1.5),
    GaussianDropout(0.4, seed=2),
    NoisyDense(7, activation="relu", use_bias=False, sigma=0.3, use_factorised=False, seed=1, kernel_regularizer="l2"),
]


@pytest.mark.parametrize("layer", CONFIGURED, ids=lambda l: type(l).__name__)
def test_config_round_trip_through_json(layer):
    config = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


REQUIRED = {
    "Dropout": {"rate": 0.5},
    "SpatialDropout2D": {"rate": 0.5},
    "AlphaDropout": {"rate": 0.5},
    "GaussianNoise": {"stddev": 0.1},
    "GaussianDropout": {"rate": 0.5},
    "NoisyDense": {"units": 2},
}


def _cases():
    for name, required in REQUIRED.items():
        cls = getattr(normlab.layers, name)
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, required, pname, bad, id=f"{name}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,required,pname,bad", list(_cases()))
def test_invalid_hyperparameters_rejected_at_construction(cls, required, pname, bad):
    with pytest.raises(InvalidParameterError) as e:
        cls(**{**required, pname: bad})
    assert str(e.value).startswith(f"The {pname!r} parameter of {cls.__name__} must be ")


@pytest.mark.parametrize("kwargs", [{"rate": 1.0}, {"rate": -0.1}, {"rate": True}])
def test_dropout_rate_range(kwargs):
    with pytest.raises(InvalidParameterError, match=r"range \[0, 1\)"):
        Dropout(**kwargs)
