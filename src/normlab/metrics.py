"""Streaming metrics: ``update_state(y_true, y_pred, sample_weight=None)``, ``result()``, ``reset_state()``.

Each metric is a weighted running mean of per-sample values, as Keras's
``MeanMetricWrapper``: ``result = sum_i w_i v_i / sum_i w_i`` (``w_i = 1``
without ``sample_weight``).

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
from ._validation import Boolean, Interval, NoneOk, Options, real_array, validate_params

registry = Registry("metric")

__all__ = [
    "Metric",
    "Mean",
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "get",
]


_FLOAT_DTYPES = ("float16", "float32", "float64")


class Metric:
    """Base: a weighted running mean of per-sample values.

    ``dtype`` (Keras's argument) is the dtype of :meth:`result`: the running
    sums are kept in float64 and the result is rounded to ``dtype`` (a Python
    float either way); ``None`` keeps float64.
    """

    _param_constraints = {"name": [NoneOk(), str], "dtype": [NoneOk(), Options(_FLOAT_DTYPES)]}

    def __init__(self, name: str | None = None, dtype=None):
        validate_params(type(self).__name__, Metric._param_constraints, {"name": name, "dtype": dtype})
        self.name = name or self.default_name
        self.dtype = None if dtype is None else np.dtype(dtype).name
        self.reset_state()

    default_name = "metric"

    def reset_state(self) -> None:
        self._total = 0.0
        self._count = 0.0

    def values(self, y_true, y_pred) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch: the values of ``(y_true, y_pred)``, weighted by ``sample_weight``.

        As Keras's ``reduce_to_samplewise_values``: ``sample_weight`` holds one
        weight per sample (shape (N,)), or per value (the values' shape, or a
        shape that broadcasts to it, e.g. (1, T)); each sample counts with the
        mean of its weights.
        """
        who = f"{type(self).__name__}.update_state"
        y_pred = _numeric(y_pred, who, "y_pred")
        if y_pred.ndim == 0:
            raise ValueError(f"{who}: 'y_pred' must be a batch (samples first), got a scalar.")
        v = np.asarray(self.values(self._check_true(y_true, y_pred, who), y_pred), dtype=np.float64)
        if sample_weight is None:
            v = v.reshape(len(v), -1).mean(axis=1) if v.ndim > 1 else v
            self._total += float(v.sum())
            self._count += v.size
            return
        w = _numeric(sample_weight, who, "sample_weight").astype(np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{who}: 'sample_weight' must hold finite weights >= 0.")
        if w.ndim == 0:
            w = np.full(len(v), float(w))
        # Keras's squeeze_or_expand_to_same_rank: a trailing axis of 1 on either side is dropped
        if v.ndim == w.ndim + 1 and v.shape[-1] == 1:
            v = v[..., 0]
        elif w.ndim == v.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
        try:
            if w.ndim > v.ndim:
                raise ValueError
            if v.ndim > w.ndim:  # per-sample weights: average each sample's values first
                v = v.mean(axis=tuple(range(w.ndim, v.ndim)))
            w = np.broadcast_to(w, v.shape)
        except ValueError:
            raise ValueError(f"{who}: 'sample_weight' of shape {w.shape} must hold one weight per sample "
                             f"({len(v)}) or per value (shape {v.shape}).") from None
        vw = v * w
        if v.ndim > 1:
            vw = vw.reshape(len(v), -1).mean(axis=1)
            w = w.reshape(len(w), -1).mean(axis=1)
        self._total += float(vw.sum())
        self._count += float(w.sum())

    def _check_true(self, y_true, y_pred: np.ndarray, who: str) -> np.ndarray:
        """``y_true`` as an array of the shape of ``y_pred`` (checked; metrics with other targets override)."""
        y = _numeric(y_true, who, "y_true")
        if y.size != y_pred.size:
            raise ValueError(f"{who}: 'y_true' of shape {y.shape} does not match 'y_pred' of shape {y_pred.shape}.")
        return y.reshape(y_pred.shape)

    def result(self) -> float:
        value = self._total / self._count if self._count else 0.0
        return value if self.dtype is None else float(np.asarray(value, dtype=self.dtype))

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _numeric(value, who: str, arg: str) -> np.ndarray:
    return real_array(value, who, f"'{arg}'")


@registry.register
class Mean(Metric):
    """Running mean of the values passed as ``y_pred`` (``y_true`` is ignored)."""

    default_name = "mean"

    def values(self, y_true, y_pred):
        return y_pred

    def _check_true(self, y_true, y_pred, who):
        return y_true  # ignored

    def update_value(self, value: float, weight: float = 1.0) -> None:
        self._total += float(value) * weight
        self._count += weight


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
        validate_params(type(self).__name__, {"k": self._param_constraints["k"]}, {"k": k})
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
        validate_params(type(self).__name__, {c: self._param_constraints[c] for c in ("k", "from_sorted_ids")},
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
