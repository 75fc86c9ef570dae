"""Keras 3's normalization layer tests, ported (keras/src/layers/normalization/*_test.py).

Each test names the Keras test it ports. Keras's ``run_layer_test`` is
:func:`tests/keras_ports/_layer_harness.py`; Keras's ``layer.gamma``,
``layer.moving_mean`` (variables) are normlab's arrays of the same names.
Batch renormalization and ``rms_scaling`` are ported in
tests/layers/test_keras_normalization_ports.py. Masks (Keras's ``Masking``
layer and ``mask=`` argument) are not part of normlab: the masked cases are
one strict xfail below, listed in docs/keras.md.
"""

import numpy as np
import pytest

from normlab import constraints, layers, regularizers

from _layer_harness import run_layer_test


# ===================================================== BatchNormalization
@pytest.mark.parametrize("init_kwargs, input_shape, n_trainable, n_losses", [
    (dict(center=True, scale=True), (2, 3), 2, 0),
    (dict(center=False, scale=False), (2, 3), 0, 0),
    (dict(center=True, scale=True, beta_regularizer="l2", gamma_regularizer="l2"), (2, 4, 4, 3), 2, 2),
], ids=["vector", "no_center_no_scale", "image_regularizers"])
def test_bn_basics(init_kwargs, input_shape, n_trainable, n_losses):
    """Keras: BatchNormalizationTest.test_bn_basics."""
    run_layer_test(layers.BatchNormalization, init_kwargs, input_shape, input_shape,
                   expected_num_trainable_weights=n_trainable, expected_num_non_trainable_weights=2,
                   expected_num_losses=n_losses, training=True)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("input_shape", [(5, 2, 3), (5, 3, 3, 2)])
@pytest.mark.parametrize("moving_mean_initializer", ["zeros", "ones"])
@pytest.mark.parametrize("moving_variance_initializer", ["zeros", "ones"])
def test_correctness(axis, input_shape, moving_mean_initializer, moving_variance_initializer):
    """Keras: BatchNormalizationTest.test_correctness (the unmasked part; the masked part: test_masks)."""
    layer = layers.BatchNormalization(axis=axis, momentum=0, moving_mean_initializer=moving_mean_initializer,
                                      moving_variance_initializer=moving_variance_initializer)
    x = np.random.default_rng(0).normal(loc=5.0, scale=10.0, size=input_shape)
    out = x
    for _ in range(3):
        out = layer(out, training=True)
    broadcast_shape = [1] * len(input_shape)
    broadcast_shape[axis] = input_shape[axis]
    out = (out - np.reshape(layer.beta, broadcast_shape)) / np.reshape(layer.gamma, broadcast_shape)
    reduction_axes = list(range(len(input_shape)))
    del reduction_axes[axis]
    np.testing.assert_allclose(np.mean(out, axis=tuple(reduction_axes)), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.std(out, axis=tuple(reduction_axes)), 1.0, atol=1e-3)
    np.testing.assert_allclose(layer.moving_mean, 0.0, atol=1e-3)
    np.testing.assert_allclose(layer.moving_variance, 1.0, atol=1e-3)
    inference_out = layer(x, training=False)
    training_out = layer(x, training=True)
    assert not np.allclose(inference_out, training_out)
    training_out = layer(x, training=True)
    inference_out = layer(x, training=False)
    np.testing.assert_allclose(inference_out, training_out, rtol=1e-6, atol=1e-6)


def test_trainable_behavior():
    """Keras: BatchNormalizationTest.test_trainable_behavior (a frozen BN normalizes with its moving statistics)."""
    layer = layers.BatchNormalization(axis=-1, momentum=0.8, epsilon=1e-7)
    layer.build((1, 4, 4, 3))
    layer.trainable = False
    assert len(layer.weights) == 4
    assert len(layer.trainable_weights) == 0
    assert len(layer.non_trainable_weights) == 4
    x = np.random.default_rng(0).normal(loc=5.0, scale=10.0, size=(200, 4, 4, 3))
    out = layer(x, training=True)
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)
    layer.trainable = True
    assert len(layer.weights) == 4
    assert len(layer.trainable_weights) == 2
    assert len(layer.non_trainable_weights) == 2
    for _ in range(10):
        out = layer(x, training=True)
    out = (out - np.reshape(layer.beta, (1, 1, 1, 3))) / np.reshape(layer.gamma, (1, 1, 1, 3))
    np.testing.assert_allclose(np.mean(out, axis=(0, 1, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.std(out, axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_large_value_within_autocast_scope():
    """Keras: BatchNormalizationTest.test_large_value_within_autocast_scope (normlab has no float16 autocast:
    a float32 moving variance of 70000 is kept exactly)."""
    layer = layers.BatchNormalization()
    layer.build((1, 4, 4, 3))
    layer.moving_variance[...] = 70000
    np.testing.assert_array_equal(layer.moving_variance, np.full((3,), 70000.0))


@pytest.mark.xfail(strict=True, raises=TypeError, reason="normlab has no masks (Keras's Masking layer and mask=)")
def test_masks():
    """Keras: BatchNormalizationTest.test_input_fully_masked, test_bachnorm_ignore_masked_values,
    test_masked_broadcast_normalization, and the masked half of test_correctness."""
    norm = layers.BatchNormalization(scale=False, center=False)
    y = norm(np.zeros((4, 5)), mask=np.zeros((4,), np.float32), training=True)
    np.testing.assert_allclose(y, np.zeros((4, 5)))


def test_bn_serialization():
    """Keras: BatchNormalizationTest.test_serialization."""
    layer = layers.BatchNormalization(renorm=True, renorm_clipping={"rmax": 3.0, "rmin": 0.3, "dmax": 5.0},
                                      renorm_momentum=0.95)
    config = layer.get_config()
    assert layers.BatchNormalization.from_config(config).get_config() == config


# ===================================================== LayerNormalization
@pytest.mark.parametrize("init_kwargs, input_shape, n_trainable, n_losses", [
    (dict(gamma_regularizer=regularizers.L2(0.01), beta_regularizer=regularizers.L2(0.01)), (3, 4, 2), 2, 2),
    (dict(gamma_initializer="ones", beta_initializer="ones"), (3, 4, 2), 2, 0),
    (dict(scale=False, center=False), (3, 3), 0, 0),
    (dict(axis=(-3, -2, -1)), (2, 8, 8, 3), 2, 0),
], ids=["regularizers", "initializers", "no_scale_no_center", "three_axes"])
def test_ln_basics(init_kwargs, input_shape, n_trainable, n_losses):
    """Keras: LayerNormalizationTest.test_ln_basics (rms_scaling: test_keras_normalization_ports.py)."""
    run_layer_test(layers.LayerNormalization, init_kwargs, input_shape, input_shape,
                   expected_num_trainable_weights=n_trainable, expected_num_non_trainable_weights=0,
                   expected_num_losses=n_losses)


def test_ln_basics_empty_axis():
    """Keras: LayerNormalizationTest.test_ln_basics (the (1, 0, 10) input: an empty axis other than the normalized
    one gives an empty output)."""
    layer = layers.LayerNormalization()
    assert layer(np.ones((1, 0, 10), np.float32)).shape == (1, 0, 10)
    assert len(layer.trainable_weights) == 2


def test_ln_invalid_axis():
    """Keras: LayerNormalizationTest.test_invalid_axis (normlab's message template, a ValueError)."""
    with pytest.raises(ValueError, match="'axis' parameter of LayerNormalization"):
        layers.LayerNormalization(axis={"axis": -1})


@pytest.mark.parametrize("axis", [2, 99, -3, -99, [0, 99]])
def test_out_of_bounds_axis(axis):
    """Keras: LayerNormalizationTest.test_out_of_bounds_axis (call, build and compute_output_shape agree)."""
    x = np.zeros((2, 4), dtype="float32")
    with pytest.raises(ValueError, match="out of range|batch axis"):
        layers.LayerNormalization(axis=axis)(x)
    with pytest.raises(ValueError, match="out of range|batch axis"):
        layers.LayerNormalization(axis=axis).build((2, 4))


@pytest.mark.parametrize("axis", [[-1, 1], [1, 1]])
def test_duplicate_axis(axis):
    """Keras: LayerNormalizationTest.test_duplicate_axis."""
    with pytest.raises(ValueError, match="LayerNormalization"):
        layers.LayerNormalization(axis=axis)(np.zeros((2, 4), dtype="float32"))


RANK_CHANGE = pytest.mark.xfail(
    strict=True, raises=ValueError,
    reason="normlab checks a call's input rank against the built one; Keras's test builds for rank 3 and calls "
           "with rank 4 (Keras then normalizes over the canonicalized axis 2, not the last axis)")


@pytest.mark.parametrize("build_shape", [pytest.param((2, 2, 2), marks=RANK_CHANGE), (2, 2, 2, 2)],
                         ids=["keras_rank3_build", "same_rank_build"])
def test_ln_correctness(build_shape):
    """Keras: LayerNormalizationTest.test_correctness (as written, and built for the rank it is called with)."""
    layer = layers.LayerNormalization(dtype="float32")
    layer.build(input_shape=build_shape)
    inputs = np.random.default_rng(0).normal(loc=5.0, scale=10.0, size=(1000, 2, 2, 2)).astype("float32")
    out = (layer(inputs) - layer.beta) / layer.gamma
    np.testing.assert_allclose(np.mean(out), 0.0, atol=1e-1)
    np.testing.assert_allclose(np.std(out), 1.0, atol=1e-1)


def test_ln_output():
    """Keras: LayerNormalizationTest.test_output."""
    layer = layers.LayerNormalization(dtype="float32", beta_initializer="ones", gamma_initializer="ones")
    out = layer(np.arange(5).astype("float32")[None, :])
    np.testing.assert_allclose(out, [[-0.41386, 0.29307, 1.0, 1.70693, 2.41386]], rtol=1e-5, atol=1e-5)


def test_ln_large_value_within_autocast_scope():
    """Keras: LayerNormalizationTest.test_large_value_within_autocast_scope (no float16 autocast in normlab)."""
    layer = layers.LayerNormalization()
    layer.build((1, 4, 4, 3))
    layer.gamma[...] = 70000
    np.testing.assert_array_equal(layer.gamma, np.full((3,), 70000.0))


@pytest.mark.parametrize("cls", [layers.LayerNormalization, layers.RMSNormalization])
def test_unsorted_axis(cls):
    """Keras: LayerNormalizationTest.test_unsorted_axis, RMSNormalizationTest.test_unsorted_axis."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype("float32")
    out_sorted = cls(axis=[-2, -1])(x)
    out_unsorted = cls(axis=[-1, -2])(x)
    assert out_sorted.shape == out_unsorted.shape == (2, 3, 4)
    np.testing.assert_allclose(out_sorted, out_unsorted, rtol=1e-6, atol=1e-6)


# ===================================================== GroupNormalization
def test_groupnorm():
    """Keras: GroupNormalizationTest.test_groupnorm (regularizers; constraints)."""
    run_layer_test(layers.GroupNormalization, dict(gamma_regularizer=regularizers.L2(0.01),
                                                   beta_regularizer=regularizers.L2(0.01)),
                   (3, 4, 32), (3, 4, 32), expected_num_trainable_weights=2,
                   expected_num_non_trainable_weights=0, expected_num_losses=2)
    layer = run_layer_test(layers.GroupNormalization, dict(groups=4, gamma_constraint=constraints.UnitNorm(),
                                                           beta_constraint=constraints.UnitNorm()),
                           (3, 4, 4), (3, 4, 4), expected_num_trainable_weights=2,
                           expected_num_non_trainable_weights=0, expected_num_losses=0)
    assert isinstance(layer.gamma_constraint, constraints.UnitNorm)


def test_undefined_dim_error():
    """Keras: GroupNormalizationTest.test_undefined_dim_error (an open channel axis on an Input)."""
    import normlab
    with pytest.raises(ValueError, match="GroupNormalization"):
        layers.GroupNormalization()(normlab.Input(shape=(2, 2, 2, None)))


def test_groups_bigger_than_dim_error():
    """Keras: GroupNormalizationTest.test_groups_bigger_than_dim_error."""
    with pytest.raises(ValueError, match="GroupNormalization"):
        layers.GroupNormalization(groups=5)(np.ones((2, 2, 2, 4)))


def test_groups_not_a_multiple_of_dim_error():
    """Keras: GroupNormalizationTest.test_groups_not_a_multiple_of_dim_error."""
    with pytest.raises(ValueError, match="GroupNormalization"):
        layers.GroupNormalization(groups=3)(np.ones((2, 2, 2, 4)))


def test_groups_rejects_invalid_values():
    """Keras: GroupNormalizationTest.test_groups_rejects_invalid_values (-1 is instance normalization)."""
    for bad in (0, -2, 1.5, "32"):
        with pytest.raises(ValueError, match="'groups' parameter of GroupNormalization"):
            layers.GroupNormalization(groups=bad)
    layers.GroupNormalization(groups=-1)


INSTANCE_IN = np.array([[[-1.0, 1.0, 0, 2.0], [1.0, 3.0, -4, -2.0]]])


def test_groups_instance_norm():
    """Keras: GroupNormalizationTest.test_groups_instance_norm."""
    out1 = layers.GroupNormalization(groups=-1, axis=-1, scale=False, center=False)(INSTANCE_IN)
    out2 = layers.GroupNormalization(groups=4, axis=-1, scale=False, center=False)(INSTANCE_IN)
    np.testing.assert_allclose(out1, out2)


def test_correctness_instance_norm():
    """Keras: GroupNormalizationTest.test_correctness_instance_norm."""
    out = layers.GroupNormalization(groups=4, axis=-1, scale=False, center=False)(INSTANCE_IN)
    np.testing.assert_allclose(out, [[[-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]]], atol=1e-3)


def test_correctness_1d():
    """Keras: GroupNormalizationTest.test_correctness_1d."""
    inputs = np.array([[-1.0, -1.0, 1.0, 1.0, 2.0, 2.0, 0, -2.0]])
    np.testing.assert_allclose(layers.GroupNormalization(groups=1, axis=-1, scale=False, center=False)(inputs),
                               [[-0.898, -0.898, 0.539, 0.539, 1.257, 1.257, -0.180, -1.616]], atol=1e-3)
    np.testing.assert_allclose(layers.GroupNormalization(groups=2, axis=1, scale=False, center=False)(inputs),
                               [[-1.0, -1.0, 1.0, 1.0, 0.904, 0.904, -0.301, -1.507]], atol=1e-3)


def test_correctness_2d():
    """Keras: GroupNormalizationTest.test_correctness_2d."""
    inputs = np.array([[[-1.0, -1.0, 2.0, 2.0], [1.0, 1.0, 0, -2.0]]])
    np.testing.assert_allclose(layers.GroupNormalization(groups=1, axis=-1, scale=False, center=False)(inputs),
                               [[[-0.898, -0.898, 1.257, 1.257], [0.539, 0.539, -0.180, -1.616]]], atol=1e-3)
    np.testing.assert_allclose(layers.GroupNormalization(groups=2, axis=2, scale=False, center=False)(inputs),
                               [[[-1.0, -1.0, 0.904, 0.904], [1.0, 1.0, -0.301, -1.507]]], atol=1e-3)


def test_broadcasting_2d_channels_first():
    """Keras: GroupNormalizationTest.test_broadcasting_2d_channels_first."""
    x = np.arange(16).reshape((1, 4, 2, 2)).astype("float32")
    out = layers.GroupNormalization(groups=2, axis=1)(x)
    a = [[-1.5274, -1.0910], [-0.6546, -0.2182]]
    b = [[0.2182, 0.6546], [1.0910, 1.5274]]
    np.testing.assert_allclose(out, [[a, b, a, b]], atol=1e-3)


def test_gn_large_value_within_autocast_scope():
    """Keras: GroupNormalizationTest.test_large_value_within_autocast_scope (no float16 autocast in normlab)."""
    layer = layers.GroupNormalization(groups=2)
    layer.build((1, 2, 4))
    layer.gamma[...] = 70000
    np.testing.assert_array_equal(layer.gamma, np.full((4,), 70000.0))


def test_mixed_precision_large_input_no_nan():
    """Keras: GroupNormalizationTest.test_mixed_precision_large_input_no_nan (float32 here: 70000 is finite)."""
    out = layers.GroupNormalization(groups=2)(np.full((2, 4, 8), 70000.0, np.float32))
    assert not np.isnan(out).any()


# ====================================================== UnitNormalization
@pytest.mark.parametrize("axis, shape", [(-1, (2, 3)), ((1, 2), (1, 3, 3))])
def test_un_basics(axis, shape):
    """Keras: UnitNormalizationTest.test_un_basics."""
    run_layer_test(layers.UnitNormalization, dict(axis=axis), shape, shape,
                   expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)


def test_un_invalid_axis():
    """Keras: UnitNormalizationTest.test_invalid_axis (normlab's message template, a ValueError)."""
    with pytest.raises(ValueError, match="'axis' parameter of UnitNormalization"):
        layers.UnitNormalization(axis={"axis": -1})


def test_un_correctness():
    """Keras: UnitNormalizationTest.test_correctness."""
    rng = np.random.default_rng(0)
    out = layers.UnitNormalization(axis=-1)(rng.normal(size=(2, 3)))
    np.testing.assert_allclose(np.sum(out ** 2, axis=1), 1.0)
    out = layers.UnitNormalization(axis=(1, 2))(rng.normal(size=(2, 3, 3)))
    np.testing.assert_allclose(np.sum(out ** 2, axis=(1, 2)), 1.0)
    out = layers.UnitNormalization(axis=1)(rng.normal(size=(2, 3, 2)))
    np.testing.assert_allclose(np.sum(out ** 2, axis=1), 1.0)


# ======================================================= RMSNormalization
@pytest.mark.parametrize("init_kwargs", [{}, {"axis": -1}])
def test_rms_basics(init_kwargs):
    """Keras: RMSNormalizationTest.test_ln_basics."""
    run_layer_test(layers.RMSNormalization, init_kwargs, (4, 2), (4, 2), expected_num_trainable_weights=1)


@pytest.mark.parametrize("build_shape", [pytest.param((2, 2, 2), marks=RANK_CHANGE), (2, 2, 2, 2)],
                         ids=["keras_rank3_build", "same_rank_build"])
def test_rms_correctness(build_shape):
    """Keras: RMSNormalizationTest.test_correctness (as written, and built for the rank it is called with)."""
    layer = layers.RMSNormalization()
    layer.build(input_shape=build_shape)
    inputs = np.random.default_rng(0).normal(loc=5.0, scale=10.0, size=(1000, 2, 2, 2)).astype("float32")
    expected = inputs / np.sqrt(np.mean(inputs ** 2, axis=-1, keepdims=True)) * layer.gamma
    np.testing.assert_allclose(layer(inputs), expected, atol=1e-1)


def test_rms_output():
    """Keras: RMSNormalizationTest.test_output."""
    out = layers.RMSNormalization()(np.arange(10).astype("float32")[None, :])
    np.testing.assert_allclose(out, [[0.0, 0.18731716, 0.37463433, 0.5619515, 0.74926865, 0.9365858, 1.123903,
                                      1.3112202, 1.4985373, 1.6858544]], rtol=1e-6)
