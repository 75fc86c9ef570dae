"""The fused dense kernels (bias + ReLU, ReLU derivative + bias gradient, column sums, L2 gradient)
give NumPy's bits, signed zeros and inf included, and NaN where NumPy gives NaN."""

import numpy as np
import pytest

from normlab.kernels import _backend, activations, dense
from normlab.kernels import optim as K_optim

pytestmark = pytest.mark.skipif(not _backend.numba_enabled(),
                                reason="the numba kernels are not installed or are switched off (NORMLAB_DISABLE_NUMBA)")

SHAPES = [(200, 100), (60, 100), (200, 2), (3, 1000), (1, 7), (2, 1), (513, 3)]


def _same_bits(a, b):
    """Every value bit for bit (signed zeros and infinities included), NaN in the same places.

    A NaN's sign and payload are not compared: NumPy's own differ between
    versions (inf + -inf in a reduction gives +NaN with NumPy 2.2, the x86
    default -NaN with NumPy 2.4 and in the kernels).
    """
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan = np.isnan(a)
    if not np.array_equal(nan, np.isnan(b)):
        return False
    return np.array_equal(a[~nan].view(np.uint8), b[~nan].view(np.uint8))


def _special(rng, shape, dtype):
    z = rng.standard_normal(shape).astype(dtype)
    flat = z.reshape(-1)
    flat[::7] = -0.0
    flat[::11] = 0.0
    flat[::13] = np.nan
    flat[::17] = -np.inf
    flat[::19] = np.inf
    return z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_relu_bits(shape, dtype, with_bias, rng):
    z0 = _special(rng, shape, dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    b[::3] = 0.0
    b[::5] = -0.0
    ref_z = z0.copy()
    if with_bias:
        np.add(ref_z, b, out=ref_z)
    with np.errstate(invalid="ignore"):
        ref_a = np.maximum(ref_z, 0)
    assert dense.fused_now(dense.fused_size(shape, dtype))
    z, a = z0.copy(), np.empty_like(z0)
    dense.bias_relu(z, b if with_bias else None, a)
    assert _same_bits(z, ref_z)
    assert _same_bits(a, ref_a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_bias_bits(shape, dtype, rng):
    da = _special(rng, shape, dtype)
    z = _special(rng, shape, dtype)
    ref_dz = activations.relu_backward(da, z, None)
    ref_db = np.add.reduce(ref_dz, axis=0)
    dz, db = np.empty_like(da), np.full(shape[1], 7.0, dtype)
    dense.relu_backward_bias(da, z, dz, db)
    assert _same_bits(dz, ref_dz)
    assert _same_bits(db, ref_db)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_gradient_bits(shape, dtype, rng):
    dz = _special(rng, shape, dtype)
    dz[:, 0] = -0.0  # a column of -0.0 sums to +0.0, as NumPy's reduction starts from 0
    out = np.empty(shape[1], dtype)
    dense.bias_gradient(dz, out)
    assert _same_bits(out, np.add.reduce(dz, axis=0))
    # a strided gradient takes NumPy's reduction
    wide = np.repeat(dz, 2, axis=1)[:, ::2]
    out2 = np.empty(shape[1], dtype)
    dense.bias_gradient(wide, out2)
    assert _same_bits(out2, np.add.reduce(dz, axis=0))


def test_fused_size():
    assert dense.fused_size((200, 100), np.float32) == 1
    assert dense.fused_size((200, 100), np.float16) == 0
    assert dense.fused_size((0, 100), np.float32) == 0
    assert dense.fused_size((4096, 4096), np.float64) == 2  # large: only on one thread
    previous = _backend.use_numba(False)
    try:
        assert not dense.fused_now(1)
    finally:
        _backend.use_numba(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_scaled_bits(dtype, rng):
    w = _special(rng, (50, 100), dtype)
    g = rng.standard_normal((50, 100)).astype(dtype)
    c = 2.0 * 0.5e-4 / 200
    ref = g.copy()
    t = np.empty_like(w)
    with np.errstate(invalid="ignore"):
        np.multiply(w, c, out=t)
        np.add(ref, t, out=ref)
        assert K_optim.add_scaled(g, w, c)
    assert _same_bits(g, ref)
    # not C-contiguous, or mixed dtypes: nothing done, the caller keeps NumPy's calls
    assert not K_optim.add_scaled(g[:, ::2], w[:, ::2], c)
    assert not K_optim.add_scaled(g, w.astype(np.float16), c)


@pytest.mark.parametrize("shape", [(7,), (3, 3, 2, 4)])
def test_add_scaled_any_rank(shape, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    ref = g + (w * np.float32(3e-4))
    assert K_optim.add_scaled(g, w, 3e-4)
    assert _same_bits(g, ref)
