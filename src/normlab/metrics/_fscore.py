"""F-scores and correlation metrics (Keras 3's ``FBetaScore``, ``F1Score``, ``PearsonCorrelation``,
``ConcordanceCorrelation``).

F-beta: with weighted counts per class (or summed, ``average="micro"``),
``P = tp / (tp + fp + eps)``, ``R = tp / (tp + fn + eps)`` and
``F = (1 + beta^2) P R / (beta^2 P + R + eps)`` (``eps = 1e-7``), then
``average``: ``None`` (one score per class), ``"micro"``, ``"macro"`` (the
mean over classes) or ``"weighted"`` (weighted by each class's true-label
weight). Without a ``threshold`` a row's largest prediction is the
positive one (ties all count; a row of zeros has none).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Interval, NoneOk, Options, validate_params
from ._base import Metric, _numeric, registry
from ._regression import _Wrapper

EPSILON = 1e-7


@registry.register
class FBetaScore(Metric):
    """The F-beta score of multi-label or one-hot predictions (see the module docstring)."""

    default_name = "fbeta_score"
    _state = ("_tp", "_fp", "_fn", "_weights")
    _param_constraints = {
        **Metric._param_constraints,
        "average": [NoneOk(), Options(("micro", "macro", "weighted"))],
        "beta": [Interval(numbers.Real, 0, None, closed="neither")],
        "threshold": [NoneOk(), Interval(numbers.Real, 0, 1, closed="right")],
    }
    _keras_messages = {
        "average": lambda v: ("Invalid `average` argument value. Expected one of: {None, 'micro', 'macro', "
                              f"'weighted'}}. Received: average={v}"),
        "beta": lambda v: (f"Invalid `beta` argument value. It should be a Python float. Received: beta={v} of "
                           f"type '{type(v)}'" if not isinstance(v, float) else
                           f"Invalid `beta` argument value. It should be > 0. Received: beta={v}" if v <= 0.0
                           else None),
        "threshold": lambda v: (f"Invalid `threshold` argument value. It should be a Python float. Received: "
                                f"threshold={v} of type '{type(v)}'" if not isinstance(v, float) else
                                "Invalid `threshold` argument value. It should verify 0 < threshold <= 1. "
                                f"Received: threshold={v}" if v > 1.0 or v <= 0.0 else None),
    }

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        validate_params(type(self), {"average": FBetaScore._param_constraints["average"],
                                              "beta": FBetaScore._param_constraints["beta"],
                                              "threshold": FBetaScore._param_constraints["threshold"]},
                        {"average": average, "beta": beta, "threshold": threshold})
        self.average, self.beta, self.threshold = average, float(beta), threshold
        self.axis = None if average == "micro" else 0
        super().__init__(name=name, dtype=dtype)

    @property
    def variables(self) -> list:
        from ._base import MetricVariable
        return [MetricVariable(getattr(self, s), n) for s, n in
                zip(self._state, ("true_positives", "false_positives", "false_negatives", "intermediate_weights"))]

    def update_state(self, y_true, y_pred, sample_weight=None):
        who = f"{type(self).__name__}.update_state"
        y = np.asarray(_numeric(y_true, who, "y_true"), dtype=np.float64)
        p = np.asarray(_numeric(y_pred, who, "y_pred"), dtype=np.float64)
        if y.ndim != 2 or p.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects 2D inputs with shape (batch_size, output_dim). "
                             f"Received input shapes: y_pred.shape={p.shape} and y_true.shape={y.shape}.")
        if self.threshold is None:
            p = ((p >= p.max(axis=-1, keepdims=True)) & (np.abs(p) > 1e-9)).astype(np.float64)
        else:
            p = (p > self.threshold).astype(np.float64)
        w = None
        if sample_weight is not None:
            w = np.asarray(_numeric(sample_weight, who, "sample_weight"), dtype=np.float64)
            w = w.reshape(w.shape + (1,) * (y.ndim - w.ndim))

        def total(v):
            return np.sum(v if w is None else v * w, axis=self.axis)

        self._tp = self._tp + total(p * y)
        self._fp = self._fp + total(p * (1 - y))
        self._fn = self._fn + total((1 - p) * y)
        self._weights = self._weights + total(y)

    def result(self):
        tp, fp, fn = (np.asarray(v, np.float64) for v in (self._tp, self._fp, self._fn))
        precision = tp / (tp + fp + EPSILON)
        recall = tp / (tp + fn + EPSILON)
        b2 = self.beta ** 2
        f = precision * recall / (b2 * precision + recall + EPSILON) * (1 + b2)
        if self.average == "weighted":
            weights = np.asarray(self._weights) / (np.sum(self._weights) + EPSILON)
            f = np.sum(f * weights)
        elif self.average is not None:
            f = np.mean(f)
        return self._round(float(f) if np.ndim(f) == 0 else f)

    def get_config(self):
        return {**super().get_config(), "average": self.average, "beta": self.beta, "threshold": self.threshold}


@registry.register
class F1Score(FBetaScore):
    """The F1 score: :class:`FBetaScore` with ``beta = 1``."""

    default_name = "f1_score"
    _param_constraints = {k: v for k, v in FBetaScore._param_constraints.items() if k != "beta"}

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        del config["beta"]
        return config


def _same_rank(y, p):
    if y.ndim == p.ndim + 1 and y.shape[-1] == 1:
        y = y[..., 0]
    elif p.ndim == y.ndim + 1 and p.shape[-1] == 1:
        p = p[..., 0]
    return y, p


def pearson_correlation(y_true, y_pred, axis=-1):
    """Pearson's correlation of ``y_true`` and ``y_pred`` along ``axis`` (one value per sample)."""
    y, p = _same_rank(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64))
    yn = y - y.mean(axis=axis, keepdims=True)
    pn = p - p.mean(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        yn = yn / yn.std(axis=axis, keepdims=True)
        pn = pn / pn.std(axis=axis, keepdims=True)
    return np.mean(yn * pn, axis=axis)


def concordance_correlation(y_true, y_pred, axis=-1):
    """Lin's concordance correlation along ``axis``, as Keras computes it (one value per sample)."""
    y, p = _same_rank(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64))
    y_mean = y.mean(axis=axis, keepdims=True)
    p_mean = p.mean(axis=axis, keepdims=True)
    y_var = (y - y_mean).var(axis=axis, keepdims=True)
    p_var = (p - p_mean).var(axis=axis, keepdims=True)
    # Keras 3.15 centres y_true on y_pred's mean in the covariance; kept for parity
    covar = (y - p_mean) * (p - p_mean)
    norm = y_var + p_var + np.square(y_mean - p_mean)
    return np.mean(2 * covar / (norm + EPSILON), axis=axis)


@registry.register
class PearsonCorrelation(_Wrapper):
    """The running mean of the per-sample Pearson correlation along ``axis``."""

    default_name = "pearson_correlation"
    _function = staticmethod(pearson_correlation)
    _keys = ("axis",)
    _param_constraints = {**Metric._param_constraints, "axis": [Interval(numbers.Integral, None, None)]}

    def __init__(self, name="pearson_correlation", dtype=None, axis=-1):
        super().__init__(name=name, dtype=dtype, axis=axis)


@registry.register
class ConcordanceCorrelation(_Wrapper):
    """The running mean of the per-sample concordance correlation along ``axis``."""

    default_name = "concordance_correlation"
    _function = staticmethod(concordance_correlation)
    _keys = ("axis",)
    _param_constraints = {**Metric._param_constraints, "axis": [Interval(numbers.Integral, None, None)]}

    def __init__(self, name="concordance_correlation", dtype=None, axis=-1):
        super().__init__(name=name, dtype=dtype, axis=axis)
