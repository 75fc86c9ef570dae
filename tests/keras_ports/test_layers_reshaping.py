"""Keras 3's reshaping and Identity layer tests, ported (keras/src/layers/reshaping/*_test.py,
keras/src/layers/core/identity_test.py).

Each test names the Keras test it ports (Flatten and Reshape: test_layers_ports.py).
Keras's sparse-tensor cases have no normlab counterpart (NumPy arrays only).
``keras.KerasTensor([None, 2, 3])`` is ``normlab.Input(batch_shape=(None, 2, 3))``.
Keras's image_data_format default is channels_last, as normlab's.
"""

import numpy as np
import pytest

import normlab
from normlab import layers

from _layer_harness import run_layer_test

rng = np.random.default_rng(1337)


# ============================================================== Identity
def test_identity_basics():
    """Keras: IdentityTest.test_identity_basics (dense)."""
    layer = run_layer_test(layers.Identity, {}, (2, 3), (2, 3), expected_num_trainable_weights=0,
                           expected_num_non_trainable_weights=0)
    x = rng.random((2, 3))
    np.testing.assert_allclose(layer(x), x, rtol=1e-6)  # float32, as Keras


# =============================================================== Permute
def test_permute():
    """Keras: PermuteTest.test_permute (dense)."""
    inputs = rng.random((10, 3, 5, 5)).astype("float32")
    inputs = inputs * (inputs >= 0.8)
    run_layer_test(layers.Permute, {"dims": (3, 1, 2)}, inputs.shape, (10, 5, 3, 5), input_data=inputs,
                   expected_output=np.transpose(inputs, (0, 3, 1, 2)))


def test_permute_with_dynamic_batch_size():
    """Keras: PermuteTest.test_permute_with_dynamic_batch_size."""
    assert layers.Permute((2, 1))(normlab.Input(batch_shape=(None, 3, 5))).shape == (None, 5, 3)


@pytest.mark.parametrize("dims", [(0, 1, 2), (1, 4, 2)], ids=["starting_dims_index", "set_of_dims_indices"])
def test_permute_errors_on_invalid_dims(dims):
    """Keras: PermuteTest.test_permute_errors_on_invalid_starting_dims_index / _invalid_set_of_dims_indices."""
    with pytest.raises(ValueError, match="Invalid permutation"):
        layers.Permute(dims)


# ========================================================== RepeatVector
def test_repeat_vector():
    """Keras: FlattenTest.test_repeat_vector (sic: Keras's class name in repeat_vector_test.py)."""
    inputs = rng.random((2, 5)).astype("float32")
    run_layer_test(layers.RepeatVector, {"n": 3}, inputs.shape, (2, 3, 5), input_data=inputs,
                   expected_output=np.repeat(inputs.reshape(2, 1, 5), 3, axis=1))


def test_repeat_vector_with_dynamic_batch_size():
    """Keras: FlattenTest.test_repeat_vector_with_dynamic_batch_size."""
    assert layers.RepeatVector(n=3)(normlab.Input(batch_shape=(None, 5))).shape == (None, 3, 5)


def test_repeat_vector_with_dynamic_dimension():
    """Keras: FlattenTest.test_repeat_vector_with_dynamic_dimension."""
    assert layers.RepeatVector(n=3)(normlab.Input(batch_shape=(2, None))).shape == (2, 3, None)


@pytest.mark.parametrize("n", ["3", 3.5, [3], 0, -3])
def test_repeat_vector_with_invalid_n(n):
    """Keras: FlattenTest.test_repeat_vector_with_invalid_n / _with_non_positive_n (normlab's template; an
    InvalidParameterError is both a ValueError and a TypeError)."""
    with pytest.raises((TypeError, ValueError), match="'n' parameter of RepeatVector"):
        layers.RepeatVector(n=n)


# ============================================================= Cropping1D
@pytest.mark.parametrize("cropping, sl", [((1, 2), slice(1, 3)), ((1, 1), slice(1, 4)), (1, slice(1, 4)),
                                          ((0, 1), slice(0, 4)), ((1, 0), slice(1, 5))])
def test_cropping_1d(cropping, sl):
    """Keras: Cropping1DTest.test_cropping_1d."""
    inputs = rng.random((3, 5, 7))
    run_layer_test(layers.Cropping1D, {"cropping": cropping}, inputs.shape, inputs[:, sl, :].shape,
                   input_data=inputs, expected_output=inputs[:, sl, :])


def test_cropping_1d_with_dynamic_spatial_dim():
    """Keras: Cropping1DTest.test_cropping_1d_with_dynamic_spatial_dim."""
    assert layers.Cropping1D((1, 2))(normlab.Input(batch_shape=(1, None, 7))).shape == (1, None, 7)


@pytest.mark.parametrize("cropping", [(1,), (1, 2, 3), "1"])
def test_cropping_1d_errors_if_cropping_argument_invalid(cropping):
    """Keras: Cropping1DTest.test_cropping_1d_errors_if_cropping_argument_invalid."""
    with pytest.raises(ValueError):
        layers.Cropping1D(cropping=cropping)


def test_cropping_1d_errors_if_cropping_more_than_available():
    """Keras: Cropping1DTest.test_cropping_1d_errors_if_cropping_more_than_available / _error_on_excessive_cropping."""
    with pytest.raises(ValueError, match="`cropping` parameter of `Cropping1D` layer must be smaller than"):
        layers.Cropping1D(cropping=(2, 3))(normlab.Input(batch_shape=(3, 5, 7)))
    with pytest.raises(ValueError, match="`cropping` parameter of `Cropping1D` layer must be smaller than"):
        layers.Cropping1D(cropping=(3, 3))(rng.random((3, 5, 7)))


# ============================================================= Cropping2D
CROP2D = [(((1, 2), (3, 4)), ((1, 5), (3, 5))), (((2, 2), (2, 2)), ((2, 5), (2, 7))), ((2, 2), ((2, 5), (2, 7))),
          (2, ((2, 5), (2, 7))), (((0, 2), (0, 4)), ((0, 5), (0, 5))), (((1, 0), (3, 0)), ((1, 7), (3, 9))),
          (((1, 0), (3, 4)), ((1, 7), (3, 5))), (((1, 2), (3, 0)), ((1, 5), (3, 9)))]


@pytest.mark.parametrize("cropping, ranges", CROP2D)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_cropping_2d(cropping, ranges, data_format):
    """Keras: Cropping2DTest.test_cropping_2d."""
    (r0, r1), (c0, c1) = ranges
    if data_format == "channels_first":
        inputs = rng.random((3, 5, 7, 9))
        expected = inputs[:, :, r0:r1, c0:c1]
    else:
        inputs = rng.random((3, 7, 9, 5))
        expected = inputs[:, r0:r1, c0:c1, :]
    run_layer_test(layers.Cropping2D, {"cropping": cropping, "data_format": data_format}, inputs.shape,
                   expected.shape, input_data=inputs, expected_output=expected)


def test_cropping_2d_with_dynamic_spatial_dim():
    """Keras: Cropping2DTest.test_cropping_2d_with_dynamic_spatial_dim."""
    out = layers.Cropping2D(((1, 2), (3, 4)))(normlab.Input(batch_shape=(1, 7, None, 5)))
    assert out.shape == (1, 4, None, 5)


@pytest.mark.parametrize("cropping", [((3, 6), (0, 0)), ((0, 0), (5, 4))])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_cropping_2d_errors_if_cropping_more_than_available(cropping, data_format):
    """Keras: Cropping2DTest.test_cropping_2d_errors_if_cropping_more_than_available."""
    with pytest.raises(ValueError):
        layers.Cropping2D(cropping=cropping, data_format=data_format)(normlab.Input(batch_shape=(3, 7, 9, 5)))


@pytest.mark.parametrize("cropping", [(1,), (1, 2, 3), "1", ((1, 2), (3, 4, 5)), ((1, 2), (3, -4)), ((1, 2), "3")])
def test_cropping_2d_errors_if_cropping_argument_invalid(cropping):
    """Keras: Cropping2DTest.test_cropping_2d_errors_if_cropping_argument_invalid."""
    with pytest.raises(ValueError):
        layers.Cropping2D(cropping=cropping)


@pytest.mark.parametrize("cropping", [((4, 5), (0, 0)), ((0, 0), (5, 5)), ((6, 3), (0, 0)), ((0, 0), (7, 3))])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_cropping_2d_error_on_excessive_cropping(cropping, data_format):
    """Keras: Cropping2DTest.test_cropping_2d_error_on_excessive_cropping."""
    with pytest.raises(ValueError, match="Values in `cropping` argument should be smaller than the corresponding "
                                         "spatial dimension of the input"):
        layers.Cropping2D(cropping=cropping, data_format=data_format)(rng.random((3, 8, 9, 5)))


# ============================================================= Cropping3D
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_cropping_3d(data_format):
    """Keras: Cropping3DTest.test_cropping_3d / _with_same_cropping (one case of each)."""
    inputs = rng.random((2, 7, 9, 11, 3)) if data_format == "channels_last" else rng.random((2, 3, 7, 9, 11))
    sp = slice(1, 5), slice(3, 4), slice(5, 5 + 11 - 5 - 4)
    expected = inputs[:, sp[0], sp[1], sp[2], :] if data_format == "channels_last" else inputs[:, :, sp[0], sp[1], sp[2]]
    run_layer_test(layers.Cropping3D, {"cropping": ((1, 2), (3, 5), (5, 4)), "data_format": data_format},
                   inputs.shape, expected.shape, input_data=inputs, expected_output=expected)
    same = layers.Cropping3D(cropping=2, data_format=data_format)(inputs)
    idx = (slice(None),) + ((slice(2, -2),) * 3 + (slice(None),) if data_format == "channels_last"
                            else (slice(None),) + (slice(2, -2),) * 3)
    np.testing.assert_array_equal(same, inputs[idx])


# ========================================================== ZeroPadding1D
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_zero_padding_1d(data_format):
    """Keras: ZeroPadding1DTest.test_zero_padding_1d."""
    inputs = rng.random((1, 2, 3))
    outputs = layers.ZeroPadding1D(padding=(1, 2), data_format=data_format)(inputs)
    if data_format == "channels_last":
        for index in [0, -1, -2]:
            np.testing.assert_allclose(outputs[:, index, :], 0.0)
        np.testing.assert_allclose(outputs[:, 1:-2, :], inputs)
    else:
        for index in [0, -1, -2]:
            np.testing.assert_allclose(outputs[:, :, index], 0.0)
        np.testing.assert_allclose(outputs[:, :, 1:-2], inputs)


@pytest.mark.parametrize("padding", [(2, 2), 2], ids=["one_tuple", "one_int"])
def test_zero_padding_1d_with_same_padding(padding):
    """Keras: ZeroPadding1DTest.test_zero_padding_1d_with_same_padding."""
    inputs = rng.random((1, 2, 3))
    outputs = layers.ZeroPadding1D(padding=padding, data_format="channels_last")(inputs)
    for index in [0, 1, -1, -2]:
        np.testing.assert_allclose(outputs[:, index, :], 0.0)
    np.testing.assert_allclose(outputs[:, 2:-2, :], inputs)


def test_zero_padding_1d_with_dynamic_spatial_dim():
    """Keras: ZeroPadding1DTest.test_zero_padding_1d_with_dynamic_spatial_dim."""
    layer = layers.ZeroPadding1D((1, 2), data_format="channels_last")
    assert layer(normlab.Input(batch_shape=(1, None, 3))).shape == (1, None, 3)
    assert layers.ZeroPadding1D((1, 2))(normlab.Input(batch_shape=(1, 2, 3))).shape == (1, 5, 3)


@pytest.mark.parametrize("padding", [(1,), (1, 2, 3), "1"])
def test_zero_padding_1d_errors_if_padding_argument_invalid(padding):
    """Keras: ZeroPadding1DTest.test_zero_padding_1d_errors_if_padding_argument_invalid."""
    with pytest.raises(ValueError):
        layers.ZeroPadding1D(padding)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_zero_padding_1d_get_config(data_format):
    """Keras: ZeroPadding1DTest.test_zero_padding_1d_get_config (normlab's dtype entry is None until set)."""
    layer = layers.ZeroPadding1D(padding=(1, 2), data_format=data_format)
    assert layer.get_config() == {"dtype": None, "data_format": data_format, "name": layer.name,
                                  "padding": (1, 2), "trainable": True}


# ========================================================== ZeroPadding2D
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_zero_padding_2d(data_format):
    """Keras: ZeroPadding2DTest.test_zero_padding_2d."""
    inputs = rng.random((1, 2, 3, 4))
    outputs = layers.ZeroPadding2D(padding=((1, 2), (3, 4)), data_format=data_format)(inputs)
    if data_format == "channels_first":
        for index in [0, -1, -2]:
            np.testing.assert_allclose(outputs[:, :, index, :], 0.0)
        for index in [0, 1, 2, -1, -2, -3, -4]:
            np.testing.assert_allclose(outputs[:, :, :, index], 0.0)
        np.testing.assert_allclose(outputs[:, :, 1:-2, 3:-4], inputs)
    else:
        for index in [0, -1, -2]:
            np.testing.assert_allclose(outputs[:, index, :, :], 0.0)
        for index in [0, 1, 2, -1, -2, -3, -4]:
            np.testing.assert_allclose(outputs[:, :, index, :], 0.0)
        np.testing.assert_allclose(outputs[:, 1:-2, 3:-4, :], inputs)


@pytest.mark.parametrize("padding", [((2, 2), (2, 2)), (2, 2), 2])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_zero_padding_2d_with_same_padding(padding, data_format):
    """Keras: ZeroPadding2DTest.test_zero_padding_2d_with_same_padding."""
    inputs = rng.random((1, 2, 3, 4))
    outputs = layers.ZeroPadding2D(padding=padding, data_format=data_format)(inputs)
    if data_format == "channels_first":
        for index in [0, 1, -1, -2]:
            np.testing.assert_allclose(outputs[:, :, index, :], 0.0)
            np.testing.assert_allclose(outputs[:, :, :, index], 0.0)
        np.testing.assert_allclose(outputs[:, :, 2:-2, 2:-2], inputs)
    else:
        for index in [0, 1, -1, -2]:
            np.testing.assert_allclose(outputs[:, index, :, :], 0.0)
            np.testing.assert_allclose(outputs[:, :, index, :], 0.0)
        np.testing.assert_allclose(outputs[:, 2:-2, 2:-2, :], inputs)


def test_zero_padding_2d_with_dynamic_spatial_dim():
    """Keras: ZeroPadding2DTest.test_zero_padding_2d_with_dynamic_spatial_dim."""
    out = layers.ZeroPadding2D(((1, 2), (3, 4)))(normlab.Input(batch_shape=(1, 2, None, 4)))
    assert out.shape == (1, 5, None, 4)


@pytest.mark.parametrize("padding", [(1,), (1, 2, 3), "1", ((1, 2), (3, 4, 5)), ((1, 2), (3, -4)), ((1, 2), "3")])
def test_zero_padding_2d_errors_if_padding_argument_invalid(padding):
    """Keras: ZeroPadding2DTest.test_zero_padding_2d_errors_if_padding_argument_invalid."""
    with pytest.raises(ValueError):
        layers.ZeroPadding2D(padding)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_zero_padding_2d_get_config(data_format):
    """Keras: ZeroPadding2DTest.test_zero_padding_2d_get_config."""
    layer = layers.ZeroPadding2D(padding=(1, 2), data_format=data_format)
    assert layer.get_config() == {"data_format": data_format, "dtype": None, "name": layer.name,
                                  "padding": ((1, 1), (2, 2)), "trainable": True}


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_zero_padding_3d(data_format):
    """Keras: ZeroPadding3DTest.test_zero_padding_3d (the asymmetric case)."""
    inputs = rng.random((1, 2, 3, 4, 5))
    outputs = layers.ZeroPadding3D(padding=((1, 2), (3, 4), (0, 2)), data_format=data_format)(inputs)
    if data_format == "channels_first":
        np.testing.assert_allclose(outputs[:, :, 1:-2, 3:-4, 0:-2], inputs)
        assert outputs.shape == (1, 2, 6, 11, 7)
    else:
        np.testing.assert_allclose(outputs[:, 1:-2, 3:-4, 0:-2, :], inputs)
        assert outputs.shape == (1, 5, 10, 6, 5)
    assert np.sum(outputs) == pytest.approx(np.sum(inputs))


# ============================================================== UpSampling
def test_upsampling_1d():
    """Keras: UpSamplingTest.test_upsampling_1d."""
    run_layer_test(layers.UpSampling1D, {"size": 2}, (3, 5, 4), (3, 10, 4), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0)


def test_upsampling_1d_correctness():
    """Keras: UpSamplingTest.test_upsampling_1d_correctness / _with_ones."""
    out = layers.UpSampling1D(size=2)(np.arange(12).reshape((2, 2, 3)))
    np.testing.assert_allclose(out, [[[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]],
                                     [[6, 7, 8], [6, 7, 8], [9, 10, 11], [9, 10, 11]]])
    np.testing.assert_allclose(layers.UpSampling1D(size=3)(np.ones((2, 1, 5))), np.ones((2, 3, 5)))


def test_upsampling_1d_with_dynamic_shape():
    """Keras: UpSamplingTest.test_upsampling_1d_with_dynamic_batch_size / _with_dynamic_shape."""
    x = normlab.Input(batch_shape=(None, 2, 3))
    assert layers.UpSampling1D(size=2)(x).shape == (None, 4, 3)
    assert layers.UpSampling1D(size=4)(x).shape == (None, 8, 3)
    y = normlab.Input(batch_shape=(2, None, 3))
    assert layers.UpSampling1D(size=2)(y).shape == (2, None, 3)
    z = normlab.Input(batch_shape=(2, 3, None))
    assert layers.UpSampling1D(size=4)(z).shape == (2, 12, None)


@pytest.mark.parametrize("size", [0, -2, 2.5, "2", True])
def test_upsampling_1d_with_invalid_size(size):
    """Keras: UpSamplingTest.test_upsampling_1d_with_invalid_size (normlab's template)."""
    with pytest.raises((TypeError, ValueError), match="'size' parameter of UpSampling1D"):
        layers.UpSampling1D(size=size)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("length_col", [2, 3])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling_2d(data_format, length_col, interpolation):
    """Keras: UpSampling2dTest.test_upsampling_2d / test_upsampling_2d_bilinear (length_row 2)."""
    shape = (2, 2, 11, 12) if data_format == "channels_first" else (2, 11, 12, 2)
    inputs = rng.random(shape)
    out_shape = list(shape)
    axes = (2, 3) if data_format == "channels_first" else (1, 2)
    out_shape[axes[0]] *= 2
    out_shape[axes[1]] *= 2
    run_layer_test(layers.UpSampling2D, {"size": (2, 2), "data_format": data_format,
                                         "interpolation": interpolation}, shape, tuple(out_shape))
    layer = layers.UpSampling2D(size=(2, length_col), data_format=data_format, interpolation=interpolation)
    layer.build(inputs.shape)
    out = layer(inputs)
    assert out.shape[axes[0]] == 2 * 11 and out.shape[axes[1]] == length_col * 12
    if interpolation == "nearest":
        np.testing.assert_allclose(out, np.repeat(np.repeat(inputs, 2, axis=axes[0]), length_col, axis=axes[1]),
                                   rtol=1e-6)


def test_upsampling_2d_correctness():
    """Keras: UpSampling2dTest.test_upsampling_2d_correctness."""
    x = np.arange(12).reshape((2, 2, 1, 3))
    expected = [[[[0, 1, 2], [0, 1, 2]], [[3, 4, 5], [3, 4, 5]]],
                [[[6, 7, 8], [6, 7, 8]], [[9, 10, 11], [9, 10, 11]]]]
    np.testing.assert_allclose(layers.UpSampling2D(size=(1, 2))(x), expected)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear",
                                           pytest.param("bicubic", marks=pytest.mark.xfail(
                                               strict=True, raises=ValueError,
                                               reason="normlab's UpSampling2D has nearest and bilinear only")),
                                           pytest.param("lanczos3", marks=pytest.mark.xfail(
                                               strict=True, raises=ValueError,
                                               reason="normlab's UpSampling2D has nearest and bilinear only"))])
def test_upsampling_2d_various_interpolation_methods(interpolation):
    """Keras: UpSampling2dTest.test_upsampling_2d_various_interpolation_methods / _lanczos_interpolation_methods."""
    x = np.arange(12).reshape((2, 2, 1, 3))
    assert layers.UpSampling2D(size=(1, 2), interpolation=interpolation)(x).shape == (2, 2, 2, 3)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_upsampling_3d(data_format):
    """Keras: UpSampling3dTest.test_upsampling_3d / _correctness (nearest: each entry repeated)."""
    shape = (2, 2, 3, 4, 5) if data_format == "channels_first" else (2, 3, 4, 5, 2)
    x = rng.random(shape)
    axes = (2, 3, 4) if data_format == "channels_first" else (1, 2, 3)
    out = layers.UpSampling3D(size=(2, 1, 3), data_format=data_format)(x)
    expected = np.repeat(np.repeat(x, 2, axis=axes[0]), 3, axis=axes[2])
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_bilinear_matches_keras():
    """Live: UpSampling2D(interpolation='bilinear') gives Keras's numbers (skipped without keras)."""
    keras = pytest.importorskip("keras")
    x = rng.random((2, 5, 6, 3)).astype("float32")
    for size in [(2, 2), (2, 3), (3, 1)]:
        expected = np.asarray(keras.layers.UpSampling2D(size, interpolation="bilinear")(x))
        np.testing.assert_allclose(layers.UpSampling2D(size, interpolation="bilinear")(x), expected, atol=1e-6)


# ============================================ normlab's own: gradients in float64
@pytest.mark.parametrize("make, shape", [
    (lambda: layers.Permute((3, 1, 2)), (2, 3, 4, 2)),
    (lambda: layers.RepeatVector(3), (2, 4)),
    (lambda: layers.Cropping2D(((1, 0), (0, 2)), data_format="channels_first"), (2, 2, 4, 5)),
    (lambda: layers.ZeroPadding1D((2, 1)), (2, 3, 2)),
    (lambda: layers.UpSampling2D((2, 3)), (2, 3, 2, 2)),
    (lambda: layers.UpSampling2D((3, 2), interpolation="bilinear", data_format="channels_first"), (1, 2, 3, 4)),
    (lambda: layers.UpSampling3D(2), (1, 2, 2, 2, 1)),
], ids=["permute", "repeat_vector", "cropping2d_cf", "zero_padding1d", "upsampling2d", "bilinear_cf",
        "upsampling3d"])
def test_backward_matches_central_differences(make, shape):
    """Not a Keras test: dL/dx of the reshaping layers normlab added, against central differences in float64."""
    g = np.random.default_rng(0)
    x = g.normal(size=shape)
    layer = make()
    y = layer(x, training=True)
    w = g.normal(size=y.shape)
    dx = layer.backward(w)
    num = np.empty_like(x)
    eps = 1e-6
    for i in np.ndindex(shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        num[i] = (np.sum(w * layer(xp)) - np.sum(w * layer(xm))) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
