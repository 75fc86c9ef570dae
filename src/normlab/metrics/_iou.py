"""Intersection-over-union metrics (Keras 3's ``IoU``, ``BinaryIoU``, ``MeanIoU``, ``OneHotIoU``, ``OneHotMeanIoU``).

A weighted ``num_classes x num_classes`` confusion matrix ``C`` (rows: true
class, columns: predicted) accumulates over batches; for class ``c``,
``IoU_c = C_cc / (sum_j C_cj + sum_i C_ic - C_cc)``, and the result is the
mean over ``target_class_ids`` of the classes whose denominator is not 0.
Labels outside ``[0, num_classes)`` and ``ignore_class`` do not count. As
in Keras, the matrix is kept in the metric's ``dtype``, integers by default:
float sample weights are then truncated (with a warning); pass
``dtype="float32"`` for fractional weights. The result is a float.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from .._validation import Boolean, Interval, InvalidParameterError, NoneOk, validate_params
from ._base import Metric, MetricVariable, _numeric, registry

EPSILON = 1e-7

_COMMON = {
    "num_classes": [Interval(numbers.Integral, 1, None)],
    "ignore_class": [NoneOk(), Interval(numbers.Integral, None, None)],
    "sparse_y_true": [Boolean()],
    "sparse_y_pred": [Boolean()],
    "axis": [Interval(numbers.Integral, None, None)],
}


class _IoUBase(Metric):
    _state = ("_cm",)

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        args = {"num_classes": num_classes, "ignore_class": ignore_class, "sparse_y_true": sparse_y_true,
                "sparse_y_pred": sparse_y_pred, "axis": axis}
        validate_params(type(self), _COMMON, args)
        self.num_classes, self.ignore_class = int(num_classes), ignore_class
        self.sparse_y_true, self.sparse_y_pred, self.axis = bool(sparse_y_true), bool(sparse_y_pred), int(axis)
        super().__init__(name=name, dtype=dtype)

    @property
    def _dtype(self):
        return self.dtype or "int32"

    @property
    def _integer(self) -> bool:
        return np.dtype(self._dtype).kind in "iu"

    @property
    def variables(self):
        return [MetricVariable(self._cm, "total_confusion_matrix")]

    @property
    def total_cm(self):
        return np.array(self._cm)

    def reset_state(self):
        self._cm = np.zeros((self.num_classes, self.num_classes))

    def update_state(self, y_true, y_pred, sample_weight=None):
        who = f"{type(self).__name__}.update_state"
        y = np.asarray(_numeric(y_true, who, "y_true"))
        p = np.asarray(_numeric(y_pred, who, "y_pred"))
        if not self.sparse_y_true:
            y = np.argmax(y, axis=self.axis)
        if not self.sparse_y_pred:
            p = np.argmax(p, axis=self.axis)
        y, p = y.reshape(-1), p.reshape(-1)
        if self._integer:  # Keras converts the labels (and weights) to the metric's integer dtype
            y, p = y.astype(np.int64), p.astype(np.int64)
        if sample_weight is None:
            w = np.ones(y.shape)
        else:
            w = np.asarray(_numeric(sample_weight, who, "sample_weight"), dtype=np.float64).reshape(-1)
            if self._integer and np.any(w != np.trunc(w)):
                warnings.warn("You are passing weight as `float`, but dtype is `int`. This may result in an "
                              "incorrect weight due to type casting Consider using integer weights.", stacklevel=2)
            w = np.trunc(w) if self._integer else w
            w = np.broadcast_to(w, y.shape)
        if y.shape != p.shape:
            raise ValueError(f"{who}: 'y_true' and 'y_pred' hold {y.size} and {p.size} labels.")
        k = self.num_classes
        keep = (y >= 0) & (y < k) & (p >= 0) & (p < k)
        if self.ignore_class is not None:
            keep &= y != self.ignore_class
        cm = np.zeros((k, k))
        np.add.at(cm, (y[keep].astype(np.intp), p[keep].astype(np.intp)), w[keep])
        self._cm = self._cm + cm

    def _round(self, value):
        return value if self._integer else super()._round(value)


class _TargetIoU(_IoUBase):
    def _set_targets(self, target_class_ids):
        ids = list(target_class_ids)
        if not ids or max(ids) >= self.num_classes:
            raise InvalidParameterError(f"Target class id {max(ids) if ids else None} is out of range, which is "
                                        f"[0, {self.num_classes}).")
        self.target_class_ids = [int(i) for i in ids]

    def result(self):
        cm = self._cm
        tp = np.diag(cm)
        denominator = cm.sum(axis=0) + cm.sum(axis=1) - tp
        ids = np.asarray(self.target_class_ids)
        tp, denominator = tp[ids], denominator[ids]
        valid = denominator > 1e-9
        iou = np.where(valid, tp / (denominator + EPSILON), 0.0)
        return self._round(float(np.sum(iou) / (valid.sum() + EPSILON)))


_TARGETS = [list, tuple]


@registry.register
class IoU(_TargetIoU):
    """The mean IoU over ``target_class_ids`` (see the module docstring)."""

    default_name = "io_u"
    _param_constraints = {**Metric._param_constraints, **_COMMON, "target_class_ids": _TARGETS}

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        validate_params("IoU", {"target_class_ids": _TARGETS}, {"target_class_ids": target_class_ids})
        super().__init__(num_classes, name, dtype, ignore_class, sparse_y_true, sparse_y_pred, axis)
        self._set_targets(target_class_ids)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "target_class_ids": self.target_class_ids,
                "ignore_class": self.ignore_class, "sparse_y_true": self.sparse_y_true,
                "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}


@registry.register
class BinaryIoU(_TargetIoU):
    """IoU of binary predictions: ``y_pred >= threshold`` is class 1."""

    default_name = "binary_io_u"
    _param_constraints = {**Metric._param_constraints, "target_class_ids": _TARGETS,
                          "threshold": [Interval(numbers.Real, None, None)]}

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None, dtype=None):
        validate_params("BinaryIoU", {k: self._param_constraints[k] for k in ("target_class_ids", "threshold")},
                        {"target_class_ids": target_class_ids, "threshold": threshold})
        super().__init__(2, name, dtype)
        self._set_targets(target_class_ids)
        self.threshold = threshold

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = np.asarray(_numeric(y_pred, "BinaryIoU.update_state", "y_pred"), dtype=np.float32)
        super().update_state(y_true, (p >= self.threshold).astype(np.int64), sample_weight)

    def get_config(self):
        return {"target_class_ids": self.target_class_ids, "threshold": self.threshold, "name": self.name,
                "dtype": self.dtype}


@registry.register
class MeanIoU(_TargetIoU):
    """The mean IoU over all ``num_classes`` classes (those that occur)."""

    default_name = "mean_io_u"
    _param_constraints = {**Metric._param_constraints, **_COMMON}

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True, sparse_y_pred=True,
                 axis=-1):
        super().__init__(num_classes, name, dtype, ignore_class, sparse_y_true, sparse_y_pred, axis)
        self._set_targets(range(self.num_classes))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype,
                "ignore_class": self.ignore_class, "sparse_y_true": self.sparse_y_true,
                "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}


@registry.register
class OneHotIoU(_TargetIoU):
    """:class:`IoU` with one-hot ``y_true`` (and scores or one-hot ``y_pred``): classes by argmax over ``axis``."""

    default_name = "one_hot_io_u"
    _param_constraints = {**Metric._param_constraints,
                          **{k: v for k, v in _COMMON.items() if k != "sparse_y_true"}, "target_class_ids": _TARGETS}

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_pred=False,
                 axis=-1):
        validate_params("OneHotIoU", {"target_class_ids": _TARGETS}, {"target_class_ids": target_class_ids})
        super().__init__(num_classes, name, dtype, ignore_class, False, sparse_y_pred, axis)
        self._set_targets(target_class_ids)

    def get_config(self):
        return {"num_classes": self.num_classes, "target_class_ids": self.target_class_ids, "name": self.name,
                "dtype": self.dtype, "ignore_class": self.ignore_class, "sparse_y_pred": self.sparse_y_pred,
                "axis": self.axis}


@registry.register
class OneHotMeanIoU(_TargetIoU):
    """:class:`MeanIoU` with one-hot ``y_true``."""

    default_name = "one_hot_mean_io_u"
    _param_constraints = {**Metric._param_constraints, **{k: v for k, v in _COMMON.items() if k != "sparse_y_true"}}

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, name, dtype, ignore_class, False, sparse_y_pred, axis)
        self._set_targets(range(self.num_classes))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype,
                "ignore_class": self.ignore_class, "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}
