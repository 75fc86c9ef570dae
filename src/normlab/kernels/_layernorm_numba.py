"""Fused layer-norm and RMS-norm kernels (numba) for ``x`` viewed as ``(R, M)``: one row per statistic.

The equations are those of :mod:`normlab.kernels.layernorm` for statistics
over the trailing axes of each sample (flattened to ``M`` values per row),
with ``gamma``/``beta`` of those axes' shape flattened to ``M``:

* forward, per row: ``mu`` (0 when not centered; summed in float64) and
  ``inv = 1 / sqrt(mean((x - mu)^2) + eps)`` from two passes over the row
  while it is in cache, then
  ``y = (x - mu) inv gamma + beta``; ``xhat`` is not stored, only ``mu`` and
  ``inv`` per row;
* backward, per row, with ``g = dy gamma`` and ``xhat = (x - mu) inv``:
  ``S1 = sum g`` (centered only), ``S2 = sum g xhat``, then
  ``dx = inv / M (M g - S1 - xhat S2)``; ``dgamma += dy xhat`` and
  ``dbeta += dy`` per column, summed over blocks of 16 rows in ``x``'s dtype
  and over the blocks in float64.

The NumPy path makes 8 to 12 passes over ``x``-sized arrays per direction
and allocates as many temporaries; these read ``x`` (and ``dy``) once from
memory and write ``y`` (``dx``) once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


# fastmath "reassoc" lets LLVM split a row's sum into vector partial sums
# (without it a floating-point reduction runs one element at a time); only
# these helpers carry the flag, so the elementwise formulas keep their order
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_sum(x, r, x0):
    """``sum(x[r] - x0)`` in float64: zero for a constant row, so its mean is ``x0`` exactly."""
    s = 0.0
    for j in range(x.shape[1]):
        s += np.float64(x[r, j]) - x0
    return s


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_sum_plain(x, r):
    """``sum(x[r])`` in float64: for float32 rows, exact for a constant row (fewer than 2^29 values)."""
    s = 0.0
    for j in range(x.shape[1]):
        s += np.float64(x[r, j])
    return s


# The sums of squared deviations and the backward's row sums run in x's dtype
# (vector partial sums at the full width; 15-35 % faster than converting every
# term to float64): they have no large offset to cancel, unlike the mean,
# which is summed in float64. The NumPy path sums these in x's dtype too.
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_sq_dev(x, r, mu):
    s = x.dtype.type(0)
    for j in range(x.shape[1]):
        d = x[r, j] - mu
        s += d * d
    return np.float64(s)


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_grad_sums(dy, x, r, gamma, mu, inv):
    """``(sum g, sum g (x - mu) inv)`` of row ``r`` with ``g = dy gamma``."""
    s1 = x.dtype.type(0)
    s2 = x.dtype.type(0)
    for j in range(x.shape[1]):
        g = dy[r, j] * gamma[j]
        s1 += g
        s2 += g * ((x[r, j] - mu) * inv)
    return np.float64(s1), np.float64(s2)


@njit(cache=True, nogil=True)
def _row_stats_wide(x, r, centered, epsilon):
    """``(mean, inv)`` of row ``r`` in float64, the values scaled by ``2^-e`` (exact) where ``2^e > max |x| > 2^500``.

    The rare path of :func:`forward`: float32 squares overflow beyond
    deviations of about 1.8e19 (float64 ones do not), float64 squares and
    sums beyond about 1e154 (scaled, they do not); tiny float32 squares
    underflow. ``inv`` is finite and exact to rounding for every finite row.
    """
    m = x.shape[1]
    amax = 0.0
    for j in range(m):
        amax = max(amax, abs(np.float64(x[r, j])))
    e = math.frexp(amax)[1] if amax > 2.0**500 else 0
    k = math.ldexp(1.0, -e)
    mean_s = 0.0
    if centered:
        x0 = x[r, 0] * k
        s1 = 0.0
        for j in range(m):
            s1 += x[r, j] * k - x0
        mean_s = x0 + s1 / m
    s2 = 0.0
    for j in range(m):
        d = x[r, j] * k - mean_s
        s2 += d * d
    den = np.sqrt(s2 / m + epsilon * k * k)
    inv = k / den if den > 0.0 else 1.0 / np.sqrt(epsilon)
    return math.ldexp(mean_s, e), inv


@njit(cache=True, nogil=True)
def _param_or(v, m, dtype, fill):
    """``v`` in ``dtype``, or ``m`` copies of ``fill`` when ``v`` has size 0 (no such parameter).

    Multiplying by 1 and adding 0 are exact, so one loop serves every
    combination of ``gamma`` and ``beta``.
    """
    out = np.full(m, fill, dtype)
    if v.size:
        out[:] = v
    return out


@njit(cache=True, nogil=True)
def add_param_grads(dg, db, dgamma, dbeta):
    """``dgamma += dg`` and ``dbeta += db``; arrays of size 0 are skipped.

    Each float64 sum is rounded to the accumulator's dtype before the
    addition, so that adding into a layer's float32 gradient gives the bits
    that adding a float32 gradient array to it gives.
    """
    if dgamma.size:
        t = dgamma.dtype.type
        for j in range(dg.size):
            dgamma[j] += t(dg[j])
    if dbeta.size:
        t = dbeta.dtype.type
        for j in range(db.size):
            dbeta[j] += t(db[j])


#: rows whose column sums (dgamma, dbeta) are added in x's dtype before joining the float64 sums
_BLOCK = 16


@njit(cache=True, nogil=True)
def forward(x, gamma, beta, epsilon, centered, out, mean_out, inv_out, floor=0.0):
    """Write ``y`` into ``out`` and each row's ``mu``/``inv`` (float64) into ``mean_out``/``inv_out``.

    ``gamma``/``beta`` of size 0 mean 1 and 0; ``centered=False`` is RMS
    normalization (``mu = 0``). The mean is summed in float64 (exact for a
    constant row: float64 rows are summed from their first value, as a
    float64 sum of copies of one value can round) and rounded to ``x``'s
    dtype as ``mu_hi``; the deviations ``x - mu_hi`` are squared in that
    dtype, with ``lo = mu - mu_hi`` taken off the mean square and off
    ``xhat``. A row whose variance comes out non-finite, or below ``floor``
    (where float32 squares may have underflowed and epsilon does not swamp
    them; 0 turns this off), is redone by :func:`_row_stats_wide`.
    """
    rows, m = x.shape
    dt = x.dtype.type
    g = _param_or(gamma, m, x.dtype, 1)
    b = _param_or(beta, m, x.dtype, 0)
    for r in range(rows):
        mean = 0.0
        if centered:
            if x.itemsize == 8:  # a float64 sum of m copies of a value can round: sum from the first
                x0 = np.float64(x[r, 0])
                mean = x0 + _row_sum(x, r, x0) / m
            else:
                mean = _row_sum_plain(x, r) / m
        mu = dt(mean)
        lo = mean - np.float64(mu)
        var = _row_sq_dev(x, r, mu) / m - lo * lo
        if np.isfinite(var) and np.isfinite(mean) and var >= floor:
            inv64 = 1.0 / np.sqrt(max(var, 0.0) + epsilon)
        else:
            mean, inv64 = _row_stats_wide(x, r, centered, epsilon)
            mu = dt(mean)
            lo = mean - np.float64(mu)
        inv = dt(inv64)
        c = dt(lo * inv64)
        mean_out[r] = mean
        inv_out[r] = inv64
        if c == 0:
            for j in range(m):
                out[r, j] = ((x[r, j] - mu) * inv) * g[j] + b[j]
        else:  # a mean that x's dtype rounds: xhat = (x - mu_hi) inv - lo inv
            for j in range(m):
                out[r, j] = ((x[r, j] - mu) * inv - c) * g[j] + b[j]


@njit(cache=True, nogil=True)
def backward(dy, x, gamma, mean, inv_std, centered, out, dgamma, dbeta):
    """Write ``dx`` into ``out``; add the parameter gradients into ``dgamma``/``dbeta``.

    ``dgamma``/``dbeta`` (length ``M``, the parameters' dtype) of size 0 are
    skipped; ``gamma`` of size 0 means 1. The per-column sums over the rows
    are taken in float64 and added once at the end. ``xhat`` is recomputed
    as in :func:`forward` (``(x - mu_hi) inv - lo inv``).
    """
    rows, m = x.shape
    dt = x.dtype.type
    dg = np.zeros(m, np.float64)
    db = np.zeros(m, np.float64)
    # the column sums of a block of rows in x's dtype (the loop then runs at
    # its full vector width), added to the float64 sums after each block
    dgb = np.zeros(m, x.dtype)
    dbb = np.zeros(m, x.dtype)
    one = _param_or(gamma, m, x.dtype, 1)
    mf = dt(m)
    for r in range(rows):
        mu = dt(mean[r])
        inv = dt(inv_std[r])
        c = dt((mean[r] - np.float64(mu)) * inv_std[r])
        s1, s2 = _row_grad_sums(dy, x, r, one, mu, inv)
        s2 -= np.float64(c) * s1  # sum g xhat, xhat = (x - mu) inv - c
        a = dt(inv_std[r] / m)
        b = dt(s1) if centered else dt(0)
        cs = dt(s2)
        # one loop per row for dx and the column sums: the row is read from
        # cache once more instead of three times
        if c == 0:
            for j in range(m):
                d = dy[r, j]
                xh = (x[r, j] - mu) * inv
                out[r, j] = a * (mf * (d * one[j]) - b - xh * cs)
                dgb[j] += d * xh
                dbb[j] += d
        else:
            for j in range(m):
                d = dy[r, j]
                xh = (x[r, j] - mu) * inv - c
                out[r, j] = a * (mf * (d * one[j]) - b - xh * cs)
                dgb[j] += d * xh
                dbb[j] += d
        if (r + 1) % _BLOCK == 0 or r == rows - 1:
            for j in range(m):
                dg[j] += dgb[j]
                db[j] += dbb[j]
                dgb[j] = 0
                dbb[j] = 0
    add_param_grads(dg, db, dgamma, dbeta)
