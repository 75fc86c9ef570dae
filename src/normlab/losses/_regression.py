"""Losses on real-valued targets: regression, hinge, probabilistic and overlap losses (Keras 3).

Each class is Keras's ``LossFunctionWrapper`` of the function of the same
name in :mod:`normlab.losses` (``mean_absolute_error``, ``huber``, ...):
one value per prediction, the mean over the last axis of an element-wise
term (``m = p.shape[-1]`` below; 1-D predictions give one value per entry),
and the reduction of :class:`Loss`. ``eps = 1e-7`` (Keras's
``backend.epsilon()``). Gradients are those of the sum of the values with
respect to ``p`` (where a term is clamped, as by ``maximum(x, eps)``, its
gradient there is 0).

==============================  =========================================  ==============================
loss                            value per prediction                       gradient, per entry
==============================  =========================================  ==============================
mean squared error              mean (p - y)^2                             2 (p - y) / m
mean absolute error             mean |p - y|                               sign(p - y) / m
mean absolute percentage error  100 mean |y - p| / max(|y|, eps)           100 sign(p - y) / max(|y|, eps) / m
mean squared logarithmic error  mean (log(max(p,eps)+1) - log(max(y,eps)+1))^2  2 d / (max(p,eps)+1) / m
huber (delta)                   mean(|e| <= d ? e^2/2 : d |e| - d^2/2)     clip(e, -d, d) / m
log-cosh                        mean log cosh(p - y)                       tanh(p - y) / m
cosine similarity (axis)        -sum(y/|y| * p/|p|)                         -(u - (u.p) p / |p|^2) / |p|
hinge                           mean max(1 - y p, 0)                       -y [1 - y p > 0] / m
squared hinge                   mean max(1 - y p, 0)^2                     -2 y max(1 - y p, 0) / m
categorical hinge               max(max((1-y) p) - sum(y p) + 1, 0)         [> 0] (onehot(argmax) (1-y) - y)
Kullback-Leibler divergence     sum y' log(y' / p'), clipped to [eps, 1]    -y' / p' (p in [eps, 1])
Poisson                         mean p - y log(p + eps)                    (1 - y / (p + eps)) / m
Dice (axis)                     1 - 2 sum(y p) / (sum y + sum p + eps)      -2 (y S - I) / S^2
Tversky (alpha, beta, axis)     1 - I / (I + alpha FP + beta FN + eps)      see :class:`Tversky`
==============================  =========================================  ==============================

In cosine similarity ``|x| = max(||x||, eps)`` and ``u = y / |y|``. Hinge
losses take labels in {-1, 1}; labels that are all 0 or 1 are mapped to
-1 and 1 first, as Keras does.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Interval, NoneOk
from ..kernels import losses as K
from ._base import FunctionLoss, Loss, _mean_last, _per_last, registry

EPSILON = K.EPSILON


@registry.register(aliases=("mse", "mean_squared_error", "MSE"))
class MeanSquaredError(FunctionLoss):
    """``mean((y_pred - y_true) ** 2)`` over the last axis; gradient ``2 (p - y) / size`` for the mean.

    ``from_logits`` is accepted for uniformity and ignored (MSE acts on any output).
    """

    default_name = "mean_squared_error"
    _param_constraints = {**FunctionLoss._param_constraints, "from_logits": Loss._param_constraints["from_logits"]}

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None, *, from_logits: bool = False):
        super().__init__(reduction=reduction, name=name, dtype=dtype, from_logits=from_logits)

    def _values(self, y, p):
        return _mean_last(np.square(p - y))

    def _values_grad(self, y, p):
        return 2.0 * (p - y) / _per_last(p)

    def value(self, y, p):
        return K.mse(y, p)

    def gradient_wrt_output(self, y, p):
        return K.mse_grad(y, p)

    value_from_logits = value
    gradient_from_logits = gradient_wrt_output

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


@registry.register(aliases=("mae", "mean_absolute_error", "MAE"))
class MeanAbsoluteError(FunctionLoss):
    """``mean(|y_pred - y_true|)`` over the last axis."""

    default_name = "mean_absolute_error"

    def _values(self, y, p):
        return _mean_last(np.abs(p - y))

    def _values_grad(self, y, p):
        return np.sign(p - y) / _per_last(p)


@registry.register(aliases=("mape", "mean_absolute_percentage_error", "MAPE"))
class MeanAbsolutePercentageError(FunctionLoss):
    """``100 mean(|y_true - y_pred| / max(|y_true|, eps))`` over the last axis."""

    default_name = "mean_absolute_percentage_error"

    def _values(self, y, p):
        return 100.0 * _mean_last(np.abs((y - p) / np.maximum(np.abs(y), EPSILON)))

    def _values_grad(self, y, p):
        return 100.0 * np.sign(p - y) / np.maximum(np.abs(y), EPSILON) / _per_last(p)


@registry.register(aliases=("msle", "mean_squared_logarithmic_error", "MSLE"))
class MeanSquaredLogarithmicError(FunctionLoss):
    """``mean((log(max(p, eps) + 1) - log(max(y, eps) + 1)) ** 2)`` over the last axis."""

    default_name = "mean_squared_logarithmic_error"

    def _values(self, y, p):
        return _mean_last(np.square(np.log1p(np.maximum(p, EPSILON)) - np.log1p(np.maximum(y, EPSILON))))

    def _values_grad(self, y, p):
        pm = np.maximum(p, EPSILON)
        d = np.log1p(pm) - np.log1p(np.maximum(y, EPSILON))
        return np.where(p > EPSILON, 2.0 * d / (pm + 1.0), 0.0) / _per_last(p)


@registry.register(aliases=("huber", "huber_loss"))
class Huber(FunctionLoss):
    """``e ** 2 / 2`` where ``|e| <= delta``, else ``delta |e| - delta ** 2 / 2`` (``e = p - y``), averaged over the last axis."""

    default_name = "huber_loss"
    _param_constraints = {**FunctionLoss._param_constraints, "delta": [Interval(numbers.Real, 0, None, closed="left")]}

    def __init__(self, delta: float = 1.0, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype, delta=delta)
        self.delta = float(self.delta)

    def _values(self, y, p):
        e = p - y
        a = np.abs(e)
        d = self.delta
        return _mean_last(np.where(a <= d, 0.5 * e * e, d * a - 0.5 * d * d))

    def _values_grad(self, y, p):
        return np.clip(p - y, -self.delta, self.delta) / _per_last(p)


@registry.register(aliases=("log_cosh", "logcosh"))
class LogCosh(FunctionLoss):
    """``mean(log(cosh(p - y)))`` over the last axis, computed as ``x + softplus(-2x) - log 2`` (no overflow)."""

    default_name = "log_cosh"

    def _values(self, y, p):
        x = p - y
        return _mean_last(x + np.logaddexp(0.0, -2.0 * x) - np.log(2.0))

    def _values_grad(self, y, p):
        return np.tanh(p - y) / _per_last(p)


def _l2_normalize(x, axis):
    """Keras's ``normalize(x, axis)``: ``x / max(||x||, eps)`` and that norm (keepdims)."""
    n = np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), EPSILON * EPSILON))
    return x / n, n


@registry.register(aliases=("cosine_similarity",))
class CosineSimilarity(FunctionLoss):
    """``-sum(y / |y| * p / |p|)`` along ``axis``: -1 for the same direction, 1 for opposite ones.

    ``|x| = max(||x||_2, eps)`` (a zero vector gives 0). Gradient with
    ``u = y / |y|``: ``-(u - (u . p) p / |p|^2) / |p|`` (``-u / eps`` where
    ``||p|| < eps``).
    """

    default_name = "cosine_similarity"
    _param_constraints = {**FunctionLoss._param_constraints, "axis": [Interval(numbers.Integral, None, None)]}

    def __init__(self, axis: int = -1, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype, axis=axis)
        self.axis = int(self.axis)

    def _values(self, y, p):
        u, _ = _l2_normalize(y, self.axis)
        v, _ = _l2_normalize(p, self.axis)
        return -np.sum(u * v, axis=self.axis)

    def _values_grad(self, y, p):
        u, _ = _l2_normalize(y, self.axis)
        ss = np.sum(p * p, axis=self.axis, keepdims=True)
        n = np.sqrt(np.maximum(ss, EPSILON * EPSILON))
        proj = np.where(ss > EPSILON * EPSILON, np.sum(u * p, axis=self.axis, keepdims=True) * p / (n * n), 0.0)
        return -(u - proj) / n


def _hinge_labels(y):
    """Keras's ``convert_binary_labels_to_hinge``: labels that are all 0 or 1 become -1 and 1."""
    y = np.asarray(y, dtype=np.float64) if np.asarray(y).dtype.kind != "f" else np.asarray(y)
    return 2.0 * y - 1.0 if np.all((y == 0) | (y == 1)) else y


@registry.register(aliases=("hinge",))
class Hinge(FunctionLoss):
    """``mean(max(1 - y p, 0))`` over the last axis; labels -1 / 1 (0 / 1 are mapped to them)."""

    default_name = "hinge"

    def _values(self, y, p):
        return _mean_last(np.maximum(1.0 - _hinge_labels(y) * p, 0.0))

    def _values_grad(self, y, p):
        y = _hinge_labels(y)
        return np.where(1.0 - y * p > 0.0, -y, 0.0) / _per_last(p)


@registry.register(aliases=("squared_hinge",))
class SquaredHinge(FunctionLoss):
    """``mean(max(1 - y p, 0) ** 2)`` over the last axis; labels -1 / 1 (0 / 1 are mapped to them)."""

    default_name = "squared_hinge"

    def _values(self, y, p):
        return _mean_last(np.square(np.maximum(1.0 - _hinge_labels(y) * p, 0.0)))

    def _values_grad(self, y, p):
        y = _hinge_labels(y)
        return -2.0 * y * np.maximum(1.0 - y * p, 0.0) / _per_last(p)


@registry.register(aliases=("categorical_hinge",))
class CategoricalHinge(FunctionLoss):
    """``max(neg - pos + 1, 0)`` with ``pos = sum(y p)`` and ``neg = max((1 - y) p)`` over the last axis (one-hot ``y``)."""

    default_name = "categorical_hinge"

    def _values(self, y, p):
        pos = np.sum(y * p, axis=-1)
        neg = np.max((1.0 - y) * p, axis=-1)
        return np.maximum(neg - pos + 1.0, 0.0)

    def _values_grad(self, y, p):
        active = (self._values(y, p) > 0.0)[..., None]
        rest = (1.0 - y) * p
        pick = np.zeros(p.shape)
        np.put_along_axis(pick, np.argmax(rest, axis=-1)[..., None], 1.0, axis=-1)
        return np.where(active, pick * (1.0 - y) - y, 0.0)


@registry.register(aliases=("kl_divergence", "kld", "KLD", "kullback_leibler_divergence"))
class KLDivergence(FunctionLoss):
    """``sum(y log(y / p))`` over the last axis, ``y`` and ``p`` clipped to ``[eps, 1]``."""

    default_name = "kl_divergence"

    def _values(self, y, p):
        yc = np.clip(y, EPSILON, 1.0)
        return np.sum(yc * np.log(yc / np.clip(p, EPSILON, 1.0)), axis=-1)

    def _values_grad(self, y, p):
        yc = np.clip(y, EPSILON, 1.0)
        return np.where((p >= EPSILON) & (p <= 1.0), -yc / np.clip(p, EPSILON, 1.0), 0.0)


@registry.register(aliases=("poisson",))
class Poisson(FunctionLoss):
    """``mean(p - y log(p + eps))`` over the last axis (``p`` a rate, e.g. an exponential output)."""

    default_name = "poisson"

    def _values(self, y, p):
        return _mean_last(p - y * np.log(p + EPSILON))

    def _values_grad(self, y, p):
        return (1.0 - y / (p + EPSILON)) / _per_last(p)


def _axes(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


@registry.register(aliases=("dice",))
class Dice(FunctionLoss):
    """``1 - 2 I / (sum y + sum p + eps)``, ``I = sum(y p)``, the sums over ``axis``.

    ``axis=None`` (Keras's default) sums over everything: one value for the
    batch. With ``axis=(1, 2, 3)`` (an image batch) one value per sample.
    Gradient, ``S`` the denominator: ``-2 (y S - I) / S^2``.
    """

    default_name = "dice"
    _param_constraints = {**FunctionLoss._param_constraints, "axis": [NoneOk(), Interval(numbers.Integral, None, None), tuple, list]}

    def __init__(self, reduction="sum_over_batch_size", name=None, axis=None, dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype, axis=_axes(axis))

    def _parts(self, y, p):
        ax = self.axis
        inter = np.sum(y * p, axis=ax, keepdims=True)
        s = np.sum(y, axis=ax, keepdims=True) + np.sum(p, axis=ax, keepdims=True) + EPSILON
        return inter, s

    def _values(self, y, p):
        inter, s = self._parts(y, p)
        v = 1.0 - 2.0 * inter / s
        return v.reshape(()) if self.axis is None else np.squeeze(v, axis=self.axis)

    def _values_grad(self, y, p):
        inter, s = self._parts(y, p)
        return -2.0 * (y * s - inter) / (s * s)


@registry.register(aliases=("tversky",))
class Tversky(FunctionLoss):
    """``1 - I / (I + alpha FP + beta FN + eps)`` (Salehi et al., 2017), sums over ``axis``.

    ``I = sum(p y)``, ``FP = sum((1 - y) p)``, ``FN = sum(y (1 - p))``;
    ``alpha = beta = 0.5`` is the Dice loss. Gradient, ``D`` the
    denominator: ``-(y D - I (y + alpha (1 - y) - beta y)) / D^2``.
    """

    default_name = "tversky"
    _param_constraints = {**FunctionLoss._param_constraints, "alpha": [Interval(numbers.Real, None, None)], "beta": [Interval(numbers.Real, None, None)],
                          "axis": [NoneOk(), Interval(numbers.Integral, None, None), tuple, list]}

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, reduction="sum_over_batch_size", name=None, axis=None,
                 dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype, alpha=alpha, beta=beta, axis=_axes(axis))
        self.alpha, self.beta = float(self.alpha), float(self.beta)

    def _parts(self, y, p):
        ax = self.axis
        inter = np.sum(p * y, axis=ax, keepdims=True)
        fp = np.sum((1.0 - y) * p, axis=ax, keepdims=True)
        fn = np.sum(y * (1.0 - p), axis=ax, keepdims=True)
        return inter, inter + self.alpha * fp + self.beta * fn + EPSILON

    def _values(self, y, p):
        inter, den = self._parts(y, p)
        v = 1.0 - inter / den
        return v.reshape(()) if self.axis is None else np.squeeze(v, axis=self.axis)

    def _values_grad(self, y, p):
        inter, den = self._parts(y, p)
        dden = y + self.alpha * (1.0 - y) - self.beta * y
        return -(y * den - inter * dden) / (den * den)
