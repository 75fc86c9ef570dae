"""Fused kernels (numba) of a dense layer's bias and ReLU, on 2-D C-contiguous arrays.

NumPy spends a call, and a pass over ``z``, on each of ``z += b``,
``a = maximum(z, 0)`` (a new array every step), ``dz = da * (z > 0)`` and
``db = dz.sum(axis=0)``; at a batch of 200 rows and 100 units each is
5-10 us, mostly fixed cost. Here the forward is one pass and the backward
another:

=====================  ================================================
``bias_relu``          ``z[i, j] += b[j]``; ``a[i, j] = max(z[i, j], 0)``
``relu_grad_colsum``   ``dz[i, j] = da if z > 0 else 0``; ``db = sum_i dz[i, :]``
``colsum``             ``db = sum_i dz[i, :]``
=====================  ================================================

The same operations in the same order as NumPy's, so the same bits:
``max`` keeps ``z`` when ``z > 0`` or ``z`` is NaN, else gives +0
(``np.maximum(z, 0)`` propagates NaN and turns -0.0 into +0.0); the column
sums start from +0 and add rows 0, 1, 2, ... in order, which is what
``np.add.reduce(dz, axis=0)`` does over a C-contiguous array (its inner
loop runs along a row; no pairwise summation across rows; a column of -0.0
sums to +0.0). Checked bit for bit, signed zeros and inf included, in
tests/kernels/test_dense_fused.py; NaN comes out where NumPy's does, but its
sign may differ (``inf + -inf`` gives x86's default -NaN here and with NumPy
2.4, +NaN in NumPy 2.2's reduction).
The derivative is :func:`normlab.kernels._fused_numba.act_grad`'s.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def bias_relu(z, b, a, has_bias, zero):
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = z[i, j]
            if has_bias:
                v = v + b[j]
                z[i, j] = v
            a[i, j] = v if (v > zero or v != v) else zero


@njit(cache=True, nogil=True)
def relu_grad_colsum(da, z, dz, db, zero):
    n, m = da.shape
    for j in range(m):
        db[j] = zero
    for i in range(n):
        for j in range(m):
            g = da[i, j] if z[i, j] > zero else zero
            dz[i, j] = g
            db[j] += g


@njit(cache=True, nogil=True)
def colsum(dz, db, zero):
    n, m = dz.shape
    for j in range(m):
        db[j] = zero
    for i in range(n):
        for j in range(m):
            db[j] += dz[i, j]
