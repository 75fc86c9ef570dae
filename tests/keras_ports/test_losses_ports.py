"""Keras 3.15's loss tests, ported to normlab (the four losses normlab has).

Source: ``keras/src/losses/losses_test.py`` (keras-team/keras):
``MeanSquaredErrorTest``, ``BinaryCrossentropyTest``,
``CategoricalCrossentropyTest``, ``SparseCategoricalCrossentropyTest``. Each
test names the Keras test it ports as ``<TestCase>.<test>``. The cases that
tests/test_losses_keras.py already ports (the weighted values, reductions,
``ignore_class`` and binary segmentation) are not repeated here.

Keras's ``assertAlmostEqual(a, b)`` means ``|a - b| < 1.5e-3`` (3 decimals);
``assertAllClose`` means ``atol = rtol = 1e-6``. The ports keep both.

The ``dtype`` tests ask for float32 where Keras asks for bfloat16 (NumPy
has no bfloat16). The complete port of Keras's file, every loss class, is
tests/keras_ports/test_losses_keras_file.py.
"""

import json

import numpy as np
import pytest

import normlab
from normlab import losses

DEC3 = 1.5e-3  # assertAlmostEqual's default of 3 decimals


def almost(actual, expected, tol=DEC3):
    assert abs(float(actual) - expected) < tol, (actual, expected)


def close(actual, expected, atol=1e-6, rtol=1e-6):
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


def roundtrip(loss):
    """Keras's ``run_class_serialization_test``: get_config / from_config and serialize / deserialize (JSON)."""
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    revived = losses.deserialize(json.loads(json.dumps(losses.serialize(loss))))
    assert type(revived) is type(loss) and revived.get_config() == config
    return config


ONEHOT3 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])


# MeanSquaredError ----------------------------------------------------------------
def test_mse_config():
    """MeanSquaredErrorTest.test_config."""
    assert roundtrip(losses.MeanSquaredError(name="mymse"))["name"] == "mymse"


def test_mse_base_function_reduction():
    """MeanSquaredErrorTest.test_base_function_reduction: the function form gives one value per sample."""
    loss = losses.mean_squared_error(np.array([4, 8, 12]), np.array([[3], [0], [1]]))
    assert np.shape(loss) == (3,)


def test_mse_all_correct_unweighted():
    """MeanSquaredErrorTest.test_all_correct_unweighted."""
    y_true = np.array([[4, 8, 12], [8, 1, 3]])
    almost(losses.MeanSquaredError()(y_true, y_true), 0.0)


def test_mse_dtype_arg():
    """MeanSquaredErrorTest.test_dtype_arg (Keras: bfloat16; the port asks for float32)."""
    loss = losses.MeanSquaredError(dtype="float32")(np.array([[1, 9, 2]]), np.array([[4, 8, 12]], dtype="float32"))
    assert np.asarray(loss).dtype == np.float32


# BinaryCrossentropy ---------------------------------------------------------------
BCE_T = np.array([1, 0, 1, 0]).reshape([2, 2])
BCE_P = np.array([1, 1, 1, 0], dtype="float32").reshape([2, 2])
BCE_TL = np.array([[1, 0, 1], [0, 1, 1]])
BCE_Z = np.array([[10.0, -10.0, 10.0], [10.0, 10.0, -10.0]])


def test_bce_config():
    """BinaryCrossentropyTest.test_config (the ``axis=-1`` part: test_bce_config_axis)."""
    assert roundtrip(losses.BinaryCrossentropy(name="bce"))["name"] == "bce"


def test_bce_config_axis():
    """BinaryCrossentropyTest.test_config: ``axis`` is kept in the config."""
    assert roundtrip(losses.BinaryCrossentropy(name="bce", axis=-1))["axis"] == -1
    assert roundtrip(losses.BinaryCrossentropy(axis=1))["axis"] == 1
    with pytest.raises(normlab.InvalidParameterError, match="'axis' parameter of BinaryCrossentropy"):
        losses.BinaryCrossentropy(axis=1.5)


def test_bce_all_correct_unweighted():
    """BinaryCrossentropyTest.test_all_correct_unweighted (probabilities, then logits)."""
    y_true = np.eye(3, dtype="float32")
    almost(losses.BinaryCrossentropy()(y_true, y_true), 0.0)
    logits = np.where(y_true == 1, 10.0, -10.0)
    almost(losses.BinaryCrossentropy(from_logits=True)(y_true, logits), 0.0)


def test_bce_unweighted():
    """BinaryCrossentropyTest.test_unweighted (three cases; predictions of exactly 0 and 1 are clipped)."""
    y_pred = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]], dtype="float32")
    close(losses.BinaryCrossentropy()(np.eye(3, dtype="float32"), y_pred), 0.20046903)
    almost(losses.BinaryCrossentropy()(BCE_T, BCE_P), 3.98559)
    almost(losses.BinaryCrossentropy(from_logits=True)(BCE_TL, BCE_Z), 3.3333)


def test_bce_scalar_weighted():
    """BinaryCrossentropyTest.test_scalar_weighted."""
    almost(losses.BinaryCrossentropy()(BCE_T, BCE_P, sample_weight=2.3), 9.1668)
    almost(losses.BinaryCrossentropy(from_logits=True)(BCE_TL, BCE_Z, sample_weight=2.3), 7.666)


def test_bce_sample_weighted():
    """BinaryCrossentropyTest.test_sample_weighted."""
    almost(losses.BinaryCrossentropy()(BCE_T, BCE_P, sample_weight=np.array([1.2, 3.4]).reshape((2, 1))), 4.7827)
    almost(losses.BinaryCrossentropy(from_logits=True)(BCE_TL, BCE_Z, sample_weight=np.array([4, 3])), 10.0)


def test_bce_no_reduction():
    """BinaryCrossentropyTest.test_no_reduction."""
    loss = losses.BinaryCrossentropy(from_logits=True, reduction=None)(BCE_TL, BCE_Z)
    close(loss, [0.0, 6.666], atol=1e-3)


def test_bce_label_smoothing():
    """BinaryCrossentropyTest.test_label_smoothing."""
    loss = losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)(np.array([[1, 0, 1]]),
                                                                           np.array([[10.0, -10.0, -10.0]]))
    almost(loss, (10.0 + 5.0 * 0.1) / 3.0)


def test_bce_shape_mismatch():
    """BinaryCrossentropyTest.test_shape_mismatch.

    Keras's message says the shapes "must have the same shape"; normlab's
    names the loss and both shapes.
    """
    y_pred = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]])
    with pytest.raises(ValueError, match=r"BinaryCrossentropy: 'y' has shape \(3, 1\) but the predictions"):
        losses.BinaryCrossentropy()(np.array([[0], [1], [0]]), y_pred)


def test_bce_dtype_arg():
    """BinaryCrossentropyTest.test_dtype_arg (Keras: bfloat16; the port asks for float32)."""
    loss = losses.BinaryCrossentropy(dtype="float32")(BCE_T, BCE_P.astype("float64"))
    assert np.asarray(loss).dtype == np.float32


# CategoricalCrossentropy ----------------------------------------------------------
def test_cce_config():
    """CategoricalCrossentropyTest.test_config (the ``axis=-1`` part: test_cce_config_axis)."""
    assert roundtrip(losses.CategoricalCrossentropy(name="cce"))["name"] == "cce"


def test_cce_config_axis():
    """CategoricalCrossentropyTest.test_config: ``axis`` is kept in the config."""
    assert roundtrip(losses.CategoricalCrossentropy(name="cce", axis=-1))["axis"] == -1
    assert roundtrip(losses.CategoricalCrossentropy(axis=1))["axis"] == 1
    with pytest.raises(normlab.InvalidParameterError, match="'axis' parameter of CategoricalCrossentropy"):
        losses.CategoricalCrossentropy(axis="1")


def test_cce_all_correct_unweighted():
    """CategoricalCrossentropyTest.test_all_correct_unweighted (probabilities, then logits)."""
    y_true = ONEHOT3.astype("int64")
    almost(losses.CategoricalCrossentropy()(y_true, np.eye(3, dtype="float32")), 0.0)
    almost(losses.CategoricalCrossentropy(from_logits=True)(y_true, 10.0 * np.eye(3)), 0.0)


@pytest.mark.parametrize("keras_test, make", [
    ("test_label_smoothing", lambda v: np.array(v)),
    ("test_label_smoothing_ndarray", np.asarray),
])
def test_cce_label_smoothing(keras_test, make):
    """CategoricalCrossentropyTest.test_label_smoothing and test_label_smoothing_ndarray."""
    loss = losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        make([[1, 0, 0]]), make([[100.0, -100.0, -100.0]]))
    almost(loss, 400.0 * 0.1 / 3.0)


def test_cce_label_smoothing_with_axis():
    """CategoricalCrossentropyTest.test_label_smoothing_with_axis (classes on axis 1)."""
    y_true = np.array([[[1, 0], [0, 1], [0, 0]], [[0, 1], [1, 0], [0, 0]]], dtype="float32")
    y_pred = np.array([[[0.8, 0.1], [0.1, 0.8], [0.1, 0.1]], [[0.1, 0.8], [0.8, 0.1], [0.1, 0.1]]],
                      dtype="float32")
    smoothed = y_true * 0.9 + 0.1 / 3
    expected = np.mean(-np.sum(smoothed * np.log(y_pred), axis=1))
    loss = losses.CategoricalCrossentropy(label_smoothing=0.1, axis=1)(y_true, y_pred)
    almost(loss, expected, tol=1.5e-5)


def test_cce_shape_mismatch():
    """CategoricalCrossentropyTest.test_shape_mismatch (normlab's message names the loss and both shapes)."""
    y_pred = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]])
    with pytest.raises(ValueError, match=r"CategoricalCrossentropy: 'y' has shape \(3, 1\) but the predictions"):
        losses.CategoricalCrossentropy()(np.array([[0], [1], [2]]), y_pred)


def test_cce_warning_for_invalid_shape():
    """CategoricalCrossentropyTest.test_warning_for_invalid_shape (the function form warns on one class)."""
    function = losses.categorical_crossentropy
    with pytest.warns(SyntaxWarning):
        function(np.ones((2, 1)), np.full((2, 1), 0.5))


def test_cce_single_class_gives_zero():
    """CategoricalCrossentropyTest.test_warning_for_invalid_shape, normlab's side.

    Keras warns (SyntaxWarning) when ``y_pred`` has one class; normlab's
    class form computes the loss: one class has probability 1 after the
    normalization, so the loss is 0 whatever the prediction.
    """
    almost(losses.CategoricalCrossentropy()(np.ones((2, 1)), np.full((2, 1), 0.5)), 0.0, tol=1e-6)


def test_cce_dtype_arg():
    """CategoricalCrossentropyTest.test_dtype_arg (Keras: bfloat16; the port asks for float32)."""
    loss = losses.CategoricalCrossentropy(dtype="float32")(ONEHOT3, np.eye(3) * 0.9 + 0.05)
    assert np.asarray(loss).dtype == np.float32


# SparseCategoricalCrossentropy -------------------------------------------------------
def test_scce_config():
    """SparseCategoricalCrossentropyTest.test_config (the part without ``axis``)."""
    assert roundtrip(losses.SparseCategoricalCrossentropy(name="scce"))["name"] == "scce"
    config = roundtrip(losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=3, name="scce"))
    assert config["from_logits"] is True and config["ignore_class"] == 3


def test_scce_config_axis():
    """SparseCategoricalCrossentropyTest.test_config: ``axis=0`` is kept in the config."""
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=3, axis=0, name="scce")
    assert roundtrip(loss)["axis"] == 0


def test_scce_config_default_axis():
    """SparseCategoricalCrossentropyTest.test_config, normlab's side: Keras's default ``axis=-1`` round-trips."""
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=3, axis=-1, name="scce")
    assert roundtrip(loss)["axis"] == -1


def test_scce_all_correct_unweighted():
    """SparseCategoricalCrossentropyTest.test_all_correct_unweighted (probabilities, then logits)."""
    y_true = np.array([[0], [1], [2]], dtype="int64")
    almost(losses.SparseCategoricalCrossentropy()(y_true, np.eye(3, dtype="float32")), 0.0)
    almost(losses.SparseCategoricalCrossentropy(from_logits=True)(y_true, 10.0 * np.eye(3)), 0.0)


SEG_T = np.array([[0, 1, 2, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1]])


def test_scce_multi_class_segmentation():
    """SparseCategoricalCrossentropyTest.test_multi_class_segmentation (labels per pixel, 16 pixels)."""
    exact = np.eye(3)[SEG_T]
    close(losses.SparseCategoricalCrossentropy()(SEG_T, exact), 0.0)
    y_pred = exact.copy()
    y_pred[0, 3] = [0.2, 0.0, 0.8]  # label 0: -log 0.2
    y_pred[1, 0] = [0.7, 0.3, 0.0]  # label 1: -log 0.3
    y_pred[3, 2] = [0.5, 0.5, 0.0]  # label 0: -log 0.5
    expected = -(np.log(0.2) + np.log(0.3) + np.log(0.5)) / 16.0
    close(losses.SparseCategoricalCrossentropy()(SEG_T, y_pred), expected)


@pytest.mark.parametrize("keras_test, classes", [
    ("test_binary_segmentation_different_axis", 2),
    ("test_multi_class_segmentation_different_axis", 3),
])
def test_scce_segmentation_different_axis(keras_test, classes):
    """SparseCategoricalCrossentropyTest.test_*_segmentation_different_axis (the torch backend's values:
    classes first, ``axis=0``)."""
    y_true = SEG_T % classes
    y_pred = np.moveaxis(np.eye(classes)[y_true], 2, 0)
    close(losses.SparseCategoricalCrossentropy(axis=0)(y_true, y_pred), 0.0)


def test_scce_dtype_arg():
    """SparseCategoricalCrossentropyTest.test_dtype_arg (Keras: bfloat16; the port asks for float32)."""
    loss = losses.SparseCategoricalCrossentropy(dtype="float32")(np.array([0, 1, 2]), np.eye(3) * 0.9 + 0.05)
    assert np.asarray(loss).dtype == np.float32
