"""Batch-norm training kernels on row chunks, for large inputs on several threads.

The same equations and the same loops as :mod:`normlab.kernels._batchnorm_numba`,
cut so that :mod:`normlab.kernels._threads` can run them on parts of the
rows at once (each kernel releases the GIL):

* the two reductions (``sum(x - s)``, ``sum((x - s)^2)`` forward;
  ``sum(dy)``, ``sum(dy xhat)`` backward) are taken over **chunks** of
  :func:`chunk_rows` rows, each chunk's partial sums written to a row of its
  own; the chunks' sums are then added in chunk order. The chunks depend on
  the shape alone, and a thread takes whole chunks, so the result is the same
  bit for bit whatever the number of threads;
* the elementwise passes (``y``, ``f(y)``, ``dx``) are split at multiples of
  the chunk size; each element is computed by the same expression as in the
  one-call kernels.

The one-call kernels of :mod:`normlab.kernels._batchnorm_numba` sum over the
same chunks in the same order, so the two give the same bits: the one-call
kernels run at one thread (they read the data fewer times and pay no
hand-offs), these where more threads may be used
(:mod:`normlab.kernels.batchnorm_rows`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._batchnorm_numba import _add1, _add4, _column_moments_scaled, chunk_rows
from ._fused_numba import act_grad

__all__ = ["chunk_rows", "moment_partials", "moments_from_partials", "sum_partials", "GRAD_PARTIALS", "DX"]


@njit(cache=True, nogil=True)
def moment_partials(x, shift, rows, k0, k1, p1, p2):
    """``p1[k] = sum(x - shift)``, ``p2[k] = sum((x - shift)^2)`` over chunk ``k`` of ``rows`` rows, ``k0 <= k < k1``.

    float64, four rows per sweep as :func:`normlab.kernels._batchnorm_numba._moments_sums`.
    """
    m, c = x.shape
    # sums in arrays of the kernel's own, copied out per chunk: accumulating into
    # rows of p1/p2 directly ran 10 % slower (8192 x 512)
    s1 = np.empty(c, np.float64)
    s2 = np.empty(c, np.float64)
    for k in range(k0, k1):
        s1[:] = 0.0
        s2[:] = 0.0
        i = k * rows
        end = min(m, i + rows)
        while i + 4 <= end:
            for j in range(c):
                s = shift[j]
                d0 = x[i, j] - s
                d1 = x[i + 1, j] - s
                d2 = x[i + 2, j] - s
                d3 = x[i + 3, j] - s
                s1[j] += (d0 + d1) + (d2 + d3)
                s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            i += 4
        while i < end:
            for j in range(c):
                d = x[i, j] - shift[j]
                s1[j] += d
                s2[j] += d * d
            i += 1
        p1[k, :] = s1
        p2[k, :] = s2


@njit(cache=True, nogil=True)
def sum_partials(p):
    """The rows of ``p`` (chunks by features) added in chunk order, float64 (the first copied, as the one-call kernels do)."""
    k_, c = p.shape
    out = p[0].copy()
    for k in range(1, k_):
        for j in range(c):
            out[j] += p[k, j]
    return out


@njit(cache=True, nogil=True)
def moments_from_partials(x, shift, p1, p2):
    """Per-feature mean and biased variance from the chunks' sums (the overflow fallback as ``moments``)."""
    m, c = x.shape
    s1 = sum_partials(p1)
    s2 = sum_partials(p2)
    mean = np.empty(c, np.float64)
    var = np.empty(c, np.float64)
    for j in range(c):
        mu = s1[j] / m
        mean[j] = shift[j] + mu
        v = s2[j] / m - mu * mu
        var[j] = v if v > 0.0 else 0.0
        if not (np.isfinite(s1[j]) and np.isfinite(s2[j])):
            mean[j], var[j] = _column_moments_scaled(x, j)
    return mean, var


@njit(cache=True, nogil=True, inline="always")
def _grad_partials_body(da, s, kind, x, mean, inv_std, rows, k0, k1, pdb, pdg):
    m, c = x.shape
    one, zero = x.dtype.type(1), x.dtype.type(0)
    for k in range(k0, k1):
        db = pdb[k]
        dg = pdg[k]
        i = k * rows
        end = min(m, i + rows)
        while i + 4 <= end:
            for j in range(c):
                _add4(db, dg, j,
                      act_grad(kind, da[i, j], s[i, j], one, zero),
                      act_grad(kind, da[i + 1, j], s[i + 1, j], one, zero),
                      act_grad(kind, da[i + 2, j], s[i + 2, j], one, zero),
                      act_grad(kind, da[i + 3, j], s[i + 3, j], one, zero),
                      x[i, j], x[i + 1, j], x[i + 2, j], x[i + 3, j], mean[j], inv_std[j])
            i += 4
        while i < end:
            for j in range(c):
                _add1(db, dg, j, act_grad(kind, da[i, j], s[i, j], one, zero), x[i, j], mean[j], inv_std[j])
            i += 1


@njit(cache=True, nogil=True, inline="always")
def _dx_body(da, s, kind, x, a, b, cc, mu, out):
    """``out = a f'(s) da - b - cc (x - mu)``, coefficients tiled over ``a.size / c`` rows (1: per feature)."""
    m, c = x.shape
    one, zero = x.dtype.type(1), x.dtype.type(0)
    if a.size == c:
        for i in range(m):
            for j in range(c):
                g = act_grad(kind, da[i, j], s[i, j], one, zero)
                out[i, j] = a[j] * g - b[j] - cc[j] * (x[i, j] - mu[j])
        return
    w = a.size
    xf, daf, sf, of = x.reshape(x.size), da.reshape(da.size), s.reshape(s.size), out.reshape(out.size)
    for b0 in range(0, m * c, w):
        xb, dab, sb, ob = xf[b0 : b0 + w], daf[b0 : b0 + w], sf[b0 : b0 + w], of[b0 : b0 + w]
        for q in range(xb.size):
            g = act_grad(kind, dab[q], sb[q], one, zero)
            ob[q] = a[q] * g - b[q] - cc[q] * (xb[q] - mu[q])


# one compiled copy per activation, each with its kind a constant (see
# _batchnorm_numba.train_backward_act_step: the loops vectorize only then);
# 3 is IDENTITY (dz = da)
@njit(cache=True, nogil=True)
def grad_partials_relu(da, s, x, mean, inv_std, rows, k0, k1, pdb, pdg):
    _grad_partials_body(da, s, 0, x, mean, inv_std, rows, k0, k1, pdb, pdg)


@njit(cache=True, nogil=True)
def grad_partials_sigmoid(da, s, x, mean, inv_std, rows, k0, k1, pdb, pdg):
    _grad_partials_body(da, s, 1, x, mean, inv_std, rows, k0, k1, pdb, pdg)


@njit(cache=True, nogil=True)
def grad_partials_tanh(da, s, x, mean, inv_std, rows, k0, k1, pdb, pdg):
    _grad_partials_body(da, s, 2, x, mean, inv_std, rows, k0, k1, pdb, pdg)


@njit(cache=True, nogil=True)
def grad_partials_identity(da, s, x, mean, inv_std, rows, k0, k1, pdb, pdg):
    _grad_partials_body(da, s, 3, x, mean, inv_std, rows, k0, k1, pdb, pdg)


@njit(cache=True, nogil=True)
def dx_relu(da, s, x, a, b, cc, mu, out):
    _dx_body(da, s, 0, x, a, b, cc, mu, out)


@njit(cache=True, nogil=True)
def dx_sigmoid(da, s, x, a, b, cc, mu, out):
    _dx_body(da, s, 1, x, a, b, cc, mu, out)


@njit(cache=True, nogil=True)
def dx_tanh(da, s, x, a, b, cc, mu, out):
    _dx_body(da, s, 2, x, a, b, cc, mu, out)


@njit(cache=True, nogil=True)
def dx_identity(da, s, x, a, b, cc, mu, out):
    _dx_body(da, s, 3, x, a, b, cc, mu, out)


#: indexed by the kinds of :data:`normlab.kernels._fused_numba.ACT_KINDS`, then IDENTITY
GRAD_PARTIALS = (grad_partials_relu, grad_partials_sigmoid, grad_partials_tanh, grad_partials_identity)
DX = (dx_relu, dx_sigmoid, dx_tanh, dx_identity)
