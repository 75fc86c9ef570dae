"""Loss objects (Keras names and conventions); formulas in :mod:`normlab.kernels.losses`.

``loss(y_true, y_pred, sample_weight=None)`` returns the value and
``loss.gradient(y_true, y_pred, sample_weight=None)`` its gradient with
respect to ``y_pred``.

Reduction (Keras 3). A loss first computes one value per prediction
``v_j`` (per sample, or per pixel: Keras's ``call``; the mean over the last
axis for mean squared error and binary cross-entropy, the sum over the
classes for categorical cross-entropy), weighs it by ``w_j`` (the sample's
weight, 1 without weights) and reduces the ``M`` values:

=============================  =====================================
``reduction``                  value
=============================  =====================================
``"sum_over_batch_size"``      ``sum_j w_j v_j / M`` (the default)
``"mean"``                     the same
``"sum"``                      ``sum_j w_j v_j``
``"mean_with_sample_weight"``  ``sum_j w_j v_j / sum_j w_j``
``"none"`` / ``None``          the array ``w_j v_j`` (in training: as the default)
=============================  =====================================

Without weights and with the default reduction the loss is the mean of
the values, which the kernels compute directly; otherwise the gradient of
that mean is scaled per value by ``w_j M / D`` (``D`` the divisor above),
which is exact because each value depends only on its own prediction.

Fusion. When a model ends in a softmax (sigmoid) layer and is compiled with
categorical (binary) cross-entropy on probabilities, the model computes the
loss and its gradient from the logits of that layer instead, with the stable
``from_logits`` formulas: the gradient with respect to the logits is simply
``(p - y) / N``. Values agree with the probability form except where Keras
would clip a probability at ``1e-7`` (there the fused value is the exact one).
"""

from __future__ import annotations

import numbers

import numpy as np

from ._registry import Registry
from ._validation import Boolean, Interval, NoneOk, Options, real_array, validate_params
from .kernels import losses as K
from .kernels.activations import log_softmax
from .kernels.checks import all_finite

registry = Registry("loss")

#: Keras 3's reductions (see the module docstring)
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")

__all__ = [
    "Loss",
    "MeanSquaredError",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "get",
    "serialize",
    "deserialize",
]


def _finite(arr: np.ndarray, who: str, arg: str) -> None:
    if not all_finite(arr):
        raise ValueError(f"{who}: '{arg}' holds NaN or inf values.")


class Loss:
    """Base class.

    Subclasses set ``fused_activation`` (the output activation whose logits
    the loss can take directly) and implement the four kernels.
    """

    fused_activation: str | None = None
    _param_constraints = {
        "from_logits": [Boolean()],
        "name": [NoneOk(), str],
        "reduction": [NoneOk(), Options(REDUCTIONS)],
    }

    def __init__(self, from_logits: bool = False, name: str | None = None, *,
                 reduction: str | None = "sum_over_batch_size"):
        validate_params(type(self).__name__, Loss._param_constraints,
                        {"from_logits": from_logits, "name": name, "reduction": reduction})
        self.from_logits = bool(from_logits)
        self.name = name or type(self).__name__
        self.reduction = reduction

    @property
    def _plain(self) -> bool:
        """True when, without sample weights, the loss is the mean of its values (the kernels' own form)."""
        return self.reduction != "sum" and getattr(self, "ignore_class", None) is None

    # weighted values -----------------------------------------------------------
    def _elements(self, y, out, logits: bool) -> np.ndarray:  # pragma: no cover - interface
        """One value per prediction (Keras's ``call``): shape ``out.shape[:-1]`` (``out.shape`` if 1-D)."""
        raise NotImplementedError

    def _weights(self, y, values: np.ndarray, sample_weight) -> np.ndarray:
        """Each value's weight: the sample's weight broadcast over the sample's values."""
        if sample_weight is None:
            return np.ones(values.shape)
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == values.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
        try:
            w = w.reshape(w.shape + (1,) * (values.ndim - w.ndim))
            return np.broadcast_to(w, values.shape)
        except ValueError:
            raise ValueError(f"{type(self).__name__}: 'sample_weight' of shape {np.shape(sample_weight)} does not "
                             f"fit the loss's values of shape {values.shape}.") from None

    def _reduce(self, values, w):
        """``(value, scale)``: the reduced loss and each value's gradient factor ``w_j M / D``."""
        m = values.size
        if self.reduction == "sum":
            d = 1.0
        elif self.reduction == "mean_with_sample_weight":
            d = float(w.sum())
        else:
            d = float(m)
        if d == 0.0:  # no weight at all (every label ignored): 0, as Keras's divide_no_nan
            return 0.0, np.zeros(values.shape)
        return float(np.sum(values * w) / d), w * (m / d)

    def weighted_value(self, y, out, sample_weight=None, *, logits=None) -> float:
        """The reduced value of :meth:`weighted_value_and_gradient`, without the gradient."""
        logits = self.from_logits if logits is None else logits
        values = self._elements(y, out, logits)
        return self._reduce(values, self._weights(y, values, sample_weight))[0]

    def weighted_value_and_gradient(self, y, out, sample_weight=None, *, logits=None):
        """``(value, gradient)`` with ``sample_weight`` and this loss's reduction, from prepared targets.

        ``out`` are logits when ``logits`` (default: ``from_logits``). The
        gradient is that of the reduced value (``"none"``: of the mean).
        """
        logits = self.from_logits if logits is None else logits
        values = self._elements(y, out, logits)
        value, scale = self._reduce(values, self._weights(y, values, sample_weight))
        grad = self.gradient_from_logits(y, out) if logits else self.gradient_wrt_output(y, out)
        factor = scale.reshape(scale.shape + (1,) * (grad.ndim - scale.ndim)).astype(grad.dtype)
        return value, grad * factor

    # targets ---------------------------------------------------------------
    def prepare_targets(self, y_true, y_pred_shape: tuple, *, who: str = "") -> np.ndarray:
        """Check ``y_true`` against the prediction shape and return it as an array."""
        who = who or type(self).__name__
        y = np.asarray(y_true)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{who}: 'y' must be numeric, got dtype {y.dtype}.")
        _finite(y, who, "y")
        if y.shape != tuple(y_pred_shape):
            if y.ndim == 1 and len(y_pred_shape) == 2 and y_pred_shape[1] == 1 and y.shape[0] == y_pred_shape[0]:
                y = y.reshape(-1, 1)
            else:
                raise ValueError(
                    f"{who}: 'y' has shape {y.shape} but the predictions have shape "
                    f"{tuple(y_pred_shape)}."
                )
        return y

    # values and gradients --------------------------------------------------
    def __call__(self, y_true, y_pred, sample_weight=None):
        """The loss of ``y_pred`` against ``y_true`` (a float; with ``reduction="none"`` the weighted values)."""
        y_pred = np.asarray(y_pred)
        y = self.prepare_targets(y_true, y_pred.shape)
        if sample_weight is not None:
            sample_weight = self.check_sample_weight(sample_weight, len(y_pred))
        if self.reduction in ("none", None):
            values = self._elements(y, y_pred, self.from_logits)
            return values * self._weights(y, values, sample_weight)
        if sample_weight is None and self._plain:
            return self.value_from_logits(y, y_pred) if self.from_logits else self.value(y, y_pred)
        return self.weighted_value_and_gradient(y, y_pred, sample_weight)[0]

    def gradient(self, y_true, y_pred, sample_weight=None) -> np.ndarray:
        """The gradient of the loss with respect to ``y_pred``."""
        y_pred = np.asarray(y_pred)
        y = self.prepare_targets(y_true, y_pred.shape)
        if sample_weight is not None:
            sample_weight = self.check_sample_weight(sample_weight, len(y_pred))
        if sample_weight is None and self._plain:
            return self.gradient_from_logits(y, y_pred) if self.from_logits else self.gradient_wrt_output(y, y_pred)
        return self.weighted_value_and_gradient(y, y_pred, sample_weight)[1]

    def check_sample_weight(self, sample_weight, n: int, who: str = "", arg: str = "sample_weight") -> np.ndarray:
        """``sample_weight`` as float64 of shape (n,): finite, >= 0 (a clear error naming ``arg`` otherwise)."""
        who = who or type(self).__name__
        w = real_array(sample_weight, who, f"'{arg}'")
        if w.ndim == 0:
            w = np.full(n, w)
        elif w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
        if w.shape[0] != n:
            raise ValueError(f"{who}: '{arg}' must hold one weight per sample (shape ({n},)), or per value "
                             f"(the shape of the loss's values), or be a scalar; got shape {w.shape}.")
        w = w.astype(np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{who}: '{arg}' must hold finite weights >= 0.")
        return w

    def value(self, y, p) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def gradient_wrt_output(self, y, p) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def value_from_logits(self, y, z) -> float:
        raise ValueError(f"{type(self).__name__} has no logits form.")

    def gradient_from_logits(self, y, z) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} has no logits form.")

    def value_and_gradient_from_logits(self, y, z) -> tuple[float, np.ndarray]:
        """``(value_from_logits(y, z), gradient_from_logits(y, z))``; subclasses may share work."""
        return self.value_from_logits(y, z), self.gradient_from_logits(y, z)

    # config ------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"from_logits": self.from_logits, "name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class _SmoothedLoss(Loss):
    """A cross-entropy with Keras's ``label_smoothing``.

    With smoothing ``s`` the targets become ``y (1 - s) + s / K`` (``K``
    classes; ``K = 2`` for binary cross-entropy, so ``y (1 - s) + s / 2``).
    Only the loss and its gradient see the smoothed targets; metrics compare
    with the true labels.

    ``axis`` is Keras's class axis: only ``-1`` (the last axis) is accepted,
    so that Keras's configs load; another axis is refused.
    """

    _param_constraints = {
        **Loss._param_constraints,
        "label_smoothing": [Interval(numbers.Real, 0, 1, closed="both")],
        # Keras's class axis; normlab's kernels take the classes on the last axis only. Accepting -1 keeps
        # Keras's configs ({"axis": -1, ...}) loadable; any other axis is refused rather than ignored.
        "axis": [Options((-1,))],
    }

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: str | None = None, *,
                 reduction: str | None = "sum_over_batch_size", axis: int = -1):
        validate_params(type(self).__name__, self._param_constraints,
                        {"from_logits": from_logits, "label_smoothing": label_smoothing, "name": name,
                         "axis": axis})
        super().__init__(from_logits=from_logits, name=name, reduction=reduction)
        self.label_smoothing = float(label_smoothing)
        self.axis = -1

    def _smooth(self, y, classes: int):
        s = self.label_smoothing
        if s == 0.0:
            return y
        return y * (1.0 - s) + s / classes

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "axis": self.axis}

    def __repr__(self):
        return (f"{type(self).__name__}(from_logits={self.from_logits}, "
                f"label_smoothing={self.label_smoothing})")


@registry.register(aliases=("mse", "mean_squared_error"))
class MeanSquaredError(Loss):
    """``mean((y_pred - y_true) ** 2)`` over all entries; gradient ``2 (p - y) / size``.

    ``from_logits`` is accepted for uniformity and ignored (MSE acts on any output).
    """

    def _elements(self, y, p, logits):
        d = np.square(p - y)
        return d.mean(axis=-1) if p.ndim > 1 else d

    def value(self, y, p):
        return K.mse(y, p)

    def gradient_wrt_output(self, y, p):
        return K.mse_grad(y, p)

    value_from_logits = value
    gradient_from_logits = gradient_wrt_output


@registry.register(aliases=("binary_crossentropy", "bce"))
class BinaryCrossentropy(_SmoothedLoss):
    """``-mean(y log p + (1 - y) log(1 - p))``; targets in [0, 1].

    With ``from_logits=True`` ``y_pred`` are logits ``z`` and ``p = sigmoid(z)``.
    ``label_smoothing=s`` replaces ``y`` by ``y (1 - s) + s / 2``.
    """

    fused_activation = "sigmoid"

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        y = super().prepare_targets(y_true, y_pred_shape, who=who)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{who or type(self).__name__}: 'y': binary targets must lie in [0, 1], "
                             f"got values from {y.min():g} to {y.max():g}.")
        return y

    def _elements(self, y, out, logits):
        y = self._smooth(y, 2)
        if logits:
            e = np.maximum(out, 0) - out * y + np.log1p(np.exp(-np.abs(out)))
        else:
            pc = K._clip(out)
            e = -(y * np.log(pc) + (1.0 - y) * np.log1p(-pc))
        return e.mean(axis=-1) if out.ndim > 1 else e

    def value(self, y, p):
        return K.binary_crossentropy(self._smooth(y, 2), p)

    def gradient_wrt_output(self, y, p):
        return K.binary_crossentropy_grad(self._smooth(y, 2), p)

    def value_from_logits(self, y, z):
        return K.binary_crossentropy_logits(self._smooth(y, 2), z)

    def gradient_from_logits(self, y, z):
        return K.binary_crossentropy_logits_grad(self._smooth(y, 2), z)


@registry.register(aliases=("categorical_crossentropy", "cce"))
class CategoricalCrossentropy(_SmoothedLoss):
    """``-mean_i sum_k y_ik log p_ik`` with one-hot (or soft) targets of shape (N, K).

    ``label_smoothing=s`` replaces ``y`` by ``y (1 - s) + s / K``.
    """

    fused_activation = "softmax"

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        y = super().prepare_targets(y_true, y_pred_shape, who=who)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{who or type(self).__name__}: 'y' (one-hot or probability targets) must lie in "
                             f"[0, 1], got values from {y.min():g} to {y.max():g}.")
        return y

    def _elements(self, y, out, logits):
        y = self._smooth(y, out.shape[-1])
        if logits:
            return -np.sum(y * log_softmax(out), axis=-1)
        return -np.sum(y * np.log(K._clip(out / out.sum(axis=-1, keepdims=True))), axis=-1)

    def value(self, y, p):
        return K.categorical_crossentropy(self._smooth(y, p.shape[-1]), p)

    def gradient_wrt_output(self, y, p):
        return K.categorical_crossentropy_grad(self._smooth(y, p.shape[-1]), p)

    def value_from_logits(self, y, z):
        return K.categorical_crossentropy_logits(self._smooth(y, z.shape[-1]), z)

    def gradient_from_logits(self, y, z):
        return K.categorical_crossentropy_logits_grad(self._smooth(y, z.shape[-1]), z)


@registry.register(aliases=("sparse_categorical_crossentropy", "scce"))
class SparseCategoricalCrossentropy(_SmoothedLoss):
    """``-mean_j log p_{j, y_j}`` with integer labels ``y_j`` in ``[0, K)``.

    Predictions have shape ``(N, ..., K)`` and labels ``(N, ...)`` (or with a
    trailing axis of 1): one label per sample, or per pixel of a
    segmentation; the mean runs over all ``M`` labels.

    ``ignore_class=c`` (Keras 3): labels equal to ``c`` (it may lie outside
    ``[0, K)``, e.g. 255 or -1) contribute nothing, and the mean runs over
    the other labels only.

    ``label_smoothing=s`` (PyTorch's ``CrossEntropyLoss(label_smoothing=s)``;
    Keras offers it only on the dense loss) trains against the soft targets
    ``onehot(y) (1 - s) + s / K``.
    """

    fused_activation = "softmax"
    _param_constraints = {
        **_SmoothedLoss._param_constraints,
        "ignore_class": [NoneOk(), Interval(numbers.Integral, None, None)],
    }

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: str | None = None, *,
                 ignore_class: int | None = None, reduction: str | None = "sum_over_batch_size", axis: int = -1):
        validate_params(type(self).__name__, {"ignore_class": self._param_constraints["ignore_class"]},
                        {"ignore_class": ignore_class})
        super().__init__(from_logits=from_logits, label_smoothing=label_smoothing, name=name, reduction=reduction,
                         axis=axis)
        self.ignore_class = None if ignore_class is None else int(ignore_class)

    #: the label prepare_targets writes in place of an ignored one
    _IGNORED = -1

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        """Labels as ``intp`` of shape ``y_pred_shape[:-1]`` (ignored ones as -1), checked."""
        who = who or type(self).__name__
        y = np.asarray(y_true)
        want = tuple(y_pred_shape[:-1])
        if y.ndim == len(want) + 1 and y.shape[-1] == 1:
            y = y[..., 0]
        if len(y_pred_shape) < 2 or y.shape != want:
            raise ValueError(
                f"{who}: 'y': sparse labels must have shape {want} for predictions of "
                f"shape {tuple(y_pred_shape)}; got {y.shape}."
            )
        if y.dtype.kind == "f":
            _finite(y, who, "y")
            if not np.array_equal(y, np.round(y)):
                raise ValueError(f"{who}: 'y': sparse labels must be integers, got "
                                 f"{y[y != np.round(y)][0]:g}.")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{who}: 'y': sparse labels must be integers, got dtype {y.dtype}.")
        k = y_pred_shape[-1]
        ignored = None
        if self.ignore_class is not None:
            ignored = y == self.ignore_class
            y = np.where(ignored, 0, y)
        if y.dtype.kind != "i" or y.dtype.itemsize > np.dtype(np.intp).itemsize:
            # checked in the labels' own dtype: a float 1e20 or a uint64 beyond intp would wrap in the cast
            if y.size and (y.min() < 0 or y.max() >= k):
                bad = y[(y < 0) | (y >= k)][0]
                raise ValueError(
                    f"{who}: 'y': labels must be in [0, {k}) for {k} output units; found label {bad.item():g}."
                    if y.dtype.kind == "f" else
                    f"{who}: 'y': labels must be in [0, {k}) for {k} output units; found label {bad.item()}."
                )
            y = y.astype(np.intp)
        else:
            y = y.astype(np.intp, copy=False)
            # seen as unsigned, a negative label is beyond any k: one reduction checks both ends
            if y.size and y.view(np.uintp).max() >= k:
                bad = int(y[(y < 0) | (y >= k)][0])
                raise ValueError(
                    f"{who}: 'y': labels must be in [0, {k}) for {k} output units; found label {bad}."
                )
        if ignored is not None:
            y[ignored] = self._IGNORED
        return y

    @staticmethod
    def _rows(y, out):
        """Labels as (M,) and predictions as (M, K): the kernels' shapes."""
        return y.reshape(-1), out.reshape(-1, out.shape[-1])

    def _soft(self, labels, out):
        k = out.shape[-1]
        y = np.zeros(out.shape, dtype=out.dtype)
        y[np.arange(out.shape[0]), labels] = 1.0
        return self._smooth(y, k)

    def _elements(self, y, out, logits):
        labels, rows = self._rows(np.maximum(y, 0), out)
        if self.label_smoothing:
            soft = self._soft(labels, rows)
            e = -np.sum(soft * (log_softmax(rows) if logits else np.log(K._clip(rows / rows.sum(-1, keepdims=True)))), -1)
        elif logits:
            e = -log_softmax(rows)[np.arange(len(labels)), labels]
        else:
            e = -np.log(K._clip(rows[np.arange(len(labels)), labels] / rows.sum(axis=-1)))
        return e.reshape(y.shape)

    def _weights(self, y, values, sample_weight):
        w = super()._weights(y, values, sample_weight)
        if self.ignore_class is None:
            return w
        valid = y != self._IGNORED
        w = w * valid
        if self.reduction in ("sum_over_batch_size", "mean"):
            # as Keras's mask: the mean runs over the labels that count
            count = int(valid.sum())
            w = w * (values.size / count) if count else w
        return w

    def _flat_call(self, fn, y, out):
        labels, rows = self._rows(np.maximum(y, 0), out)
        return fn(labels, rows)

    def _flat_grad(self, fn, y, out):
        return self._flat_call(fn, y, out).reshape(out.shape)

    def value(self, y, p):
        if self.label_smoothing:
            return self._flat_call(lambda l, r: K.categorical_crossentropy(self._soft(l, r), r), y, p)
        return self._flat_call(K.sparse_categorical_crossentropy, y, p)

    def gradient_wrt_output(self, y, p):
        if self.label_smoothing:
            return self._flat_grad(lambda l, r: K.categorical_crossentropy_grad(self._soft(l, r), r), y, p)
        return self._flat_grad(K.sparse_categorical_crossentropy_grad, y, p)

    def value_from_logits(self, y, z):
        if self.label_smoothing:
            return self._flat_call(lambda l, r: K.categorical_crossentropy_logits(self._soft(l, r), r), y, z)
        return self._flat_call(K.sparse_categorical_crossentropy_logits, y, z)

    def gradient_from_logits(self, y, z):
        if self.label_smoothing:
            return self._flat_grad(lambda l, r: K.categorical_crossentropy_logits_grad(self._soft(l, r), r), y, z)
        return self._flat_grad(K.sparse_categorical_crossentropy_logits_grad, y, z)

    def value_and_gradient_from_logits(self, y, z):
        if self.label_smoothing or z.ndim != 2:
            return super().value_and_gradient_from_logits(y, z)
        return K.sparse_categorical_crossentropy_logits_value_and_grad(y, z)

    def get_config(self) -> dict:
        return {**super().get_config(), "ignore_class": self.ignore_class}


def get(identifier) -> Loss:
    """Resolve a loss name (``"mse"``, ``"categorical_crossentropy"``, ...), config or instance."""
    loss = registry.get(identifier, base=Loss)
    if loss is None:
        raise ValueError("A loss is required.")
    return loss


def serialize(loss: Loss) -> dict:
    return registry.serialize(loss)


def deserialize(config: dict) -> Loss:
    return registry.deserialize(config)
