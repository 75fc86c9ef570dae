"""Keras 3.15's accuracy and Mean metric tests, ported to normlab.

Sources (keras-team/keras): ``keras/src/metrics/accuracy_metrics_test.py``
and ``keras/src/metrics/reduction_metrics_test.py`` (``MeanTest``). Each
test names the Keras test it ports as ``<TestCase>.<test>``.

Two deliberate differences run through the ports:

* Keras checks ``len(metric.variables) == 2`` (total and count): normlab's
  metrics hold the two sums as plain floats, so the ports check the state
  through ``result()`` and ``reset_state()`` instead.
* Keras's ``Mean.update_state(values, sample_weight=None)`` takes the values
  first; normlab's ``Mean`` shares the ``(y_true, y_pred, sample_weight)``
  signature of every metric and averages ``y_pred`` (``y_true`` ignored), so
  the ports pass the values as ``y_pred``.
"""

import json

import numpy as np
import pytest

from normlab import metrics


def close(actual, expected, atol=1e-3):
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=1e-6)


def check_config(cls, name, **extra):
    """The shared body of Keras's ``test_config`` tests: name and dtype survive get_config/from_config."""
    metric = cls(name=name, dtype="float32", **extra)
    assert metric.name == name and metric.dtype == "float32"
    config = metric.get_config()
    assert config["name"] == name and config["dtype"] == "float32"
    for key, value in extra.items():
        assert config[key] == value
    clone = cls.from_config(json.loads(json.dumps(config)))
    assert clone.name == name and clone.dtype == "float32"
    assert clone.get_config() == config
    assert clone.result() == 0.0  # fresh state: Keras's two variables start at zero


# Mean (reduction_metrics_test.MeanTest) ----------------------------------------------
def mean():
    return metrics.Mean(name="mean", dtype="float32")


def test_mean_config():
    """MeanTest.test_config."""
    check_config(metrics.Mean, "mean")


def test_mean_unweighted():
    """MeanTest.test_unweighted."""
    m = mean()
    m.update_state(None, [1, 3, 5, 7])
    close(m.result(), 4.0)


def test_mean_weighted():
    """MeanTest.test_weighted."""
    m = mean()
    m.update_state(None, [1, 3, 5, 7], sample_weight=[1, 1, 0, 0])
    close(m.result(), 2.0)


def test_mean_weighted_negative_weights():
    """MeanTest.test_weighted_negative_weights.

    Keras accepts the weights [-1, -1, 0, 0] (result 2.0: the signs cancel).
    normlab deliberately refuses negative sample weights in every metric and
    loss (a weighted mean with weights of both signs can divide by zero or
    flip sign), so the port asserts the refusal.
    """
    m = mean()
    with pytest.raises(ValueError, match="sample_weight"):
        m.update_state(None, [1, 3, 5, 7], sample_weight=[-1, -1, 0, 0])
    assert m.result() == 0.0  # the refused batch left no trace


def test_mean_weighted_nd():
    """MeanTest.test_weighted_nd."""
    m = mean()
    m.update_state(None, [[1, 3], [5, 7]], sample_weight=[[1, 1], [1, 0]])
    close(m.result(), 3.0)


def test_mean_weighted_nd_broadcast():
    """MeanTest.test_weighted_nd_broadcast."""
    m = mean()
    m.update_state(None, [[1, 3], [5, 7]], sample_weight=[[1, 0]])
    close(m.result(), 3.0)


# Accuracy ---------------------------------------------------------------------
def accuracy():
    return metrics.Accuracy(name="accuracy", dtype="float32")


def test_accuracy_config():
    """AccuracyTest.test_config."""
    check_config(metrics.Accuracy, "accuracy")


def test_accuracy_unweighted():
    """AccuracyTest.test_unweighted."""
    m = accuracy()
    m.update_state(np.array([[1], [2], [3], [4]]), np.array([[0], [2], [3], [4]]))
    close(m.result(), 0.75)


def test_accuracy_weighted():
    """AccuracyTest.test_weighted."""
    m = accuracy()
    m.update_state(np.array([[1], [2], [3], [4]]), np.array([[0], [2], [3], [4]]),
                   sample_weight=np.array([1, 1, 0, 0]))
    close(m.result(), 0.5)


def test_accuracy_weighted_rank_1():
    """AccuracyTest.test_weighted_rank_1."""
    m = accuracy()
    m.update_state(np.array([1, 2, 3, 4]), np.array([0, 2, 3, 4]), sample_weight=np.array([1, 1, 0, 0]))
    close(m.result(), 0.5)


@pytest.mark.parametrize("keras_test, weights", [
    ("test_weighted_nd_weights", [[1, 0], [0, 1]]),
    ("test_weighted_nd_broadcast_weights", [[1, 0]]),
])
def test_accuracy_weighted_nd(keras_test, weights):
    """AccuracyTest.test_weighted_nd_weights and AccuracyTest.test_weighted_nd_broadcast_weights."""
    m = accuracy()
    m.update_state(np.array([[1, 2], [3, 4]]), np.array([[0, 2], [3, 4]]), sample_weight=np.array(weights))
    close(m.result(), 0.5)


# BinaryAccuracy -------------------------------------------------------------------
def binary_accuracy(**kwargs):
    return metrics.BinaryAccuracy(name="binary_accuracy", dtype="float32", **kwargs)


def test_binary_accuracy_config():
    """BinaryAccuracyTest.test_config."""
    check_config(metrics.BinaryAccuracy, "binary_accuracy")


def test_binary_accuracy_unweighted():
    """BinaryAccuracyTest.test_unweighted (labels as a column, then as a vector)."""
    y_pred = np.array([[0.98], [1], [0], [0.6]])
    for y_true in (np.array([[1], [1], [0], [0]]), np.array([1, 1, 0, 0])):
        m = binary_accuracy()
        m.update_state(y_true, y_pred)
        close(m.result(), 0.75)


def test_binary_accuracy_weighted():
    """BinaryAccuracyTest.test_weighted."""
    m = binary_accuracy()
    m.update_state(np.array([[1], [1], [0], [0]]), np.array([[0.98], [1], [0], [0.6]]),
                   sample_weight=np.array([1, 0, 0, 1]))
    close(m.result(), 0.5)


def test_binary_accuracy_weighted_rank_1():
    """BinaryAccuracyTest.test_weighted_rank_1."""
    m = binary_accuracy()
    m.update_state(np.array([1, 1, 0, 0]), np.array([0.98, 1, 0, 0.6]), sample_weight=np.array([1, 0, 0, 1]))
    close(m.result(), 0.5)


@pytest.mark.parametrize("keras_test, weights, expected", [
    ("test_weighted_nd_weights", [[1, 0], [0, 1]], 0.5),
    ("test_weighted_nd_broadcast_weights", [[1, 0]], 1.0),
])
def test_binary_accuracy_weighted_nd(keras_test, weights, expected):
    """BinaryAccuracyTest.test_weighted_nd_weights and BinaryAccuracyTest.test_weighted_nd_broadcast_weights."""
    m = binary_accuracy()
    m.update_state(np.array([[1, 1], [0, 0]]), np.array([[0.98, 1], [0, 0.6]]), sample_weight=np.array(weights))
    close(m.result(), expected)


def test_binary_accuracy_threshold():
    """BinaryAccuracyTest.test_threshold."""
    low, high = binary_accuracy(threshold=0.3), binary_accuracy(threshold=0.9)
    y_true = np.array([[1], [1], [0], [0]])
    y_pred = np.array([[0.98], [0.5], [0.1], [0.2]])
    low.update_state(y_true, y_pred)
    high.update_state(y_true, y_pred)
    close(low.result(), 1.0, atol=1e-6)
    close(high.result(), 0.75, atol=1e-6)


def test_binary_accuracy_keras_argument_order():
    """Keras's signature ``BinaryAccuracy(name, dtype, threshold)``: dtype is the second positional argument."""
    m = metrics.BinaryAccuracy("acc", "float64", 0.7)
    assert (m.name, m.dtype, m.threshold) == ("acc", "float64", 0.7)


# CategoricalAccuracy ----------------------------------------------------------
def test_categorical_accuracy_config():
    """CategoricalAccuracyTest.test_config."""
    check_config(metrics.CategoricalAccuracy, "categorical_accuracy")


@pytest.mark.parametrize("keras_test, weights, expected", [
    ("test_unweighted", None, 0.5),
    ("test_weighted", [0.7, 0.3], 0.3),
])
def test_categorical_accuracy(keras_test, weights, expected):
    """CategoricalAccuracyTest.test_unweighted and CategoricalAccuracyTest.test_weighted."""
    m = metrics.CategoricalAccuracy(name="categorical_accuracy", dtype="float32")
    m.update_state(np.array([[0, 0, 1], [0, 1, 0]]), np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]]),
                   sample_weight=None if weights is None else np.array(weights))
    close(m.result(), expected)


# SparseCategoricalAccuracy ------------------------------------------------------
def sparse_accuracy():
    return metrics.SparseCategoricalAccuracy(name="sparse_categorical_accuracy", dtype="float32")


def test_sparse_categorical_accuracy_config():
    """SparseCategoricalAccuracyTest.test_config."""
    check_config(metrics.SparseCategoricalAccuracy, "sparse_categorical_accuracy")


@pytest.mark.parametrize("keras_test, weights, expected", [
    ("test_unweighted", None, 0.5),
    ("test_weighted", [0.7, 0.3], 0.3),
])
def test_sparse_categorical_accuracy(keras_test, weights, expected):
    """SparseCategoricalAccuracyTest.test_unweighted and SparseCategoricalAccuracyTest.test_weighted."""
    m = sparse_accuracy()
    m.update_state(np.array([[2], [1]]), np.array([[0.1, 0.6, 0.3], [0.05, 0.95, 0]]),
                   sample_weight=None if weights is None else np.array(weights))
    close(m.result(), expected)


@pytest.mark.parametrize("keras_test, y_true, y_pred", [
    ("test_squeeze_y_true", np.array([[0], [1], [2]]),
     np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])),
    ("test_cast_y_pred_dtype", np.array([0, 1], dtype=np.int64),
     np.array([[0.9, 0.1], [0.1, 0.9]], dtype=np.float32)),
    ("test_squeeze_y_true_shape", np.array([[0], [1], [2]]), np.eye(3)),
    ("test_cast_y_pred_to_match_y_true_dtype", np.array([0, 1, 2], dtype=np.int32),
     np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]], dtype=np.float64)),
    ("test_reshape_matches_to_original_y_true_shape", np.array([[0], [1]]), np.array([[0.9, 0.1], [0.1, 0.9]])),
    ("test_matching_shapes_without_squeeze", np.array([2, 1, 0], dtype=np.int32),
     np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)),
])
def test_sparse_categorical_accuracy_shapes_and_dtypes(keras_test, y_true, y_pred):
    """SparseCategoricalAccuracyTest: label columns are squeezed, any integer/float dtype mix works."""
    m = sparse_accuracy()
    m.update_state(y_true, y_pred)
    close(m.result(), 1.0, atol=1e-4)


def test_sparse_categorical_accuracy_reshape_matches():
    """SparseCategoricalAccuracyTest.test_reshape_matches.

    Keras accepts labels of shape (2, 1) for predictions of shape (1, 2, 3)
    (it reshapes the labels to the predictions' leading shape when the sizes
    agree) and gives 1.0. normlab deliberately requires the labels' shape to
    be the predictions' shape without the class axis (a trailing axis of 1
    allowed): (2, 1) against (1, 2) is a batch-size mismatch, and it says so.
    The labels in the intended shape give Keras's 1.0.
    """
    y_pred = np.array([[[0.9, 0.1, 0.0], [0.8, 0.15, 0.05]]], dtype=np.float32)
    m = sparse_accuracy()
    with pytest.raises(ValueError, match="y_true"):
        m.update_state(np.array([[0], [0]], dtype=np.int64), y_pred)
    m.update_state(np.array([[0, 0]], dtype=np.int64), y_pred)
    close(m.result(), 1.0, atol=1e-6)


# TopKCategoricalAccuracy / SparseTopKCategoricalAccuracy ------------------------------------
TOPK_PRED = np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]], dtype="float32")


def test_top_k_categorical_accuracy_config():
    """TopKCategoricalAccuracyTest.test_config."""
    check_config(metrics.TopKCategoricalAccuracy, "top_k_categorical_accuracy", k=1)
    assert metrics.TopKCategoricalAccuracy.from_config(metrics.TopKCategoricalAccuracy(k=1).get_config()).k == 1


@pytest.mark.parametrize("keras_test, weights, expected", [
    ("test_unweighted", None, 0.5),
    ("test_weighted", [0.7, 0.3], 0.3),
])
def test_top_k_categorical_accuracy(keras_test, weights, expected):
    """TopKCategoricalAccuracyTest.test_unweighted and TopKCategoricalAccuracyTest.test_weighted."""
    m = metrics.TopKCategoricalAccuracy(k=1, name="top_k_categorical_accuracy", dtype="float32")
    m.update_state(np.array([[0, 0, 1], [0, 1, 0]]), TOPK_PRED,
                   sample_weight=None if weights is None else np.array(weights))
    close(m.result(), expected)


def test_sparse_top_k_categorical_accuracy_config():
    """SparseTopKCategoricalAccuracyTest.test_config and test_config_from_sorted_ids."""
    check_config(metrics.SparseTopKCategoricalAccuracy, "sparse_top_k_categorical_accuracy", k=1)
    plain = metrics.SparseTopKCategoricalAccuracy(k=1)
    assert metrics.SparseTopKCategoricalAccuracy.from_config(plain.get_config()).from_sorted_ids is False
    sorted_ids = metrics.SparseTopKCategoricalAccuracy(k=1, name="sparse_top_k_categorical_accuracy",
                                                       dtype="float32", from_sorted_ids=True)
    config = sorted_ids.get_config()
    assert config["from_sorted_ids"] is True
    assert metrics.SparseTopKCategoricalAccuracy.from_config(config).from_sorted_ids is True


@pytest.mark.parametrize("keras_test, y_pred, from_sorted_ids, weights, expected", [
    ("test_unweighted", TOPK_PRED, False, None, 0.5),
    ("test_weighted", TOPK_PRED, False, [0.7, 0.3], 0.3),
    ("test_from_sorted_ids_unweighted", np.array([[1, 0, 3], [1, 2, 3]]), True, None, 0.5),
    ("test_from_sorted_ids_weighted", np.array([[1, 0, 3], [1, 2, 3]]), True, [0.7, 0.3], 0.3),
])
def test_sparse_top_k_categorical_accuracy(keras_test, y_pred, from_sorted_ids, weights, expected):
    """SparseTopKCategoricalAccuracyTest.test_unweighted / test_weighted / test_from_sorted_ids_*."""
    m = metrics.SparseTopKCategoricalAccuracy(k=1, name="sparse_top_k_categorical_accuracy", dtype="float32",
                                              from_sorted_ids=from_sorted_ids)
    m.update_state(np.array([2, 1]), y_pred, sample_weight=None if weights is None else np.array(weights))
    close(m.result(), expected)


def test_top_k_ties_and_larger_k():
    """Our own check of the top-k rule: ties with the k-th score count (Keras's in_top_k), k >= classes is 1."""
    y_pred = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    m = metrics.SparseTopKCategoricalAccuracy(k=1)
    m.update_state(np.array([1, 1]), y_pred)
    close(m.result(), 0.5, atol=1e-12)  # row 0: tied for first; row 1: second
    m = metrics.TopKCategoricalAccuracy(k=3)
    m.update_state(np.eye(3)[[2, 0]], y_pred)
    close(m.result(), 1.0, atol=1e-12)
