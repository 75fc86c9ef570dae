"""Confusion-matrix metrics (Keras 3): counts, precision, recall, the ``...At...`` metrics and AUC.

Each keeps weighted counts of true/false positives/negatives at a list of
thresholds ``t``: an entry is predicted positive when ``y_pred > t`` and is
a true label when ``y_true`` is nonzero; ``sample_weight`` weighs samples
(or entries). As in Keras's ``update_confusion_matrix_variables``:

- ``top_k``: only the ``k`` largest predictions of each row count as
  positive (the others are set to ``-1e10``); ``class_id``: only that
  column counts;
- evenly spaced thresholds (``num_thresholds`` of AUC and the ``...At...``
  metrics) compare ``clip(y_pred, 0, 1)``;
- AUC's thresholds are ``[-eps, t_1, ..., 1 + eps]`` (``eps = 1e-7``), so
  that predictions of exactly 0 and 1 fall inside the curve.

AUC sums ``(x_i - x_{i+1}) h_i`` over the thresholds (ROC: ``x`` the
false-positive rate, ``y`` the recall; PR: ``x`` recall, ``y`` precision;
``h`` the mean of the two heights, or their min or max), and the PR curve
with interpolation is Davis and Goadrich's (2006) interpolation, as Keras
computes it.
"""

from __future__ import annotations

import enum
import numbers

import numpy as np

from .._validation import (Boolean, Instance, Interval, InvalidParameterError, NoneOk, Options, invalid_parameter,
                           validate_params)
from ._base import Metric, _numeric, registry

EPSILON = 1e-7
NEG_INF = -1e10


def _divide_no_nan(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


def _evenly(thresholds) -> bool:
    """Keras's ``is_evenly_distributed_thresholds``: ``i / (n - 1)`` for ``n >= 3``."""
    n = len(thresholds)
    return n >= 3 and np.allclose(thresholds, np.arange(n, dtype=np.float32) / (n - 1), atol=EPSILON)


def _check_thresholds(owner, thresholds):
    values = [thresholds] if isinstance(thresholds, numbers.Real) else list(thresholds)
    for t in values:
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t <= 1:
            raise invalid_parameter(owner, "thresholds", "a float or a list of floats in the range [0, 1]",
                                    thresholds)
    return [float(t) for t in values]


def _keras_thresholds(thresholds):
    """Keras's ``assert_thresholds_range(to_list(thresholds))`` sentence: it lists the values out of range."""
    bad = [t for t in (thresholds if isinstance(thresholds, list) else [thresholds])
           if t is None or t < 0 or t > 1]
    return f"Threshold values must be in [0, 1]. Received: {bad}" if bad else None


def confusion_counts(y_true, y_pred, thresholds, *, top_k=None, class_id=None, sample_weight=None,
                     multi_label=False, label_weights=None, evenly=False, who="metric"):
    """Weighted ``(tp, fp, tn, fn)`` at each threshold: arrays of shape ``(T,)``, or ``(T, labels)`` for ``multi_label``."""
    p = np.asarray(_numeric(y_pred, who, "y_pred"), dtype=np.float64)
    y = np.asarray(_numeric(y_true, who, "y_true"), dtype=np.float64)
    # Keras's squeeze_or_expand_to_same_rank(y_pred, y_true)
    if p.ndim == y.ndim + 1 and p.shape[-1] == 1:
        y = y[:, None] if y.ndim == 1 else y
        if y.ndim != p.ndim:
            p = p[..., 0]
    elif y.ndim == p.ndim + 1 and y.shape[-1] == 1:
        if p.ndim == 1:
            p = p[:, None]
        else:
            y = y[..., 0]
    if y.shape != p.shape:
        raise ValueError(f"{who}: 'y_true' of shape {y.shape} does not match 'y_pred' of shape {p.shape}.")
    w = None
    if sample_weight is not None:
        w = np.asarray(_numeric(sample_weight, who, "sample_weight"), dtype=np.float64)[..., None]
        if w.ndim == y.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
    if top_k is not None:
        order = np.argsort(-p, axis=-1, kind="stable")[..., :top_k]
        keep = np.zeros(p.shape, dtype=bool)
        np.put_along_axis(keep, order, True, axis=-1)
        p = np.where(keep, p, NEG_INF)
    if class_id is not None:
        if p.ndim == 1:
            raise ValueError(f"{who}: When class_id is provided, y_pred must be a 2D array with shape "
                             f"(num_samples, num_classes), found shape: {p.shape}")
        y, p = y[..., class_id, None], p[..., class_id, None]
        if w is not None and w.ndim == p.ndim and w.shape[-1] not in (1,):
            w = w[..., class_id, None]
    if evenly:
        p = np.clip(p, 0.0, 1.0)
    weights = np.ones(p.shape) if w is None else np.broadcast_to(w, p.shape).astype(np.float64)
    if label_weights is not None and not multi_label:
        weights = weights * np.broadcast_to(np.asarray(label_weights, np.float64), p.shape)
    label = y != 0
    th = np.asarray(thresholds, np.float64)
    if multi_label:
        if p.ndim != 2:
            raise ValueError(f"{who}: 'y_pred' must have rank 2 when multi_label=True; got shape {p.shape}.")
        pos = p[None, :, :] > th[:, None, None]  # (T, N, L)
        tp = np.einsum("tnl,nl->tl", pos, weights * label)
        fp = np.einsum("tnl,nl->tl", pos, weights * ~label)
        total_true = (weights * label).sum(axis=0)
        total_false = (weights * ~label).sum(axis=0)
    else:
        pf, wl, wn = p.reshape(-1), (weights * label).reshape(-1), (weights * ~label).reshape(-1)
        pos = pf[None, :] > th[:, None]  # (T, M)
        tp, fp = pos @ wl, pos @ wn
        total_true, total_false = wl.sum(), wn.sum()
    return tp, fp, total_false - fp, total_true - tp


_NAMES = {"tp": "true_positives", "fp": "false_positives", "tn": "true_negatives", "fn": "false_negatives"}


class _ConfusionMetric(Metric):
    """Keeps the counts named in ``_counts`` (``"tp"``, ``"fp"``, ``"tn"``, ``"fn"``) at ``self._thresholds``.

    The counts are also readable under Keras's variable names
    (``true_positives``, ...; copies).
    """

    _counts: tuple = ()
    _top_k = None
    _class_id = None
    _evenly = False

    @property
    def variables(self) -> list:
        from ._base import MetricVariable
        names = {"_Count": "accumulator"}
        single = names.get(type(self).__mro__[1].__name__)
        return [MetricVariable(getattr(self, f"_{c}"), single or _NAMES[c]) for c in self._counts]

    true_positives = property(lambda self: np.array(self._tp))
    false_positives = property(lambda self: np.array(self._fp))
    true_negatives = property(lambda self: np.array(self._tn))
    false_negatives = property(lambda self: np.array(self._fn))

    def _shape(self):
        return (len(self._thresholds),)

    def reset_state(self) -> None:
        for c in self._counts:
            setattr(self, f"_{c}", np.zeros(self._shape()))

    def _add(self, y_true, y_pred, sample_weight, **kwargs):
        tp, fp, tn, fn = confusion_counts(y_true, y_pred, self._thresholds, sample_weight=sample_weight,
                                          evenly=self._evenly, who=f"{type(self).__name__}.update_state", **kwargs)
        for c, v in zip(("tp", "fp", "tn", "fn"), (tp, fp, tn, fn)):
            if c in self._counts:
                setattr(self, f"_{c}", getattr(self, f"_{c}") + v)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        self._add(y_true, y_pred, sample_weight, top_k=self._top_k, class_id=self._class_id)

    def _per_threshold(self, value):
        return self._round(float(value[0]) if len(self._thresholds) == 1 else np.asarray(value, np.float64))


_THRESHOLDS = [NoneOk(), Interval(numbers.Real, 0, 1, closed="both"), list, tuple]


class _Count(_ConfusionMetric):
    _param_constraints = {**Metric._param_constraints, "thresholds": _THRESHOLDS}
    _keras_messages = {"thresholds": _keras_thresholds}

    def __init__(self, thresholds=None, name=None, dtype=None):
        validate_params(type(self), {"thresholds": _THRESHOLDS}, {"thresholds": thresholds})
        self.init_thresholds = thresholds
        self._thresholds = _check_thresholds(type(self), 0.5 if thresholds is None else thresholds)
        self._evenly = _evenly(self._thresholds)
        super().__init__(name, dtype)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def result(self):
        return self._per_threshold(getattr(self, f"_{self._counts[0]}"))

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds}


@registry.register
class TruePositives(_Count):
    """The weighted number of true positives at each threshold (one number for one threshold)."""
    default_name = "true_positives"
    _counts = ("tp",)


@registry.register
class FalsePositives(_Count):
    """The weighted number of false positives at each threshold."""
    default_name = "false_positives"
    _counts = ("fp",)


@registry.register
class TrueNegatives(_Count):
    """The weighted number of true negatives at each threshold."""
    default_name = "true_negatives"
    _counts = ("tn",)


@registry.register
class FalseNegatives(_Count):
    """The weighted number of false negatives at each threshold."""
    default_name = "false_negatives"
    _counts = ("fn",)


class _PrecisionRecall(_ConfusionMetric):
    _param_constraints = {**Metric._param_constraints, "thresholds": _THRESHOLDS,
                          "top_k": [NoneOk(), Interval(numbers.Integral, 1, None)],
                          "class_id": [NoneOk(), Interval(numbers.Integral, 0, None)]}
    _keras_messages = {"thresholds": _keras_thresholds}

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        validate_params(type(self), {k: self._param_constraints[k] for k in ("thresholds", "top_k", "class_id")},
                        {"thresholds": thresholds, "top_k": top_k, "class_id": class_id})
        self.init_thresholds = thresholds
        self.top_k, self.class_id = top_k, class_id
        self._top_k, self._class_id = top_k, class_id
        if thresholds is None:  # with top_k every kept prediction counts as positive
            self._thresholds = [0.5 if top_k is None else NEG_INF]
        else:
            self._thresholds = _check_thresholds(type(self), thresholds)
        self._evenly = _evenly(self._thresholds)
        super().__init__(name, dtype)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds, "top_k": self.top_k,
                "class_id": self.class_id}


@registry.register
class Precision(_PrecisionRecall):
    """``tp / (tp + fp)`` at each threshold (0 when nothing is predicted positive)."""
    default_name = "precision"
    _counts = ("tp", "fp")

    def result(self):
        return self._per_threshold(_divide_no_nan(self._tp, self._tp + self._fp))


@registry.register
class Recall(_PrecisionRecall):
    """``tp / (tp + fn)`` at each threshold (0 when there is no positive label)."""
    default_name = "recall"
    _counts = ("tp", "fn")

    def result(self):
        return self._per_threshold(_divide_no_nan(self._tp, self._tp + self._fn))


class _AtConstraint(_ConfusionMetric):
    """The best of one rate over the thresholds where another reaches ``value`` (Keras's
    ``SensitivitySpecificityBase``); ``num_thresholds`` evenly spaced in [0, 1] (one: 0.5)."""

    _counts = ("tp", "fp", "tn", "fn")
    _arg = "value"

    def __init__(self, value, num_thresholds=200, class_id=None, name=None, dtype=None):
        validate_params(type(self), {k: self._param_constraints[k] for k in (self._arg, "num_thresholds", "class_id")},
                        {self._arg: value, "num_thresholds": num_thresholds, "class_id": class_id})
        setattr(self, self._arg, value)
        self.value, self.num_thresholds, self.class_id = value, int(num_thresholds), class_id
        self._class_id = class_id
        if num_thresholds == 1:
            self._thresholds, self._evenly = [0.5], False
        else:
            n = int(num_thresholds)
            self._thresholds = [0.0] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1.0]
            self._evenly = True
        super().__init__(name, dtype)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def _rates(self):
        tp, fp, tn, fn = self._tp, self._fp, self._tn, self._fn
        return {"sensitivity": _divide_no_nan(tp, tp + fn), "recall": _divide_no_nan(tp, tp + fn),
                "specificity": _divide_no_nan(tn, tn + fp), "precision": _divide_no_nan(tp, tp + fp)}

    _constrained = _dependent = ""

    def result(self):
        rates = self._rates()
        feasible = rates[self._constrained] >= self.value
        return self._round(float(np.max(np.where(feasible, rates[self._dependent], 0.0), initial=0.0)))

    def get_config(self):
        return {**super().get_config(), "class_id": self.class_id, "num_thresholds": self.num_thresholds,
                self._arg: getattr(self, self._arg)}


def _at_constraints(arg):
    return {**Metric._param_constraints, arg: [Interval(numbers.Real, 0, 1, closed="both")],
            "num_thresholds": [Interval(numbers.Integral, 1, None)],
            "class_id": [NoneOk(), Interval(numbers.Integral, 0, None)]}


def _at_keras_messages(arg):
    return {arg: lambda v: f"Argument `{arg}` must be in the range [0, 1]. Received: {arg}={v}"
            if v < 0 or v > 1 else None,
            "num_thresholds": lambda v: "Argument `num_thresholds` must be an integer > 0. "
                                        f"Received: num_thresholds={v}" if v <= 0 else None}


@registry.register
class SensitivityAtSpecificity(_AtConstraint):
    """The best sensitivity (recall) at a threshold where the specificity is >= ``specificity``."""

    default_name, _arg, _constrained, _dependent = "sensitivity_at_specificity", "specificity", "specificity", \
        "sensitivity"
    _param_constraints = _at_constraints("specificity")
    _keras_messages = _at_keras_messages("specificity")

    def __init__(self, specificity, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(specificity, num_thresholds, class_id, name, dtype)


@registry.register
class SpecificityAtSensitivity(_AtConstraint):
    """The best specificity at a threshold where the sensitivity is >= ``sensitivity``."""

    default_name, _arg, _constrained, _dependent = "specificity_at_sensitivity", "sensitivity", "sensitivity", \
        "specificity"
    _param_constraints = _at_constraints("sensitivity")
    _keras_messages = _at_keras_messages("sensitivity")

    def __init__(self, sensitivity, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(sensitivity, num_thresholds, class_id, name, dtype)


@registry.register
class PrecisionAtRecall(_AtConstraint):
    """The best precision at a threshold where the recall is >= ``recall``."""

    default_name, _arg, _constrained, _dependent = "precision_at_recall", "recall", "recall", "precision"
    _param_constraints = _at_constraints("recall")
    _keras_messages = _at_keras_messages("recall")

    def __init__(self, recall, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(recall, num_thresholds, class_id, name, dtype)


@registry.register
class RecallAtPrecision(_AtConstraint):
    """The best recall at a threshold where the precision is >= ``precision``."""

    default_name, _arg, _constrained, _dependent = "recall_at_precision", "precision", "precision", "recall"
    _param_constraints = _at_constraints("precision")
    _keras_messages = _at_keras_messages("precision")

    def __init__(self, precision, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(precision, num_thresholds, class_id, name, dtype)


_CURVES = {"roc": "ROC", "pr": "PR", "prgain": "PRGAIN"}


class AUCCurve(str, enum.Enum):
    """AUC's curve (Keras's ``metrics_utils.AUCCurve``); equal to its string value."""

    ROC = "ROC"
    PR = "PR"
    PRGAIN = "PRGAIN"


class AUCSummationMethod(str, enum.Enum):
    """How AUC sums the curve (Keras's ``metrics_utils.AUCSummationMethod``); equal to its string value."""

    INTERPOLATION = "interpolation"
    MAJORING = "majoring"
    MINORING = "minoring"


@registry.register
class AUC(_ConfusionMetric):
    """The area under the ROC, PR or PR-gain curve, from counts at ``num_thresholds`` thresholds (module doc).

    ``multi_label=True``: one curve per label (column), averaged (weighted
    by ``label_weights``); otherwise all entries form one curve, each
    weighted by its label's ``label_weights``. ``from_logits``: ``y_pred``
    goes through a sigmoid first.
    """

    default_name = "auc"
    _counts = ("tp", "fp", "tn", "fn")
    _param_constraints = {
        **Metric._param_constraints,
        "num_thresholds": [NoneOk(), Interval(numbers.Integral, 2, None)],
        "curve": [Options(("ROC", "PR", "PRGAIN", "roc", "pr", "prgain")), Instance(AUCCurve)],
        "summation_method": [Options(("interpolation", "majoring", "minoring", "Interpolation", "Majoring",
                                      "Minoring")), Instance(AUCSummationMethod)],
        "thresholds": [NoneOk(), list, tuple, np.ndarray],
        "multi_label": [Boolean()],
        "num_labels": [NoneOk(), Interval(numbers.Integral, 1, None)],
        "label_weights": [NoneOk(), list, tuple, np.ndarray],
        "from_logits": [Boolean()],
    }
    _keras_messages = {
        # Keras checks num_thresholds only without thresholds; normlab checks it always
        "num_thresholds": lambda v: f"Argument `num_thresholds` must be an integer > 1. Received: num_thresholds={v}"
                                    if v <= 1 else None,
        "curve": lambda v: f'Invalid AUC curve value: "{v}". Expected values are ["PR", "ROC", "PRGAIN"]',
        "summation_method": lambda v: f'Invalid AUC summation method value: "{v}". '
                                      'Expected values are ["interpolation", "majoring", "minoring"]',
    }

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None, dtype=None,
                 thresholds=None, multi_label=False, num_labels=None, label_weights=None, from_logits=False):
        args = {"num_thresholds": num_thresholds, "curve": curve, "summation_method": summation_method,
                "thresholds": thresholds, "multi_label": multi_label, "num_labels": num_labels,
                "label_weights": label_weights, "from_logits": from_logits}
        validate_params(type(self), {k: self._param_constraints[k] for k in args}, args)
        if num_labels and not multi_label:
            raise InvalidParameterError("AUC: `num_labels` is needed only when `multi_label` is True.")
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(_check_thresholds(type(self), list(np.asarray(thresholds, np.float64).reshape(-1))))
            self.num_thresholds = len(inner) + 2
            self._evenly = _evenly(np.array([0.0] + inner + [1.0]))
        else:
            if num_thresholds is None:
                raise InvalidParameterError("The 'num_thresholds' parameter of AUC must be an int in the range "
                                            "[2, inf) when 'thresholds' is None. Got None instead.")
            n = int(num_thresholds)
            self.num_thresholds = n
            inner = [(i + 1) / (n - 1) for i in range(n - 2)]
            self._evenly = True
        self._thresholds = [0.0 - EPSILON] + inner + [1.0 + EPSILON]
        self.curve = AUCCurve(_CURVES[str(getattr(curve, "value", curve)).lower()])
        self.summation_method = AUCSummationMethod(str(getattr(summation_method, "value", summation_method)).lower())
        self.multi_label, self.num_labels = bool(multi_label), num_labels
        self.label_weights = None if label_weights is None else np.asarray(label_weights, np.float64)
        self._from_logits = bool(from_logits)
        self._labels = num_labels if multi_label else None
        super().__init__(name, dtype)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def _shape(self):
        if self.multi_label:
            return (self.num_thresholds, self._labels or 0)
        return (self.num_thresholds,)

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = np.asarray(_numeric(y_pred, "AUC.update_state", "y_pred"), dtype=np.float64)
        if self.multi_label and not self._labels:
            if p.ndim != 2:
                raise ValueError(f"AUC: `y_pred` must have rank 2 when `multi_label=True`. Found rank {p.ndim}.")
            self._labels = p.shape[1]
            self.reset_state()
        if self._from_logits:
            p = 1.0 / (1.0 + np.exp(-p))
        self._add(y_true, p, sample_weight, multi_label=self.multi_label,
                  label_weights=None if self.multi_label else self.label_weights)

    def _by_label(self, terms):
        if not self.multi_label:
            return float(np.sum(terms))
        by_label = np.sum(terms, axis=0)
        if self.label_weights is None:
            return float(np.mean(by_label))
        return float(_divide_no_nan(np.sum(by_label * self.label_weights), np.sum(self.label_weights)))

    def _interpolate_pr_auc(self):
        tp, fp, fn = self._tp, self._fp, self._fn
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _divide_no_nan(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _divide_no_nan(p[:-1], np.maximum(p[1:], 0)), 1.0)
        with np.errstate(divide="ignore"):
            log_ratio = np.log(ratio)
        terms = _divide_no_nan(slope * (dtp + intercept * log_ratio), np.maximum(tp[1:] + fn[1:], 0))
        return self._by_label(terms)

    def result(self):
        if self.multi_label and not self._labels:
            return self._round(0.0)
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._round(self._interpolate_pr_auc())
        tp, fp, tn, fn = self._tp, self._fp, self._tn, self._fn
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        elif self.curve == "PR":
            x, y = recall, _divide_no_nan(tp, tp + fp)
        else:  # PR gain (Flach and Kull, 2015)
            scale = _divide_no_nan(tp + fn, tn + fp)
            recall_gain = np.where(tp == 0, 0.0, 1.0 - scale * _divide_no_nan(fn, tp))
            precision_gain = np.where(tp == 0, 1.0, 1.0 - scale * _divide_no_nan(fp, tp))
            x, y = np.maximum(recall_gain, 0.0), precision_gain
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return self._round(self._by_label((x[:-1] - x[1:]) * heights))

    def get_config(self):
        config = {**super().get_config(), "num_thresholds": self.num_thresholds, "curve": self.curve.value,
                  "summation_method": self.summation_method.value, "multi_label": self.multi_label,
                  "num_labels": self.num_labels,
                  "label_weights": None if self.label_weights is None else self.label_weights.tolist(),
                  "from_logits": self._from_logits}
        if self._init_from_thresholds:
            config["thresholds"] = self._thresholds[1:-1]
        return config
