"""Batch normalization: the equations of the notes, forward and backward.

For one feature over a mini-batch ``B = {x_1 .. x_m}`` (``m`` counts every
element reduced, e.g. ``N * H * W`` for the channels of an image batch)::

    mu      = 1/m sum_i x_i                        (1) mini-batch mean
    sigma^2 = 1/m sum_i (x_i - mu)^2               (2) biased mini-batch variance
    xhat_i  = (x_i - mu) / sqrt(sigma^2 + eps)     (3) normalize
    y_i     = gamma xhat_i + beta                  (4) scale and shift

Backward (the hand derivation of the notes, with ``dxhat_i = dy_i gamma``)::

    dbeta       = sum_i dy_i
    dgamma      = sum_i dy_i xhat_i
    dsigma^2    = sum_i dxhat_i (x_i - mu) (-1/2) (sigma^2 + eps)^(-3/2)
    dmu         = -sum_i dxhat_i / sqrt(sigma^2 + eps) + dsigma^2 * (-2/m) sum_i (x_i - mu)
    dx_i        = dxhat_i / sqrt(sigma^2 + eps) + dsigma^2 2 (x_i - mu) / m + dmu / m

The second term of ``dmu`` vanishes because ``sum_i (x_i - mu) = 0``.
Substituting and collecting terms gives the compact form used here::

    dx_i = gamma / (m sqrt(sigma^2 + eps)) * (m dy_i - dbeta - xhat_i dgamma)

At inference the moving statistics replace the batch ones, and ``y`` is
affine in ``x``: ``y = x * s + (beta - mu_mov * s)`` with
``s = gamma / sqrt(sigma^2_mov + eps)``, so ``dx = dy * s``.

The moving statistics follow Keras::

    moving = momentum * moving + (1 - momentum) * batch

(the notes write the same update with ``alpha = 1 - momentum``.)

Conventions. Statistics are reduced over ``axes`` with ``keepdims=True``, so
every per-feature array (``gamma``, ``beta``, ``mean``, ...) has the broadcast
shape of ``x`` with ones on the reduced axes. The variance is two-pass (the
mean is subtracted before squaring), never ``E[x^2] - E[x]^2``, and the mean
of float16/float32 inputs is accumulated in float64, so an offset of 1e4 on
unit-variance float32 data still normalizes to unit variance.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class BatchNormTrainCache(NamedTuple):
    """What the training backward pass needs."""

    xhat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray | None
    axes: tuple
    count: int


class BatchNormInferenceCache(NamedTuple):
    """What the inference backward pass needs (``x`` itself, not ``xhat``)."""

    x: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray
    scale: np.ndarray
    axes: tuple


def reduced_count(shape: tuple, axes: tuple) -> int:
    """Number of elements each feature's statistics are computed from."""
    # math.prod: np.prod costs ~10 us per call, a sizeable share of a small training step
    return math.prod(shape[a] for a in axes)


def batch_moments(x: np.ndarray, *, axes: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(mean, var, x - mean)``: biased variance, two-pass.

    ``mean`` and ``var`` have the broadcast (keepdims) shape and ``x``'s dtype.
    """
    acc = np.float64 if x.dtype.itemsize < 8 else None
    mean = x.mean(axis=axes, keepdims=True, dtype=acc).astype(x.dtype, copy=False)
    xc = x - mean
    var = np.mean(np.square(xc), axis=axes, keepdims=True)
    return mean, var, xc


def batchnorm_train_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    *,
    axes: tuple,
    epsilon: float,
) -> tuple[np.ndarray, BatchNormTrainCache, np.ndarray, np.ndarray]:
    """Normalize with the batch statistics.

    Returns
    -------
    y : ndarray
        ``gamma * xhat + beta`` (``gamma``/``beta`` of ``None`` mean 1 and 0).
    cache : BatchNormTrainCache
    mean, var : ndarray
        The batch mean and biased variance (keepdims shape), for the moving
        averages.
    """
    mean, var, xc = batch_moments(x, axes=axes)
    inv_std = 1.0 / np.sqrt(var + epsilon)
    xhat = xc
    xhat *= inv_std
    if gamma is not None:
        y = xhat * gamma
        if beta is not None:
            y += beta
    elif beta is not None:
        y = xhat + beta
    else:
        y = xhat.copy()
    cache = BatchNormTrainCache(xhat, inv_std, gamma, axes, reduced_count(x.shape, axes))
    return y, cache, mean, var


def batchnorm_train_backward(
    dy: np.ndarray, cache: BatchNormTrainCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(dx, dgamma, dbeta)`` in the compact form (module docstring)."""
    xhat, inv_std, gamma, axes, m = cache
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = np.sum(dy * xhat, axis=axes, keepdims=True)
    coef = inv_std / m if gamma is None else gamma * inv_std / m
    dx = dy * m
    dx -= dbeta
    dx -= xhat * dgamma
    dx *= coef
    return dx, dgamma, dbeta


def batchnorm_inference_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    moving_mean: np.ndarray,
    moving_variance: np.ndarray,
    *,
    axes: tuple,
    epsilon: float,
) -> tuple[np.ndarray, BatchNormInferenceCache]:
    """Normalize with fixed statistics: ``y = x * s + (beta - mean * s)``."""
    inv_std = 1.0 / np.sqrt(moving_variance + epsilon)
    scale = inv_std if gamma is None else gamma * inv_std
    shift = -moving_mean * scale
    if beta is not None:
        shift = shift + beta
    y = x * scale
    y += shift
    return y, BatchNormInferenceCache(x, moving_mean, inv_std, scale, axes)


def batchnorm_inference_backward(
    dy: np.ndarray, cache: BatchNormInferenceCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(dx, dgamma, dbeta)`` with the statistics held fixed."""
    x, mean, inv_std, scale, axes = cache
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = np.sum(dy * ((x - mean) * inv_std), axis=axes, keepdims=True)
    return dy * scale, dgamma, dbeta


def update_moving(moving: np.ndarray, batch: np.ndarray, momentum: float) -> np.ndarray:
    """Return ``momentum * moving + (1 - momentum) * batch`` (Keras convention)."""
    return momentum * moving + (1.0 - momentum) * batch


class BatchRenormCache(NamedTuple):
    """Training cache of batch renormalization."""

    base: BatchNormTrainCache
    r: np.ndarray
    d: np.ndarray


def batch_renorm_train_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    renorm_mean: np.ndarray,
    renorm_stddev: np.ndarray,
    *,
    axes: tuple,
    epsilon: float,
    rmax: float,
    rmin: float,
    dmax: float,
):
    """Batch renormalization (Ioffe 2017), training forward.

    With the batch statistics ``mu_B``, ``sigma_B = sqrt(var_B + eps)`` and the
    moving renorm statistics ``mu``, ``sigma``::

        r    = clip(sigma_B / sigma, rmin, rmax)        (held constant in backward)
        d    = clip((mu_B - mu) / sigma, -dmax, dmax)    (held constant in backward)
        xhat = (x - mu_B) / sigma_B * r + d
        y    = gamma * xhat + beta

    Since ``r`` and ``d`` are constants for the gradient, the backward pass is
    the batch-norm one with ``gamma`` replaced by ``gamma * r``, plus
    ``dgamma = r * sum(dy * xhat_B) + d * sum(dy)``. With ``rmax = rmin = 1``
    and ``dmax = 0`` it is plain batch normalization.

    Returns ``(y, cache, mean, var, r, d)``.
    """
    mean, var, xc = batch_moments(x, axes=axes)
    std_b = np.sqrt(var + epsilon)
    r = np.clip(std_b / renorm_stddev, rmin, rmax).astype(x.dtype, copy=False)
    d = np.clip((mean - renorm_mean) / renorm_stddev, -dmax, dmax).astype(x.dtype, copy=False)
    inv_std = 1.0 / std_b
    xhat = xc
    xhat *= inv_std
    g = r if gamma is None else gamma * r
    y = xhat * g + (d if gamma is None else gamma * d)
    if beta is not None:
        y += beta
    base = BatchNormTrainCache(xhat, inv_std, g, axes, reduced_count(x.shape, axes))
    return y, BatchRenormCache(base, r, d), mean, var, r, d


def batch_renorm_train_backward(dy: np.ndarray, cache: BatchRenormCache):
    """Return ``(dx, dgamma, dbeta)`` of :func:`batch_renorm_train_forward`."""
    dx, dgamma_hat, dbeta = batchnorm_train_backward(dy, cache.base)
    return dx, cache.r * dgamma_hat + cache.d * dbeta, dbeta
