"""NormPropDense: normalization propagation (Arpit et al. 2016), issue 26 item 1."""

import json
import math

import numpy as np
import pytest

from normlab import InvalidParameterError
from normlab.kernels import normprop as K
from normlab.layers import Dense, NormPropDense, deserialize, serialize
from normlab.models import Sequential, load_model, save_model
from normlab.testing import check_layer_gradients


def paper_equation(x, W, gamma, beta, relu=True):
    """The paper's equation written out literally, one unit at a time (W: rows W_i, float64)."""
    out = np.empty((x.shape[0], W.shape[0]))
    for n in range(x.shape[0]):
        for i in range(W.shape[0]):
            pre = gamma[i] * (W[i] @ x[n]) / np.sqrt(np.sum(W[i] ** 2)) + (0.0 if beta is None else beta[i])
            if relu:
                out[n, i] = (max(pre, 0.0) - math.sqrt(1 / (2 * math.pi))) / math.sqrt(0.5 * (1 - 1 / math.pi))
            else:
                out[n, i] = pre
    return out


def normal_moments_by_quadrature(f, mean=0.0, std=1.0):
    z = np.linspace(mean - 12 * std, mean + 12 * std, 400_001)
    p = np.exp(-0.5 * ((z - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    m1 = np.trapezoid(f(z) * p, z)
    return m1, np.trapezoid(f(z) ** 2 * p, z) - m1**2


def test_relu_constants_are_the_rectified_gaussian_moments():
    m, v = normal_moments_by_quadrature(lambda z: np.maximum(z, 0))
    assert K.RELU_MEAN == pytest.approx(math.sqrt(1 / (2 * math.pi)), rel=1e-15)
    assert K.RELU_VAR == pytest.approx(0.5 * (1 - 1 / math.pi), rel=1e-15)
    assert m == pytest.approx(K.RELU_MEAN, rel=1e-9)
    assert v == pytest.approx(K.RELU_VAR, rel=1e-9)
    assert K.JACOBIAN_GAIN == pytest.approx(1.21, abs=0.002)
    assert K.GAMMA_INIT == 1 / 1.21


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (0.7, 0.5), (-1.3, 2.0)])
def test_rectified_gaussian_moments_match_quadrature(mean, std):
    m, v = K.rectified_gaussian_moments(mean, std)
    qm, qv = normal_moments_by_quadrature(lambda z: np.maximum(z, 0), mean, std)
    assert float(m) == pytest.approx(qm, rel=1e-9)
    assert float(v) == pytest.approx(qv, rel=1e-9)


@pytest.mark.parametrize("relu,use_bias", [(True, True), (True, False), (False, True)])
def test_forward_is_the_paper_equation_float64(rng, relu, use_bias):
    layer = NormPropDense(4, activation="relu" if relu else "linear", use_bias=use_bias, dtype="float64")
    x = rng.standard_normal((6, 5))
    layer(x)
    layer.params["gamma"][:] = rng.uniform(0.5, 1.5, 4)
    if use_bias:
        layer.params["beta"][:] = rng.uniform(-0.5, 0.5, 4)
    W = layer.params["kernel"].T  # the paper's rows W_i
    expected = paper_equation(x, W, layer.params["gamma"], layer.params.get("beta"), relu)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-13, atol=1e-14)  # no batch statistics


def test_output_is_standardized_for_standardized_input(rng):
    # the data-independent estimate: for x ~ N(0, I), each unit's output has mean 0 and variance 1
    n, d, units = 60_000, 30, 8
    x = rng.standard_normal((n, d))
    layer = NormPropDense(units, gamma_initializer="ones", dtype="float64")
    o = layer(x)
    se_mean, se_var = 1 / math.sqrt(n), math.sqrt(2.0 / n) * 2.5  # the rectified Gaussian has heavier tails
    np.testing.assert_allclose(o.mean(axis=0), 0, atol=5 * se_mean)
    np.testing.assert_allclose(o.var(axis=0), 1, atol=5 * se_var)
    # the correction is needed: without it the pre-activation W_i^T x has variance ||W_i||^2, not 1
    W = layer.params["kernel"]
    np.testing.assert_allclose((x @ W).var(axis=0), np.sum(W**2, axis=0), rtol=5 * math.sqrt(2.0 / n))


def test_gamma_init_brings_the_jacobian_gain_to_one(rng):
    # E[J J^T]_ii = E[gamma^2 [z > 0]] / c^2: 1/(1 - 1/pi) ~ 1.21^2 at gamma = 1, ~1 at the paper's 1/1.21
    x = rng.standard_normal((40_000, 20))
    for gamma, target in [("ones", K.JACOBIAN_GAIN**2), (None, (K.JACOBIAN_GAIN / 1.21) ** 2)]:
        layer = NormPropDense(5, gamma_initializer=gamma, dtype="float64")
        layer(x[:1])
        g = layer.params["gamma"]
        z = x @ (layer.params["kernel"] / np.linalg.norm(layer.params["kernel"], axis=0)) * g
        jj = np.mean((z > 0) * g**2, axis=0) / K.RELU_VAR
        np.testing.assert_allclose(jj, target, rtol=0.03)  # ~6 standard errors of a mean of 40,000 draws
    assert (K.JACOBIAN_GAIN / 1.21) ** 2 == pytest.approx(1, abs=0.002)


@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_gradients_central_differences_float64(rng, activation, use_bias):
    layer = NormPropDense(3, activation=activation, use_bias=use_bias, dtype="float64")
    x = rng.standard_normal((7, 4))
    layer(x)
    layer.params["gamma"][:] = rng.uniform(0.5, 1.5, 3)
    if use_bias:
        layer.params["beta"][:] = rng.uniform(-0.3, 0.3, 3)
    errors = check_layer_gradients(layer, x)
    assert set(errors) == {"x", "kernel", "gamma"} | ({"beta"} if use_bias else set())
    assert max(errors.values()) < 1e-7, errors


def test_gradients_rank3_and_kernel_gradient_is_orthogonal_to_the_kernel(rng):
    layer = NormPropDense(3, dtype="float64")
    x = rng.standard_normal((4, 2, 5))
    errors = check_layer_gradients(layer, x)
    assert max(errors.values()) < 1e-7, errors
    layer.zero_grads()
    layer(x, training=True)
    layer.backward(rng.standard_normal((4, 2, 3)))
    dots = np.sum(layer.grads["kernel"] * layer.params["kernel"], axis=0)
    np.testing.assert_allclose(dots, 0, atol=1e-12)  # the norm of W_i is invariant to first order


def test_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    layer = NormPropDense(4, dtype="float64")
    x = rng.standard_normal((5, 3))
    layer(x)
    layer.params["beta"][:] = rng.uniform(-0.3, 0.3, 4)
    dy = rng.standard_normal((5, 4))
    layer.zero_grads()
    y = layer(x, training=True)
    dx = layer.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.params["kernel"].T.copy(), requires_grad=True)  # torch's (units, n_in)
    tg = torch.tensor(layer.params["gamma"], requires_grad=True)
    tb = torch.tensor(layer.params["beta"], requires_grad=True)
    pre = tg * (tx @ tw.T) / tw.norm(dim=1) + tb
    ty = (torch.relu(pre) - math.sqrt(1 / (2 * math.pi))) / math.sqrt(0.5 * (1 - 1 / math.pi))
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["kernel"], tw.grad.numpy().T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], tg.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["beta"], tb.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_batch_of_one_and_float32(rng):
    layer = NormPropDense(3)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    y = layer(x, training=True)
    assert y.dtype == np.float32 and y.shape == (1, 3)
    assert layer.backward(np.ones_like(y)).shape == (1, 4)


def test_config_round_trip_json():
    layer = NormPropDense(7, activation="linear", use_bias=False, gamma_regularizer="l2", name="np1")
    config = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(config)
    assert isinstance(clone, NormPropDense)
    assert clone.get_config() == layer.get_config()
    default = NormPropDense(2)
    assert default.get_config()["gamma_initializer"] is None  # the activation-dependent default stays implicit


def test_invalid_parameters_fail_at_construction():
    with pytest.raises(InvalidParameterError, match="'activation' parameter of NormPropDense"):
        NormPropDense(3, activation="sigmoid")
    with pytest.raises(InvalidParameterError, match="'units' parameter of NormPropDense"):
        NormPropDense(0)


def test_model_trains_saves_and_resumes_identically(rng, tmp_path):
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)

    def fresh():
        m = Sequential([NormPropDense(16), NormPropDense(8), Dense(2, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return m

    model = fresh()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=1)
    save_model(model, tmp_path / "np.npz")
    clone = load_model(tmp_path / "np.npz")
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=2)
    clone.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=2)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)
