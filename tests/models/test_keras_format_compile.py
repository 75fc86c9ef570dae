"""Losses and metrics through Keras 3 ``.keras`` files both ways (the file's ``compile_config``).

Every loss and metric class both libraries have travels with its arguments:
normlab -> ``.keras`` -> normlab gives the same objects; with live Keras, the
objects Keras builds from normlab's file compute the same values (float32,
1e-6 relative) on the same data, and so do the objects normlab reads from a
file Keras wrote. What Keras lacks is refused on saving, naming it.
"""

import importlib.util
import json
import os
import zipfile

import numpy as np
import pytest

import normlab
from normlab import losses as L
from normlab import metrics as M
from normlab.models._keras_compile import KERAS_LOSSES, KERAS_METRICS
from normlab.models.keras_format import load_keras, save_keras

try:
    import h5py
except ImportError:  # reading and writing .keras files needs it
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="h5py is not installed (pip install 'normlab[keras]')")

RTOL = 1e-6

# class -> (constructor arguments other than the defaults, kind of data)
LOSSES = {
    "BinaryCrossentropy": ({"label_smoothing": 0.1}, "binary"),
    "BinaryFocalCrossentropy": ({"gamma": 3.0, "alpha": 0.4, "apply_class_balancing": True}, "binary"),
    "CategoricalCrossentropy": ({"from_logits": True, "label_smoothing": 0.2, "reduction": "sum"}, "onehot"),
    "CategoricalFocalCrossentropy": ({"alpha": 0.3, "gamma": 1.5}, "onehot"),
    "CategoricalGeneralizedCrossEntropy": ({"q": 0.7}, "sparse"),
    "CategoricalHinge": ({}, "onehot"),
    "Circle": ({"gamma": 10.0, "margin": 0.3}, "embedding"),
    "CosineSimilarity": ({"axis": -1}, "onehot"),
    "Dice": ({}, "onehot"),
    "Hinge": ({}, "binary"),
    "Huber": ({"delta": 0.3}, "onehot"),
    "KLDivergence": ({}, "onehot"),
    "LogCosh": ({}, "onehot"),
    "MeanAbsoluteError": ({"reduction": "mean"}, "onehot"),
    "MeanAbsolutePercentageError": ({}, "onehot"),
    "MeanSquaredError": ({}, "onehot"),
    "MeanSquaredLogarithmicError": ({}, "onehot"),
    "Poisson": ({}, "onehot"),
    "SparseCategoricalCrossentropy": ({"from_logits": True, "ignore_class": 1}, "sparse"),
    "SquaredHinge": ({}, "binary"),
    "Tversky": ({"alpha": 0.3, "beta": 0.7}, "onehot"),
}
METRICS = {
    "AUC": ({"num_thresholds": 50, "curve": "PR"}, "binary"),
    "Accuracy": ({}, "binary"),
    "BinaryAccuracy": ({"threshold": 0.3}, "binary"),
    "BinaryCrossentropy": ({"label_smoothing": 0.1}, "binary"),
    "BinaryIoU": ({"target_class_ids": [1], "threshold": 0.4}, "binary"),
    "CategoricalAccuracy": ({}, "onehot"),
    "CategoricalCrossentropy": ({"from_logits": True}, "onehot"),
    "CategoricalHinge": ({}, "onehot"),
    "ConcordanceCorrelation": ({}, "onehot"),
    "CosineSimilarity": ({}, "onehot"),
    "F1Score": ({"average": "macro", "threshold": 0.4}, "onehot"),
    "FBetaScore": ({"average": "weighted", "beta": 2.0}, "onehot"),
    "FalseNegatives": ({"thresholds": [0.3, 0.6]}, "binary"),
    "FalsePositives": ({}, "binary"),
    "Hinge": ({}, "binary"),
    "IoU": ({"num_classes": 3, "target_class_ids": [0, 2], "sparse_y_pred": False}, "sparse"),
    "KLDivergence": ({}, "onehot"),
    "LogCoshError": ({}, "onehot"),
    "MeanAbsoluteError": ({}, "onehot"),
    "MeanAbsolutePercentageError": ({}, "onehot"),
    "MeanIoU": ({"num_classes": 3, "sparse_y_pred": False}, "sparse"),
    "MeanSquaredError": ({}, "onehot"),
    "MeanSquaredLogarithmicError": ({}, "onehot"),
    "OneHotIoU": ({"num_classes": 3, "target_class_ids": [1]}, "onehot"),
    "OneHotMeanIoU": ({"num_classes": 3}, "onehot"),
    "PearsonCorrelation": ({}, "onehot"),
    "Poisson": ({}, "onehot"),
    "Precision": ({"thresholds": 0.4}, "binary"),
    "PrecisionAtRecall": ({"recall": 0.5, "num_thresholds": 50}, "binary"),
    "R2Score": ({}, "onehot"),
    "Recall": ({"top_k": 1}, "onehot"),
    "RecallAtPrecision": ({"precision": 0.5}, "binary"),
    "RootMeanSquaredError": ({}, "onehot"),
    "SensitivityAtSpecificity": ({"specificity": 0.5}, "binary"),
    "SparseCategoricalAccuracy": ({}, "sparse"),
    "SparseCategoricalCrossentropy": ({}, "sparse"),
    "SparseTopKCategoricalAccuracy": ({"k": 2}, "sparse"),
    "SpecificityAtSensitivity": ({"sensitivity": 0.5}, "binary"),
    "SquaredHinge": ({}, "binary"),
    "TopKCategoricalAccuracy": ({"k": 2}, "onehot"),
    "TrueNegatives": ({}, "binary"),
    "TruePositives": ({"thresholds": [0.2, 0.5, 0.8]}, "binary"),
}
#: metrics of values (update_state(values)), not of predictions: compile() does not take them
VALUE_METRICS = ("Mean", "Sum")


def _data(kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "binary":
        return (rng.random((16, 1)) < 0.5).astype(np.float32), rng.uniform(0.05, 0.95, (16, 1)).astype(np.float32)
    if kind == "embedding":  # Circle: class labels and embeddings
        return rng.integers(0, 3, 16), rng.standard_normal((16, 4)).astype(np.float32)
    p = rng.dirichlet(np.ones(3), 16).astype(np.float32)
    labels = rng.integers(0, 3, 16)
    if kind == "sparse":
        return labels, p
    return np.eye(3, dtype=np.float32)[labels], p


def _tiny(loss, metrics=()):
    model = normlab.Sequential([normlab.layers.Dense(3)])
    model.build((None, 2))
    model.compile(optimizer="sgd", loss=loss, metrics=list(metrics))
    return model


def _compile_config(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("config.json"))["compile_config"]


def _metric_value(metric, y, p):
    metric.update_state(y, p)
    return np.asarray(metric.result(), np.float64)


def close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(b, a, rtol=RTOL, atol=RTOL * max(np.max(np.abs(a)), 1e-30))


def test_every_loss_and_metric_keras_has_is_covered():
    assert sorted(set(L.registry._classes) & set(KERAS_LOSSES)) == sorted(LOSSES)
    assert sorted(set(M.registry._classes) & set(KERAS_METRICS)) == sorted(set(METRICS) | set(VALUE_METRICS))


@needs_h5py
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_through_a_keras_file(name, tmp_path):
    kwargs, kind = LOSSES[name]
    loss = L.registry._classes[name](**kwargs)
    save_keras(_tiny(loss), tmp_path / "m.keras")
    back = load_keras(tmp_path / "m.keras").loss
    assert type(back) is type(loss) and back.get_config() == loss.get_config()


@needs_h5py
def test_metrics_through_a_keras_file(tmp_path):
    metrics = [M.registry._classes[n](**METRICS[n][0]) for n in sorted(METRICS)] + ["mae", "accuracy", "acc"]
    save_keras(_tiny("mse", metrics), tmp_path / "m.keras")
    back = load_keras(tmp_path / "m.keras")._metric_ids
    assert back[-3:] == ["mae", "accuracy", "accuracy"]
    for m, b in zip(metrics[:-3], back):
        assert type(b) is type(m) and b.get_config() == m.get_config()


@needs_h5py
@pytest.mark.parametrize("loss, metrics, match", [
    (L.SparseCategoricalCrossentropy(label_smoothing=0.1), [], "label_smoothing"),
    (L.MeanSquaredError(from_logits=True) if "from_logits" in L.MeanSquaredError().get_config() else None, [],
     "from_logits"),
    ("mse", [M.SparseTopKCategoricalAccuracy(from_sorted_ids=True)], "from_sorted_ids"),
    ("mse", ["logcosh"], "'logcosh' is not one Keras 3's compile"),
])
def test_losses_and_metrics_keras_lacks_are_refused(loss, metrics, match, tmp_path):
    if loss is None:
        pytest.skip("this normlab loss has no such argument")
    with pytest.raises(ValueError, match=match):
        save_keras(_tiny(loss, metrics), tmp_path / "m.keras")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------- live Keras
def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax" if importlib.util.find_spec("jax") else "torch")
    return pytest.importorskip("keras")


@needs_h5py
def test_losses_with_keras(tmp_path):
    """normlab's loss objects as Keras builds them from normlab's file, and Keras's as normlab reads them."""
    keras = _keras()
    native = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    for name, (kwargs, kind) in sorted(LOSSES.items()):
        y, p = _data(kind)
        ours = L.registry._classes[name](**kwargs)
        save_keras(_tiny(ours), tmp_path / f"{name}.keras")
        # as keras.saving.load_model builds it (keras.losses.deserialize lacks some classes)
        theirs = keras.saving.deserialize_keras_object(_compile_config(tmp_path / f"{name}.keras")["loss"])
        assert type(theirs).__name__ == name
        expected = np.asarray(ours(y, p), np.float64)
        close(expected, keras.ops.convert_to_numpy(theirs(y, p)))
        native.compile(optimizer="sgd", loss=getattr(keras.losses, name)(**kwargs))
        native.save(tmp_path / f"k-{name}.keras")
        read = load_keras(tmp_path / f"k-{name}.keras").loss
        # what Keras itself reads back (Keras 3.15's Huber leaves delta out of its own config)
        reloaded = keras.saving.deserialize_keras_object(_compile_config(tmp_path / f"k-{name}.keras")["loss"])
        close(keras.ops.convert_to_numpy(reloaded(y, p)), read(y, p))
    # one file through keras.saving.load_model whole, compiled
    save_keras(_tiny(L.Huber(delta=0.3)), tmp_path / "whole.keras")
    y, p = _data("onehot")
    close(L.Huber(delta=0.3)(y, p), keras.ops.convert_to_numpy(keras.saving.load_model(tmp_path / "whole.keras").loss(y, p)))


@needs_h5py
def test_metrics_with_keras(tmp_path):
    keras = _keras()
    names = sorted(METRICS)
    ours = [M.registry._classes[n](**METRICS[n][0]) for n in names]
    save_keras(_tiny("mse", ours + ["mae", "accuracy"]), tmp_path / "n.keras")
    keras.saving.load_model(tmp_path / "n.keras")  # compiles with every metric
    entries = _compile_config(tmp_path / "n.keras")["metrics"]
    assert entries[-2:] == ["mae", "accuracy"]
    native = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    native.compile(optimizer="sgd", loss="mse",
                   metrics=[getattr(keras.metrics, n)(**METRICS[n][0]) for n in names])
    native.save(tmp_path / "k.keras")
    read = load_keras(tmp_path / "k.keras")._metric_ids
    for i, name in enumerate(names):
        y, p = _data(METRICS[name][1], seed=i)
        theirs = keras.saving.deserialize_keras_object(entries[i])
        assert type(theirs).__name__ == name
        expected = _metric_value(ours[i], y, p)
        close(expected, keras.ops.convert_to_numpy(_metric_value(theirs, y, p)))
        fresh = getattr(keras.metrics, name)(**METRICS[name][0])
        assert type(read[i]).__name__ == name
        close(keras.ops.convert_to_numpy(_metric_value(fresh, y, p)), _metric_value(read[i], y, p))
