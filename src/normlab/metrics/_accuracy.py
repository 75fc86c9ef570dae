"""Accuracy metrics (Keras 3): exact, binary, categorical, sparse categorical and top-k.

``"accuracy"`` (or ``"acc"``) in ``compile(metrics=...)`` resolves, as in
Keras, from the loss: sparse categorical cross-entropy gives
:class:`SparseCategoricalAccuracy`, categorical cross-entropy
:class:`CategoricalAccuracy`, binary cross-entropy :class:`BinaryAccuracy`,
anything else :class:`Accuracy` (exact equality).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval, validate_params
from ._base import Metric, _numeric, registry


@registry.register
class Accuracy(Metric):
    """Fraction of predictions exactly equal to the targets."""

    default_name = "accuracy"

    def values(self, y_true, y_pred):
        return y_true == y_pred


@registry.register
class BinaryAccuracy(Metric):
    """Fraction of entries with ``(y_pred > threshold) == y_true``."""

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, dtype=None, threshold: float = 0.5):
        validate_params("BinaryAccuracy", {"threshold": [Interval(numbers.Real, None, None)]}, {"threshold": threshold})
        self.threshold = float(threshold)
        super().__init__(name, dtype)

    def values(self, y_true, y_pred):
        return (y_pred > self.threshold) == (y_true > 0.5)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@registry.register
class CategoricalAccuracy(Metric):
    """``argmax(y_pred) == argmax(y_true)`` with one-hot targets."""

    default_name = "categorical_accuracy"

    def _check_true(self, y_true, y_pred, who):
        y = _numeric(y_true, who, "y_true")
        if y.shape != y_pred.shape:
            raise ValueError(f"{who}: 'y_true' (one-hot) must have the shape of 'y_pred' {y_pred.shape}, got {y.shape}.")
        return y

    def values(self, y_true, y_pred):
        return np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)


@registry.register
class SparseCategoricalAccuracy(Metric):
    """``argmax(y_pred) == y_true`` with integer labels."""

    default_name = "sparse_categorical_accuracy"

    def _check_true(self, y_true, y_pred, who):
        if y_pred.ndim < 2:
            raise ValueError(f"{who}: 'y_pred' must have a class axis (shape (N, ..., K)), got shape {y_pred.shape}.")
        y = _numeric(y_true, who, "y_true")
        if y.shape != y_pred.shape[:-1] and y.shape != y_pred.shape[:-1] + (1,):
            raise ValueError(f"{who}: 'y_true' (integer labels) must have shape {y_pred.shape[:-1]} for 'y_pred' "
                             f"of shape {y_pred.shape}, got {y.shape}.")
        return y.reshape(y_pred.shape[:-1])

    def values(self, y_true, y_pred):
        return np.argmax(y_pred, axis=-1) == y_true


def _in_top_k(labels: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Whether each label's score is among the ``k`` largest of its row.

    As Keras's ``ops.in_top_k``: a label is in the top ``k`` when fewer than
    ``k`` classes score strictly higher (so ties with the k-th score count).
    """
    labels = labels.astype(np.intp)
    known = (labels >= 0) & (labels < y_pred.shape[-1])  # a label outside the classes is never in the top k
    scores = np.take_along_axis(y_pred, np.where(known, labels, 0)[..., None], axis=-1)
    return known & ((y_pred > scores).sum(axis=-1) < k)


@registry.register
class TopKCategoricalAccuracy(CategoricalAccuracy):
    """Whether ``argmax(y_true)`` (one-hot targets) is among the ``k`` largest predictions."""

    default_name = "top_k_categorical_accuracy"
    _param_constraints = {**Metric._param_constraints, "k": [Interval(numbers.Integral, 1, None)]}

    def __init__(self, k: int = 5, name: str | None = None, dtype=None):
        validate_params(type(self), {"k": self._param_constraints["k"]}, {"k": k})
        self.k = int(k)
        super().__init__(name, dtype)

    def values(self, y_true, y_pred):
        return _in_top_k(np.argmax(y_true, axis=-1), y_pred, self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@registry.register
class SparseTopKCategoricalAccuracy(SparseCategoricalAccuracy):
    """Whether the integer label is among the ``k`` largest predictions.

    With ``from_sorted_ids=True`` ``y_pred`` holds class ids sorted by
    decreasing score (as ``top_k`` returns them), and the label must be one
    of the first ``k``.
    """

    default_name = "sparse_top_k_categorical_accuracy"
    _param_constraints = {**Metric._param_constraints, "k": [Interval(numbers.Integral, 1, None)],
                          "from_sorted_ids": [Boolean()]}

    def __init__(self, k: int = 5, name: str | None = None, dtype=None, from_sorted_ids: bool = False):
        validate_params(type(self), {c: self._param_constraints[c] for c in ("k", "from_sorted_ids")},
                        {"k": k, "from_sorted_ids": from_sorted_ids})
        self.k = int(k)
        self.from_sorted_ids = bool(from_sorted_ids)
        super().__init__(name, dtype)

    def values(self, y_true, y_pred):
        if self.from_sorted_ids:
            return (y_pred[..., : self.k] == y_true[..., None]).any(axis=-1)
        return _in_top_k(y_true, y_pred, self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "from_sorted_ids": self.from_sorted_ids}
