"""Unit normalization: each sample scaled to unit L2 norm over some of its axes (Keras 3 numerics).

For one sample and the ``m`` values ``x_1 .. x_m`` of the axes ``A``::

    s   = sum_j x_j^2                          (1) squared norm, in x's dtype
    r   = 1 / sqrt(max(s, eps))                (2) eps = 1e-12, on the *squared* norm
    y_i = x_i r                                (3)

Backward. Where ``s >= eps``, ``dr/dx_j = -1/2 s^(-3/2) 2 x_j = -r^3 x_j``, so::

    dx_j = sum_i dy_i dy_i/dx_j = r dy_j - r^3 x_j sum_i dy_i x_i
         = r (dy_j - y_j sum_i dy_i y_i)

the component of ``dy`` along ``y`` removed (a vector on the unit sphere
moves only tangentially), scaled by ``1 / ||x||``. Where ``s < eps`` the
clamp holds ``r`` at ``eps^(-1/2) = 1e6`` whatever ``x`` is, so
``dx = r dy``. Both are ``dx = r dy - c x (dy . x)`` with ``c = r^3`` or 0,
which is what the cache keeps (with ``r``). At ``s == eps`` exactly the
gradient goes through ``s``, as TensorFlow's ``maximum`` and PyTorch's
``clamp_min`` send it.

Conventions. Keras 3 (``keras.layers.UnitNormalization``) computes
``x * rsqrt(maximum(sum(square(x)), 1e-12))`` in the layer's dtype; so does
this module (the sums of float32 input are float32 sums). PyTorch:
``torch.nn.functional.normalize(x, p=2, dim=axes, eps=1e-6)`` clamps the
norm itself, ``x / max(||x||, 1e-6)``, which is the same function
(``max(sqrt(s), 1e-6) = sqrt(max(s, 1e-12))``): convert Keras's epsilon
to PyTorch's by a square root. A NaN anywhere in a sample makes that
sample's output NaN (``maximum`` propagates it); an infinite entry makes
``s = inf`` and ``r = 0``.

Backends. :func:`unit_norm_forward` picks the numba kernels of
:mod:`normlab.kernels._unitnorm_numba` for non-empty float32/float64 input
normalized over its trailing axes when numba is enabled (one pass to sum and
one to scale each row while it is in cache, each way); NumPy otherwise. The
cache records which ran and :func:`unit_norm_backward` follows it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _backend
from .batchnorm import reduced_count

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _unitnorm_numba as _nb
else:  # pragma: no cover
    _nb = None

__all__ = ["EPSILON", "UnitNormCache", "unit_norm_forward", "unit_norm_backward"]

#: Keras's fixed floor on the squared norm
EPSILON = 1e-12

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class UnitNormCache(NamedTuple):
    """What :func:`unit_norm_backward` needs."""

    x: np.ndarray  # the input; viewed as (R, M) on the numba path
    inv_norm: np.ndarray  # r: keepdims, x's dtype (NumPy); (R,) float64 (numba)
    coef: np.ndarray  # c = r^3, or 0 where the floor holds; shaped as inv_norm
    axes: tuple
    shape: tuple  # the input's shape
    rows: bool  # True: the numba path's (R, M) layout


def _check_out(out, like, who):
    if out is not None and not (out.shape == like.shape and out.dtype == like.dtype and out.flags.c_contiguous):
        raise ValueError(
            f"{who}: 'out' must be a C-contiguous {like.dtype} array of shape {like.shape}, got "
            f"{out.dtype} {out.shape}."
        )


def unit_norm_forward(
    x: np.ndarray, *, axes: tuple, out: np.ndarray | None = None
) -> tuple[np.ndarray, UnitNormCache]:
    """``y = x / sqrt(max(sum(x^2 over axes), 1e-12))`` (module docstring).

    ``axes`` are non-negative and increasing. ``out``, if given, receives
    ``y`` (C order, ``x``'s shape and dtype).
    """
    _check_out(out, x, "unit_norm_forward")
    nd = x.ndim
    if (x.size and x.dtype in _FAST_DTYPES and _backend.numba_enabled()
            and tuple(axes) == tuple(range(nd - len(axes), nd))):
        x2 = np.ascontiguousarray(x).reshape(-1, reduced_count(x.shape, axes))
        y2 = np.empty_like(x2) if out is None else out.reshape(x2.shape)
        inv = np.empty(x2.shape[0], np.float64)
        coef = np.empty(x2.shape[0], np.float64)
        _nb.forward(x2, EPSILON, y2, inv, coef)
        return (y2.reshape(x.shape) if out is None else out), UnitNormCache(x2, inv, coef, tuple(axes), x.shape, True)
    s = np.sum(np.square(x), axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(np.maximum(s, EPSILON))
    coef = np.where(s < EPSILON, 0, inv * inv * inv)  # NaN < eps is False: NaN stays NaN
    y = np.multiply(x, inv, out=out)
    return y, UnitNormCache(x, inv, coef, tuple(axes), x.shape, False)


def unit_norm_backward(dy: np.ndarray, cache: UnitNormCache, *, out: np.ndarray | None = None) -> np.ndarray:
    """``dx = r dy - c x sum(dy x)`` over the normalized axes (module docstring).

    ``out``, if given, receives ``dx`` (C order, ``dy``'s shape and the
    input's dtype).
    """
    x = cache.x
    if cache.rows:
        dy2 = np.ascontiguousarray(dy, dtype=x.dtype).reshape(x.shape)
        _check_out(out, dy2.reshape(cache.shape), "unit_norm_backward")
        dx2 = np.empty_like(x) if out is None else out.reshape(x.shape)
        _nb.backward(dy2, x, cache.inv_norm, cache.coef, dx2)
        return dx2.reshape(cache.shape) if out is None else out
    _check_out(out, dy, "unit_norm_backward")
    dot = np.sum(dy * x, axis=cache.axes, keepdims=True)
    dx = np.multiply(dy, cache.inv_norm, out=out)
    dx -= x * (cache.coef * dot)
    return dx
