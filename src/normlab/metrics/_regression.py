"""Regression, probabilistic and hinge metrics (Keras 3): running means of the loss functions, and R^2.

Each wrapper is Keras's ``MeanMetricWrapper`` of the function of the same
name in :mod:`normlab.losses` (formulas there): the weighted mean over the
samples of the per-sample values. :class:`CosineSimilarity` averages the
similarity itself (1: same direction), :class:`RootMeanSquaredError` is the
square root of the running weighted mean of ``(y_pred - y_true) ** 2``.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from .. import losses as L
from .._validation import Boolean, Interval, NoneOk, Options, validate_params
from . import _functions as F
from ._base import Mean, MeanMetricWrapper, Metric, _numeric, registry


class _Wrapper(MeanMetricWrapper):
    """A :class:`MeanMetricWrapper` of a fixed function; subclasses set ``_function`` and ``default_name``."""

    _function = None
    _keys: tuple = ()

    def __init__(self, name=None, dtype=None, **kwargs):
        validate_params(type(self), {k: self._param_constraints[k] for k in kwargs},
                        kwargs)
        for key, value in kwargs.items():
            setattr(self, key, value)
        super().__init__(type(self)._function, name=name or self.default_name, dtype=dtype, **kwargs)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, **{k: getattr(self, k) for k in self._keys}}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _simple(cls_name, fn, default_name, doc):
    cls = type(cls_name, (_Wrapper,), {"_function": staticmethod(fn), "default_name": default_name,
                                       "__doc__": doc, "__module__": __name__})

    def __init__(self, name=default_name, dtype=None):
        _Wrapper.__init__(self, name=name, dtype=dtype)
    cls.__init__ = __init__
    return registry.register(cls)


MeanSquaredError = _simple("MeanSquaredError", L.mean_squared_error, "mean_squared_error",
                           "The running mean of ``mean((y_pred - y_true) ** 2)`` over the last axis.")
MeanAbsoluteError = _simple("MeanAbsoluteError", L.mean_absolute_error, "mean_absolute_error",
                            "The running mean of ``mean(|y_pred - y_true|)`` over the last axis.")
MeanAbsolutePercentageError = _simple("MeanAbsolutePercentageError", L.mean_absolute_percentage_error,
                                      "mean_absolute_percentage_error",
                                      "The running mean of ``100 mean(|y - p| / max(|y|, eps))``.")
MeanSquaredLogarithmicError = _simple("MeanSquaredLogarithmicError", L.mean_squared_logarithmic_error,
                                      "mean_squared_logarithmic_error",
                                      "The running mean of ``mean((log(p + 1) - log(y + 1)) ** 2)``.")
LogCoshError = _simple("LogCoshError", L.log_cosh, "logcosh", "The running mean of ``mean(log(cosh(p - y)))``.")
KLDivergence = _simple("KLDivergence", L.kl_divergence, "kl_divergence",
                       "The running mean of ``sum(y log(y / p))`` (both clipped to ``[eps, 1]``).")
Poisson = _simple("Poisson", L.poisson, "poisson", "The running mean of ``mean(p - y log(p + eps))``.")
Hinge = _simple("Hinge", L.hinge, "hinge", "The running mean of ``mean(max(1 - y p, 0))`` (labels -1/1 or 0/1).")
SquaredHinge = _simple("SquaredHinge", L.squared_hinge, "squared_hinge",
                       "The running mean of ``mean(max(1 - y p, 0) ** 2)``.")
CategoricalHinge = _simple("CategoricalHinge", L.categorical_hinge, "categorical_hinge",
                           "The running mean of ``max(max((1 - y) p) - sum(y p) + 1, 0)``.")


@registry.register
class CosineSimilarity(_Wrapper):
    """The running mean of the cosine similarity along ``axis`` (1: same direction, -1: opposite)."""

    default_name = "cosine_similarity"
    _function = staticmethod(F.cosine_similarity)
    _keys = ("axis",)
    _param_constraints = {**Metric._param_constraints, "axis": [Interval(numbers.Integral, None, None)]}

    def __init__(self, name="cosine_similarity", dtype=None, axis=-1):
        super().__init__(name=name, dtype=dtype, axis=axis)


_SMOOTHING = [Interval(numbers.Real, 0, 1, closed="both")]


@registry.register
class BinaryCrossentropy(_Wrapper):
    """The running mean of the per-sample binary cross-entropy (:func:`normlab.losses.binary_crossentropy`)."""

    default_name = "binary_crossentropy"
    _function = staticmethod(L.binary_crossentropy)
    _keys = ("from_logits", "label_smoothing")
    _param_constraints = {**Metric._param_constraints, "from_logits": [Boolean()], "label_smoothing": _SMOOTHING}

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits, label_smoothing=label_smoothing)


@registry.register
class CategoricalCrossentropy(_Wrapper):
    """The running mean of the per-sample categorical cross-entropy."""

    default_name = "categorical_crossentropy"
    _function = staticmethod(L.categorical_crossentropy)
    _keys = ("from_logits", "label_smoothing", "axis")
    _param_constraints = {**Metric._param_constraints, "from_logits": [Boolean()], "label_smoothing": _SMOOTHING,
                          "axis": [Interval(numbers.Integral, None, None)]}

    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0, axis=-1):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)


@registry.register
class SparseCategoricalCrossentropy(_Wrapper):
    """The running mean of the per-label sparse categorical cross-entropy (``ignore_class`` labels count 0)."""

    default_name = "sparse_categorical_crossentropy"
    _function = staticmethod(L.sparse_categorical_crossentropy)
    _keys = ("from_logits", "ignore_class", "axis")
    _param_constraints = {**Metric._param_constraints, "from_logits": [Boolean()],
                          "ignore_class": [NoneOk(), Interval(numbers.Integral, None, None)],
                          "axis": [Interval(numbers.Integral, None, None)]}

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False, ignore_class=None,
                 axis=-1):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits, ignore_class=ignore_class, axis=axis)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """As Keras 3.15: an ignored label's value is 0; it still counts when there are no sample weights,
        and weighs 0 (adds to neither the total nor the count) when there are."""
        if self.ignore_class is None or sample_weight is None:
            return super().update_state(y_true, y_pred, sample_weight)
        values = np.asarray(self._fn(y_true, y_pred, **self._fn_kwargs), dtype=np.float64)
        y = np.asarray(y_true)
        if y.ndim == values.ndim + 1 and y.shape[-1] == 1:
            y = y[..., 0]
        mask = (y.reshape(values.shape) != self.ignore_class).astype(np.float64)
        w = np.asarray(sample_weight, dtype=np.float64)
        mask = mask * (w.reshape(w.shape + (1,) * (mask.ndim - w.ndim)) if w.ndim < mask.ndim else w)
        Metric.update_state(self, None, values, mask)


@registry.register
class RootMeanSquaredError(Mean):
    """``sqrt(sum_i w_i (p_i - y_i)^2 / sum_i w_i)``: the root of the running weighted mean squared error."""

    default_name = "root_mean_squared_error"

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        who = "RootMeanSquaredError.update_state"
        y, p = F._arrays(_numeric(y_true, who, "y_true"), _numeric(y_pred, who, "y_pred"))
        Mean.update_state(self, np.square(p.astype(np.float64) - y), sample_weight=sample_weight)

    def result(self):
        return self._round(float(np.sqrt(self._total / self._count)) if self._count else 0.0)


@registry.register
class R2Score(Metric):
    """The coefficient of determination ``1 - SS_res / SS_tot`` per output, aggregated (Keras's ``R2Score``).

    Inputs ``(N, outputs)``; weighted sums per output are kept across
    batches: ``SS_tot = sum w y^2 - (sum w y)^2 / sum w``,
    ``SS_res = sum w (y - p)^2``. ``class_aggregation``:
    ``"uniform_average"`` (the mean over outputs), ``"variance_weighted_average"``
    (weighted by ``SS_tot``) or ``None`` (one score per output). With
    ``num_regressors = k > 0`` the adjusted score
    ``1 - (1 - R^2) (n - 1) / (n - k - 1)`` (``n`` samples with a nonzero
    weight), or the plain score with a warning where ``k >= n - 1``.
    """

    default_name = "r2_score"
    _state = ("_num_samples", "_squared_sum", "_sum", "_residual", "_count")
    _param_constraints = {
        **Metric._param_constraints,
        "class_aggregation": [NoneOk(), Options(("uniform_average", "variance_weighted_average"))],
        "num_regressors": [Interval(numbers.Integral, 0, None)],
    }
    _keras_messages = {
        "class_aggregation": lambda v: ("Invalid value for argument `class_aggregation`. Expected one of "
                                        "(None, 'uniform_average', 'variance_weighted_average'). "
                                        f"Received: class_aggregation={v}"),
        "num_regressors": lambda v: ("Invalid value for argument `num_regressors`. Expected a value >= 0. "
                                     f"Received: num_regressors={v}" if v < 0 else None),
    }

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype=None):
        validate_params(type(self), {k: self._param_constraints[k] for k in ("class_aggregation", "num_regressors")},
                        {"class_aggregation": class_aggregation, "num_regressors": num_regressors})
        self.class_aggregation = class_aggregation
        self.num_regressors = int(num_regressors)
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        who = "R2Score.update_state"
        y, p = F._arrays(_numeric(y_true, who, "y_true"), _numeric(y_pred, who, "y_pred"))
        if y.ndim != 2 or p.ndim != 2:
            raise ValueError(f"R2Score expects 2D inputs with shape (batch_size, output_dim). Received input "
                             f"shapes: y_pred.shape={p.shape} and y_true.shape={y.shape}.")
        y = y.astype(np.float64)
        w = np.ones(1) if sample_weight is None else _numeric(sample_weight, who, "sample_weight").astype(np.float64)
        if w.ndim == 1:
            w = w[:, None]
        w = np.broadcast_to(w, y.shape)
        self._sum = self._sum + np.sum(y * w, axis=0)
        self._squared_sum = self._squared_sum + np.sum(y * y * w, axis=0)
        self._residual = self._residual + np.sum((y - p) ** 2 * w, axis=0)
        self._count = self._count + np.sum(w, axis=0)
        self._num_samples += float(np.sum(np.any(w != 0, axis=-1)))

    def result(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self._sum / self._count
            total = self._squared_sum - self._sum * mean
            raw = 1.0 - self._residual / total
        raw = np.where(np.isinf(raw), 0.0, raw)
        if self.class_aggregation == "uniform_average":
            score = np.mean(raw)
        elif self.class_aggregation == "variance_weighted_average":
            score = np.sum(total * raw) / np.sum(total)
        else:
            score = raw
        k, n = self.num_regressors, self._num_samples
        if k:
            if k > n - 1:
                warnings.warn("More independent predictors than datapoints in adjusted R2 score. Falling back to "
                              "standard R2 score.", stacklevel=2)
            elif k == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 score.",
                              stacklevel=2)
            else:
                score = 1.0 - (1.0 - score) * (n - 1.0) / (n - k - 1.0)
        return self._round(float(score) if np.ndim(score) == 0 else np.asarray(score, dtype=np.float64))

    def get_config(self):
        return {**super().get_config(), "class_aggregation": self.class_aggregation,
                "num_regressors": self.num_regressors}
