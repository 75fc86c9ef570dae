"""The direct convolution loops (few input channels: the first layer of an image network).

Against the float64 reference (the GEMM path in float64) at float32 tolerance,
the fused bias gradient against ``dy``'s sum, float64 central differences, the
same bits at any thread count, and groups.
"""

import numpy as np
import pytest

from normlab.kernels import _conv_direct, _threads
from normlab.kernels import conv as K
from normlab.layers import Conv2D
from normlab.testing import check_layer_gradients


def _ref(x, w, b, dy, **kw):
    y, cache = K.conv2d_forward(x.astype(np.float64), w.astype(np.float64),
                                None if b is None else b.astype(np.float64), algorithm="gemm", **kw)
    return (y,) + K.conv2d_backward(dy.astype(np.float64), cache, w.astype(np.float64))


@pytest.mark.parametrize("shape,f,kw", [
    ((17, 28, 28, 1), 32, {"padding": "same"}),  # the CNN's first layer, blocks of images not full
    ((3, 9, 7, 1), 5, {"padding": "valid"}),
    ((2, 11, 10, 1), 8, {"padding": "same", "strides": (2, 2)}),
    ((2, 12, 11, 2), 6, {"padding": "same", "dilation": (2, 1)}),
    ((4, 8, 8, 3), 3, {"padding": "same"}),
])
def test_float32_matches_the_float64_reference(shape, f, kw, kernel_path, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, 3, shape[3], f)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    y, cache = K.conv2d_forward(x, w, b, algorithm="direct", **kw)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = (y,) + K.conv2d_backward(dy, cache, w)
    for g, r in zip(got, _ref(x, w, b, dy, **kw)):
        assert g.dtype == np.float32 and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-5 * np.abs(r).max())


def test_bias_gradient_is_the_sum_of_dy_in_one_pass(rng):
    x = rng.standard_normal((10, 6, 5, 1))
    dy = rng.standard_normal((10, 6, 5, 4))
    dw, db = _conv_direct.param_grads(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), dy, (3, 3, 1, 4), (1, 1),
                                      (1, 1))
    np.testing.assert_allclose(db, dy.sum(axis=(0, 1, 2)), rtol=1e-13)
    assert dw.shape == (3, 3, 1, 4)


@pytest.mark.parametrize("padding,shape", [("same", (3, 5, 6, 1)), ("valid", (2, 6, 5, 1))])
def test_central_differences_with_one_channel(padding, shape, kernel_path, rng):
    layer = Conv2D(4, 3, padding=padding, activation="tanh", algorithm="direct", dtype="float64",
                   bias_initializer="random_normal")
    errs = check_layer_gradients(layer, rng.standard_normal(shape))
    assert max(errs.values()) < 1e-6, errs


def test_auto_takes_the_direct_loops_for_one_channel(rng):
    x = rng.standard_normal((2, 6, 6, 1)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 4)).astype(np.float32)
    _, cache = K.conv2d_forward(x, w, None, padding="same")
    assert cache.algorithm == ("direct" if K._backend.numba_enabled() else "gemm")


@pytest.mark.skipif(not K._backend.numba_enabled(), reason="numba kernels off")
@pytest.mark.parametrize("shape,f", [((19, 28, 28, 1), 32), ((9, 7, 9, 2), 5)])
def test_same_bits_at_any_thread_count(monkeypatch, shape, f):
    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, 3, shape[3], f)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(_threads, "get_num_threads", lambda t=threads: t)
        y, cache = K.conv2d_forward(x, w, None, padding="same", algorithm="direct")
        results.append((y,) + K.conv2d_backward(np.cos(y), cache, w, need_dx=False)[1:])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_groups_with_one_channel_each(rng):
    x = rng.standard_normal((3, 7, 6, 2))
    w = rng.standard_normal((3, 3, 1, 4))
    b = rng.standard_normal(4)
    y, cache = K.conv2d_forward(x, w, b, padding="same", groups=2, algorithm="direct")
    dy = rng.standard_normal(y.shape)
    dx, dw, db = K.conv2d_backward(dy, cache, w)
    y2, cache2 = K.conv2d_forward(x, w, b, padding="same", groups=2, algorithm="gemm")
    for g, r in zip((y, dx, dw, db), (y2,) + K.conv2d_backward(dy, cache2, w)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not K._backend.numba_enabled(), reason="numba kernels off")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strides,dilation,f", [((1, 1), (1, 1), 32), ((2, 1), (1, 2), 7), ((1, 2), (2, 1), 33)])
def test_the_nine_tap_loops_give_the_general_loops_bits(dtype, strides, dilation, f):
    from normlab.kernels import _conv_direct_numba as nb

    rng = np.random.default_rng(1)
    xp = rng.standard_normal((5, 12, 13, 1)).astype(dtype)
    xp[1, 3, 4, 0] = np.inf  # a non-finite input spreads as in the general loops
    w = rng.standard_normal((3, 3, 1, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    ho = (12 - 1 - 2 * dilation[0]) // strides[0] + 1
    wo = (13 - 1 - 2 * dilation[1]) // strides[1] + 1
    y = [np.empty((5, ho, wo, f), dtype) for _ in range(2)]
    nb.forward_rows(xp, w, b, *strides, *dilation, y[0], 1, 5)
    nb.forward_rows_9(xp, w, b, *strides, *dilation, y[1], 1, 5)
    np.testing.assert_array_equal(y[0][1:], y[1][1:])
    dy = rng.standard_normal(y[0].shape).astype(dtype)
    acc = [np.full((10, f), np.nan, dtype) for _ in range(2)]
    nb.kernel_grad_rows(xp, dy, 3, 3, *strides, *dilation, acc[0], 2, 5)
    nb.kernel_grad_rows_9(xp, dy, 3, 3, *strides, *dilation, acc[1], 2, 5)
    np.testing.assert_array_equal(acc[0], acc[1])
