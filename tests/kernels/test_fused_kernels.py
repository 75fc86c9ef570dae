"""The numba kernels for activation derivatives and max-pool backward equal the NumPy path."""

import numpy as np
import pytest

from normlab.kernels import _backend, activations, pooling

pytestmark = pytest.mark.skipif(not _backend.NUMBA_AVAILABLE, reason="numba not installed")


def both_paths(fn, *args):
    """``fn(*args)`` on the numba kernels and on NumPy."""
    previous = _backend.use_numba(True)
    try:
        fused = fn(*args)
        _backend.use_numba(False)
        plain = fn(*args)
    finally:
        _backend.use_numba(previous)
    return fused, plain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_backward_bitwise_equal(name, dtype, rng):
    kernel = activations.KERNELS[name]
    z = rng.standard_normal((7, 5, 3)).astype(dtype)
    z[0, 0, :] = 0.0  # relu's kink: the derivative taken as 0 at z = 0 on both paths
    a = kernel.forward(z)
    da = rng.standard_normal(z.shape).astype(dtype)
    fused, plain = both_paths(kernel.backward, da, z, a)
    assert fused.dtype == plain.dtype == dtype
    np.testing.assert_array_equal(fused, plain)


def test_activation_backward_non_contiguous_falls_back(rng):
    z = rng.standard_normal((6, 8))
    da = rng.standard_normal((8, 6)).T  # Fortran-ordered view
    fused, plain = both_paths(activations.relu_backward, da, z, None)
    np.testing.assert_array_equal(fused, plain)
    np.testing.assert_array_equal(plain, da * (z > 0))


@pytest.mark.parametrize(
    "pool, strides, padding",
    [((2, 2), None, "valid"), ((3, 3), (2, 2), "same"), ((3, 2), (1, 1), "valid"), ((2, 2), None, "same")],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_backward_equal(pool, strides, padding, dtype, rng):
    x = rng.standard_normal((3, 7, 6, 4)).astype(dtype)
    x[0, :2, :2, 0] = 1.5  # a tie inside the first window: the first tap gets the gradient
    x[1] = np.round(x[1])  # many ties, also across overlapping windows

    def run(x):
        y, cache = pooling.max_pool2d_forward(x, pool_size=pool, strides=strides, padding=padding)
        dy = np.arange(1, y.size + 1, dtype=dtype).reshape(y.shape)
        return pooling.max_pool2d_backward(dy, cache)

    fused, plain = both_paths(run, x)
    np.testing.assert_array_equal(fused, plain)
    if strides is None:  # disjoint windows: the tied window's gradient sits on its first tap only
        assert fused[0, 0, 0, 0] == 1 and not fused[0, 0, 1, 0] and not fused[0, 1, :2, 0].any()
