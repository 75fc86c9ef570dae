"""Normalization over given axes of each sample: layer, group, instance and RMS norm.

Batch norm reduces over the batch; these reduce *within* each sample, over a
set of axes ``A`` that never contains the batch axis (the notes: "like
batchnorm, but normalizes over different axes"). For one sample and one
group of ``m`` values ``x_1 .. x_m`` (the entries of ``A``)::

    mu      = 1/m sum_i x_i                        (1) mean
    sigma^2 = 1/m sum_i (x_i - mu)^2               (2) biased variance, two-pass
    xhat_i  = (x_i - mu) / sqrt(sigma^2 + eps)     (3) normalize
    y_i     = gamma_c(i) xhat_i + beta_c(i)        (4) per-channel affine

``gamma``/``beta`` are indexed by channel, not by the statistics' group, so
their gradients are summed over every axis they are broadcast along::

    dbeta_c  = sum_{i: c(i) = c} dy_i              (over samples and positions)
    dgamma_c = sum_{i: c(i) = c} dy_i xhat_i

With ``dxhat_i = dy_i gamma_c(i)`` the input gradient is the batch-norm one
(the derivation of :mod:`normlab.kernels.batchnorm` with ``dy gamma``
replaced by ``dxhat``; it is exact with ``eps`` included)::

    dx_i = inv_std / m * (m dxhat_i - sum_j dxhat_j - xhat_i sum_j dxhat_j xhat_j)

where ``inv_std = 1 / sqrt(sigma^2 + eps)`` and the sums run over the ``m``
values of the group. Unlike batch norm, ``sum_j dxhat_j`` is not ``dbeta``
(the sums are over different axes), so the two are computed apart.

The family, as choices of ``A`` (channels-last ``(N, ..., C)``):

============  ==========================================  ======================
layer norm    ``A`` = the given feature axes               gamma of A's shape
group norm    reshape ``C -> (G, C/G)``; ``A`` = every     gamma per channel
              non-batch axis but the ``G`` axis
instance      group norm with ``G = C``                    gamma per channel
RMS norm      ``A`` = feature axes, no centering (below)   gamma of A's shape
============  ==========================================  ======================

RMS norm (Zhang and Sennrich 2019) skips the mean: ``r = 1/sqrt(mean(x^2) + eps)``,
``xhat = x r``, ``y = gamma xhat``. With ``d r / d x_i = -r^3 x_i / m``::

    dx_i = r / m * (m dxhat_i - xhat_i sum_j dxhat_j xhat_j)

i.e. the centered formula without its ``sum_j dxhat_j`` term.

Conventions. Statistics are reduced over ``axes`` with ``keepdims=True``;
``gamma``/``beta`` given to :func:`normalize_forward` have the broadcast shape
of ``x`` (ones where they are shared). Means of float16/float32 inputs are
accumulated in float64 (:func:`normlab.kernels.batchnorm.batch_moments`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .batchnorm import batch_moments, reduced_count

__all__ = [
    "NormalizeCache",
    "GroupNormCache",
    "normalize_forward",
    "normalize_backward",
    "grouped_shape",
    "group_norm_forward",
    "group_norm_backward",
    "rms_norm_forward",
    "rms_norm_backward",
]


class NormalizeCache(NamedTuple):
    """What :func:`normalize_backward` needs."""

    xhat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray | None
    axes: tuple  # statistics axes
    count: int  # m, values per statistic
    centered: bool  # False for RMS norm
    has_beta: bool
    param_axes: tuple  # axes gamma/beta are broadcast along (their gradients sum over these)


class GroupNormCache(NamedTuple):
    inner: NormalizeCache
    grouped_shape: tuple


def _param_axes(ndim: int, *params) -> tuple:
    p = next((q for q in params if q is not None), None)
    if p is None:
        return ()
    shape = (1,) * (ndim - p.ndim) + p.shape  # numpy broadcasting pads on the left
    return tuple(a for a in range(ndim) if shape[a] == 1)


def normalize_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    *,
    axes: tuple,
    epsilon: float,
    centered: bool = True,
) -> tuple[np.ndarray, NormalizeCache]:
    """``y = gamma * xhat + beta`` with ``xhat`` normalized over ``axes`` (module docstring).

    ``gamma``/``beta`` of ``None`` mean 1 and 0. ``centered=False`` is RMS
    normalization (no mean subtracted).
    """
    if centered:
        _, var, xhat = batch_moments(x, axes=axes)
    else:
        acc = np.float64 if x.dtype.itemsize < 8 else None
        var = np.mean(np.square(x), axis=axes, keepdims=True, dtype=acc).astype(x.dtype, copy=False)
        xhat = x.copy()
    inv_std = 1.0 / np.sqrt(var + epsilon)
    xhat *= inv_std
    if gamma is not None:
        y = xhat * gamma
        if beta is not None:
            y += beta
    elif beta is not None:
        y = xhat + beta
    else:
        y = xhat.copy()
    cache = NormalizeCache(
        xhat, inv_std, gamma, tuple(axes), reduced_count(x.shape, axes), centered,
        beta is not None, _param_axes(x.ndim, gamma, beta),
    )
    return y, cache


def normalize_backward(
    dy: np.ndarray, cache: NormalizeCache, *, need_param_grads: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return ``(dx, dgamma, dbeta)``.

    ``dgamma``/``dbeta`` have the broadcast shape of the parameters; ``dgamma``
    (``dbeta``) is ``None`` without ``gamma`` (``beta``); both are ``None``
    when ``need_param_grads`` is false (a frozen layer).
    """
    xhat, inv_std, gamma, axes, m, centered, has_beta, paxes = cache
    dgamma = dbeta = None
    if need_param_grads:
        if gamma is not None:
            dgamma = np.sum(dy * xhat, axis=paxes, keepdims=True)
        if has_beta:
            dbeta = dy.sum(axis=paxes, keepdims=True)
    dxhat = dy if gamma is None else dy * gamma
    dx = dxhat * m
    if centered:
        dx -= dxhat.sum(axis=axes, keepdims=True)
    dx -= xhat * np.sum(dxhat * xhat, axis=axes, keepdims=True)
    dx *= inv_std / m
    return dx, dgamma, dbeta


# --------------------------------------------------------------- group norm
def grouped_shape(shape: tuple, *, groups: int, axis: int) -> tuple:
    """``shape`` with the channel axis ``axis`` (non-negative) split into ``(groups, C // groups)``."""
    c = shape[axis]
    return tuple(shape[:axis]) + (groups, c // groups) + tuple(shape[axis + 1 :])


def group_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    *,
    groups: int,
    axis: int,
    epsilon: float,
) -> tuple[np.ndarray, GroupNormCache]:
    """Group normalization (Wu and He 2018) of channels along ``axis`` (non-negative, > 0).

    ``gamma``/``beta`` are per-channel vectors of length ``C`` (or ``None``);
    channel ``c`` belongs to group ``c // (C // groups)`` (contiguous groups,
    as in Keras and PyTorch). Instance normalization is ``groups = C``.
    """
    gshape = grouped_shape(x.shape, groups=groups, axis=axis)
    pshape = tuple(gshape[a] if a in (axis, axis + 1) else 1 for a in range(len(gshape)))
    stat_axes = tuple(a for a in range(1, len(gshape)) if a != axis)
    y, cache = normalize_forward(
        x.reshape(gshape),
        None if gamma is None else gamma.reshape(pshape),
        None if beta is None else beta.reshape(pshape),
        axes=stat_axes,
        epsilon=epsilon,
    )
    return y.reshape(x.shape), GroupNormCache(cache, gshape)


def group_norm_backward(
    dy: np.ndarray, cache: GroupNormCache, *, need_param_grads: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return ``(dx, dgamma, dbeta)``; the parameter gradients as length-``C`` vectors."""
    dx, dgamma, dbeta = normalize_backward(
        dy.reshape(cache.grouped_shape), cache.inner,
        need_param_grads=need_param_grads
    )
    flat = lambda g: None if g is None else g.reshape(-1)  # noqa: E731
    return dx.reshape(dy.shape), flat(dgamma), flat(dbeta)


# ----------------------------------------------------------------- RMS norm
def rms_norm_forward(
    x: np.ndarray, gamma: np.ndarray | None, *, axes: tuple, epsilon: float
) -> tuple[np.ndarray, NormalizeCache]:
    """``y = x / sqrt(mean(x^2 over axes) + eps) * gamma`` (``gamma`` broadcast-shaped)."""
    return normalize_forward(x, gamma, None, axes=axes, epsilon=epsilon, centered=False)


def rms_norm_backward(
    dy: np.ndarray, cache: NormalizeCache, *, need_param_grads: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(dx, dgamma)``."""
    dx, dgamma, _ = normalize_backward(dy, cache, need_param_grads=need_param_grads)
    return dx, dgamma
