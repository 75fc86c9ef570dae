"""Cheap whole-array reductions: the input checks of every public call, and the squared norm.

:func:`all_finite` answers "does this float array hold NaN or inf?" with one
streaming reduction instead of ``np.isfinite(a).all()``, which writes a
boolean array as large as ``a`` and then reads it back: ``train_on_batch``
on a ``(1024, 784)`` float32 batch spent about 220 us in that check alone.
"""

from __future__ import annotations

import math

import numpy as np

from . import _backend

__all__ = ["all_finite", "sum_squares"]

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def sum_squares(a: np.ndarray) -> float:
    """``sum(a * a)`` over every entry of a float array, as a Python float.

    Summed in ``a``'s dtype, and again in float64 when that overflows (float32
    squares beyond 3.4e38), so the result is ``inf`` or ``nan`` only when an
    entry is (or when float64 itself overflows). numba's
    :func:`~normlab.kernels._optim_numba.sum_squares` where enabled and ``a``
    is contiguous float32/float64, else a BLAS dot product.
    """
    flat = a.reshape(-1)
    if _backend.numba_enabled() and a.dtype in _FAST_DTYPES and a.flags.c_contiguous:
        from . import _optim_numba

        return float(_optim_numba.sum_squares(flat))
    with np.errstate(over="ignore", invalid="ignore"):
        s = float(np.dot(flat, flat))
    if not math.isfinite(s) and a.dtype.itemsize < 8:
        f64 = flat.astype(np.float64)
        s = float(np.dot(f64, f64))
    return s


def all_finite(a: np.ndarray) -> bool:
    """True when no entry of ``a`` is NaN, ``inf`` or ``-inf`` (always True for non-float dtypes).

    The fast path computes ``s = sum(a * a)``: a NaN entry makes ``s`` NaN
    and an infinite one makes it ``inf`` (squares are never negative, so no
    ``inf - inf`` can hide it), hence a finite ``s`` proves every entry
    finite. Only when ``s`` is not finite, which finite entries can also
    cause by overflowing the sum (float64 values beyond about ``1e154``),
    does the exact elementwise test decide. ``s`` is :func:`sum_squares`
    (numba's about 4x faster than ``np.isfinite(a).all()`` on float32).
    """
    if a.dtype.kind != "f":
        return True
    # strided arrays: the elementwise test, rather than a contiguous copy first
    if a.size and a.dtype in _FAST_DTYPES and a.flags.c_contiguous and math.isfinite(sum_squares(a)):
        return True
    return bool(np.isfinite(a).all())
