"""Layer tests ported from Keras 3 (``keras/src/layers/...``).

Each test names the Keras test it ports in its docstring or its parameter id.
Keras's ``run_layer_test`` (shape, weight counts, config round trip) is
replaced by :func:`_layer_check`, which checks the same things through
normlab's API. The NumPy references below are written for these tests (plain
loops over output positions, TensorFlow's "same" padding: the extra element
goes after).
"""

import itertools
import json

import numpy as np
import pytest

from normlab import layers as L


def _layer_check(cls, kwargs, input_shape, output_shape, n_trainable=0, training=False):
    """normlab's stand-in for Keras's run_layer_test: output shape, weight count, config round trip."""
    layer = cls(**kwargs)
    x = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
    y = layer(x, training=training)
    assert y.shape == tuple(output_shape)
    assert layer.compute_output_shape(tuple(input_shape)) == tuple(output_shape)
    assert len(layer.trainable_params) == n_trainable
    cfg = layer.get_config()
    clone = cls.from_config(json.loads(json.dumps(cfg)))
    assert clone.get_config() == cfg
    return layer


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def _pads(size, k, s, padding):
    if padding == "valid":
        return 0, (size - k) // s + 1
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, out


def _np_pool(x, pool, strides, padding, data_format, op):
    """Reference pooling over the spatial axes (channels_last internally); padded cells are ignored."""
    nd = x.ndim - 2
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    pool = _tuple(pool, nd)
    strides = _tuple(pool if strides is None else strides, nd)
    geo = [_pads(x.shape[1 + i], pool[i], strides[i], padding) for i in range(nd)]
    out = np.empty((x.shape[0], *[g[1] for g in geo], x.shape[-1]), x.dtype)
    for pos in itertools.product(*[range(g[1]) for g in geo]):
        sl = []
        for i, p in enumerate(pos):
            start = p * strides[i] - geo[i][0]
            sl.append(slice(max(start, 0), min(start + pool[i], x.shape[1 + i])))
        win = x[(slice(None), *sl, slice(None))]
        out[(slice(None), *pos, slice(None))] = op(win, axis=tuple(range(1, 1 + nd)))
    if data_format == "channels_first":
        out = np.moveaxis(out, -1, 1)
    return out


def _np_conv(x, kernel, bias, strides, padding, data_format, dilation_rate, groups=1):
    """Reference convolution, channels_last internally; kernel (*k, c_in / groups, filters).

    With groups, input channel block g (of c_in / groups) feeds filter block g
    (of filters / groups), Keras's grouped convolution.
    """
    if groups > 1:
        xs = np.split(np.moveaxis(x, 1, -1) if data_format == "channels_first" else x, groups, axis=-1)
        ks = np.split(kernel, groups, axis=-1)
        bs = np.split(np.asarray(bias), groups)
        out = np.concatenate([_np_conv(xg, kg, bg, strides, padding, "channels_last", dilation_rate)
                              for xg, kg, bg in zip(xs, ks, bs)], axis=-1)
        return np.moveaxis(out, -1, 1) if data_format == "channels_first" else out
    nd = x.ndim - 2
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    k = kernel.shape[:nd]
    strides = _tuple(strides, nd)
    dil = _tuple(dilation_rate, nd)
    eff = [(k[i] - 1) * dil[i] + 1 for i in range(nd)]
    if padding == "causal":
        x = np.pad(x, [(0, 0), (eff[0] - 1, 0), (0, 0)])
        padding = "valid"
    geo = [_pads(x.shape[1 + i], eff[i], strides[i], padding) for i in range(nd)]
    if padding == "same":
        pads = []
        for i in range(nd):
            total = max((geo[i][1] - 1) * strides[i] + eff[i] - x.shape[1 + i], 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
    out = np.empty((x.shape[0], *[g[1] for g in geo], kernel.shape[-1]))
    for pos in itertools.product(*[range(g[1]) for g in geo]):
        sl = tuple(slice(pos[i] * strides[i], pos[i] * strides[i] + eff[i], dil[i]) for i in range(nd))
        win = x[(slice(None), *sl, slice(None))]
        out[(slice(None), *pos, slice(None))] = np.tensordot(win, kernel, axes=nd + 1) + bias
    if data_format == "channels_first":
        out = np.moveaxis(out, -1, 1)
    return out


# ================================================================== Dense
@pytest.mark.parametrize("kwargs, input_shape, output_shape, n_trainable", [
    (dict(units=4, activation="relu", kernel_initializer="random_uniform", bias_initializer="ones",
          use_bias=False), (2, 3), (2, 4), 1),
    (dict(units=5, activation="sigmoid", kernel_regularizer="l2", bias_regularizer="l2"), (2, 3, 4), (2, 3, 5), 2),
], ids=["2d_no_bias", "3d_regularizers"])
def test_dense_basics(kwargs, input_shape, output_shape, n_trainable):
    """Keras: DenseTest.test_dense_basics (two cases; Keras's 'expected_num_losses=2' is the regularization loss)."""
    layer = _layer_check(L.Dense, kwargs, input_shape, output_shape, n_trainable)
    if "kernel_regularizer" in kwargs:
        assert layer.regularization_loss() > 0


@pytest.mark.parametrize("units", [0, -3, 2.5, None, "64"], ids=["zero", "negative", "float", "none", "string"])
def test_dense_invalid_units_raises(units):
    """Keras: DenseTest.test_dense_invalid_units_raises (normlab's message: 'an int in the range [1, inf)')."""
    with pytest.raises(ValueError, match="'units' parameter of Dense"):
        L.Dense(units)


def _dense_with(kernel, bias=None, **kwargs):
    layer = L.Dense(units=2, use_bias=bias is not None, **kwargs)
    layer.build((1, 2))
    # normlab has no set_weights on a layer: the parameters are written in place
    layer.params["kernel"][...] = kernel
    if bias is not None:
        layer.params["bias"][...] = bias
    return layer


KERNEL = np.array([[1.0, -2.0], [3.0, -4.0]])
INPUT = np.array([[-1.0, 2.0]])


def test_dense_correctness():
    """Keras: DenseTest.test_dense_correctness (with bias and relu; then a plain matmul without bias)."""
    layer = _dense_with(KERNEL, np.array([5.0, -6.0]), activation="relu")
    np.testing.assert_allclose(layer(INPUT), [[10.0, 0.0]])
    layer = _dense_with(KERNEL)
    assert "bias" not in layer.params
    np.testing.assert_allclose(layer(INPUT), [[5.0, -6.0]])


def test_build_marks_the_layer_built():
    """Keras: DenseTest.test_dense_correctness's pattern layer.build(shape); set weights; call."""
    layer = L.Dense(units=2, activation="relu")
    layer.build((None, 2))
    assert layer.built and layer.input_shape == (None, 2)
    layer.params["kernel"][...] = KERNEL
    layer.params["bias"][...] = [5.0, -6.0]
    np.testing.assert_allclose(layer(INPUT), [[10.0, 0.0]])


def test_build_twice_refuses_new_weights_and_changes_nothing():
    """Keras refuses new state after build ("You cannot add new elements of state"); normlab's message names
    the layer and the weight, and the layer keeps its weights."""
    layer = L.Dense(units=2)
    layer.build((None, 2))
    kernel = layer.params["kernel"]
    with pytest.raises(ValueError, match="Dense.*already built"):
        layer.build((None, 3))
    assert layer.params["kernel"] is kernel and layer.input_shape == (None, 2)
    assert layer(INPUT).shape == (1, 2)


def test_failed_build_leaves_the_layer_unbuilt():
    """Not a Keras test: normlab's all-or-nothing build holds for a direct build() call too."""
    layer = L.Dense(units=2)
    with pytest.raises(ValueError):
        layer.build((None, 0))
    assert not layer.built and layer.params == {}
    assert layer(np.ones((1, 3), np.float64)).dtype == np.float64


def test_build_of_a_weightless_layer_and_of_a_subclass():
    """Keras: a layer's build wrapper marks any layer built, whether or not it defines build."""
    act = L.Activation("relu")
    act.build((None, 3))
    assert act.built

    class Scale(L.Layer):
        def build(self, input_shape):
            self.add_weight("w", (input_shape[-1],), initializer="ones")

        def call(self, x, training):
            return x * self.params["w"]

    class Scale2(Scale):
        def build(self, input_shape):
            super().build(input_shape)
            self.add_weight("b", (input_shape[-1],))

    s = Scale2()
    s.build((None, 3))
    assert s.built and set(s.params) == {"w", "b"}
    s.params["w"][...] = 2.0
    np.testing.assert_allclose(s(np.ones((1, 3))), 2.0)


def test_dense_errors():
    """Keras: DenseTest.test_dense_errors (an input whose last axis differs from the built one is refused)."""
    layer = L.Dense(units=2, activation="relu")
    layer(np.ones((1, 2)))
    with pytest.raises(ValueError, match="Dense"):
        layer(np.ones((1, 3)))


def test_dense_no_activation():
    """Keras: DenseTest.test_dense_no_activation."""
    np.testing.assert_allclose(_dense_with(KERNEL, activation=None)(INPUT), [[5.0, -6.0]])


def test_dense_with_activation():
    """Keras: DenseTest.test_dense_with_activation."""
    np.testing.assert_allclose(_dense_with(KERNEL, activation="relu")(INPUT), [[5.0, 0.0]])


def test_dense_constraints():
    """Keras: DenseTest.test_dense_constraints ('non_neg' resolves to the NonNeg constraint)."""
    from normlab import constraints as C
    assert isinstance(L.Dense(units=2, kernel_constraint="non_neg").kernel_constraint, C.NonNeg)
    assert isinstance(L.Dense(units=2, bias_constraint="non_neg").bias_constraint, C.NonNeg)


# ============================================================= Activation
def test_activation_basics():
    """Keras: ActivationTest.test_activation_basics."""
    _layer_check(L.Activation, dict(activation="relu"), (2, 3), (2, 3))


def test_activation_correctness():
    """Keras: ActivationTest.test_activation_correctness (relu by name)."""
    x = np.array([-10.0, -5.0, 0.0, 5.0, 10.0])
    np.testing.assert_allclose(L.Activation("relu")(x[None])[0], [0.0, 0.0, 0.0, 5.0, 10.0])


# ================================================================ Dropout
def test_dropout_basics():
    """Keras: DropoutTest.test_dropout_basics."""
    _layer_check(L.Dropout, dict(rate=0.2), (2, 3), (2, 3), training=True)


def test_dropout_rescaling():
    """Keras: DropoutTest.test_dropout_rescaling (kept units scaled by 1 / (1 - rate))."""
    out = L.Dropout(0.5, seed=1337)(np.ones((20, 500)), training=True)
    assert abs(out.mean() - 1.0) <= 0.02
    np.testing.assert_allclose(out.max(), 2.0)


@pytest.mark.parametrize("noise_shape", [(None, 1, None), (20, 1, 10)], ids=["dynamic", "static"])
def test_dropout_partial_noise_shape(noise_shape):
    """Keras: DropoutTest.test_dropout_partial_noise_shape_dynamic / _static (the mask is shared along axis 1)."""
    out = L.Dropout(0.5, noise_shape=noise_shape)(np.ones((20, 5, 10)), training=True)
    np.testing.assert_allclose(out[:, 0, :], out[:, 1, :])


@pytest.mark.parametrize("rate", [-0.5, 1.5], ids=["negative_rate", "rate_greater_than_one"])
def test_dropout_invalid_rate(rate):
    """Keras: DropoutTest.test_dropout_negative_rate / test_dropout_rate_greater_than_one."""
    with pytest.raises(ValueError, match="'rate' parameter of Dropout"):
        L.Dropout(rate=rate)


@pytest.mark.parametrize("noise_shape, stored", [
    (None, None), ((20, 1, 10), (20, 1, 10)), ((None, 1, None), (None, 1, None)), ([20, 1, 10], (20, 1, 10))
], ids=["none", "integer_tuple", "none_values", "cast_to_a_tuple"])
def test_validate_noise_shape(noise_shape, stored):
    """Keras: DropoutTest.test_validate_noise_shape_{none,integer_tuple,none_values,cast_to_a_tuple}."""
    layer = L.Dropout(0.5, noise_shape=noise_shape)
    assert layer.noise_shape == stored
    if stored is not None:
        assert isinstance(layer.noise_shape, tuple)


@pytest.mark.parametrize("noise_shape", ["Invalid", (20, 1.5, 10), (20, -1, 10), (20, 0, 10)],
                         ids=["non_iterable", "invalid_type", "negative_value", "zero_value"])
def test_validate_noise_shape_invalid(noise_shape):
    """Keras: DropoutTest.test_validate_noise_shape_{non_iterable,invalid_type,negative_value,zero_value}."""
    with pytest.raises(ValueError, match="noise_shape"):
        L.Dropout(0.5, noise_shape=noise_shape)


# ========================================================== GaussianNoise
def test_gaussian_noise_basics():
    """Keras: GaussianNoiseTest.test_gaussian_noise_basics."""
    _layer_check(L.GaussianNoise, dict(stddev=0.2), (2, 3), (2, 3), training=True)


def test_gaussian_noise_correctness():
    """Keras: GaussianNoiseTest.test_gaussian_noise_correctness (the output's std is the noise's)."""
    out = L.GaussianNoise(0.3, seed=1337)(np.ones((20, 500)), training=True)
    assert abs(np.std(out) - 0.3) <= 0.02


# ================================================================ Flatten
def test_flatten():
    """Keras: FlattenTest.test_flatten (dense case: default, channels_last, channels_first)."""
    x = np.random.default_rng(0).random((10, 3, 5, 5)).astype(np.float32)
    x = x * (x >= 0.8)
    last = x.reshape(-1, 75)
    first = np.transpose(x, (0, 2, 3, 1)).reshape(-1, 75)
    np.testing.assert_array_equal(L.Flatten()(x), last)
    np.testing.assert_array_equal(L.Flatten(data_format="channels_last")(x), last)
    np.testing.assert_array_equal(L.Flatten(data_format="channels_first")(x), first)


def test_flatten_with_scalar_channels():
    """Keras: FlattenTest.test_flatten_with_scalar_channels (a (batch,) input becomes (batch, 1))."""
    x = np.random.default_rng(0).random(10).astype(np.float32)
    for kw in ({}, {"data_format": "channels_last"}, {"data_format": "channels_first"}):
        np.testing.assert_array_equal(L.Flatten(**kw)(x), x[:, None])


def test_flatten_with_dynamic_batch_size_and_dynamic_dimensions():
    """Keras: FlattenTest.test_flatten_with_dynamic_batch_size_and_dynamic_dimenstions (eager, two shapes)."""
    layer = L.Flatten()
    assert layer(np.ones((3, 5, 7))).shape == (3, 35)
    assert layer(np.ones((2, 7, 5))).shape == (2, 35)


# ================================================================ Reshape
@pytest.mark.parametrize("target, input_shape, output_shape", [
    ((8, 1), (3, 2, 4), (3, 8, 1)), ((8,), (3, 2, 4), (3, 8)), ((2, 4), (3, 8), (3, 2, 4)),
    ((-1, 1), (3, 2, 4), (3, 8, 1)), ((1, -1), (3, 2, 4), (3, 1, 8)), ((-1,), (3, 2, 4), (3, 8)),
    ((2, -1), (3, 2, 4), (3, 2, 4)),
])
def test_reshape(target, input_shape, output_shape):
    """Keras: ReshapeTest.test_reshape (dense case, all seven target shapes)."""
    _layer_check(L.Reshape, dict(target_shape=target), input_shape, output_shape)


def test_reshape_rejects_invalid_target_shape():
    """Keras: ReshapeTest.test_reshape_rejects_invalid_target_shape (-2; two unknown dimensions)."""
    with pytest.raises(ValueError, match="Reshape"):
        L.Reshape(target_shape=(-2, 5))
    with pytest.raises(ValueError, match="Reshape"):
        L.Reshape(target_shape=(-1, -1, 5))


def test_reshape_layer_with_varying_input_size_and_minus_one():
    """Keras: ReshapeTest.test_reshape_layer_with_varying_input_size_and_minus_one."""
    layer = L.Reshape((-1, 8))
    assert layer(np.ones((1, 6, 4), np.float32)).shape == (1, 3, 8)
    assert layer(np.ones((1, 10, 4), np.float32)).shape == (1, 5, 8)


# ================================================================ pooling
@pytest.mark.parametrize("cls, pool, strides, padding, fmt, input_shape, output_shape", [
    (L.MaxPooling1D, 2, 1, "valid", "channels_last", (3, 5, 4), (3, 4, 4)),
    (L.MaxPooling1D, 2, 1, "same", "channels_first", (3, 5, 4), (3, 5, 4)),
    (L.MaxPooling1D, (2,), (2,), "valid", "channels_last", (3, 5, 4), (3, 2, 4)),
    (L.MaxPooling2D, 2, 1, "valid", "channels_last", (3, 5, 5, 4), (3, 4, 4, 4)),
    (L.MaxPooling2D, 2, 1, "same", "channels_first", (3, 5, 5, 4), (3, 5, 5, 4)),
    (L.MaxPooling2D, (2, 3), (2, 2), "valid", "channels_last", (3, 5, 5, 4), (3, 2, 2, 4)),
    (L.AveragePooling1D, 2, 1, "valid", "channels_last", (3, 5, 4), (3, 4, 4)),
    (L.AveragePooling1D, 2, 1, "same", "channels_first", (3, 5, 4), (3, 5, 4)),
    (L.AveragePooling1D, (2,), (2,), "valid", "channels_last", (3, 5, 4), (3, 2, 4)),
    (L.AveragePooling2D, 2, 1, "valid", "channels_last", (3, 5, 5, 4), (3, 4, 4, 4)),
    (L.AveragePooling2D, 2, 1, "same", "channels_last", (3, 5, 5, 4), (3, 5, 5, 4)),
    (L.AveragePooling2D, 2, 1, "valid", "channels_first", (3, 5, 5, 4), (3, 5, 4, 3)),
    (L.AveragePooling2D, 2, 1, "same", "channels_first", (3, 5, 5, 4), (3, 5, 5, 4)),
    (L.AveragePooling2D, (2, 3), (2, 2), "valid", "channels_last", (3, 5, 5, 4), (3, 2, 2, 4)),
    (L.AveragePooling2D, (2, 3), (2, 2), "same", "channels_last", (3, 5, 5, 4), (3, 3, 3, 4)),
    (L.AveragePooling2D, (2, 3), (3, 3), "same", "channels_first", (3, 5, 5, 4), (3, 5, 2, 2)),
])
def test_pooling_basic(cls, pool, strides, padding, fmt, input_shape, output_shape):
    """Keras: MaxPoolingBasicTest.test_max_pooling{1,2}d, AveragePoolingBasicTest.test_average_pooling{1,2}d."""
    _layer_check(cls, dict(pool_size=pool, strides=strides, padding=padding, data_format=fmt),
                 input_shape, output_shape)


MAX1 = [(2, 1, "valid", "channels_last"), (2, 1, "valid", "channels_first"), (2, 1, "same", "channels_last"),
        (2, 1, "same", "channels_first"), ((2,), (2,), "valid", "channels_last"),
        ((2,), (2,), "valid", "channels_first")]
MAX2 = [(2, 1, "valid", "channels_last"), (2, 1, "valid", "channels_first"), ((2, 2), (2, 2), "same", "channels_last"),
        ((2, 2), (2, 2), "same", "channels_first"), ((2, 3), (3, 3), "same", "channels_last")]
AVG1 = [(2, 1, "valid", "channels_last"), (2, 1, "valid", "channels_first"), ((2,), (2,), "valid", "channels_last"),
        ((2,), (2,), "valid", "channels_first"),
        # AveragePoolingCorrectnessTest.test_average_pooling1d_same_padding
        (2, 1, "same", "channels_last"), (2, 1, "same", "channels_first"), ((2,), (2,), "same", "channels_last"),
        ((2,), (2,), "same", "channels_first")]
AVG2 = [(2, 1, "valid", "channels_last"), ((2, 3), (2, 2), "valid", "channels_last"),
        # AveragePoolingCorrectnessTest.test_average_pooling2d_same_padding
        (2, (2, 1), "same", "channels_last"), (2, (2, 1), "same", "channels_first"),
        ((2, 2), (2, 2), "same", "channels_last"), ((2, 2), (2, 2), "same", "channels_first")]


@pytest.mark.parametrize("cls, op, shape, case", [
    *[(L.MaxPooling1D, np.max, (2, 3, 4), c) for c in MAX1],
    *[(L.MaxPooling2D, np.max, (2, 4, 5, 3), c) for c in MAX2],
    *[(L.AveragePooling1D, np.mean, (2, 3, 4), c) for c in AVG1],
    *[(L.AveragePooling2D, np.mean, (1, 4, 4, 1), c) for c in AVG2],
])
def test_pooling_correctness(cls, op, shape, case):
    """Keras: MaxPoolingCorrectnessTest.test_max_pooling{1,2}d, AveragePoolingCorrectnessTest.test_average_pooling
    {1,2}d and ..._same_padding (inputs np.arange, as in Keras; "same" average pooling ignores the padding)."""
    pool, strides, padding, fmt = case
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    out = cls(pool_size=pool, strides=strides, padding=padding, data_format=fmt)(x)
    np.testing.assert_allclose(out, _np_pool(x, pool, strides, padding, fmt, op), rtol=1e-6)


@pytest.mark.parametrize("cls, ndim", [(L.GlobalAveragePooling1D, 1), (L.GlobalAveragePooling2D, 2),
                                       (L.GlobalMaxPooling1D, 1), (L.GlobalMaxPooling2D, 2)])
@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling(cls, ndim, fmt, keepdims):
    """Keras: GlobalAveragePoolingTest / GlobalMaxPoolingTest test_global_{average,max}_pooling{1,2}d
    (basic shapes and correctness, without masks: normlab layers take no mask)."""
    shape = (2, 3, 4) if ndim == 1 else (2, 3, 4, 5)
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    axes = tuple(range(1, 1 + ndim)) if fmt == "channels_last" else tuple(range(2, 2 + ndim))
    op = np.mean if "Average" in cls.__name__ else np.max
    expected = op(x, axis=axes, keepdims=keepdims)
    layer = _layer_check(cls, dict(data_format=fmt, keepdims=keepdims), shape, expected.shape)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


# ============================================================ convolution
CONV1D_BASIC = [
    dict(filters=5, kernel_size=2, strides=1, padding="valid", data_format="channels_last", dilation_rate=1,
         groups=1, input_shape=(3, 5, 4), output_shape=(3, 4, 5)),
    dict(filters=6, kernel_size=2, strides=1, padding="same", data_format="channels_last", dilation_rate=(2,),
         groups=2, input_shape=(3, 4, 4), output_shape=(3, 4, 6)),
    dict(filters=6, kernel_size=2, strides=1, padding="causal", data_format="channels_last", dilation_rate=(2,),
         groups=2, input_shape=(3, 4, 4), output_shape=(3, 4, 6)),
    dict(filters=6, kernel_size=2, strides=(2,), padding="valid", data_format="channels_last", dilation_rate=1,
         groups=2, input_shape=(3, 5, 4), output_shape=(3, 2, 6)),
]
CONV2D_BASIC = [
    dict(filters=5, kernel_size=2, strides=1, padding="valid", data_format="channels_last", dilation_rate=1,
         groups=1, input_shape=(3, 5, 5, 4), output_shape=(3, 4, 4, 5)),
    dict(filters=6, kernel_size=2, strides=1, padding="same", data_format="channels_last", dilation_rate=(2, 2),
         groups=2, input_shape=(3, 4, 4, 4), output_shape=(3, 4, 4, 6)),
    dict(filters=6, kernel_size=(2, 2), strides=(2, 1), padding="valid", data_format="channels_last",
         dilation_rate=(1, 1), groups=2, input_shape=(3, 5, 5, 4), output_shape=(3, 2, 4, 6)),
]

def _conv_params(cases):
    return cases


def _conv_kwargs(case):
    return {k: v for k, v in case.items() if k not in ("input_shape", "output_shape")}


@pytest.mark.parametrize("case", _conv_params(CONV1D_BASIC))
def test_conv1d_basic(case):
    """Keras: ConvBasicTest.test_conv1d_basic."""
    _layer_check(L.Conv1D, _conv_kwargs(case), case["input_shape"], case["output_shape"], 2)


@pytest.mark.parametrize("case", _conv_params(CONV2D_BASIC))
def test_conv2d_basic(case):
    """Keras: ConvBasicTest.test_conv2d_basic."""
    _layer_check(L.Conv2D, _conv_kwargs(case), case["input_shape"], case["output_shape"], 2)


CONV1D_CORRECT = [
    dict(filters=5, kernel_size=2, strides=1, padding="valid", data_format="channels_last", dilation_rate=1, groups=1),
    dict(filters=6, kernel_size=2, strides=1, padding="same", data_format="channels_last", dilation_rate=(2,),
         groups=2),
    dict(filters=6, kernel_size=2, strides=1, padding="causal", data_format="channels_last", dilation_rate=(2,),
         groups=2),
    dict(filters=6, kernel_size=(2,), strides=(2,), padding="valid", data_format="channels_last", dilation_rate=1,
         groups=2),
    dict(filters=6, kernel_size=(2,), strides=(2,), padding="valid", data_format="channels_first", dilation_rate=1,
         groups=2),
]
CONV2D_CORRECT = [
    dict(filters=5, kernel_size=2, strides=1, padding="valid", data_format="channels_last", dilation_rate=1, groups=1),
    dict(filters=4, kernel_size=3, strides=2, padding="same", data_format="channels_last", dilation_rate=1, groups=1),
    dict(filters=6, kernel_size=2, strides=1, padding="same", data_format="channels_last", dilation_rate=(2, 2),
         groups=2),
    dict(filters=6, kernel_size=2, strides=1, padding="same", data_format="channels_last", dilation_rate=(2, 3),
         groups=2),
    dict(filters=6, kernel_size=(4, 3), strides=(2, 1), padding="valid", data_format="channels_last",
         dilation_rate=(1, 1), groups=2),
    dict(filters=6, kernel_size=(4, 3), strides=(2, 1), padding="valid", data_format="channels_first",
         dilation_rate=(1, 1), groups=2),
]


def _conv_correct(cls, case, input_shape):
    rng = np.random.default_rng(0)
    layer = cls(**_conv_kwargs(case))
    x = rng.normal(size=input_shape)
    layer.build_from_shape(x.shape)  # see _dense_with
    kernel = rng.normal(size=layer.params["kernel"].shape)
    bias = rng.normal(size=(case["filters"],))
    layer.params["kernel"][...] = kernel
    layer.params["bias"][...] = bias
    expected = _np_conv(x, kernel, bias, case["strides"], case["padding"], case["data_format"],
                        case["dilation_rate"], case["groups"])
    np.testing.assert_allclose(layer(x), expected, rtol=5e-4, atol=1e-6)


@pytest.mark.parametrize("case", _conv_params(CONV1D_CORRECT))
def test_conv1d_correctness(case):
    """Keras: ConvCorrectnessTest.test_conv1d (input (2, 8, 4), random kernel and bias)."""
    _conv_correct(L.Conv1D, case, (2, 8, 4))


@pytest.mark.parametrize("case", _conv_params(CONV2D_CORRECT))
def test_conv2d_correctness(case):
    """Keras: ConvCorrectnessTest.test_conv2d (input (2, 8, 8, 4), random kernel and bias)."""
    _conv_correct(L.Conv2D, case, (2, 8, 8, 4))


def test_conv_additional_groups_1_cases():
    """Keras: ConvCorrectnessTest.test_conv1d/test_conv2d, the groups=2 cases also run with groups=1 (the same
    geometries with one group: same/causal padding with dilation, strides, channels_first)."""
    for case in CONV1D_CORRECT[1:]:
        _conv_correct(L.Conv1D, {**case, "groups": 1}, (2, 8, 4))
    for case in CONV2D_CORRECT[2:]:
        _conv_correct(L.Conv2D, {**case, "groups": 1}, (2, 8, 8, 4))


def test_conv_channels_first():
    """Keras: ConvCorrectnessTest.test_conv1d (the channels_first case, with one group)."""
    _conv_correct(L.Conv1D, {**CONV1D_CORRECT[4], "groups": 1}, (2, 8, 4))


def test_bad_init_args():
    """Keras: ConvBasicTest.test_bad_init_args (filters 0, a zero in kernel_size or strides, groups 0, filters
    not divisible by groups).

    Keras also refuses strides > 1 together with dilation_rate > 1 (a
    TensorFlow limitation); normlab deliberately accepts the combination and
    computes it exactly (checked against the reference below).
    """
    with pytest.raises(ValueError, match="groups"):
        L.Conv2D(filters=5, kernel_size=(2, 2), groups=0)
    with pytest.raises(ValueError, match="groups"):
        L.Conv2D(filters=5, kernel_size=(2, 2), groups=2)
    with pytest.raises(ValueError, match="filters"):
        L.Conv1D(filters=0, kernel_size=1)
    with pytest.raises(ValueError, match="kernel_size"):
        L.Conv2D(filters=2, kernel_size=(1, 0))
    with pytest.raises(ValueError, match="strides"):
        L.Conv2D(filters=2, kernel_size=(2, 2), strides=(1, 0))
    case = dict(filters=2, kernel_size=(2, 2), strides=2, padding="valid", data_format="channels_last",
                dilation_rate=(2, 1), groups=1)
    _conv_correct(L.Conv2D, case, (2, 8, 8, 3))


def test_conv_constraints():
    """Keras: ConvCorrectnessTest.test_conv_constraints."""
    from normlab import constraints as C
    assert isinstance(L.Conv2D(filters=4, kernel_size=3, kernel_constraint="non_neg").kernel_constraint, C.NonNeg)
    assert isinstance(L.Conv2D(filters=4, kernel_size=3, bias_constraint="non_neg").bias_constraint, C.NonNeg)


def test_conv_raises_exception_on_zero_dims():
    """Keras: ConvCorrectnessTest.test_conv_raises_exception_on_zero_dims (a 5x5 kernel on a 4x4 input)."""
    with pytest.raises(ValueError):
        L.Conv2D(6, [5, 5], 1, "valid")(np.random.default_rng(0).random((3, 4, 4, 4)))


@pytest.mark.parametrize("cls, input_shape, kernel_size, dilation_rate", [
    (L.Conv1D, (10, 3), 2, 10), (L.Conv2D, (10, 10, 3), (2, 2), (10, 10))])
def test_conv_invalid_configuration(cls, input_shape, kernel_size, dilation_rate):
    """Keras: ConvBasicTest.test_conv_symbolic_invalid_configuration (dilated kernel larger than the input)."""
    layer = cls(filters=1, kernel_size=kernel_size, dilation_rate=dilation_rate)
    with pytest.raises(ValueError):
        layer(np.ones((1, *input_shape)))


# ------------------------------------------- normlab's own check of channels_first
@pytest.mark.parametrize("make, shape", [
    (lambda: L.MaxPooling2D((2, 3), (1, 2), "same", data_format="channels_first"), (2, 3, 5, 6)),
    (lambda: L.AveragePooling1D(2, 1, "same", data_format="channels_first"), (2, 3, 5)),
    (lambda: L.GlobalMaxPooling2D(data_format="channels_first", keepdims=True), (2, 3, 4, 5)),
    (lambda: L.GlobalAveragePooling1D(data_format="channels_first"), (2, 3, 4)),
    (lambda: L.Flatten(data_format="channels_first"), (2, 3, 4, 5)),
], ids=["max2d", "avg1d", "gmax2d_keepdims", "gavg1d", "flatten"])
def test_channels_first_backward_matches_central_differences(make, shape, rng):
    """Not a Keras test: the channels_first path (added for the ports above) has the right float64 gradient."""
    layer = make()
    x = rng.normal(size=shape)
    y = layer(x, training=True)
    w = rng.normal(size=y.shape)
    dx = layer.backward(w)
    num = np.empty_like(x)
    eps = 1e-6
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        num[i] = (np.sum(w * make()(xp)) - np.sum(w * make()(xm))) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
