"""Keras's loss functions: ``normlab.losses.mean_squared_error(y_true, y_pred)`` and the rest.

Each returns one value per prediction (Keras's per-sample values, shape
``y_pred.shape`` without its last axis, or without the class ``axis``), an
array in the predictions' float dtype (float32 for integer predictions, as
Keras's ``floatx``). The formulas are those of the loss classes of the same
name; ``compile(loss=normlab.losses.mean_squared_error)`` trains with the
class. As in Keras, ``y_true`` and ``y_pred`` whose ranks differ by one
with a trailing axis of 1 are brought to the same rank first.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _crossentropy as CE
from . import _regression as R

__all__ = [
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "cosine_similarity", "huber", "log_cosh", "hinge", "squared_hinge",
    "categorical_hinge", "kl_divergence", "poisson", "binary_crossentropy", "binary_focal_crossentropy",
    "categorical_crossentropy", "categorical_focal_crossentropy", "sparse_categorical_crossentropy",
    "categorical_generalized_cross_entropy", "dice", "tversky",
    "mse", "MSE", "mae", "MAE", "mape", "MAPE", "msle", "MSLE", "kld", "KLD", "kullback_leibler_divergence",
    "logcosh", "bce", "BCE",
]


def _same_rank(y, p):
    """Keras's ``squeeze_or_expand_to_same_rank(y_true, y_pred)``."""
    if y.ndim == p.ndim + 1 and y.shape[-1] == 1:
        if p.ndim == 1:
            p = p[:, None]
        else:
            y = y[..., 0]
    elif p.ndim == y.ndim + 1 and p.shape[-1] == 1:
        if y.ndim == 1:
            y = y[:, None]
        else:
            p = p[..., 0]
    return y, p


def _values(loss, y_true, y_pred):
    p = np.asarray(y_pred)
    if p.dtype.kind != "f":
        p = p.astype(np.float32)
    y = np.asarray(y_true)
    if getattr(loss, "_dense_targets", True) and not isinstance(loss, CE.CategoricalGeneralizedCrossEntropy):
        y, p = _same_rank(y, p)
        y = y.astype(p.dtype)
    y = loss.prepare_targets(y, p.shape, who=loss.default_name)
    y, out = loss._to_last(y, p)
    return np.asarray(loss._elements(y, out, loss.from_logits)).astype(p.dtype, copy=False)


def _warn_one_class(name, y_pred, axis):
    shape = np.shape(y_pred)
    if shape and shape[axis] == 1:
        warnings.warn(f"In loss {name}, expected y_pred.shape to be (batch_size, num_classes) with "
                      f"num_classes > 1. Received: y_pred.shape={shape}. Consider using 'binary_crossentropy' if "
                      f"you only have 2 classes.", SyntaxWarning, stacklevel=3)


def _function(cls, doc_name):
    def fn(y_true, y_pred):
        return _values(cls(), y_true, y_pred)
    fn.__name__ = fn.__qualname__ = doc_name
    fn.__doc__ = f"Per-sample values of :class:`{cls.__name__}` (Keras's ``losses.{doc_name}``)."
    fn._loss_class = cls
    return fn


mean_squared_error = _function(R.MeanSquaredError, "mean_squared_error")
mean_absolute_error = _function(R.MeanAbsoluteError, "mean_absolute_error")
mean_absolute_percentage_error = _function(R.MeanAbsolutePercentageError, "mean_absolute_percentage_error")
mean_squared_logarithmic_error = _function(R.MeanSquaredLogarithmicError, "mean_squared_logarithmic_error")
log_cosh = _function(R.LogCosh, "log_cosh")
hinge = _function(R.Hinge, "hinge")
squared_hinge = _function(R.SquaredHinge, "squared_hinge")
categorical_hinge = _function(R.CategoricalHinge, "categorical_hinge")
kl_divergence = _function(R.KLDivergence, "kl_divergence")
poisson = _function(R.Poisson, "poisson")


def cosine_similarity(y_true, y_pred, axis=-1):
    """Per-sample ``-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)`` (:class:`CosineSimilarity`)."""
    return _values(R.CosineSimilarity(axis=axis), y_true, y_pred)


def huber(y_true, y_pred, delta=1.0):
    """Per-sample Huber loss (:class:`Huber`)."""
    return _values(R.Huber(delta=delta), y_true, y_pred)


def dice(y_true, y_pred, axis=None):
    """The Dice loss (:class:`Dice`): one value for ``axis=None``, else one per remaining index."""
    return _values(R.Dice(axis=axis), y_true, y_pred)


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None):
    """The Tversky loss (:class:`Tversky`)."""
    return _values(R.Tversky(alpha=alpha, beta=beta, axis=axis), y_true, y_pred)


def _check_axis(axis):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"`axis` must be of type `int`. Received: axis={axis} of type {type(axis)}")


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample binary cross-entropy, the mean over ``axis`` (:class:`BinaryCrossentropy`)."""
    return _values(CE.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing, axis=axis),
                   y_true, y_pred)


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample binary focal cross-entropy (:class:`BinaryFocalCrossentropy`)."""
    return _values(CE.BinaryFocalCrossentropy(apply_class_balancing=apply_class_balancing, alpha=alpha, gamma=gamma,
                                              from_logits=from_logits, label_smoothing=label_smoothing, axis=axis),
                   y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample categorical cross-entropy over the class ``axis`` (:class:`CategoricalCrossentropy`).

    Warns (``SyntaxWarning``, as Keras) when the class axis has one entry.
    """
    _check_axis(axis)
    _warn_one_class("categorical_crossentropy", y_pred, axis)
    return _values(CE.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing, axis=axis),
                   y_true, y_pred)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1):
    """Per-sample categorical focal cross-entropy (:class:`CategoricalFocalCrossentropy`)."""
    _check_axis(axis)
    _warn_one_class("categorical_focal_crossentropy", y_pred, axis)
    return _values(CE.CategoricalFocalCrossentropy(alpha=alpha, gamma=gamma, from_logits=from_logits,
                                                   label_smoothing=label_smoothing, axis=axis), y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """Per-label sparse categorical cross-entropy (:class:`SparseCategoricalCrossentropy`); 0 for ignored labels."""
    loss = CE.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=ignore_class, axis=axis)
    p = np.asarray(y_pred)
    if p.dtype.kind != "f":
        p = p.astype(np.float32)
    y = loss.prepare_targets(y_true, p.shape, who="sparse_categorical_crossentropy")
    yl, out = loss._to_last(y, p)
    values = loss._elements(yl, out, from_logits)
    if ignore_class is not None:
        values = np.where(yl == loss._IGNORED, 0.0, values)
    return values.astype(p.dtype, copy=False)


def categorical_generalized_cross_entropy(y_true, y_pred, q):
    """Per-sample generalized cross-entropy ``(1 - p_y ** q) / q`` (:class:`CategoricalGeneralizedCrossEntropy`)."""
    return _values(CE.CategoricalGeneralizedCrossEntropy(q=q), y_true, y_pred)


for _fn, _cls in ((cosine_similarity, R.CosineSimilarity), (huber, R.Huber), (dice, R.Dice), (tversky, R.Tversky),
                  (binary_crossentropy, CE.BinaryCrossentropy),
                  (binary_focal_crossentropy, CE.BinaryFocalCrossentropy),
                  (categorical_crossentropy, CE.CategoricalCrossentropy),
                  (categorical_focal_crossentropy, CE.CategoricalFocalCrossentropy),
                  (sparse_categorical_crossentropy, CE.SparseCategoricalCrossentropy),
                  (categorical_generalized_cross_entropy, CE.CategoricalGeneralizedCrossEntropy)):
    _fn._loss_class = _cls

# Keras's aliases (keras.losses.mse, keras.metrics.MAE, ...)
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kullback_leibler_divergence = kl_divergence
logcosh = log_cosh
bce = BCE = binary_crossentropy
