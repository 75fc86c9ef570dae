"""The pure batch-norm kernel against the notes' step-by-step equations."""

import numpy as np
import pytest

from normlab.kernels import batchnorm as K


def naive_backward(dy, x, gamma, eps):
    """The notes' un-simplified chain rule (dxhat, dsigma^2, dmu, dx), per feature over axis 0."""
    m = x.shape[0]
    mu = x.mean(0)
    var = ((x - mu) ** 2).mean(0)
    xhat = (x - mu) / np.sqrt(var + eps)
    dxhat = dy * gamma
    dvar = np.sum(dxhat * (x - mu), 0) * -0.5 * (var + eps) ** -1.5
    dmu = np.sum(-dxhat / np.sqrt(var + eps), 0) + dvar * np.sum(-2 * (x - mu), 0) / m
    dx = dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m + dmu / m
    return dx, np.sum(dy * xhat, 0), np.sum(dy, 0)


def test_compact_backward_equals_notes_derivation(rng):
    x = rng.standard_normal((7, 5)) * 2 + 3
    dy = rng.standard_normal((7, 5))
    gamma = rng.uniform(0.5, 1.5, 5)
    beta = rng.standard_normal(5)
    y, cache, mean, var = K.batchnorm_train_forward(x, gamma[None], beta[None], axes=(0,), epsilon=1e-3)
    dx, dg, db = K.batchnorm_train_backward(dy, cache)
    ndx, ndg, ndb = naive_backward(dy, x, gamma, 1e-3)
    np.testing.assert_allclose(dx, ndx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dg[0], ndg, rtol=1e-12)
    np.testing.assert_allclose(db[0], ndb, rtol=1e-12)
    np.testing.assert_allclose(mean[0], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var[0], x.var(0), rtol=1e-12)


def test_dx_sums_to_zero_and_is_orthogonal_to_xhat(rng):
    # consequences of the mean and variance constraints of the normalization:
    # sum(dx) = 0, and sum(dx * xhat) = 0 up to the epsilon term
    # inv_std * dgamma * (1 - sum(xhat^2) / m) = inv_std * dgamma * eps / (var + eps)
    x = rng.standard_normal((50, 4))
    dy = rng.standard_normal((50, 4))
    for eps in (1e-3, 0.0):
        y, cache, _, var = K.batchnorm_train_forward(x, None, None, axes=(0,), epsilon=eps)
        dx, dg, _ = K.batchnorm_train_backward(dy, cache)
        np.testing.assert_allclose(dx.sum(0), 0, atol=1e-12)
        expected = (cache.inv_std * dg * eps / (var + eps))[0]
        np.testing.assert_allclose((dx * cache.xhat).sum(0), expected, atol=1e-12)


def test_inference_forward_is_affine(rng):
    x = rng.standard_normal((6, 3))
    g, b = rng.uniform(0.5, 2, (1, 3)), rng.standard_normal((1, 3))
    mm, mv = rng.standard_normal((1, 3)), rng.uniform(0.5, 2, (1, 3))
    y, cache = K.batchnorm_inference_forward(x, g, b, mm, mv, axes=(0,), epsilon=1e-3)
    np.testing.assert_allclose(y, g * (x - mm) / np.sqrt(mv + 1e-3) + b, rtol=1e-12)
    dy = rng.standard_normal((6, 3))
    dx, dg, db = K.batchnorm_inference_backward(dy, cache)
    np.testing.assert_allclose(dx, dy * g / np.sqrt(mv + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(dg, np.sum(dy * (x - mm) / np.sqrt(mv + 1e-3), 0, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(db, dy.sum(0, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.99, 1.0])
def test_update_moving_keras_convention(momentum):
    old, new = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    np.testing.assert_allclose(K.update_moving(old, new, momentum), momentum * old + (1 - momentum) * new)
