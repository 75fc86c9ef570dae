"""The cross-entropy losses (Keras 3's names, arguments and numerics).

Binary, categorical and sparse categorical cross-entropy, their focal forms
(Lin et al., 2017) and the generalized cross-entropy (Zhang and Sabuncu,
2018). Probability inputs are clipped to ``[1e-7, 1 - 1e-7]`` as in Keras;
the categorical forms divide probabilities by their sum over the classes
first. ``axis`` is the class axis (Keras's argument): any axis; the values
are computed with the classes moved last.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval, NoneOk, validate_params
from ..kernels import losses as K
from ..kernels.activations import log_softmax, sigmoid, softmax
from ._base import Loss, _finite, registry

EPSILON = K.EPSILON


class _SmoothedLoss(Loss):
    """A cross-entropy with Keras's ``label_smoothing``.

    With smoothing ``s`` the targets become ``y (1 - s) + s / K`` (``K``
    classes; ``K = 2`` for binary cross-entropy, so ``y (1 - s) + s / 2``).
    Only the loss and its gradient see the smoothed targets; metrics compare
    with the true labels.

    ``axis`` is Keras's class axis (the axis binary cross-entropy averages
    over): any axis of the predictions; values and gradients are computed
    with it moved last. An axis other than the last turns off the fusion
    with a softmax (sigmoid) output layer, which normalizes the last axis.
    """

    _param_constraints = {
        **Loss._param_constraints,
        "label_smoothing": [Interval(numbers.Real, 0, 1, closed="both")],
        "axis": [Interval(numbers.Integral, None, None)],
    }

    #: whether ``y`` has the predictions' shape (False: sparse labels, without the class axis)
    _dense_targets = True

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: str | None = None, *,
                 reduction: str | None = "sum_over_batch_size", axis: int = -1, dtype: str | None = None):
        validate_params(type(self), {k: self._param_constraints[k] for k in ("label_smoothing", "axis")},
                        {"label_smoothing": label_smoothing, "axis": axis})
        super().__init__(from_logits=from_logits, name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)
        self.axis = int(axis)

    @property
    def fused_activation(self):
        # the softmax (sigmoid) layer normalizes the last axis: fusing is exact only for that class axis
        return type(self)._fused_activation if self.axis == -1 else None

    _fused_activation: str | None = None

    def _axis(self, ndim: int) -> int:
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"{type(self).__name__}: 'axis' is {self.axis}, but the predictions have "
                             f"{ndim} dimensions.")
        return self.axis % ndim

    def _to_last(self, y, out):
        if self.axis == -1 or out.ndim < 2:
            return y, out
        a = self._axis(out.ndim)
        if a == out.ndim - 1:
            return y, out
        return (np.moveaxis(y, a, -1) if self._dense_targets else y), np.moveaxis(out, a, -1)

    def _from_last(self, grad, out):
        if self.axis == -1 or out.ndim < 2:
            return grad
        a = self._axis(out.ndim)
        return grad if a == out.ndim - 1 else np.moveaxis(grad, -1, a)

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


@registry.register(aliases=("binary_crossentropy", "bce"))
class BinaryCrossentropy(_SmoothedLoss):
    """``-mean(y log p + (1 - y) log(1 - p))``; targets in [0, 1].

    With ``from_logits=True`` ``y_pred`` are logits ``z`` and ``p = sigmoid(z)``.
    ``label_smoothing=s`` replaces ``y`` by ``y (1 - s) + s / 2``.
    """

    default_name = "binary_crossentropy"

    _fused_activation = "sigmoid"

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        y = Loss.prepare_targets(self, y_true, y_pred_shape, who=who)
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

    default_name = "categorical_crossentropy"

    _fused_activation = "softmax"

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        y = Loss.prepare_targets(self, y_true, y_pred_shape, who=who)
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

    _fused_activation = "softmax"
    _param_constraints = {
        **_SmoothedLoss._param_constraints,
        "ignore_class": [NoneOk(), Interval(numbers.Integral, None, None)],
    }

    _dense_targets = False
    default_name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: str | None = None, *,
                 ignore_class: int | None = None, reduction: str | None = "sum_over_batch_size", axis: int = -1,
                 dtype: str | None = None):
        validate_params(type(self), {"ignore_class": self._param_constraints["ignore_class"]},
                        {"ignore_class": ignore_class})
        super().__init__(from_logits=from_logits, label_smoothing=label_smoothing, name=name, reduction=reduction,
                         axis=axis, dtype=dtype)
        self.ignore_class = None if ignore_class is None else int(ignore_class)

    #: the label prepare_targets writes in place of an ignored one
    _IGNORED = -1

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        """Labels as ``intp`` of shape ``y_pred_shape`` without the class axis (ignored ones as -1), checked."""
        who = who or type(self).__name__
        y = np.asarray(y_true)
        if self.axis != -1 and len(y_pred_shape) >= 2:
            a = self._axis(len(y_pred_shape))
            if y.ndim == len(y_pred_shape) and y.shape[a] == 1:
                y = np.squeeze(y, axis=a)
            y_pred_shape = tuple(d for i, d in enumerate(y_pred_shape) if i != a) + (y_pred_shape[a],)
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




class _ElementwiseCE(_SmoothedLoss):
    """A cross-entropy given by ``_elements`` and ``_elements_grad`` (the gradient of their sum).

    The loss is the mean of the values (or the reduction asked for); there
    is no fused form with the output layer.
    """

    _fused_activation = None

    def _elements_grad(self, y, out, logits):  # pragma: no cover - interface
        raise NotImplementedError

    def _mean_grad(self, y, out, logits):
        m = max(out.size // _classes(out), 1)
        return (self._elements_grad(y, out, logits) / m).astype(out.dtype, copy=False)

    def value(self, y, p):
        return float(np.mean(self._elements(y, p, False)))

    def gradient_wrt_output(self, y, p):
        return self._mean_grad(y, p, False)

    def value_from_logits(self, y, z):
        return float(np.mean(self._elements(y, z, True)))

    def gradient_from_logits(self, y, z):
        return self._mean_grad(y, z, True)


def _classes(out):
    return out.shape[-1] if out.ndim > 1 else 1


def _focal_power(base, gamma):
    """``base ** gamma`` and ``gamma * base ** (gamma - 1)`` (its derivative; 0 where ``base`` is 0)."""
    f = np.power(base, gamma)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(base > 0, gamma * np.power(base, gamma - 1.0), 0.0 if gamma != 1.0 else 1.0)
    return f, (df if gamma else np.zeros_like(base))


@registry.register(aliases=("binary_focal_crossentropy",))
class BinaryFocalCrossentropy(_ElementwiseCE):
    """Binary cross-entropy scaled by the focal factor ``(1 - p_t) ** gamma`` (Lin et al., 2017).

    ``p_t = y p + (1 - y) (1 - p)``; with ``apply_class_balancing`` each
    value is also weighted by ``alpha`` (``y = 1``) or ``1 - alpha``
    (``y = 0``). As Keras, the cross-entropy clips ``p`` to
    ``[1e-7, 1 - 1e-7]`` and the focal factor uses the unclipped ``p``;
    with ``from_logits`` ``p = sigmoid(y_pred)``. ``gamma = 0`` without
    balancing is binary cross-entropy.

    Gradient (``d`` per prediction, before the mean over ``axis``):
    ``w [gamma (1 - p_t)^(gamma - 1) (1 - 2y) bce + (1 - p_t)^gamma dbce]``
    with ``dbce = (p - y) / (p (1 - p))`` (0 where ``p`` is clipped), times
    ``p (1 - p)`` for logits.
    """

    default_name = "binary_focal_crossentropy"
    _param_constraints = {
        **_SmoothedLoss._param_constraints,
        "apply_class_balancing": [Boolean()],
        "alpha": [Interval(numbers.Real, 0, 1, closed="both")],
        "gamma": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, apply_class_balancing: bool = False, alpha: float = 0.25, gamma: float = 2.0,
                 from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None, dtype: str | None = None):
        validate_params(type(self), {k: self._param_constraints[k] for k in
                                              ("apply_class_balancing", "alpha", "gamma")},
                        {"apply_class_balancing": apply_class_balancing, "alpha": alpha, "gamma": gamma})
        super().__init__(from_logits=from_logits, label_smoothing=label_smoothing, name=name, reduction=reduction,
                         axis=axis, dtype=dtype)
        self.apply_class_balancing = bool(apply_class_balancing)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    prepare_targets = BinaryCrossentropy.prepare_targets

    def _parts(self, y, out, logits):
        y = self._smooth(y, 2)
        p = sigmoid(out) if logits else out
        pc = K._clip(p)
        bce = -(y * np.log(pc) + (1.0 - y) * np.log1p(-pc))
        f, df = _focal_power(1.0 - (y * p + (1.0 - y) * (1.0 - p)), self.gamma)
        w = y * self.alpha + (1.0 - y) * (1.0 - self.alpha) if self.apply_class_balancing else 1.0
        return y, p, pc, bce, f, df, w

    def _elements(self, y, out, logits):
        _, _, _, bce, f, _, w = self._parts(y, out, logits)
        e = w * f * bce
        return e.mean(axis=-1) if out.ndim > 1 else e

    def _elements_grad(self, y, out, logits):
        y, p, pc, bce, f, df, w = self._parts(y, out, logits)
        dbce = np.where((p > K.EPSILON) & (p < 1.0 - K.EPSILON), (pc - y) / (pc * (1.0 - pc)), 0.0)
        g = w * (df * (1.0 - 2.0 * y) * bce + f * dbce) / _classes(out)
        return g * (p * (1.0 - p)) if logits else g

    def get_config(self):
        return {**super().get_config(), "apply_class_balancing": self.apply_class_balancing, "alpha": self.alpha,
                "gamma": self.gamma}


@registry.register(aliases=("categorical_focal_crossentropy",))
class CategoricalFocalCrossentropy(_ElementwiseCE):
    """``-sum_k alpha (1 - q_k)^gamma y_k log q_k`` (Lin et al., 2017), ``q = p / sum_k p_k``.

    As Keras: ``q`` is clipped to ``[1e-7, 1 - 1e-7]``; with ``from_logits``
    ``p = softmax(y_pred)``; ``label_smoothing=s`` replaces ``y`` by
    ``y (1 - s) + s / K``. Gradient with respect to ``q``:
    ``g_k = alpha y_k [gamma (1 - q_k)^(gamma - 1) log q_k - (1 - q_k)^gamma / q_k]``
    (0 where clipped); with respect to ``p``: ``(g - sum_k g_k q_k) / sum_k p_k``;
    to logits: ``q (g - sum_k g_k q_k)``.
    """

    default_name = "categorical_focal_crossentropy"
    _param_constraints = {
        **_SmoothedLoss._param_constraints,
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "gamma": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, from_logits: bool = False,
                 label_smoothing: float = 0.0, axis: int = -1, reduction: str | None = "sum_over_batch_size",
                 name: str | None = None, dtype: str | None = None):
        validate_params(type(self), {k: self._param_constraints[k] for k in ("alpha", "gamma")},
                        {"alpha": alpha, "gamma": gamma})
        super().__init__(from_logits=from_logits, label_smoothing=label_smoothing, name=name, reduction=reduction,
                         axis=axis, dtype=dtype)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    prepare_targets = CategoricalCrossentropy.prepare_targets

    def _parts(self, y, out, logits):
        y = self._smooth(y, out.shape[-1])
        p = softmax(out) if logits else out
        s = p.sum(axis=-1, keepdims=True)
        q = p / s
        qc = K._clip(q)
        f, df = _focal_power(1.0 - qc, self.gamma)
        return y, s, q, qc, f, df

    def _elements(self, y, out, logits):
        y, _, _, qc, f, _ = self._parts(y, out, logits)
        return np.sum(-y * np.log(qc) * self.alpha * f, axis=-1)

    def _elements_grad(self, y, out, logits):
        y, s, q, qc, f, df = self._parts(y, out, logits)
        g = self.alpha * y * (df * np.log(qc) - f / qc)
        g = np.where((q > K.EPSILON) & (q < 1.0 - K.EPSILON), g, 0.0)
        centred = g - np.sum(g * q, axis=-1, keepdims=True)
        return q * centred if logits else centred / s

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@registry.register(aliases=("categorical_generalized_cross_entropy",))
class CategoricalGeneralizedCrossEntropy(Loss):
    """``(1 - p_y ** q) / q`` with integer labels ``y`` (Zhang and Sabuncu, 2018).

    ``q`` in (0, 1): towards 0 it behaves as cross-entropy, towards 1 as
    the mean absolute error, which makes it robust to noisy labels.
    Labels as for :class:`SparseCategoricalCrossentropy` (any rank);
    ``y_pred`` are probabilities, used as given (no clipping). Gradient:
    ``-p_y ** (q - 1)`` at the label.
    """

    default_name = "categorical_generalized_cross_entropy"
    _param_constraints = {**Loss._param_constraints, "q": [Interval(numbers.Real, 0, 1, closed="neither")]}
    axis = -1
    ignore_class = None
    _IGNORED = SparseCategoricalCrossentropy._IGNORED

    def __init__(self, q: float = 0.5, reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: str | None = None):
        validate_params(type(self), {"q": self._param_constraints["q"]}, {"q": q})
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.q = float(q)

    prepare_targets = SparseCategoricalCrossentropy.prepare_targets
    _axis = _SmoothedLoss._axis

    def _picked(self, y, out):
        return np.take_along_axis(out, np.asarray(y, np.intp)[..., None], axis=-1)[..., 0]

    def _elements(self, y, out, logits):
        return (1.0 - np.power(self._picked(y, out), self.q)) / self.q

    def value(self, y, p):
        return float(np.mean(self._elements(y, p, False)))

    def gradient_wrt_output(self, y, p):
        picked = self._picked(y, p)
        with np.errstate(divide="ignore"):
            d = -np.power(picked, self.q - 1.0) / max(picked.size, 1)
        g = np.zeros(p.shape, dtype=np.result_type(p.dtype, np.float32))
        np.put_along_axis(g, np.asarray(y, np.intp)[..., None], d[..., None], axis=-1)
        return g

    value_from_logits = value
    gradient_from_logits = gradient_wrt_output

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, **self._dtype_config(), "q": self.q}

    def __repr__(self):
        return f"CategoricalGeneralizedCrossEntropy(q={self.q})"
