"""Keras 3's activation layer tests, ported (keras/src/layers/activations/*_test.py), and live comparisons.

Each test names the Keras test it ports. Keras's validation messages
("max_value of a ReLU layer cannot be a negative value") are normlab's one
template ("The 'max_value' parameter of ReLU must be ..."). Not Keras tests:
the float64 central-difference gradient checks at the end.
"""

import numpy as np
import pytest

from normlab import constraints, layers, regularizers

from _layer_harness import run_layer_test


# =================================================================== ReLU
def test_relu():
    """Keras: ReLUTest.test_relu."""
    run_layer_test(layers.ReLU, dict(max_value=10, negative_slope=1, threshold=0.5), (2, 3, 4), (2, 3, 4),
                   expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)


@pytest.mark.parametrize("kwargs, x, expected", [
    (dict(max_value=10, negative_slope=0.0, threshold=0), [-10, -5, 0.0, 5, 10], [0.0, 0.0, 0.0, 5.0, 10.0]),
    (dict(max_value=10, negative_slope=0.5, threshold=0), [-10, -5, 0.0, 5, 10], [-5.0, -2.5, 0.0, 5.0, 10.0]),
    (dict(max_value=8, negative_slope=0.0, threshold=5), [6.0, 7.0, 0.0, 5, 10], [6.0, 7.0, 0.0, 0.0, 8.0]),
    (dict(), [-3.0, -1.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0, 3.0]),
    (dict(max_value=None), [0.0, 100.0, 1000.0, 99999.0], [0.0, 100.0, 1000.0, 99999.0]),
], ids=["normal_relu_correctness", "leaky_relu_correctness", "threshold_relu_correctness",
        "default_relu_no_args", "relu_none_max_value_is_unlimited"])
def test_relu_correctness(kwargs, x, expected):
    """Keras: ReLUTest.test_{normal,leaky,threshold}_relu_correctness, test_default_relu_no_args,
    test_relu_none_max_value_is_unlimited (1-D inputs, as in Keras)."""
    np.testing.assert_allclose(layers.ReLU(**kwargs)(np.array(x)), expected)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(max_value=-10, negative_slope=1, threshold=0.5), "max_value"),
    (dict(max_value=10, negative_slope=-10, threshold=0.5), "negative_slope"),
    (dict(max_value=10, negative_slope=1, threshold=-10), "threshold"),
    (dict(negative_slope=None), "negative_slope"),
    (dict(threshold=None), "threshold"),
], ids=["max_value", "negative_slope", "threshold", "negative_slope_none", "threshold_none"])
def test_relu_invalid_usage(kwargs, arg):
    """Keras: ReLUTest.test_invalid_usage, test_negative_slope_none_raises, test_threshold_none_raises."""
    with pytest.raises(ValueError, match=f"'{arg}' parameter of ReLU"):
        layers.ReLU(**kwargs)


def test_relu_get_config():
    """Keras: ReLUTest.test_get_config, test_get_config_default_params, test_from_config."""
    config = layers.ReLU(max_value=5.0, negative_slope=0.2, threshold=1.0).get_config()
    assert (config["max_value"], config["negative_slope"], config["threshold"]) == (5.0, 0.2, 1.0)
    default = layers.ReLU().get_config()
    assert default["max_value"] is None and default["negative_slope"] == 0.0 and default["threshold"] == 0.0
    restored = layers.ReLU.from_config(config)
    assert (restored.max_value, restored.negative_slope, restored.threshold) == (5.0, 0.2, 1.0)


def test_relu_compute_output_shape():
    """Keras: ReLUTest.test_compute_output_shape."""
    relu = layers.ReLU()
    assert relu.compute_output_shape((2, 3)) == (2, 3)
    assert relu.compute_output_shape((4, 5, 6)) == (4, 5, 6)
    assert relu.compute_output_shape((1,)) == (1,)


def test_relu_all_zeros_and_multidimensional_input():
    """Keras: ReLUTest.test_relu_all_zeros_input, test_relu_multidimensional_input."""
    relu = layers.ReLU()
    np.testing.assert_allclose(relu(np.zeros((3, 4))), np.zeros((3, 4)))
    np.testing.assert_allclose(layers.ReLU()(np.array([[-1.0, 2.0], [3.0, -4.0]])), [[0.0, 2.0], [3.0, 0.0]])
    np.testing.assert_allclose(layers.ReLU()(-np.ones((2, 3, 4))), np.zeros((2, 3, 4)))


# ============================================================== LeakyReLU
def test_leaky_relu():
    """Keras: LeakyReLUTest.test_leaky_relu."""
    run_layer_test(layers.LeakyReLU, dict(negative_slope=1), (2, 3, 4), (2, 3, 4),
                   expected_num_trainable_weights=0)


def test_leaky_relu_correctness():
    """Keras: LeakyReLUTest.test_leaky_relu_correctness."""
    out = layers.LeakyReLU(negative_slope=0.5)(np.array([-10, -5, 0.0, 5, 10]))
    np.testing.assert_allclose(out, [-5.0, -2.5, 0.0, 5.0, 10.0])


def test_leaky_relu_invalid_usage():
    """Keras: LeakyReLUTest.test_invalid_usage (negative_slope=None)."""
    with pytest.raises(ValueError, match="'negative_slope' parameter of LeakyReLU"):
        layers.LeakyReLU(negative_slope=None)


def test_leaky_relu_default_is_keras():
    """Keras: LeakyReLU's default negative_slope is 0.3 (the layer; the function's is 0.2)."""
    assert layers.LeakyReLU().negative_slope == 0.3


# ================================================================== PReLU
def test_prelu():
    """Keras: PReLUTest.test_prelu (Keras's 'L1' and 'MaxNorm' names; shared_axes=1)."""
    layer = run_layer_test(layers.PReLU, dict(alpha_initializer="zeros", alpha_regularizer="L1",
                                              alpha_constraint="MaxNorm", shared_axes=1),
                           (2, 3, 4), (2, 3, 4), expected_num_trainable_weights=1)
    assert layer.alpha.shape == (1, 4)
    assert isinstance(layer.alpha_regularizer, regularizers.L1)
    assert isinstance(layer.alpha_constraint, constraints.MaxNorm)


def test_prelu_correctness():
    """Keras: PReLUTest.test_prelu_correctness."""
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((2, 10, 5, 3))
    layer = layers.PReLU(alpha_initializer="glorot_uniform", alpha_regularizer="l1", alpha_constraint="non_neg",
                         shared_axes=(1, 2))
    layer.build(inputs.shape)
    weights = rng.random((1, 1, 3))
    layer.alpha[...] = weights
    ref = (inputs > 0) * inputs + (inputs <= 0) * weights * inputs
    np.testing.assert_allclose(layer(inputs), ref, rtol=1e-6, atol=1e-6)  # Keras assertAllClose; float32 layer


# ==================================================================== ELU
def test_elu_config():
    """Keras: ELUTest.test_config (run_class_serialization_test)."""
    layer = layers.ELU()
    assert layers.ELU.from_config(layer.get_config()).get_config() == layer.get_config()


def test_elu():
    """Keras: ELUTest.test_elu."""
    run_layer_test(layers.ELU, {}, (2, 3, 4), (2, 3, 4), expected_num_trainable_weights=0)


def test_elu_correctness():
    """Keras: ELUTest.test_correctness."""
    x = np.random.default_rng(0).random((2, 2, 5)) - 0.5

    def np_elu(x, alpha=1.0):
        return (x > 0) * x + (x <= 0) * alpha * (np.exp(x) - 1)

    np.testing.assert_allclose(layers.ELU()(x), np_elu(x))
    np.testing.assert_allclose(layers.ELU(alpha=0.7)(x), np_elu(x, alpha=0.7))


# ================================================================ Softmax
SM_IN = np.array([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]])
SM_OUT = [[0.21194157, 0.5761169, 0.21194157]] * 2


def test_softmax():
    """Keras: SoftmaxTest.test_softmax."""
    run_layer_test(layers.Softmax, {}, (2, 3, 4), (2, 3, 4), expected_num_trainable_weights=0)


@pytest.mark.parametrize("axis", [-1, 1], ids=["correctness", "correctness_with_axis"])
def test_softmax_correctness(axis):
    """Keras: SoftmaxTest.test_softmax_correctness, test_softmax_correctness_with_axis."""
    np.testing.assert_allclose(layers.Softmax(axis=axis)(SM_IN), SM_OUT, rtol=1e-6)


def test_softmax_correctness_with_mask():
    """Keras: SoftmaxTest.test_softmax_correctness_with_mask (axis=(1, 0): over the batch axis too)."""
    mask = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = layers.Softmax(axis=(1, 0))(SM_IN, mask=mask)
    np.testing.assert_allclose(out, [[0.21194154, 0.0, 0.21194154], [0.0, 0.57611686, 0.0]], rtol=1e-6)


def test_softmax_masked_values_are_zero_including_fully_masked():
    """Keras: SoftmaxTest.test_softmax_masked_values_are_zero_including_fully_masked."""
    x = np.array([[1.0, 2.0, 5.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 2.0, 4.0]], dtype=np.float32)
    mask = np.array([[True, True, False, False], [False] * 4, [True] * 4])
    expected = [[0.268941, 0.731059, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.236883, 0.032059, 0.087144, 0.643914]]
    np.testing.assert_allclose(layers.Softmax()(x, mask=mask), expected, atol=1e-6)


@pytest.mark.parametrize("mask", [np.array([[1.0, 0.0, 1.0]]), np.array([1.0, 0.0, 1.0])],
                         ids=["broadcastable", "broadcastable_fewer_dims"])
def test_softmax_mask_broadcastable(mask):
    """Keras: SoftmaxTest.test_softmax_mask_broadcastable, test_softmax_mask_broadcastable_fewer_dims."""
    out = layers.Softmax()(np.array([[1.0, 2.0, 1.0], [3.0, 4.0, 5.0]]), mask=mask)
    np.testing.assert_allclose(out[:, 1], [0.0, 0.0])


def test_softmax_mask_shape_mismatch():
    """Keras: SoftmaxTest.test_softmax_mask_shape_mismatch."""
    with pytest.raises(ValueError, match="broadcastable"):
        layers.Softmax()(np.array([[1.0, 2.0, 1.0]]), mask=np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))


def test_softmax_mask_too_many_dims():
    """Keras: SoftmaxTest.test_softmax_mask_too_many_dims."""
    with pytest.raises(ValueError, match="must not have more dimensions"):
        layers.Softmax()(np.array([[1.0, 2.0, 1.0]]), mask=np.array([[[1.0, 0.0, 1.0]]]))


# ============================================ normlab's own: gradients in float64
@pytest.mark.parametrize("make, shape, call_kw", [
    (lambda: layers.ReLU(max_value=1.5, negative_slope=0.3, threshold=0.2), (4, 6), {}),
    (lambda: layers.LeakyReLU(0.1), (4, 6), {}),
    (lambda: layers.ELU(0.7), (4, 6), {}),
    (lambda: layers.Softmax(axis=(1, 2)), (3, 2, 4), {}),
    (lambda: layers.Softmax(), (3, 4), {"mask": np.array([True, False, True, True])}),
], ids=["relu", "leaky_relu", "elu", "softmax_axes", "softmax_mask"])
def test_backward_matches_central_differences(make, shape, call_kw, rng):
    """Not a Keras test: dL/dx of each layer against central differences in float64."""
    x = rng.normal(size=shape)
    x[np.abs(x) < 0.05] += 0.1  # away from the kinks
    layer = make()
    w = rng.normal(size=shape)
    layer(x, training=True, **call_kw)
    dx = layer.backward(w)
    num = np.empty_like(x)
    eps = 1e-6
    for i in np.ndindex(shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        num[i] = (np.sum(w * layer(xp, **call_kw)) - np.sum(w * layer(xm, **call_kw))) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_prelu_gradients_match_central_differences(rng):
    """Not a Keras test: PReLU's dL/dx and dL/dalpha (shared axis 1) in float64."""
    x = rng.normal(size=(3, 4, 2))
    layer = layers.PReLU(shared_axes=1, alpha_initializer="random_uniform")
    layer(x)
    w = rng.normal(size=x.shape)
    layer.zero_grads()
    layer(x, training=True)
    dx = layer.backward(w)
    eps = 1e-6
    for arr, grad in ((x, dx), (layer.alpha, layer.grads["alpha"])):
        num = np.empty_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            fp = np.sum(w * layer(x))
            arr[i] = old - eps
            fm = np.sum(w * layer(x))
            arr[i] = old
            num[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


# ============================================ live: the same numbers as Keras
LIVE = [
    ("ReLU", dict(max_value=1.5, negative_slope=0.3, threshold=0.2), (4, 6)),
    ("ReLU", dict(), (4, 6)),
    ("LeakyReLU", dict(), (4, 6)),
    ("ELU", dict(alpha=0.7), (4, 6)),
    ("Softmax", dict(axis=(1, 2)), (3, 2, 4)),
    ("Identity", dict(), (3, 4)),
    ("Permute", dict(dims=(2, 1)), (3, 4, 2)),
    ("RepeatVector", dict(n=3), (3, 4)),
    ("Cropping2D", dict(cropping=((1, 0), (0, 2)), data_format="channels_first"), (2, 2, 4, 5)),
    ("ZeroPadding1D", dict(padding=(2, 1)), (2, 3, 2)),
    ("ZeroPadding3D", dict(padding=1), (1, 2, 2, 2, 1)),
    ("UpSampling2D", dict(size=(2, 3)), (2, 3, 2, 2)),
    ("UpSampling3D", dict(size=2), (1, 2, 2, 2, 1)),
    ("ActivityRegularization", dict(l1=0.1, l2=0.2), (3, 4)),
]


@pytest.mark.parametrize("name, kwargs, shape", LIVE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(LIVE)])
def test_matches_keras(name, kwargs, shape):
    """Live: the layers normlab added give Keras's outputs on the same input (skipped without keras)."""
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    expected = np.asarray(getattr(keras.layers, name)(**kwargs)(x))
    np.testing.assert_allclose(getattr(layers, name)(**kwargs)(x), expected, rtol=1e-6, atol=1e-6)


def test_prelu_softmax_mask_and_merges_match_keras():
    """Live: PReLU with the same alpha, Softmax with a mask, Maximum/Minimum/Dot(normalize) as Keras's."""
    keras = pytest.importorskip("keras")
    g = np.random.default_rng(1)
    x = g.normal(size=(2, 3, 4)).astype("float32")
    alpha = g.random((1, 4)).astype("float32")
    kp = keras.layers.PReLU(shared_axes=[1])
    kp.build(x.shape)
    kp.set_weights([alpha])
    npr = layers.PReLU(shared_axes=[1])
    npr.build(x.shape)
    npr.set_weights([alpha])
    np.testing.assert_allclose(npr(x), np.asarray(kp(x)), rtol=1e-6, atol=1e-6)
    mask = g.random((2, 3, 4)) > 0.3
    np.testing.assert_allclose(layers.Softmax()(x, mask=mask), np.asarray(keras.layers.Softmax()(x, mask=mask)),
                               rtol=1e-6, atol=1e-6)
    y = g.normal(size=(2, 3, 4)).astype("float32")
    for name, kwargs in (("Maximum", {}), ("Minimum", {}), ("Dot", {"axes": -1, "normalize": True}),
                         ("Dot", {"axes": (1, 1)})):
        np.testing.assert_allclose(getattr(layers, name)(**kwargs)([x, y]),
                                   np.asarray(getattr(keras.layers, name)(**kwargs)([x, y])), rtol=1e-5, atol=1e-6)
