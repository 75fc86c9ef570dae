"""Fused unit-normalization kernels (numba) for ``x`` viewed as ``(R, M)``: one row per sample's norm.

The equations are those of :mod:`normlab.kernels.unitnorm`, per row:

* forward: ``s = sum x^2`` (in ``x``'s dtype, vector partial sums), then
  ``r = 1 / sqrt(max(s, eps))`` and ``c = r^3`` (0 where the floor holds)
  in float64, and ``y = x r``;
* backward: ``d = sum dy x``, then ``dx = r dy - (c d) x``.

Each row is read twice while it is in cache (sum, then scale) and written
once; the NumPy path makes about four passes over ``x``-sized arrays each
way and allocates as many temporaries.
"""

from __future__ import annotations

import numpy as np
from numba import njit


# fastmath "reassoc" lets LLVM split the row's sum into vector partial sums;
# only this helper carries the flag, so the elementwise formulas keep their order
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_dot(a, b, r):
    s = a.dtype.type(0)
    for j in range(a.shape[1]):
        s += a[r, j] * b[r, j]
    return np.float64(s)


@njit(cache=True, nogil=True)
def forward(x, eps, out, inv_out, coef_out):
    """Write ``y`` into ``out`` and each row's ``r`` and ``c`` (float64) into ``inv_out``/``coef_out``."""
    rows, m = x.shape
    dt = x.dtype.type
    for r in range(rows):
        s = _row_dot(x, x, r)
        if s < eps:  # a NaN sum compares False and stays NaN, as numpy.maximum keeps it
            inv = 1.0 / np.sqrt(eps)
            c = 0.0
        else:
            inv = 1.0 / np.sqrt(s)
            c = inv * inv * inv
        inv_out[r] = inv
        coef_out[r] = c
        iv = dt(inv)
        for j in range(m):
            out[r, j] = x[r, j] * iv


@njit(cache=True, nogil=True)
def backward(dy, x, inv, coef, out):
    """Write ``dx = r dy - (c sum(dy x)) x`` into ``out``, row by row."""
    rows, m = x.shape
    dt = x.dtype.type
    for r in range(rows):
        a = dt(inv[r])
        b = dt(coef[r] * _row_dot(dy, x, r))
        for j in range(m):
            out[r, j] = a * dy[r, j] - b * x[r, j]
