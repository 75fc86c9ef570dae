"""Streaming metrics: ``update_state(y_true, y_pred)``, ``result()``, ``reset_state()``.

``"accuracy"`` (or ``"acc"``) in ``compile(metrics=...)`` resolves, as in
Keras, from the loss: sparse categorical cross-entropy gives
:class:`SparseCategoricalAccuracy`, categorical cross-entropy
:class:`CategoricalAccuracy`, binary cross-entropy :class:`BinaryAccuracy`,
anything else :class:`Accuracy` (exact equality).
"""

from __future__ import annotations

import numbers

import numpy as np

from ._registry import Registry
from ._validation import Interval, NoneOk, validate_params

registry = Registry("metric")

__all__ = [
    "Metric",
    "Mean",
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "get",
]


class Metric:
    """Base: a weighted running mean of per-sample values."""

    def __init__(self, name: str | None = None):
        validate_params(type(self).__name__, {"name": [NoneOk(), str]}, {"name": name})
        self.name = name or self.default_name
        self.reset_state()

    default_name = "metric"

    def reset_state(self) -> None:
        self._total = 0.0
        self._count = 0.0

    def values(self, y_true, y_pred) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def update_state(self, y_true, y_pred) -> None:
        v = np.asarray(self.values(y_true, np.asarray(y_pred)), dtype=np.float64)
        self._total += float(v.sum())
        self._count += v.size

    def result(self) -> float:
        return self._total / self._count if self._count else 0.0

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@registry.register
class Mean(Metric):
    """Running mean of the values passed as ``y_pred`` (``y_true`` is ignored)."""

    default_name = "mean"

    def values(self, y_true, y_pred):
        return y_pred

    def update_value(self, value: float, weight: float = 1.0) -> None:
        self._total += float(value) * weight
        self._count += weight


@registry.register
class Accuracy(Metric):
    """Fraction of predictions exactly equal to the targets."""

    default_name = "accuracy"

    def values(self, y_true, y_pred):
        y = np.asarray(y_true)
        return (y.reshape(y_pred.shape) == y_pred).reshape(len(y_pred), -1).mean(axis=1)


@registry.register
class BinaryAccuracy(Metric):
    """Fraction of entries with ``(y_pred > threshold) == y_true``."""

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5):
        validate_params("BinaryAccuracy", {"threshold": [Interval(numbers.Real, None, None)]}, {"threshold": threshold})
        self.threshold = float(threshold)
        super().__init__(name)

    def values(self, y_true, y_pred):
        y = np.asarray(y_true).reshape(y_pred.shape)
        return ((y_pred > self.threshold) == (y > 0.5)).reshape(len(y_pred), -1).mean(axis=1)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


@registry.register
class CategoricalAccuracy(Metric):
    """``argmax(y_pred) == argmax(y_true)`` with one-hot targets."""

    default_name = "categorical_accuracy"

    def values(self, y_true, y_pred):
        return np.argmax(y_pred, axis=-1) == np.argmax(np.asarray(y_true), axis=-1)


@registry.register
class SparseCategoricalAccuracy(Metric):
    """``argmax(y_pred) == y_true`` with integer labels."""

    default_name = "sparse_categorical_accuracy"

    def values(self, y_true, y_pred):
        y = np.asarray(y_true).reshape(len(y_pred))
        return np.argmax(y_pred, axis=-1) == y


_ACCURACY_FOR_LOSS = {
    "SparseCategoricalCrossentropy": SparseCategoricalAccuracy,
    "CategoricalCrossentropy": CategoricalAccuracy,
    "BinaryCrossentropy": BinaryAccuracy,
}


def get(identifier, loss=None) -> Metric:
    """Resolve a metric name, config or instance; ``"accuracy"`` depends on ``loss``."""
    if isinstance(identifier, str) and identifier in ("accuracy", "acc"):
        cls = _ACCURACY_FOR_LOSS.get(type(loss).__name__, Accuracy)
        return cls(name=identifier)
    metric = registry.get(identifier, base=Metric)
    if metric is None:
        raise ValueError("metrics entries cannot be None.")
    return metric
