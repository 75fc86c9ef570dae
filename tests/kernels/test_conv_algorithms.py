"""Convolution algorithms (GEMM, Winograd F(2x2, 3x3), direct), groups and channels-first.

Every algorithm against a float64 reference, Winograd against its stated error
bound, float64 central differences on every path and both kernel paths
(numba, NumPy), grouped convolution against PyTorch and against separate
convolutions, channels-first against channels-last.
"""

import json

import numpy as np
import pytest

from normlab import initializers
from normlab.kernels import _conv_winograd as W
from normlab.kernels import conv as K
from normlab.layers import Conv1D, Conv2D, deserialize, serialize
from normlab.layers.conv import conv_linear_ops
from normlab.testing import check_layer_gradients

TOL = 1e-6
RAND_BIAS = initializers.RandomNormal(stddev=1.0, seed=3)
ALGOS_2D = ["gemm", "winograd", "direct"]


def _naive(x, w, b, pads, strides=(1, 1), dilation=(1, 1)):
    """Textbook loops in float64."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, _, f = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    ho = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((x.shape[0], ho, wo, f)) + (0 if b is None else b)
    for i in range(kh):
        for j in range(kw):
            y += xp[:, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw] @ w[i, j]
    return y


@pytest.mark.parametrize("algorithm", ALGOS_2D)
@pytest.mark.parametrize("shape,padding", [((2, 7, 6, 5), "same"), ((3, 8, 9, 4), "valid"), ((1, 3, 3, 2), "same")])
def test_float32_matches_the_float64_reference(algorithm, shape, padding, kernel_path, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, 3, shape[3], 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y, cache = K.conv2d_forward(x, w, b, padding=padding, algorithm=algorithm)
    assert cache.algorithm == algorithm and y.dtype == np.float32
    ref, ref_cache = K.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                      padding=padding, algorithm="gemm")
    np.testing.assert_allclose(y, _naive(x, w, b, cache.geom.pads), rtol=0, atol=2e-5 * np.abs(ref).max())
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = K.conv2d_backward(dy, cache, w)
    want = K.conv2d_backward(dy.astype(np.float64), ref_cache, w.astype(np.float64))
    for g, r in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-5 * np.abs(r).max())


@pytest.mark.parametrize("channels", [1, 8, 64])
def test_winograd_stays_within_its_error_bound(channels, kernel_path, rng):
    """The bound of _conv_winograd's docstring, elementwise, for inputs of mixed magnitude."""
    x = (rng.standard_normal((2, 9, 10, channels)) * np.exp(rng.uniform(-3, 3, (2, 9, 10, channels))))
    w = rng.standard_normal((3, 3, channels, 5)) * np.exp(rng.uniform(-2, 2, (3, 3, channels, 5)))
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    y, cache = K.conv2d_forward(x32, w32, None, padding="same", algorithm="winograd")
    # exact convolution of the float32 inputs (the bound is about the algorithm, not the inputs' rounding)
    ref = _naive(x32, w32, None, cache.geom.pads)
    bound = W.error_bound(x32, w32, cache.geom.pads, cache.geom.out_size)
    err = np.abs(y - ref)
    assert (err <= bound).all(), float((err / bound).max())
    # and the bound is what the docstring says: about 7 (C + 11) / (9 C) times GEMM's at the median
    gemm_bound = 9 * channels * 2.0**-24 * _naive(np.abs(x32), np.abs(w32), None, cache.geom.pads)
    ratio = np.median(bound / gemm_bound)
    expected = 64 / 81 * (channels + 11) / channels
    assert 0.6 * expected < ratio < 1.5 * expected, (ratio, expected)


@pytest.mark.parametrize("algorithm", ALGOS_2D)
@pytest.mark.parametrize("padding,shape", [("same", (2, 5, 6, 3)), ("valid", (2, 6, 5, 2))])
def test_central_differences_every_algorithm(algorithm, padding, shape, kernel_path, rng):
    x = rng.standard_normal(shape)
    layer = Conv2D(4, 3, padding=padding, activation="tanh", bias_initializer=RAND_BIAS, algorithm=algorithm,
                   dtype="float64")
    errs = check_layer_gradients(layer, x)
    assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize("kw", [{"strides": 2}, {"dilation_rate": 2}, {"kernel_size": (2, 3)}])
def test_direct_with_strides_dilation_and_other_kernels(kw, kernel_path, rng):
    kw = {"kernel_size": 3, **kw}
    x = rng.standard_normal((2, 7, 6, 2))
    layer = Conv2D(3, padding="same", algorithm="direct", bias_initializer=RAND_BIAS, dtype="float64", **kw)
    ref = Conv2D(3, padding="same", algorithm="gemm", bias_initializer=RAND_BIAS, dtype="float64", **kw)
    ref(x)
    layer(x)
    layer.params["kernel"][...] = ref.params["kernel"]
    layer.params["bias"][...] = ref.params["bias"]
    np.testing.assert_allclose(layer(x), ref(x), rtol=1e-12, atol=1e-12)
    assert max(check_layer_gradients(layer, x).values()) < TOL


def test_auto_choice():
    on = K._backend.numba_enabled()
    assert K.resolve_algorithm("auto", (3, 3), (1, 1), (1, 1), 32, 64) == ("winograd" if on else "gemm")
    assert K.resolve_algorithm("auto", (3, 3), (1, 1), (1, 1), 1, 32) == ("direct" if on else "gemm")
    assert K.resolve_algorithm("auto", (1, 9), (1, 2), (1, 1), 1, 8) == ("direct" if on else "gemm")
    assert K.resolve_algorithm("auto", (3, 3), (1, 1), (1, 1), 1, 64, 224 * 64 * 4) == ("direct" if on else "gemm")
    assert K.resolve_algorithm("auto", (7, 7), (2, 2), (1, 1), 1, 64) == "gemm"  # many taps
    assert K.resolve_algorithm("auto", (1, 9), (1, 1), (1, 1), 1, 32, 4000 * 32 * 4) == "gemm"  # long rows
    assert K.resolve_algorithm("auto", (3, 3), (1, 1), (1, 1), 2, 32) == "gemm"
    assert K.resolve_algorithm("auto", (3, 3), (1, 1), (1, 1), 16, 16) == "gemm"
    assert K.resolve_algorithm("auto", (3, 3), (1, 1), (1, 1), 8, 32) == ("winograd" if on else "gemm")
    assert K.resolve_algorithm("auto", (3, 3), (2, 2), (1, 1), 64, 64) == "gemm"
    assert K.resolve_algorithm("auto", (5, 5), (1, 1), (1, 1), 64, 64) == "gemm"
    with pytest.raises(ValueError, match="algorithm='winograd' needs a 3 x 3 kernel"):
        K.resolve_algorithm("winograd", (3, 3), (1, 2), (1, 1), 8)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        K.resolve_algorithm("fft", (3, 3), (1, 1), (1, 1), 8)


# ------------------------------------------------------------------ groups
@pytest.mark.parametrize("algorithm", ["auto", "gemm", "winograd"])
def test_groups_are_separate_convolutions(algorithm, rng):
    x = rng.standard_normal((2, 6, 5, 6))
    w = rng.standard_normal((3, 3, 2, 9))
    b = rng.standard_normal(9)
    y, cache = K.conv2d_forward(x, w, b, padding="same", groups=3, algorithm=algorithm)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = K.conv2d_backward(dy, cache, w)
    for g in range(3):
        ci, fo = slice(2 * g, 2 * g + 2), slice(3 * g, 3 * g + 3)
        yg, cg = K.conv2d_forward(x[..., ci], w[..., fo], b[fo], padding="same", algorithm="gemm")
        np.testing.assert_allclose(y[..., fo], yg, rtol=1e-12, atol=1e-12)
        dxg, dwg, dbg = K.conv2d_backward(np.ascontiguousarray(dy[..., fo]), cg, w[..., fo])
        np.testing.assert_allclose(dx[..., ci], dxg, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw[..., fo], dwg, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db[fo], dbg, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls,shape", [(Conv2D, (2, 5, 4, 4)), (Conv1D, (2, 7, 6))])
def test_groups_gradients(cls, shape, kernel_path, rng):
    layer = cls(4, 3, padding="same", groups=2, activation="sigmoid", bias_initializer=RAND_BIAS, dtype="float64")
    x = rng.standard_normal(shape)
    layer(x)
    assert layer.params["kernel"].shape == (3,) * (len(shape) - 2) + (shape[-1] // 2, 4)
    assert max(check_layer_gradients(layer, x).values()) < TOL


def test_groups_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 7, 6, 8))
    layer = Conv2D(6, 3, strides=(2, 1), padding="valid", groups=2, bias_initializer=RAND_BIAS, dtype="float64")
    y = layer(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(layer.params["kernel"].transpose(3, 2, 0, 1), requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=(2, 1), groups=2)
    yt.backward(torch.tensor(dy.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.grads["kernel"], wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10, atol=1e-10)


def test_groups_errors():
    layer = Conv2D(4, 3, groups=2)
    with pytest.raises(ValueError, match="input channels must be divisible by groups; got 3 channels and groups=2"):
        layer(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="filters must be divisible by groups; got filters=3, groups=2"):
        Conv1D(3, 3, groups=2)


# ------------------------------------------------------------------ channels-first
@pytest.mark.parametrize("cls,shape,kw", [
    (Conv2D, (2, 3, 6, 5), {"strides": (2, 1)}),
    (Conv2D, (2, 4, 5, 5), {"groups": 2}),
    (Conv1D, (2, 3, 7), {"padding": "causal", "dilation_rate": 2}),
])
def test_channels_first_is_channels_last_transposed(cls, shape, kw, kernel_path, rng):
    kw = {"padding": "same", **kw}
    first = cls(4, 3, data_format="channels_first", activation="relu", bias_initializer=RAND_BIAS,
                dtype="float64", **kw)
    last = cls(4, 3, activation="relu", bias_initializer=RAND_BIAS, dtype="float64", **kw)
    x = rng.standard_normal(shape)
    x_last = np.moveaxis(x, 1, -1)
    y_first = first(x, training=True)
    last(x_last)
    last.params["kernel"][...] = first.params["kernel"]
    last.params["bias"][...] = first.params["bias"]
    y_last = last(x_last, training=True)
    assert y_first.shape == first.compute_output_shape(x.shape)
    np.testing.assert_allclose(np.moveaxis(y_first, 1, -1), y_last, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y_first.shape)
    np.testing.assert_allclose(np.moveaxis(first.backward(dy), 1, -1), last.backward(np.moveaxis(dy, 1, -1)),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first.grads["kernel"], last.grads["kernel"], rtol=1e-12, atol=1e-12)
    assert max(check_layer_gradients(first, x).values()) < TOL


def test_channels_first_linear_ops(rng):
    layer = Conv2D(3, 3, padding="same", data_format="channels_first", dtype="float64")
    x = rng.standard_normal((2, 2, 5, 4))
    y = layer(x)
    fwd, bwd = conv_linear_ops(layer)
    np.testing.assert_allclose(fwd(x, layer.params["kernel"], layer.params["bias"]), y, rtol=1e-12)
    dx, dk, db = bwd(np.ones_like(y), x, layer.params["kernel"])
    assert dx.shape == x.shape and dk.shape == layer.params["kernel"].shape


def test_config_round_trip():
    layer = Conv2D(4, 3, groups=2, algorithm="winograd", data_format="channels_first", name="c")
    conf = json.loads(json.dumps(serialize(layer)))
    assert conf["config"]["groups"] == 2 and conf["config"]["algorithm"] == "winograd"
    again = deserialize(conf)
    assert again.get_config() == layer.get_config()


def test_winograd_same_bits_on_one_and_two_threads(rng, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from normlab.kernels import _threads

    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 0)  # split even this small case
    x = rng.standard_normal((11, 6, 7, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    out = []
    for n in (1, 2):
        with threadpoolctl.threadpool_limits(n):
            y, cache = K.conv2d_forward(x, w, None, padding="same", algorithm="winograd")
            out.append((y,) + K.conv2d_backward(np.ones_like(y) + y, cache, w))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)])
def test_winograd_same_bits_on_any_thread_count_with_full_chunks(need, rng):
    """Chunks of the real size (several per thread, not aligned with the images) and OpenBLAS's
    products: each chunk's products are one BLAS call, whose rows can round differently by
    where they fall in the call, so the chunks must not follow the thread split (they did in
    the forward pass, which then differed between 1 and 2 threads in the last bits)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from normlab.kernels import _conv_winograd, _threads

    x = rng.standard_normal((26, 14, 14, 32)).astype(np.float32)
    w = rng.standard_normal((3, 3, 32, 64)).astype(np.float32)
    dy = rng.standard_normal((26, 14, 14, 64)).astype(np.float32)
    pads = ((1, 1), (1, 1))
    out = []
    for n in (1, 2, 3):
        with threadpoolctl.threadpool_limits(n), _threads.one_pool():
            y = _conv_winograd.forward(x, w, None, pads, (14, 14))
            out.append((y,) + _conv_winograd.backward(dy, x, w, pads, need_dx=need[0], need_dw=need[1]))
    for a, b, c in zip(*out):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
