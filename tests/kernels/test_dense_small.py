"""The backward kernel of a dense layer with few units (normlab.kernels._dense_small_numba): its sums in
the documented order bit for bit, close to float64 products, and a model's gradients through it
against central differences."""

import numpy as np
import pytest

import normlab
from normlab import layers
from normlab.kernels import _backend, dense
from normlab.testing import check_model_gradients

pytestmark = pytest.mark.skipif(not _backend.numba_enabled(),
                                reason="the numba kernels are not installed or are switched off (NORMLAB_DISABLE_NUMBA)")

SHAPES = [(200, 100, 2), (200, 100, 1), (7, 3, 4), (1, 1, 1), (33, 17, 3), (5, 64, 2)]


def _ordered(x, dz, w):
    """The documented sums with NumPy's elementwise operations, one rounding per multiply and add."""
    m, k = x.shape
    n = dz.shape[1]
    dw = np.zeros((k, n), x.dtype)
    db = np.zeros(n, x.dtype)
    for i in range(m):
        dw = dw + x[i][:, None] * dz[i][None, :]
        db = db + dz[i]
    dx = dz[:, :1] * w[:, 0][None, :]
    for j in range(1, n):
        dx = dx + dz[:, j : j + 1] * w[:, j][None, :]
    return dw, db, dx


def _call(x, dz, w, bias=True, need_dx=True):
    m, k = x.shape
    n = dz.shape[1]
    dw = np.full((k, n), np.nan, x.dtype)
    db = np.full(n, np.nan, x.dtype) if bias else None
    dx = np.full((m, k), np.nan, x.dtype) if need_dx else None
    dense.small_backward(x, dz, w, dw, db, dx, np.empty((n, k), x.dtype))
    return dw, db, dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_sums_in_their_documented_order(shape, dtype):
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    x = rng.standard_normal((m, k)).astype(dtype)
    dz = rng.standard_normal((m, n)).astype(dtype)
    w = rng.standard_normal((k, n)).astype(dtype)
    x.reshape(-1)[::5] = -0.0
    dw, db, dx = _call(x, dz, w)
    for got, want in zip((dw, db, dx), _ordered(x, dz, w)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    # the bias gradient is colsum's (the layer's other paths) bit for bit
    ref = np.empty(n, dtype)
    dense.bias_gradient(dz, ref)
    np.testing.assert_array_equal(db, ref)
    # and all three are the products' values to rounding
    x64, dz64, w64 = x.astype(np.float64), dz.astype(np.float64), w.astype(np.float64)
    eps = np.finfo(dtype).eps
    for got, want, terms in ((dw, x64.T @ dz64, np.abs(x64).T @ np.abs(dz64)),
                             (db, dz64.sum(0), np.abs(dz64).sum(0)),
                             (dx, dz64 @ w64.T, np.abs(dz64) @ np.abs(w64).T)):
        assert np.all(np.abs(got - want) <= (m + n) * eps * terms + 1e-300)


def test_parts_that_are_not_asked_for_are_not_written():
    rng = np.random.default_rng(0)
    x, dz, w = (rng.standard_normal(s).astype(np.float32) for s in ((9, 5), (9, 2), (5, 2)))
    dw, db, dx = _call(x, dz, w, bias=False, need_dx=False)
    assert db is None and dx is None
    np.testing.assert_array_equal(dw, _ordered(x, dz, w)[0])


def test_which_layers_take_it():
    assert dense.small_backward_size(200, 100, 2, np.float32)
    assert dense.small_backward_size(200, 100, 4, np.float64)
    assert not dense.small_backward_size(200, 100, 5, np.float32)  # BLAS is as fast from about 10 units
    assert not dense.small_backward_size(200, 100, 2, np.float16)
    assert not dense.small_backward_size(1 << 20, 8, 2, np.float32)  # large: split over normlab's threads


def _mlp(dtype, units, bn):
    hidden = [layers.Dense(6, use_bias=False, dtype=dtype), layers.BatchNormalization(dtype=dtype),
              layers.Activation("relu", dtype=dtype)] if bn else [layers.Dense(6, activation="tanh", dtype=dtype)]
    out = layers.Dense(units, activation="softmax" if units > 1 else None,
                       kernel_regularizer=normlab.regularizers.L2(1e-2), dtype=dtype)
    model = normlab.Sequential(hidden + [out])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy" if units > 1 else "mse")
    model.build((None, 5), seed=1)
    return model


def _spy(monkeypatch):
    taken = []
    real = dense.small_backward

    def spy(*args):
        taken.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(dense, "small_backward", spy)
    return taken


@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("units", [1, 2, 3])
def test_model_gradients_through_it_match_central_differences(units, bn, monkeypatch):
    taken = _spy(monkeypatch)
    model = _mlp("float64", units, bn)
    rng = np.random.default_rng(units)
    x = rng.standard_normal((12, 5))
    y = rng.integers(0, units, 12) if units > 1 else rng.standard_normal((12, 1))
    errors = check_model_gradients(model, x, y)
    assert taken, "the output layer's backward pass did not take the kernel"
    assert max(errors.values()) < 1e-6, errors


def test_a_step_with_and_without_it_agrees_to_rounding(monkeypatch):
    def run():
        model = _mlp("float32", 2, True)
        rng = np.random.default_rng(0)
        losses = [model.train_on_batch(rng.standard_normal((20, 5)).astype(np.float32), rng.integers(0, 2, 20))
                  for _ in range(5)]
        return losses, model.get_weights()

    taken = _spy(monkeypatch)
    with_kernel = run()
    assert taken
    monkeypatch.setattr(dense, "_small", None)  # BLAS's products, as before the kernel
    taken.clear()
    without = run()
    assert not taken
    np.testing.assert_allclose(with_kernel[0], without[0], rtol=1e-5)
    for a, b in zip(with_kernel[1], without[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_arrays_replaced_between_steps_are_taken(monkeypatch):
    """The kernel's and the L2 penalty's checks are kept for the arrays they saw: new arrays are checked and used."""
    model = _mlp("float64", 2, True)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((12, 5)), rng.integers(0, 2, 12)
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)  # the kept checks' path
    out = model.layers[-1]
    taken = _spy(monkeypatch)
    new_kernel = out.params["kernel"] * 2.0  # a new array object (the optimizer's binding is checked again)
    out.params["kernel"] = new_kernel
    out.kernel_regularizer.l2 = 0.5  # a new coefficient object
    grads = model.compute_gradients(x, y)
    assert taken
    # the gradients against central differences on the new kernel and coefficient
    errors = check_model_gradients(model, x, y)
    assert max(errors.values()) < 1e-6, errors
    assert out.params["kernel"] is new_kernel
    g = grads[(out, "kernel")]
    assert g.shape == new_kernel.shape
