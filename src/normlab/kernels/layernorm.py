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

Keras 3's ``LayerNormalization(rms_scaling=True)`` (deprecated there) is a
third variant: the input is *not* centered but divided by the *centered*
standard deviation, ``z = x inv_std``, ``y = gamma z`` (no beta). With
``d inv_std / d x_i = -inv_std^3 (x_i - mu) / m`` and ``dz_i = dy_i gamma``::

    dx_i = inv_std / m * (m dz_i - xhat_i sum_j dz_j z_j)

(:func:`variance_scale_forward`, NumPy only).

Conventions. Statistics are reduced over ``axes`` with ``keepdims=True``;
``gamma``/``beta`` given to :func:`normalize_forward` have the broadcast shape
of ``x`` (ones where they are shared). Means of float16/float32 inputs are
accumulated in float64, from each statistic's first value (a constant
group gives ``xhat = 0`` and ``y = beta`` exactly), and where the squares
overflow or underflow in ``x``'s dtype the statistics are taken again in
float64 (scaled by a power of two for float64 input): every finite float32
input gives finite, correct output and gradients
(:func:`normlab.kernels.batchnorm.standardize`).

Backends. :func:`normalize_forward` (layer and RMS norm) and
:func:`group_norm_forward` are the entry points: each picks the fused numba
kernels where they apply (float32/float64 input, statistics over the
trailing axes, or channels on the last axis for group norm; numba enabled,
see :mod:`normlab.kernels._backend`) and the NumPy code of this module
otherwise. The cache says which ran (:class:`NormalizeCache` /
:class:`GroupNormCache` for NumPy, :class:`RowNormCache` /
:class:`GroupRowsCache` for numba), and the matching ``*_backward`` takes the
same path, whatever the switch says by then. Callers never see the
difference, except in the last bits of the sums' rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _backend, _threads
from .batchnorm import reduced_count, standardize, underflow_floor

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _groupnorm_numba as _nb_gn
    from . import _layernorm_numba as _nb_ln
else:  # pragma: no cover
    _nb_gn = _nb_ln = None

__all__ = [
    "NormalizeCache",
    "GroupNormCache",
    "RowNormCache",
    "GroupRowsCache",
    "normalize_forward",
    "normalize_backward",
    "grouped_shape",
    "group_norm_forward",
    "group_norm_backward",
    "rms_norm_forward",
    "rms_norm_backward",
    "VarianceScaleCache",
    "variance_scale_forward",
    "variance_scale_backward",
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
    """What :func:`group_norm_backward` needs from the NumPy path."""

    inner: NormalizeCache
    grouped_shape: tuple


class RowNormCache(NamedTuple):
    """What :func:`normalize_backward` needs from the numba path (statistics over trailing axes)."""

    x: np.ndarray  # the input viewed as (R, M), C order: one row per statistic
    gamma: np.ndarray | None  # as given to the forward pass
    mean: np.ndarray  # (R,) float64; 0 when not centered
    inv_std: np.ndarray  # (R,) float64
    centered: bool
    has_beta: bool
    param_shape: tuple  # gamma's or beta's shape (their gradients are returned in it)
    shape: tuple  # the input's shape


class GroupRowsCache(NamedTuple):
    """What :func:`group_norm_backward` needs from the numba path (channels last)."""

    x: np.ndarray  # the input viewed as (N, P, C), C order
    groups: int
    gamma: np.ndarray | None
    mean: np.ndarray  # (N, G) float64
    inv_std: np.ndarray  # (N, G) float64
    has_beta: bool
    shape: tuple


#: "no gamma/beta" and "gradient not wanted" for the numba kernels (which test ``.size``)
_EMPTY = np.empty(0)
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _param_axes(ndim: int, *params) -> tuple:
    p = next((q for q in params if q is not None), None)
    if p is None:
        return ()
    shape = (1,) * (ndim - p.ndim) + p.shape  # numpy broadcasting pads on the left
    return tuple(a for a in range(ndim) if shape[a] == 1)


def _check_out(out, x, who):
    """``out`` if it can take the result (C order, ``x``'s shape and dtype); None stays None."""
    if out is not None and not (out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous):
        raise ValueError(
            f"{who}: 'out' must be a C-contiguous {x.dtype} array of shape {x.shape}, got "
            f"{out.dtype} {out.shape}{'' if out.flags.c_contiguous else ' (not C-contiguous)'}."
        )
    return out


def _flat(p):
    return _EMPTY if p is None else p.reshape(-1)


def _grad_target(wanted: bool, acc, shape: tuple, dtype):
    """``(array a numba kernel adds one parameter's gradient into, array returned, temporary)``.

    Without ``acc`` the gradient goes into new zeros of ``shape``; else into
    a flat view of ``acc`` where there is one of ``dtype``, or into zeros
    (the temporary) that the caller adds to ``acc`` afterwards.
    """
    if not wanted:
        return _EMPTY, None, None
    if acc is None:
        g = np.zeros(shape, dtype)
        return g.reshape(-1), g, None
    if acc.flags.c_contiguous and acc.dtype == dtype:
        return acc.reshape(-1), acc, None
    tmp = np.zeros(acc.size, dtype)
    return tmp, acc, tmp


def _finish_grad(target) -> np.ndarray | None:
    _, result, tmp = target
    if tmp is not None:
        result += tmp.reshape(result.shape)
    return result


def _add_into(acc, g):
    """``acc += g`` (shapes may differ by unit axes); returns ``acc``, or ``g`` when ``acc`` is None."""
    if g is None or acc is None:
        return g
    acc += g.reshape(acc.shape)
    return acc


# ------------------------------------------------------------- layer / RMS norm
def _trailing(axes: tuple, ndim: int) -> bool:
    return tuple(axes) == tuple(range(ndim - len(axes), ndim))


def _rows_forward(x2, gamma, beta, epsilon, centered, y2, mean, inv_std, floor):
    """The numba forward over the rows of ``x2``; large inputs split by rows over the thread limit.

    Each row is normalized on its own, so every row gets the same bits
    whichever thread takes it. (The backward sums the parameter gradients
    over the rows and stays on one thread.)
    """
    rows, m = x2.shape
    if x2.size < _threads.MIN_PARALLEL_ELEMENTS or (threads := _threads.get_num_threads()) == 1:
        _nb_ln.forward(x2, gamma, beta, epsilon, centered, y2, mean, inv_std, floor)
        return
    step = max(1, _threads.BLOCK // m)

    def part(k0, k1):
        r = slice(k0 * step, k1 * step)
        _nb_ln.forward(x2[r], gamma, beta, epsilon, centered, y2[r], mean[r], inv_std[r], floor)

    _threads.run_parts(part, -(-rows // step), threads)


def normalize_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    *,
    axes: tuple,
    epsilon: float,
    centered: bool = True,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, NormalizeCache | RowNormCache]:
    """``y = gamma * xhat + beta`` with ``xhat`` normalized over ``axes`` (module docstring).

    ``axes`` are non-negative and increasing; ``gamma``/``beta`` have the
    broadcast shape of ``x`` (ones on the other axes) or are ``None`` (1 and
    0). ``centered=False`` is RMS normalization (no mean subtracted).
    ``out``, if given, receives ``y`` (C order, ``x``'s shape and dtype).

    Statistics over the trailing axes of a non-empty float32/float64 ``x``
    run in :mod:`normlab.kernels._layernorm_numba` when numba is enabled.
    """
    _check_out(out, x, "normalize_forward")
    if (x.size and x.dtype in _FAST_DTYPES and _backend.numba_enabled() and _trailing(axes, x.ndim)):
        x2 = np.ascontiguousarray(x).reshape(-1, reduced_count(x.shape, axes))
        y2 = np.empty_like(x2) if out is None else out.reshape(x2.shape)
        mean = np.empty(x2.shape[0], np.float64)
        inv_std = np.empty(x2.shape[0], np.float64)
        _rows_forward(x2, _flat(gamma), _flat(beta), epsilon, centered, y2, mean, inv_std,
                      underflow_floor(x.dtype, epsilon))
        pshape = next((p.shape for p in (gamma, beta) if p is not None), ())
        cache = RowNormCache(x2, gamma, mean, inv_std, centered, beta is not None, pshape, x.shape)
        return (y2.reshape(x.shape) if out is None else out), cache
    return _normalize_numpy(x, gamma, beta, axes=axes, epsilon=epsilon, centered=centered, out=out)


def _normalize_numpy(x, gamma, beta, *, axes, epsilon, centered, out):
    _, _, inv_std, xhat = standardize(x, axes=axes, epsilon=epsilon, centered=centered)
    if gamma is not None:
        y = np.multiply(xhat, gamma, out=out)
        if beta is not None:
            y += beta
    elif beta is not None:
        y = np.add(xhat, beta, out=out)
    elif out is None:
        y = xhat.copy()
    else:
        np.copyto(out, xhat)
        y = out
    cache = NormalizeCache(
        xhat, inv_std, gamma, tuple(axes), reduced_count(x.shape, axes), centered,
        beta is not None, _param_axes(x.ndim, gamma, beta),
    )
    return y, cache


def normalize_backward(
    dy: np.ndarray,
    cache: NormalizeCache | RowNormCache,
    *,
    need_param_grads: bool = True,
    out: np.ndarray | None = None,
    dgamma_acc: np.ndarray | None = None,
    dbeta_acc: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return ``(dx, dgamma, dbeta)``, on the path the forward pass took.

    ``dgamma``/``dbeta`` have the shape of the parameters given to the
    forward pass; ``dgamma`` (``dbeta``) is ``None`` without ``gamma``
    (``beta``); both are ``None`` when ``need_param_grads`` is false (a
    frozen layer). ``dgamma_acc``/``dbeta_acc``, if given (arrays of the
    parameters' size, a layer's ``grads``), receive the gradients *added*
    into them and are returned in their place. ``out``, if given, receives
    ``dx`` (C order, ``dy``'s shape and dtype).
    """
    _check_out(out, dy, "normalize_backward")
    if type(cache) is RowNormCache:
        x2 = cache.x
        dy2 = np.ascontiguousarray(dy, dtype=x2.dtype).reshape(x2.shape)
        dx2 = np.empty_like(x2) if out is None else out.reshape(x2.shape)
        dt, ps = x2.dtype, cache.param_shape
        dg = _grad_target(need_param_grads and cache.gamma is not None, dgamma_acc, ps, dt)
        db = _grad_target(need_param_grads and cache.has_beta, dbeta_acc, ps, dt)
        _nb_ln.backward(dy2, x2, _flat(cache.gamma), cache.mean, cache.inv_std, cache.centered,
                        dx2, dg[0], db[0])
        dx = dx2.reshape(cache.shape) if out is None else out
        return dx, _finish_grad(dg), _finish_grad(db)
    dx, dgamma, dbeta = _normalize_backward_numpy(dy, cache, need_param_grads, out)
    return dx, _add_into(dgamma_acc, dgamma), _add_into(dbeta_acc, dbeta)


def _normalize_backward_numpy(dy, cache, need_param_grads, out):
    xhat, inv_std, gamma, axes, m, centered, has_beta, paxes = cache
    dgamma = dbeta = None
    if need_param_grads:
        if gamma is not None:
            dgamma = np.sum(dy * xhat, axis=paxes, keepdims=True)
        if has_beta:
            dbeta = dy.sum(axis=paxes, keepdims=True)
    dxhat = dy if gamma is None else dy * gamma
    dx = np.multiply(dxhat, m, out=out)
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
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, GroupNormCache | GroupRowsCache]:
    """Group normalization (Wu and He 2018) of channels along ``axis`` (non-negative, > 0).

    ``gamma``/``beta`` are per-channel vectors of length ``C`` (or ``None``);
    channel ``c`` belongs to group ``c // (C // groups)`` (contiguous groups,
    as in Keras and PyTorch). Instance normalization is ``groups = C``.
    ``out``, if given, receives ``y`` (C order, ``x``'s shape and dtype).

    Channels on the last axis of a non-empty float32/float64 ``x`` run in
    :mod:`normlab.kernels._groupnorm_numba` when numba is enabled.
    """
    _check_out(out, x, "group_norm_forward")
    if x.size and x.dtype in _FAST_DTYPES and _backend.numba_enabled() and axis == x.ndim - 1:
        x3 = np.ascontiguousarray(x).reshape(x.shape[0], -1, x.shape[-1])
        y3 = np.empty_like(x3) if out is None else out.reshape(x3.shape)
        mean = np.empty((x.shape[0], groups), np.float64)
        inv_std = np.empty((x.shape[0], groups), np.float64)
        _nb_gn.forward(x3, groups, _flat(gamma), _flat(beta), epsilon, y3, mean, inv_std)
        cache = GroupRowsCache(x3, groups, gamma, mean, inv_std, beta is not None, x.shape)
        return (y3.reshape(x.shape) if out is None else out), cache
    gshape = grouped_shape(x.shape, groups=groups, axis=axis)
    pshape = tuple(gshape[a] if a in (axis, axis + 1) else 1 for a in range(len(gshape)))
    stat_axes = tuple(a for a in range(1, len(gshape)) if a != axis)
    y, cache = _normalize_numpy(
        x.reshape(gshape),
        None if gamma is None else gamma.reshape(pshape),
        None if beta is None else beta.reshape(pshape),
        axes=stat_axes,
        epsilon=epsilon,
        centered=True,
        out=None if out is None else out.reshape(gshape),
    )
    return (y.reshape(x.shape) if out is None else out), GroupNormCache(cache, gshape)


def group_norm_backward(
    dy: np.ndarray,
    cache: GroupNormCache | GroupRowsCache,
    *,
    need_param_grads: bool = True,
    out: np.ndarray | None = None,
    dgamma_acc: np.ndarray | None = None,
    dbeta_acc: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return ``(dx, dgamma, dbeta)``; the parameter gradients as length-``C`` vectors.

    ``out``, ``dgamma_acc`` and ``dbeta_acc`` as in :func:`normalize_backward`.
    """
    _check_out(out, dy, "group_norm_backward")
    if type(cache) is GroupRowsCache:
        x3 = cache.x
        dy3 = np.ascontiguousarray(dy, dtype=x3.dtype).reshape(x3.shape)
        dx3 = np.empty_like(x3) if out is None else out.reshape(x3.shape)
        dt, c = x3.dtype, (x3.shape[2],)
        dg = _grad_target(need_param_grads and cache.gamma is not None, dgamma_acc, c, dt)
        db = _grad_target(need_param_grads and cache.has_beta, dbeta_acc, c, dt)
        _nb_gn.backward(dy3, x3, cache.groups, _flat(cache.gamma), cache.mean, cache.inv_std,
                        dx3, dg[0], db[0])
        dx = dx3.reshape(cache.shape) if out is None else out
        return dx, _finish_grad(dg), _finish_grad(db)
    gshape = cache.grouped_shape
    dx, dgamma, dbeta = _normalize_backward_numpy(
        dy.reshape(gshape), cache.inner, need_param_grads, None if out is None else out.reshape(gshape)
    )
    flat = lambda g: None if g is None else g.reshape(-1)  # noqa: E731
    dx = dx.reshape(dy.shape) if out is None else out
    return dx, _add_into(dgamma_acc, flat(dgamma)), _add_into(dbeta_acc, flat(dbeta))


# ----------------------------------------------------------------- RMS norm
def rms_norm_forward(
    x: np.ndarray, gamma: np.ndarray | None, *, axes: tuple, epsilon: float
) -> tuple[np.ndarray, NormalizeCache | RowNormCache]:
    """``y = x / sqrt(mean(x^2 over axes) + eps) * gamma`` (``gamma`` broadcast-shaped)."""
    return normalize_forward(x, gamma, None, axes=axes, epsilon=epsilon, centered=False)


def rms_norm_backward(
    dy: np.ndarray, cache: NormalizeCache | RowNormCache, *, need_param_grads: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(dx, dgamma)``."""
    dx, dgamma, _ = normalize_backward(dy, cache, need_param_grads=need_param_grads)
    return dx, dgamma


# ------------------------------------------------ Keras's rms_scaling (variance)
class VarianceScaleCache(NamedTuple):
    """What :func:`variance_scale_backward` needs."""

    z: np.ndarray  # x * inv_std
    xhat: np.ndarray  # (x - mu) * inv_std
    inv_std: np.ndarray
    gamma: np.ndarray | None
    axes: tuple
    count: int
    param_axes: tuple


def variance_scale_forward(
    x: np.ndarray, gamma: np.ndarray | None, *, axes: tuple, epsilon: float, out: np.ndarray | None = None
) -> tuple[np.ndarray, VarianceScaleCache]:
    """``y = gamma * x / sqrt(var + eps)``: ``x`` uncentered, ``var`` the biased variance over ``axes``.

    Keras 3's ``LayerNormalization(rms_scaling=True)`` (module docstring);
    ``gamma`` broadcast-shaped or ``None``. ``out``, if given, receives ``y``.
    """
    _check_out(out, x, "variance_scale_forward")
    _, _, inv_std, xhat = standardize(x, axes=axes, epsilon=epsilon, centered=True)
    z = x * inv_std
    if gamma is not None:
        y = np.multiply(z, gamma, out=out)
    elif out is None:
        y = z.copy()
    else:
        np.copyto(out, z)
        y = out
    cache = VarianceScaleCache(z, xhat, inv_std, gamma, tuple(axes), reduced_count(x.shape, axes),
                               _param_axes(x.ndim, gamma))
    return y, cache


def variance_scale_backward(
    dy: np.ndarray,
    cache: VarianceScaleCache,
    *,
    need_param_grads: bool = True,
    out: np.ndarray | None = None,
    dgamma_acc: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(dx, dgamma)`` of :func:`variance_scale_forward` (``dgamma_acc`` as in :func:`normalize_backward`)."""
    _check_out(out, dy, "variance_scale_backward")
    z, xhat, inv_std, gamma, axes, m, paxes = cache
    dgamma = None
    if need_param_grads and gamma is not None:
        dgamma = np.sum(dy * z, axis=paxes, keepdims=True)
    dz = dy if gamma is None else dy * gamma
    dx = np.multiply(dz, m, out=out)
    dx -= xhat * np.sum(dz * z, axis=axes, keepdims=True)
    dx *= inv_std / m
    return dx, _add_into(dgamma_acc, dgamma)
