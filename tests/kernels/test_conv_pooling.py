"""Max pooling's one-pass numba kernels for disjoint windows (kernels/_pool_numba.py) against the NumPy path."""

import numpy as np
import pytest

from normlab.kernels import _backend
from normlab.kernels import pooling as P
from normlab.layers import MaxPooling2D
from normlab.testing import check_layer_gradients

pytestmark = pytest.mark.skipif(not _backend.NUMBA_AVAILABLE, reason="numba is not installed")


def _both(x, dy_seed=0, **kw):
    out = []
    for on in (True, False):
        previous = _backend.use_numba(on)
        try:
            y, cache = P.max_pool2d_forward(x, **kw)
            assert (cache.arg is not None) == on
            dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(x.dtype)
            out.append((y, P.max_pool2d_backward(dy, cache)))
        finally:
            _backend.use_numba(previous)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [
    {},
    {"pool_size": (2, 3)},
    {"pool_size": (2, 2), "strides": (3, 2)},
    {"pool_size": (3, 3), "padding": "same"},
    {"pool_size": (2, 2), "padding": "same"},
])
def test_same_bits_as_the_numpy_path(dtype, kw, rng):
    # small integers: many ties, which go to the first tap in row-major order
    x = rng.integers(-2, 3, (3, 7, 9, 5)).astype(dtype)
    x[0, 0, 0, 0] = np.nan
    x[1, 2, 3, 1] = -np.inf
    x[2, :2, :2, 2] = -np.inf
    (y1, d1), (y0, d0) = _both(x, **kw)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(d1, d0)


def test_nan_window_gets_no_gradient_and_nan_dy_stays_put():
    x = np.zeros((1, 2, 4, 1))
    x[0, 1, 1, 0] = np.nan
    x[0, 0, 3, 0] = 5.0
    y, cache = P.max_pool2d_forward(x)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 0] == 5.0
    dx = P.max_pool2d_backward(np.array([[[[1.0], [np.inf]]]]), cache)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 0, 0, np.inf], [0, 0, 0, 0]])


def test_gradients(kernel_path, rng):
    x = rng.standard_normal((2, 6, 7, 3))  # continuous values: no ties
    assert max(check_layer_gradients(MaxPooling2D(2, dtype="float64"), x).values()) < 1e-6


def test_same_bits_on_one_and_two_threads(rng, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from normlab.kernels import _threads

    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 0)
    x = rng.standard_normal((5, 6, 8, 3)).astype(np.float32)
    out = []
    for n in (1, 2):
        with threadpoolctl.threadpool_limits(n):
            y, cache = P.max_pool2d_forward(x)
            out.append((y, P.max_pool2d_backward(y * 2, cache)))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not _backend.numba_enabled(), reason="numba kernels off")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,strides", [((3, 8, 9, 5), (2, 2)), ((2, 9, 11, 33), (3, 2))])
def test_two_by_two_max_pool_kernel_gives_the_general_kernels_values_and_taps(dtype, shape, strides):
    from normlab.kernels import _pool_numba as nbp

    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :3] = np.nan  # NaN at a window's first tap
    x[0, 1, 1, 3] = np.nan  # and at its last
    x[1, 0, 0, 2] = np.inf
    x[1, 2, 2, 1] = -np.inf
    x[1, :2, :2, 0] = 1.0  # ties: the first tap
    ho, wo = (shape[1] - 2) // strides[0] + 1, (shape[2] - 2) // strides[1] + 1
    y = [np.empty((shape[0], ho, wo, shape[3]), dtype) for _ in range(2)]
    arg = [np.empty(y[0].shape, np.uint8) for _ in range(2)]
    nbp.max_forward(x, 2, 2, *strides, y[0], arg[0])
    nbp.max_forward_2x2(x, *strides, y[1], arg[1])
    np.testing.assert_array_equal(y[0], y[1])
    np.testing.assert_array_equal(arg[0], arg[1])
