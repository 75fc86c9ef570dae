"""BatchNormalization(epsilon=0): the notes' equations without epsilon, and the zero-variance convention.

Where ``var + epsilon == 0`` (a constant feature in a training batch, or a
zero moving variance at inference) ``1 / sqrt(var + epsilon)`` is taken as
0: the normalized value is 0 (the output ``beta``) and the feature's input
gradient is 0. Everywhere else ``epsilon=0`` is the plain formula, checked
here against it written out and against central differences, on the numba
and the NumPy path.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.kernels import _threads
from normlab.kernels import batchnorm as K
from normlab.layers import BatchNormalization
from normlab.testing import check_layer_gradients
from normlab._validation import InvalidParameterError


def _bn(n_features, dtype="float64", **kw):
    layer = BatchNormalization(epsilon=0, dtype=dtype, **kw)
    layer.build((None, n_features))
    rng = np.random.default_rng(3)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, n_features)
    layer.params["beta"][...] = rng.standard_normal(n_features)
    return layer


def test_epsilon_zero_is_accepted_and_negative_is_not():
    assert BatchNormalization(epsilon=0).epsilon == 0.0
    assert BatchNormalization(epsilon=0.0).get_config()["epsilon"] == 0.0
    with pytest.raises(InvalidParameterError, match="'epsilon' parameter of BatchNormalization"):
        BatchNormalization(epsilon=-1e-3)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-6)])
def test_forward_is_the_formula_without_epsilon(kernel_path, dtype, tol):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 5)) * 3 + 2).astype(dtype)
    layer = _bn(5, dtype)
    g, b = layer.params["gamma"].astype(np.float64), layer.params["beta"].astype(np.float64)
    x64 = x.astype(np.float64)
    ref = g * (x64 - x64.mean(0)) / np.sqrt(x64.var(0)) + b
    np.testing.assert_allclose(layer(x, training=True), ref, rtol=tol, atol=tol)
    # inference with the moving statistics, still without epsilon
    mm, mv = layer.buffers["moving_mean"].astype(np.float64), layer.buffers["moving_variance"].astype(np.float64)
    np.testing.assert_allclose(layer(x, training=False), g * (x64 - mm) / np.sqrt(mv) + b, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape,axis", [((12, 4), -1), ((3, 4, 4, 5), -1), ((3, 5, 4, 4), 1)])
def test_gradients_with_nonzero_variance(kernel_path, shape, axis):
    x = np.random.default_rng(1).standard_normal(shape) * 2 - 1
    layer = BatchNormalization(axis=axis, epsilon=0, dtype="float64")
    errors = check_layer_gradients(layer, x)
    assert max(errors.values()) < 1e-7, errors


def test_gradients_at_inference_with_nonzero_variance(kernel_path):
    x = np.random.default_rng(2).standard_normal((6, 3))
    layer = BatchNormalization(epsilon=0, dtype="float64")
    layer(x * 2 + 1, training=True)
    layer.trainable = False  # inference mode under training=True
    errors = check_layer_gradients(layer, x)
    assert max(errors.values()) < 1e-7, errors


def _constant_case(dtype, shape=(9, 4), col=2):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    x[:, col] = np.asarray(1e4 / 3, dtype)  # a constant feature, far from 0
    dy = rng.standard_normal(shape).astype(dtype)
    return x, dy


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_constant_feature_gives_beta_and_zero_input_gradient(kernel_path, dtype):
    x, dy = _constant_case(dtype)
    layer = _bn(4, dtype, momentum=0.9)
    with np.errstate(all="raise"):
        y = layer(x, training=True)
        dx = layer.backward(dy)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_array_equal(y[:, 2], np.full(9, layer.params["beta"][2], dtype))
    np.testing.assert_array_equal(dx[:, 2], 0)
    assert layer.grads["gamma"][2] == 0
    np.testing.assert_allclose(layer.grads["beta"][2], dy[:, 2].astype(np.float64).sum(), rtol=1e-6)
    # the other features are those of a layer that never saw the constant one
    other = _bn(3, dtype, momentum=0.9)
    keep = [0, 1, 3]
    other.params["gamma"][...] = layer.params["gamma"][keep]
    other.params["beta"][...] = layer.params["beta"][keep]
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(other(x[:, keep], training=True), y[:, keep], **tol)
    np.testing.assert_allclose(other.backward(dy[:, keep]), dx[:, keep], **tol)
    # the moving statistics are updated as for any feature: variance 0.9 * 1 + 0.1 * 0
    np.testing.assert_allclose(layer.buffers["moving_variance"][2], 0.9, rtol=1e-6)


def test_gradient_of_a_constant_feature_along_a_constant_shift(kernel_path):
    """Shifting a constant feature keeps it constant: the output stays beta, the convention's derivative 0."""
    x, dy = _constant_case("float64")
    layer = _bn(4)
    y0 = layer(x, training=True)
    x2 = x.copy()
    x2[:, 2] += 0.5
    np.testing.assert_array_equal(layer(x2, training=True)[:, 2], y0[:, 2])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_moving_variance_at_inference(kernel_path, dtype):
    x, dy = _constant_case(dtype)
    layer = _bn(4, dtype)
    layer.buffers["moving_variance"][...] = [1.0, 2.0, 0.0, 0.5]
    layer.buffers["moving_mean"][...] = [0.0, 1.0, 3.0, -1.0]
    with np.errstate(all="raise"):
        y = layer(x, training=False)
    np.testing.assert_array_equal(y[:, 2], np.full(9, layer.params["beta"][2], dtype))
    layer.trainable = False
    with np.errstate(all="raise"):
        layer(x, training=True)
        dx = layer.backward(dy)
    np.testing.assert_array_equal(dx[:, 2], 0)
    assert layer.grads["gamma"][2] == 0
    m = layer.buffers["moving_mean"].astype(np.float64)
    v = layer.buffers["moving_variance"].astype(np.float64)
    g = layer.params["gamma"].astype(np.float64)
    for j in (0, 1, 3):
        np.testing.assert_allclose(dx[:, j], dy[:, j] * g[j] / np.sqrt(v[j]), rtol=1e-6)
        np.testing.assert_allclose(y[:, j], g[j] * (x[:, j] - m[j]) / np.sqrt(v[j]) + layer.params["beta"][j],
                                   rtol=1e-5, atol=1e-5)


def test_constant_feature_in_the_threaded_chunked_kernels(monkeypatch, numba_path):
    if not numba_path:
        pytest.skip("the chunked kernels are numba's")
    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 1000)
    previous = _threads.set_num_threads(2)
    try:
        x, dy = _constant_case("float32", shape=(3000, 8))
        layer = _bn(8, "float32")
        y = layer(x, training=True)
        dx = layer.backward(dy)
    finally:
        _threads.set_num_threads(previous)
    np.testing.assert_array_equal(y[:, 2], np.full(3000, layer.params["beta"][2], np.float32))
    np.testing.assert_array_equal(dx[:, 2], 0)
    other = _bn(8, "float32")
    np.testing.assert_array_equal(other(x, training=True), y)  # one thread, one call: the same bits
    np.testing.assert_array_equal(other.backward(dy), dx)


def test_constant_feature_with_ghost_batches_and_renorm(kernel_path):
    x, dy = _constant_case("float64", shape=(12, 4))
    layer = _bn(4, virtual_batch_size=4)
    with np.errstate(all="raise"):
        y = layer(x, training=True)
        dx = layer.backward(dy)
    np.testing.assert_array_equal(y[:, 2], np.full(12, layer.params["beta"][2]))
    np.testing.assert_array_equal(dx[:, 2], 0)
    # renormalization adds gamma * d (the batch mean against the moving one) to xhat = 0; r = 0 there
    layer = _bn(4, renorm=True)
    with np.errstate(all="raise"):
        y = layer(x, training=True)
        dx = layer.backward(dy)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(dx[:, 2], 0)
    # a moving renorm deviation of 0 (constant batches only): no correction for that feature (r = 1, d = 0)
    layer.buffers["renorm_stddev"][2] = 0.0
    with np.errstate(all="raise"):
        y = layer(x, training=True)
    np.testing.assert_array_equal(y[:, 2], np.full(12, layer.params["beta"][2]))


def test_the_numpy_kernel_functions():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    mean, var, inv_std, xhat = K.standardize(x, axes=(0,), epsilon=0.0)
    np.testing.assert_array_equal(inv_std, [[1.0, 0.0]])
    np.testing.assert_array_equal(xhat, [[-1.0, 0.0], [1.0, 0.0]])
    y, cache = K.batchnorm_inference_forward(x, None, None, np.array([[0.0, 5.0]]), np.array([[4.0, 0.0]]),
                                             axes=(0,), epsilon=0.0)
    np.testing.assert_array_equal(y, [[0.5, 0.0], [1.5, 0.0]])
    np.testing.assert_array_equal(K.inverse_std(np.array([0.0, 4.0]), 0.0), [0.0, 0.5])


def test_epsilon_positive_keeps_its_values():
    """With epsilon > 0 a constant feature keeps 1 / sqrt(epsilon) (the convention is epsilon=0's alone)."""
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    _, _, inv_std, _ = K.standardize(x, axes=(0,), epsilon=1e-4)
    np.testing.assert_array_equal(inv_std, [[1.0 / np.sqrt(1.0 + 1e-4), 1.0 / np.sqrt(1e-4)]])
