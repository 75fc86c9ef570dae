"""Keras's metric functions: one value per sample (``normlab.metrics.binary_accuracy(y_true, y_pred)``, ...).

The loss functions (``mean_squared_error``, ``hinge``, ``kl_divergence``,
...) are Keras's metric functions too and are re-exported from
:mod:`normlab.losses`; :func:`cosine_similarity` here is the metric's (the
similarity itself, not its negative as the loss).
"""

from __future__ import annotations

import numpy as np

from ._accuracy import _in_top_k

__all__ = ["accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
           "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "cosine_similarity"]


def _arrays(y_true, y_pred):
    p = np.asarray(y_pred)
    y = np.asarray(y_true)
    # Keras's squeeze_or_expand_to_same_rank
    if y.ndim == p.ndim + 1 and y.shape[-1] == 1:
        y = y[..., 0]
    elif p.ndim == y.ndim + 1 and p.shape[-1] == 1:
        p = p[..., 0]
    return y, p


def accuracy(y_true, y_pred):
    """1 where ``y_pred == y_true`` exactly, else 0 (per entry)."""
    y, p = _arrays(y_true, y_pred)
    return (y == p).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """The fraction of entries with ``(y_pred > threshold) == y_true``, per sample (mean over the last axis)."""
    y, p = _arrays(y_true, y_pred)
    hit = (y == (p > threshold)).astype(np.float32)
    return hit.mean(axis=-1) if hit.ndim > 1 else hit


def categorical_accuracy(y_true, y_pred):
    """1 where ``argmax(y_pred) == argmax(y_true)`` (one-hot ``y_true``)."""
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float32)


def _labels(y_true, y_pred):
    y, p = np.asarray(y_true), np.asarray(y_pred)
    if y.ndim == p.ndim and y.shape[-1] == 1:
        y = y[..., 0]
    return y, p


def sparse_categorical_accuracy(y_true, y_pred):
    """1 where ``argmax(y_pred) == y_true`` (integer labels)."""
    y, p = _labels(y_true, y_pred)
    return (np.argmax(p, axis=-1) == y).astype(np.float32)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where ``argmax(y_true)`` is among the ``k`` largest predictions (ties count, as Keras's ``in_top_k``)."""
    return _in_top_k(np.argmax(y_true, axis=-1), np.asarray(y_pred), k).astype(np.float32)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5, from_sorted_ids=False):
    """1 where the label is among the ``k`` largest predictions (or the first ``k`` sorted ids)."""
    y, p = _labels(y_true, y_pred)
    if from_sorted_ids:
        return (p[..., :k] == y[..., None]).any(axis=-1).astype(np.float32)
    return _in_top_k(y, p, k).astype(np.float32)


def cosine_similarity(y_true, y_pred, axis=-1):
    """``sum(y / |y| * p / |p|)`` along ``axis``, ``|x| = max(||x||, 1e-7)`` (1: same direction)."""
    y, p = _arrays(y_true, y_pred)
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    ny = np.sqrt(np.maximum(np.sum(y * y, axis=axis, keepdims=True), 1e-14))
    n_p = np.sqrt(np.maximum(np.sum(p * p, axis=axis, keepdims=True), 1e-14))
    return np.sum(y / ny * (p / n_p), axis=axis)
