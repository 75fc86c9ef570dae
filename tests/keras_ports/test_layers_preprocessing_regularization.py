"""Keras 3's preprocessing (Normalization, Rescaling) and regularization layer tests, ported
(keras/src/layers/preprocessing/{normalization,rescaling}_test.py,
keras/src/layers/regularization/{alpha_dropout,gaussian_dropout,activity_regularization}_test.py).

Each test names the Keras test it ports (Dropout, GaussianNoise and
SpatialDropout: test_layers_ports.py and tests/layers/test_keras_layer_ports.py).
tf.data, grain and the torch meta device are Keras-backend matters with no
normlab counterpart. Keras's ``Normalization.mean`` has the input's rank
(``(1, 7)``); normlab's has the kept axes' shape (``(7,)``): the ports check
the values where Keras checks the shape (docs/keras.md).
"""

import numpy as np
import pytest

import normlab
from normlab import layers
from normlab.utils import PyDataset

from _layer_harness import run_layer_test

rng = np.random.default_rng(1337)


# =========================================================== Normalization
@pytest.mark.parametrize("init_kwargs, n_buffers", [
    ({"axis": -1}, 2),
    ({"axis": -1, "mean": np.array([0.5, 0.2, -0.1]), "variance": np.array([0.1, 0.2, 0.3])}, 2),
    ({"axis": -1, "mean": np.array([0.5, 0.2, -0.1]), "variance": np.array([0.1, 0.2, 0.3]), "invert": True}, 2),
], ids=["adapt", "fixed", "invert"])
def test_normalization_basics(init_kwargs, n_buffers):
    """Keras: NormalizationTest.test_normalization_basics (Keras counts 3 non-trainable weights for an adaptable
    layer, mean, variance and count, and 0 for fixed statistics; normlab keeps mean and variance as buffers)."""
    run_layer_test(layers.Normalization, init_kwargs, (2, 3), (2, 3), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=n_buffers)


def _check_standardized(layer, x, axes):
    out = layer(x)
    np.testing.assert_allclose(np.var(out, axis=axes), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.mean(out, axis=axes), 0.0, atol=1e-5)


def test_normalization_adapt():
    """Keras: NormalizationTest.test_normalization_adapt (np; tensors are arrays here; tf.data: batches below)."""
    x = rng.random((32, 4))
    layer = layers.Normalization()
    layer.adapt(x)
    assert layer.built
    _check_standardized(layer, x, 0)
    x = rng.random((32, 4, 3, 5))
    layer = layers.Normalization(axis=(1, 2))
    layer.adapt(x)
    _check_standardized(layer, x, (0, 3))


@pytest.mark.parametrize("kwargs", [{"mean": 0.5}, {"variance": 0.1}], ids=["mean_only", "variance_only"])
def test_normalization_with_one_statistic_raises_error(kwargs):
    """Keras: NormalizationTest.test_normalization_with_mean_only_raises_error / _variance_only_raises_error."""
    with pytest.raises(ValueError, match="Normalization must be given together"):
        layers.Normalization(**kwargs)


@pytest.mark.parametrize("axis, shape", [(3, (2, 2)), (-4, (2, 3, 4))], ids=["too_high", "too_low"])
def test_normalization_axis_out_of_range(axis, shape):
    """Keras: NormalizationTest.test_normalization_axis_too_high / _too_low."""
    with pytest.raises(ValueError, match="out of range"):
        layers.Normalization(axis=axis).build(shape)


def test_normalization_unknown_axis_shape():
    """Keras: NormalizationTest.test_normalization_unknown_axis_shape (a kept axis of unknown size: refused on a
    symbolic input; normlab's build reads None as 1, as Layer.build_from_shape documents)."""
    layer = layers.Normalization(axis=1)
    layer.build((None, None))
    assert layer.mean.shape == (1,)


def test_normalization_adapt_with_incompatible_shape():
    """Keras: NormalizationTest.test_normalization_adapt_with_incompatible_shape."""
    layer = layers.Normalization(axis=-1)
    layer.build((10, 5))
    with pytest.raises(ValueError, match="an incompatible shape"):
        layer.adapt(rng.random((10, 3)))


def test_normalization_with_fixed_statistics_in_a_batch_loop():
    """Keras: NormalizationTest.test_tf_data_compatibility (the layer mapped over batches of one)."""
    x = rng.random((32, 3))
    layer = layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[0.1, 0.2, 0.3], axis=-1)
    layer.build((None, 3))
    out = np.concatenate([layer(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(out, (x - [0.1, 0.2, 0.3]) / np.sqrt([0.1, 0.2, 0.3]), rtol=1e-5)


def test_normalization_with_scalar_mean_var():
    """Keras: NormalizationTest.test_normalization_with_scalar_mean_var."""
    out = layers.Normalization(mean=3.0, variance=2.0)(np.array([[1, 2, 3]], dtype="float32"))
    np.testing.assert_allclose(out, (np.array([[1, 2, 3]]) - 3.0) / np.sqrt(2.0), rtol=1e-6)


@pytest.mark.parametrize("kind", ["x", "x_and_y", "x_y_and_weights"])
def test_adapt_pydataset_compat(kind):
    """Keras: NormalizationTest.test_adapt_pydataset_compat (10 batches here, not 100)."""
    g = np.random.default_rng(0)

    class CustomDataset(PyDataset):
        def __len__(self):
            return 10

        def __getitem__(self, idx):
            x = g.random((32, 32, 3))
            y = g.integers(0, 10, size=(1,))
            w = g.integers(0, 10, size=(1,))
            return {"x": x, "x_and_y": (x, y), "x_y_and_weights": (x, y, w)}[kind]

    normalizer = layers.Normalization()
    normalizer.adapt(CustomDataset())
    assert normalizer.built
    assert normalizer.mean.shape[-1] == 3 and normalizer.variance.shape[-1] == 3
    # Keras then calls the layer on (1, 32, 32, 3): a rank above the batches' (its statistics broadcast);
    # normlab checks the rank it was built for (docs/keras.md), so the call has the batches' rank
    assert normalizer(g.random((1, 32, 3))).shape == (1, 32, 3)


def test_broadcast_non_scalar_middle_axis():
    """Keras: NormalizationTest.test_broadcast_non_scalar_middle_axis (normlab's mean has the kept axes' shape)."""
    custom_mean = np.arange(1, 6, dtype="float32")
    layer = layers.Normalization(axis=2, mean=custom_mean, variance=np.ones((5,), "float32"))
    layer.build((2, 4, 5, 3))
    assert layer.mean.shape == (5,)
    np.testing.assert_allclose(layer.mean, custom_mean)
    x = rng.random((2, 4, 5, 3))
    np.testing.assert_allclose(layer(x), x - custom_mean[None, None, :, None], rtol=1e-5, atol=1e-6)


def test_broadcast_multiple_axes():
    """Keras: NormalizationTest.test_broadcast_multiple_axes."""
    layer = layers.Normalization(axis=(1, 2), mean=np.zeros((10, 13)), variance=np.ones((10, 13)))
    layer.build((None, 10, 13, 3))
    assert layer.mean.shape == (10, 13)


def test_broadcast_partial_keep_axis():
    """Keras: NormalizationTest.test_broadcast_partial_keep_axis (right-to-left alignment of a 1-D mean)."""
    custom_mean = np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype="float32")
    layer = layers.Normalization(axis=(1, 2), mean=custom_mean, variance=np.ones((5,), "float32"))
    layer.build((2, 7, 5, 3))
    assert layer.mean.shape == (7, 5)
    np.testing.assert_allclose(layer.mean[0], custom_mean)
    np.testing.assert_allclose(layer.mean[6], custom_mean)


def test_scalar_broadcast():
    """Keras: NormalizationTest.test_scalar_broadcast."""
    layer = layers.Normalization(axis=-1, mean=5.0, variance=1.0)
    layer.build((3, 7))
    assert layer.mean.shape == (7,)
    np.testing.assert_allclose(layer.mean, [5.0] * 7)


X32 = rng.random((32, 4)).astype("float32")


@pytest.mark.parametrize("make", [
    lambda: [X32[:8], X32[8:16], X32[16:24], X32[24:32]],
    lambda: (X32[i:i + 8] for i in range(0, 32, 8)),
    lambda: iter([X32[i:i + 8] for i in range(0, 32, 8)]),
    lambda: [(X32[i:i + 8], np.zeros(8)) for i in range(0, 32, 8)],
    lambda: [X32],
], ids=["list_of_batches", "generator", "iterator_of_batches", "iterable_with_tuples", "iterable_single_batch"])
def test_adapt_iterables(make):
    """Keras: NormalizationTest.test_adapt_list_of_batches, test_adapt_generator, test_adapt_iterator_of_batches,
    test_adapt_iterable_with_tuples, test_adapt_iterable_single_batch."""
    layer = layers.Normalization(axis=-1)
    layer.adapt(make())
    assert layer.built
    _check_standardized(layer, X32, 0)


def test_adapt_iterable_same_result_as_ndarray():
    """Keras: NormalizationTest.test_adapt_iterable_same_result_as_ndarray."""
    x = rng.random((64, 5)).astype("float32")
    by_list = layers.Normalization(axis=-1).adapt([x[i:i + 16] for i in range(0, 64, 16)])
    by_array = layers.Normalization(axis=-1).adapt(x)
    np.testing.assert_allclose(by_list(x[:10]), by_array(x[:10]), atol=1e-5)


def test_adapt_iterable_axis_none():
    """Keras: NormalizationTest.test_adapt_iterable_axis_none."""
    x = rng.random((20, 2, 3)).astype("float32")
    layer = layers.Normalization(axis=None)
    layer.adapt([x[i:i + 5] for i in range(0, 20, 5)])
    out = layer(x)
    np.testing.assert_allclose(np.var(out), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.mean(out), 0.0, atol=1e-5)


def test_adapt_iterable_high_dim_axis_tuple():
    """Keras: NormalizationTest.test_adapt_iterable_high_dim_axis_tuple."""
    x = rng.random((32, 4, 3, 5)).astype("float32")
    layer = layers.Normalization(axis=(1, 2))
    layer.adapt([x[i:i + 8] for i in range(0, 32, 8)])
    _check_standardized(layer, x, (0, 3))


@pytest.mark.parametrize("make", [lambda: [], lambda: (b for b in ())], ids=["list", "generator"])
def test_adapt_empty_iterable_raises(make):
    """Keras: NormalizationTest.test_adapt_empty_iterable_raises / test_adapt_empty_generator_raises."""
    layer = layers.Normalization(axis=-1)
    with pytest.raises(ValueError, match="empty iterable"):
        layer.adapt(make())
    assert not layer.built


def test_adapt_iterable_incompatible_shape_raises():
    """Keras: NormalizationTest.test_adapt_iterable_incompatible_shape_raises (and nothing changes)."""
    layer = layers.Normalization(axis=-1)
    with pytest.raises(ValueError, match="incompatible shape"):
        layer.adapt(b for b in (rng.random((8, 4)), rng.random((8, 6))))
    assert not layer.built


def test_adapt_iterable_batch_without_shape_raises():
    """Keras: NormalizationTest.test_adapt_iterable_batch_without_shape_raises."""
    with pytest.raises(TypeError, match="`.shape`"):
        layers.Normalization(axis=-1).adapt(b for b in (42,))


def test_adapt_dataset_with_labels():
    """Keras: NormalizationTest.test_adapt_tf_dataset_with_labels (batches of (x, y) from a generator)."""
    x, y = np.ones((32, 3), "float32"), np.ones((32,), "int32")
    layer = layers.Normalization()
    layer.adapt((x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8))
    np.testing.assert_allclose(layer.mean, np.ones(3))
    np.testing.assert_allclose(layer.variance, np.zeros(3))


def test_adapt_merges_batches_exactly():
    """Not a Keras test: batches of unequal sizes give the statistics of the concatenated data (float64)."""
    x = rng.normal(3.0, 2.0, size=(37, 4))
    layer = layers.Normalization(dtype="float64").adapt([x[:5], x[5:6], x[6:30], x[30:]])
    np.testing.assert_allclose(layer.mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(layer.variance, x.var(axis=0), rtol=1e-12)


# =============================================================== Rescaling
@pytest.mark.parametrize("init_kwargs", [{"scale": 1.0 / 255, "offset": 0.5}, {"scale": 2, "offset": 0.5},
                                         {"scale": 1.0, "offset": 2},
                                         {"scale": np.array(1.0 / 255.0), "offset": np.array(0.5)}],
                         ids=["basics", "int_scale", "int_offset", "numpy_args"])
def test_rescaling_basics(init_kwargs):
    """Keras: RescalingTest.test_rescaling_basics, test_rescaling_dtypes, test_numpy_args."""
    run_layer_test(layers.Rescaling, init_kwargs, (2, 3), (2, 3), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0)


def test_rescaling_int_inputs():
    """Keras: RescalingTest.test_rescaling_dtypes (int16 inputs: computed in float32)."""
    x = np.arange(6, dtype="int16").reshape(2, 3)
    out = layers.Rescaling(scale=1.0 / 255, offset=0.5)(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x / 255 + 0.5, rtol=1e-6)


def test_rescaling_correctness():
    """Keras: RescalingTest.test_rescaling_correctness."""
    x = rng.random((3, 10, 10, 3)) * 255
    np.testing.assert_allclose(layers.Rescaling(scale=1.0 / 255, offset=0.5)(x), x / 255 + 0.5, rtol=1e-6)


def test_rescaling_with_channels_first_and_vector_scale():
    """Keras: RescalingTest.test_rescaling_with_channels_first_and_vector_scale (Keras reshapes a vector scale
    to the channels axis under image_data_format='channels_first'; normlab has no global data format)."""
    layer = layers.Rescaling(scale=[1.0 / 255, 1.5 / 255, 2.0 / 255], offset=0.5)
    x = rng.random((2, 10, 10, 3)) * 255
    np.testing.assert_allclose(layer(x), x * np.array([1.0, 1.5, 2.0]) / 255 + 0.5, rtol=1e-6)


# ============================================================ AlphaDropout
def test_alpha_dropout_basics():
    """Keras: AlphaDropoutTest.test_alpha_dropout_basics."""
    run_layer_test(layers.AlphaDropout, {"rate": 0.2}, (2, 3), (2, 3), training=True,
                   expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)


def test_alpha_dropout_correctness():
    """Keras: AlphaDropoutTest.test_alpha_dropout_correctness."""
    out = layers.AlphaDropout(0.3, seed=1337)(np.ones((20, 500), "float32"), training=True)
    np.testing.assert_allclose(np.std(out), 1.0, atol=1e-1)


@pytest.mark.parametrize("noise_shape", [(None, 1, None), (20, 1, 10)], ids=["dynamic", "static"])
def test_alpha_dropout_partial_noise_shape(noise_shape):
    """Keras: AlphaDropoutTest.test_alpha_dropout_partial_noise_shape_dynamic / _static."""
    out = layers.AlphaDropout(0.5, noise_shape=noise_shape)(np.ones((20, 5, 10)), training=True)
    np.testing.assert_allclose(out[:, 0, :], out[:, 1, :])


@pytest.mark.parametrize("rate", [-0.5, 1.5], ids=["negative_rate", "rate_greater_than_one"])
def test_alpha_dropout_invalid_rate(rate):
    """Keras: AlphaDropoutTest.test_alpha_dropout_negative_rate / _rate_greater_than_one (normlab's template)."""
    with pytest.raises(ValueError, match="'rate' parameter of AlphaDropout"):
        layers.AlphaDropout(rate=rate)


# ========================================================= GaussianDropout
def test_gaussian_dropout_basics():
    """Keras: GaussianDropoutTest.test_gaussian_dropout_basics."""
    run_layer_test(layers.GaussianDropout, {"rate": 0.2}, (2, 3), (2, 3), training=True,
                   expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)


def test_gaussian_dropout_correctness():
    """Keras: GaussianDropoutTest.test_gaussian_dropout_correctness."""
    out = layers.GaussianDropout(0.3, seed=1337)(np.ones((20, 500)), training=True)
    np.testing.assert_allclose(np.std(out), np.sqrt(0.3 / (1 - 0.3)), atol=0.02)


# ================================================== ActivityRegularization
def test_activity_regularization_correctness():
    """Keras: ActivityRegularizationTest.test_correctness."""
    layer = layers.ActivityRegularization(l1=0.2, l2=0.3)
    layer(2 * np.ones((1,)))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(layer.losses[0], 4 * 0.3 + 2 * 0.2)


def test_activity_regularization_basics():
    """Keras: ActivityRegularizationTest.test_activity_regularization_basics (one loss)."""
    layer = run_layer_test(layers.ActivityRegularization, {"l1": 0.1, "l2": 0.2}, (2, 3), (2, 3),
                           expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)
    assert len(layer.losses) == 1


def test_activity_regularization_in_a_model_step(rng):
    """Not a Keras test: a model's loss adds (l1 sum|h| + l2 sum h^2) / batch, and its gradient reaches the
    weights (checked against central differences of the whole loss, float64)."""
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    model = normlab.Sequential([normlab.Input((3,)), layers.Dense(2, dtype="float64"),
                                layers.ActivityRegularization(l1=0.05, l2=0.1, dtype="float64")])
    model.compile(optimizer="sgd", loss="mse")

    def loss():
        h = model.predict(x, verbose=0)
        return np.mean((h - y) ** 2) + (0.05 * np.abs(h).sum() + 0.1 * (h ** 2).sum()) / 6

    np.testing.assert_allclose(model.compute_loss_value(x, y), loss(), rtol=1e-10)
    grads = model.compute_gradients(x, y)
    dense = model.layers[0]
    kernel = dense.params["kernel"]  # after compile's first step: a view into the model's flat buffer
    num = np.empty_like(kernel)
    eps = 1e-6
    for i in np.ndindex(kernel.shape):
        old = kernel[i]
        kernel[i] = old + eps
        fp = loss()
        kernel[i] = old - eps
        fm = loss()
        kernel[i] = old
        num[i] = (fp - fm) / (2 * eps)
    np.testing.assert_allclose(grads[(dense, "kernel")], num, rtol=1e-6, atol=1e-9)


def test_activity_regularization_backward_matches_central_differences(rng):
    """Not a Keras test: dP/dx of the layer, with P added to sum(w * y), in float64."""
    x = rng.normal(size=(4, 3))
    layer = layers.ActivityRegularization(l1=0.3, l2=0.2)
    w = rng.normal(size=x.shape)
    layer(x, training=True)
    dx = layer.backward(w)

    def f(z):
        out = layer(z)
        return np.sum(w * out) + layer.losses[0]

    num = np.empty_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += 1e-6
        xm[i] -= 1e-6
        num[i] = (f(xp) - f(xm)) / 2e-6
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
