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

import numpy as np
from numba import njit


# fastmath "reassoc" lets LLVM split a row's sum into vector partial sums
# (without it a floating-point reduction runs one element at a time); only
# these helpers carry the flag, so the elementwise formulas keep their order
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_sum(x, r):
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
def _row_grad_sums(dy, x, r, gamma, mu, inv, centered):
    """``(sum g, sum g xhat)`` of row ``r`` with ``g = dy gamma``."""
    s1 = x.dtype.type(0)
    s2 = x.dtype.type(0)
    for j in range(x.shape[1]):
        g = dy[r, j] * gamma[j]
        s1 += g
        s2 += g * ((x[r, j] - mu) * inv)
    return (np.float64(s1) if centered else 0.0), np.float64(s2)


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
def forward(x, gamma, beta, epsilon, centered, out, mean_out, inv_out):
    """Write ``y`` into ``out`` and each row's ``mu``/``inv`` (float64) into ``mean_out``/``inv_out``.

    ``gamma``/``beta`` of size 0 mean 1 and 0; ``centered=False`` is RMS
    normalization (``mu = 0``).
    """
    rows, m = x.shape
    dt = x.dtype.type
    g = _param_or(gamma, m, x.dtype, 1)
    b = _param_or(beta, m, x.dtype, 0)
    for r in range(rows):
        mu = dt(_row_sum(x, r) / m) if centered else dt(0)
        var = _row_sq_dev(x, r, mu) / m
        inv64 = 1.0 / np.sqrt(var + epsilon)
        inv = dt(inv64)
        mean_out[r] = mu
        inv_out[r] = inv64
        for j in range(m):
            out[r, j] = ((x[r, j] - mu) * inv) * g[j] + b[j]


@njit(cache=True, nogil=True)
def backward(dy, x, gamma, mean, inv_std, centered, out, dgamma, dbeta):
    """Write ``dx`` into ``out``; add the parameter gradients into ``dgamma``/``dbeta``.

    ``dgamma``/``dbeta`` (length ``M``, the parameters' dtype) of size 0 are
    skipped; ``gamma`` of size 0 means 1. The per-column sums over the rows
    are taken in float64 and added once at the end.
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
        s1, s2 = _row_grad_sums(dy, x, r, one, mu, inv, centered)
        a = dt(inv_std[r] / m)
        b = dt(s1)
        c = dt(s2)
        # one loop per row for dx and the column sums: the row is read from
        # cache once more instead of three times
        for j in range(m):
            d = dy[r, j]
            xh = (x[r, j] - mu) * inv
            out[r, j] = a * (mf * (d * one[j]) - b - xh * c)
            dgb[j] += d * xh
            dbb[j] += d
        if (r + 1) % _BLOCK == 0 or r == rows - 1:
            for j in range(m):
                dg[j] += dgb[j]
                db[j] += dbb[j]
                dgb[j] = 0
                dbb[j] = 0
    add_param_grads(dg, db, dgamma, dbeta)
