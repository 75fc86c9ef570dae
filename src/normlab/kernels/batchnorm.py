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
affine in ``x``: ``y = (x - mu_mov) * s + beta`` with
``s = gamma / sqrt(sigma^2_mov + eps)``, so ``dx = dy * s``.

The moving statistics follow Keras::

    moving = momentum * moving + (1 - momentum) * batch

(the notes write the same update with ``alpha = 1 - momentum``.)

Conventions. Statistics are reduced over ``axes`` with ``keepdims=True``, so
every per-feature array (``gamma``, ``beta``, ``mean``, ...) has the broadcast
shape of ``x`` with ones on the reduced axes. The variance is two-pass (the
mean is subtracted before squaring), never ``E[x^2] - E[x]^2``; the sums are
shifted by each feature's first value and the mean of float16/float32 inputs
is accumulated in float64, so an offset of 1e4 (or 1e30) on unit-variance
float32 data still normalizes to unit variance and a constant feature gives
exactly ``beta``. The variance is returned in float64: every finite float32
input has a finite one (up to about 4.6e77), which a float32 moving variance
may not hold; the layer, not the kernel, refuses that ("overflow").

Zero variance and ``epsilon=0``. The notes write the equations without
epsilon, as Keras and PyTorch allow (``epsilon=0``). Then ``sigma^2 + eps``
is 0 for a feature that is constant in the batch (training) or whose moving
variance is 0 (inference), and (3) divides 0 by 0. The convention: there
``1 / sqrt(sigma^2 + eps)`` is taken as 0, so ``xhat = 0`` (the output is
``beta``) and ``dx = 0`` for that feature (``dgamma`` gets 0 from it, ``dbeta``
still ``sum dy``). The gradient has no finite limit to take instead: for a
non-constant feature ``xhat`` does not change when ``x`` is scaled about its
mean, so ``dx`` grows as ``1 / sigma`` when the spread shrinks, and at a
constant input ``xhat`` jumps from 0 to a unit-variance vector whose
direction is that of the perturbation, which is not differentiable; only
a shift of the whole feature keeps it constant, and along it the output
(``beta``) does not change, as the convention's zero says. With
``epsilon > 0`` nothing of this applies and the results are unchanged
(a constant feature then has ``inv_std = 1 / sqrt(eps)`` and
``dx = gamma / sqrt(eps) * (dy - mean(dy))``).
"""

from __future__ import annotations

import functools
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


def inverse_std(var, epsilon: float):
    """``1 / sqrt(var + epsilon)``, taken as 0 where ``var + epsilon == 0`` (``epsilon=0`` only).

    The zero-variance convention of the module docstring. For ``epsilon > 0``
    this is ``1.0 / np.sqrt(var + epsilon)``, the same bits as before the
    convention existed.
    """
    if epsilon > 0:
        return 1.0 / np.sqrt(var + epsilon)
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.sqrt(var + epsilon)
    return np.where(var + epsilon == 0, 0, inv).astype(inv.dtype, copy=False)


def reduced_count(shape: tuple, axes: tuple) -> int:
    """Number of elements each feature's statistics are computed from."""
    # math.prod: np.prod costs ~10 us per call, a sizeable share of a small training step
    return math.prod(shape[a] for a in axes)


@functools.lru_cache(maxsize=64)
def _first_index(ndim: int, axes: tuple) -> tuple:
    return tuple(slice(0, 1) if a in axes else slice(None) for a in range(ndim))


def _first(x: np.ndarray, axes: tuple) -> np.ndarray:
    """The first of each statistic's values (a keepdims view): the shift of the sums."""
    return x[_first_index(x.ndim, tuple(axes))]


def _moments_fast(x, axes, centered):
    """``(mean, var, xc, lo)``: the sums of the common case; ``xc = x - mean`` up to ``lo``.

    float16/float32: the mean is summed in float64 (exact for a constant
    feature) and split into ``hi`` (rounded to ``x``'s dtype, returned as
    ``mean``) and ``lo = mean - hi`` (float64); ``xc = x - hi`` (exactly
    zero for a constant feature) and ``var = mean(xc^2) - lo^2``. Whoever
    needs ``x - mean`` itself subtracts ``lo`` (see :func:`standardize`:
    only where it matters). float64: the
    sums are shifted by each statistic's first value instead (a float64 sum
    of ``m`` copies of a value can round, the deviations from the first copy
    cannot), and ``lo`` is None. ``var`` is float64; it may overflow
    (detected by the caller).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if not centered:
            acc = np.float64 if x.dtype.itemsize < 8 else None
            var = np.mean(np.square(x), axis=axes, keepdims=True, dtype=acc)
            return None, var.astype(np.float64, copy=False), x.copy(), None
        if x.dtype.itemsize < 8:
            mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
            hi = mean.astype(x.dtype)
            xc = x - hi
            lo = mean - hi
            # mean(xc^2) = var + lo^2: negligible for xhat unless the mean is far out, but not
            # for the variance itself (the moving variance) when the spread is a few ulp of the mean
            var = np.mean(np.square(xc), axis=axes, keepdims=True) - np.square(lo)  # float64
            return hi, np.maximum(var, 0.0, out=var), xc, lo
        x0 = _first(x, axes)
        xc = x - x0
        ms = xc.mean(axis=axes, keepdims=True)
        xc -= ms
        var = np.mean(np.square(xc), axis=axes, keepdims=True)
        return x0 + ms, var, xc, None


#: (floor, epsilon bound) of :func:`underflow_floor` for the dtypes narrower than float64
_FLOORS = {
    np.dtype(t): (float(np.finfo(t).tiny / np.finfo(t).eps), float(np.finfo(t).tiny / np.finfo(t).eps ** 2))
    for t in (np.float16, np.float32)
}


#: 16 units in the last place of 1, for :func:`standardize`
_LO_BOUND = {np.dtype(t): 16 * float(np.finfo(t).eps) for t in (np.float16, np.float32)}


def underflow_floor(dtype, epsilon: float) -> float:
    """The variance below which squares in ``dtype`` may have lost digits to underflow, or 0.0.

    Squares below the smallest normal number (``1.2e-38`` in float32) lose
    digits; that matters only where ``epsilon`` does not swamp such a
    variance (``epsilon`` below about ``8e-25`` in float32). Never for
    float64, whose squares of float32-sized values do not underflow.
    """
    floor, bound = _FLOORS.get(np.dtype(dtype), (0.0, 0.0))
    return floor if epsilon < bound else 0.0


def _needs_wide(x, var, epsilon) -> bool:
    """True where the sums in ``x``'s dtype may have overflowed or underflowed (then :func:`_standardize_wide`)."""
    # one reduction (a float64 sum of finite variances overflows only beyond ~1e308: then the
    # careful path runs, and finds them finite)
    if not math.isfinite(var.sum()):
        return True
    floor = underflow_floor(x.dtype, epsilon)
    return floor > 0.0 and bool((var < floor).any())


def _standardize_wide(x, axes, epsilon, centered):
    """:func:`standardize` in float64, the values scaled by ``2^-e`` (exact) where ``2^e > max |x| > 2^500``.

    The rare path: squares of float32 deviations beyond 1.8e19 overflow
    float32 (never float64), and float64 deviations beyond about 1e154
    overflow float64 unless scaled. ``var`` is ``inf`` only where the
    variance itself exceeds the float64 range; ``inv_std`` and ``xhat`` are
    then still finite. NaN or inf input gives NaN statistics.
    """
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        amax = np.max(np.abs(x64), axis=axes, keepdims=True)
        e = np.where((amax > 2.0**500) & (amax < np.inf), np.frexp(amax)[1], 0)
        xs = np.ldexp(x64, -e)
        if centered:
            x0 = _first(xs, axes).copy()  # not a view: xs changes in place
            xs -= x0
            ms = xs.mean(axis=axes, keepdims=True)
            xs -= ms
            mean = np.ldexp(x0 + ms, e)
        else:
            mean = None
        vs = np.mean(np.square(xs), axis=axes, keepdims=True)
        var = np.ldexp(vs, 2 * e)
        den = np.sqrt(vs + np.ldexp(epsilon, -2 * e))
        zero = den == 0  # a constant feature where the scaling underflowed epsilon
        xhat = np.divide(xs, den, out=np.zeros_like(xs), where=~zero)
        # epsilon=0: a constant feature's 1/sqrt(0) is 0 (the zero-variance convention)
        inv_eps = 1.0 / np.sqrt(epsilon) if epsilon > 0 else 0.0
        inv_std = np.where(zero, inv_eps, np.ldexp(1.0 / den, -e))
    return mean, var, inv_std.astype(x.dtype), xhat.astype(x.dtype)


#: inputs of at most this many values are standardized in float64 (:func:`_standardize_small`)
_SMALL = 16384


def _standardize_small(x, axes, epsilon, centered):
    """:func:`standardize` of a small float16/float32 ``x``, all in float64.

    The calls, not the arithmetic, take the time on small arrays (about a
    microsecond each): float64 needs fewer of them than the float32 sums with
    their checks, and is exact enough for every finite float32 input (its
    squares neither overflow nor underflow; a constant feature's mean is its
    value exactly).
    """
    xc = x.astype(np.float64)
    if centered:
        mean = xc.mean(axis=axes, keepdims=True)
        xc -= mean
    var = np.mean(np.square(xc), axis=axes, keepdims=True)
    inv64 = inverse_std(var, epsilon)
    xc *= inv64
    return (mean.astype(x.dtype) if centered else None), var, inv64.astype(x.dtype), xc.astype(x.dtype)


def standardize(
    x: np.ndarray, *, axes: tuple, epsilon: float, centered: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(mean, var, inv_std, xhat)``: equations (1) to (3) over ``axes`` (keepdims shapes).

    ``mean`` has ``x``'s dtype (None when not ``centered``: RMS
    normalization, ``var = mean(x^2)``); ``var`` is float64 and two-pass
    (see :func:`_moments_fast`);
    ``inv_std = 1 / sqrt(var + epsilon)`` and ``xhat`` (a new array) have
    ``x``'s dtype.

    Every finite float32 input gives finite statistics and ``xhat``: where
    the float32 squares overflow (deviations beyond about 1.8e19) or
    underflow, the statistics are taken again in float64
    (:func:`_standardize_wide`); small inputs are taken in float64 at once
    (:func:`_standardize_small`). For float64 input ``var`` is ``inf`` only
    where it exceeds the float64 range (deviations beyond about 1e154);
    ``inv_std`` and ``xhat`` stay finite. A constant feature gives
    ``var = 0`` and ``xhat = 0`` exactly.
    """
    if x.size <= _SMALL and x.dtype.itemsize < 8:
        return _standardize_small(x, axes, epsilon, centered)
    mean, var, xc, lo = _moments_fast(x, axes, centered)
    if _needs_wide(x, var, epsilon):
        mean, var, inv_std, xhat = _standardize_wide(x, axes, epsilon, centered)
    else:
        inv64 = inverse_std(var, epsilon)
        # x - mean = xc - lo: the subtraction costs a pass over x, skipped where lo is below
        # 16 units in the last place of xhat (a mean within about 30 standard deviations of
        # 0); on small inputs the pass costs less than the test (3 operations, ~2 us)
        if lo is not None and (np.abs(lo) * inv64).max() > _LO_BOUND[x.dtype]:
            xc -= lo.astype(x.dtype)
        inv_std = inv64.astype(x.dtype)
        xhat = xc
        xhat *= inv_std
    return (None if mean is None else mean.astype(x.dtype, copy=False)), var, inv_std, xhat


def batch_moments(x: np.ndarray, *, axes: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(mean, var, x - mean)``: biased variance, two-pass (see :func:`standardize`).

    ``mean`` has the broadcast (keepdims) shape and ``x``'s dtype, ``var``
    is float64.
    """
    mean, var, xc, lo = _moments_fast(x, axes, True)
    if _needs_wide(x, var, 0.0):
        mean, var, _, _ = _standardize_wide(x, axes, 0.0, True)
        xc = x - mean.astype(x.dtype)
    elif lo is not None:
        xc -= lo.astype(x.dtype)
    return mean.astype(x.dtype, copy=False), var, xc


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
    mean, var, inv_std, xhat = standardize(x, axes=axes, epsilon=epsilon)
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
    """Normalize with fixed statistics: ``y = (x - mean) * s + beta``.

    Centered rather than folded into ``x * s + (beta - mean * s)``, whose two
    products cancel for a feature with a large mean: an input equal to the
    moving mean gives ``beta`` exactly.
    """
    inv_std = inverse_std(moving_variance, epsilon)
    scale = inv_std if gamma is None else gamma * inv_std
    y = x - moving_mean
    y *= scale
    if beta is not None:
        y += beta
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
    rmax: float | None = None,
    rmin: float | None = None,
    dmax: float | None = None,
):
    """Batch renormalization (Ioffe 2017), training forward, with Keras 3's numerics.

    With the batch statistics ``mu_B``, ``sigma_B = sqrt(var_B + eps)`` and the
    moving renorm statistics ``mu``, ``sigma``::

        s    = max(sigma, sqrt(eps))                     (no division by ~0 early on)
        r    = clip(sigma_B / s, rmin, rmax)              (held constant in backward)
        d    = clip((mu_B - mu) / s, -dmax, dmax)         (held constant in backward)
        xhat = (x - mu_B) / sigma_B * r + d
        y    = gamma * xhat + beta

    A bound given as ``None`` is not applied (``r`` unbounded on that side,
    ``d`` unclipped), as in Keras. Since ``r`` and ``d`` are constants for
    the gradient, the backward pass is the batch-norm one with ``gamma``
    replaced by ``gamma * r``, plus ``dgamma = r * sum(dy * xhat_B) + d * sum(dy)``.
    With ``rmax = rmin = 1`` and ``dmax = 0`` it is plain batch normalization.
    With ``epsilon=0`` a feature whose ``sigma`` is 0 (only after constant
    batches) gets no correction: ``r = 1``, ``d = 0``.

    Returns ``(y, cache, mean, var, r, d)``.
    """
    mean, var, inv_std, xhat = standardize(x, axes=axes, epsilon=epsilon)
    with np.errstate(over="ignore"):
        std_b = np.sqrt(var + epsilon)
        s = np.maximum(renorm_stddev, math.sqrt(epsilon))
        if epsilon > 0:
            r = std_b / s
            d = (mean - renorm_mean) / s
        else:
            ok = s > 0
            safe = np.where(ok, s, 1.0)
            r = np.where(ok, std_b / safe, 1.0)
            d = np.where(ok, (mean - renorm_mean) / safe, 0.0)
    if rmin is not None:
        r = np.maximum(r, rmin)
    if rmax is not None:
        r = np.minimum(r, rmax)
    if dmax is not None:
        d = np.clip(d, -dmax, dmax)
    r = r.astype(x.dtype, copy=False)
    d = d.astype(x.dtype, copy=False)
    g = r if gamma is None else gamma * r
    y = xhat * g + (d if gamma is None else gamma * d)
    if beta is not None:
        y += beta
    base = BatchNormTrainCache(xhat, inv_std, g, axes, reduced_count(x.shape, axes))
    return y, BatchRenormCache(base, r, d), mean, var, r, d


def variance_from_stddev(stddev: np.ndarray, epsilon: float) -> np.ndarray:
    """``max(stddev^2 - eps, 0)``: the moving variance batch renormalization derives.

    Keras 3 averages ``sqrt(var_B + eps)`` (the paper's moving sigma), not
    ``var_B``, under renormalization, and gives inference the variance that
    this standard deviation implies; the ``max`` keeps rounding from making
    it negative.
    """
    return np.maximum(stddev * stddev - epsilon, 0.0)


def batch_renorm_train_backward(dy: np.ndarray, cache: BatchRenormCache):
    """Return ``(dx, dgamma, dbeta)`` of :func:`batch_renorm_train_forward`."""
    dx, dgamma_hat, dbeta = batchnorm_train_backward(dy, cache.base)
    return dx, cache.r * dgamma_hat + cache.d * dbeta, dbeta
