"""The training backward of the fused batch-norm kernels, plain and through an activation.

For ``x`` viewed as ``(m, C)``, features last, and the batch mean and
``inv_std`` the forward pass kept: one pass for ``dbeta = sum(dy)`` and
``dgamma = sum(dy * xhat)`` (``xhat`` recomputed from ``x``; float64 sums,
four rows per sweep, over the chunks of the forward's statistics), one pass
writing ``dx = g * inv_std / m * (m dy - dbeta - xhat dgamma)`` in the blocks
of :mod:`normlab.kernels._bn_affine_numba`. Through an activation
(:func:`train_backward_act_step`), ``dy = f'(z) da`` is recomputed in both
passes instead of being written out and read back.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._bn_affine_numba import _tile_rows, _tiled
from ._bn_moments_numba import CHUNK_ELEMENTS
from ._fused_numba import IDENTITY, act_grad


# The backward reductions, four rows or one row at a time: db += sum g,
# dg += sum g * xhat.
@njit(cache=True, nogil=True, inline="always")
def _add4(db, dg, j, g0, g1, g2, g3, x0, x1, x2, x3, mu, iv):
    db[j] += (np.float64(g0) + g1) + (np.float64(g2) + g3)
    dg[j] += (g0 * ((x0 - mu) * iv) + g1 * ((x1 - mu) * iv)) + (g2 * ((x2 - mu) * iv) + g3 * ((x3 - mu) * iv))


@njit(cache=True, nogil=True, inline="always")
def _add1(db, dg, j, g, x0, mu, iv):
    db[j] += g
    dg[j] += g * ((x0 - mu) * iv)


@njit(cache=True, nogil=True)
def train_backward_step(dy, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate):
    """Write ``dx`` into ``out`` and add (or, if not ``accumulate``, write) dgamma/dbeta.

    ``dgamma``/``dbeta`` of size 0 are skipped; ``gamma`` of size 0 means 1.
    The activation-fused kernel with no activation (``dz = dy``), so the two
    share every loop and agree bit for bit.
    """
    _backward_act_body(dy, dy, IDENTITY, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _dx_coefficients(db, dg, mean, inv_std, gamma, m, dtype, rows):
    """Per-feature ``a, b, cc, mean`` (in ``dtype``) of ``dx = a dy - b - cc (x - mean)``.

    Each is repeated ``rows`` times, for blocks of ``rows`` rows (see :func:`_tile_rows`).
    """
    c = mean.size
    a = np.empty(c, dtype)
    b = np.empty(c, dtype)
    cc = np.empty(c, dtype)
    mu = np.empty(c, dtype)
    for j in range(c):
        g = gamma[j] * inv_std[j] if gamma.size else inv_std[j]
        c64 = g * dg[j] * inv_std[j] / m
        mu[j] = mean[j]
        a[j] = g
        # cc (x - mean) = cc (x - mu) - cc (mean - mu): the part of the mean that
        # rounding mu to dtype drops goes into b
        b[j] = g * db[j] / m - c64 * (mean[j] - mu[j])
        cc[j] = c64
    if rows == 1:
        return a, b, cc, mu
    return _tiled(a, rows, dtype), _tiled(b, rows, dtype), _tiled(cc, rows, dtype), _tiled(mu, rows, dtype)


@njit(cache=True, nogil=True)
def _store_param_grads(dg, db, dgamma, dbeta, accumulate):
    """Add (or, if not ``accumulate``, write) dgamma/dbeta; arrays of size 0 are skipped."""
    if dgamma.size:
        for j in range(dg.size):
            dgamma[j] = dgamma[j] + dg[j] if accumulate else dg[j]
    if dbeta.size:
        for j in range(db.size):
            dbeta[j] = dbeta[j] + db[j] if accumulate else db[j]


def train_backward_act_step(da, s, kind, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate):
    """The training backward of batch norm followed by an activation, in one call.

    ``da`` is the gradient with respect to the activation's output; its
    gradient with respect to the batch-norm output, ``dy = f'(z) da``, is
    recomputed where it is needed (both passes) instead of being written out
    and read back twice. ``s`` is what the activation's derivative is taken
    from: ``z`` for relu, ``a`` for sigmoid and tanh (``kind``, see
    :data:`normlab.kernels._fused_numba.ACT_KINDS`; ``IDENTITY`` for none).
    Same results as the activation's backward followed by
    :func:`train_backward_step`, bit for bit. ``dgamma``/``dbeta`` of size 0
    are skipped; ``gamma`` of size 0 means 1.
    """
    # one compiled kernel per activation, each with its kind a constant: with
    # ``kind`` a run-time value the derivative's branches stay inside the
    # loops, which then vectorize poorly (the reduction pass of a 60 x 100
    # sigmoid layer took 4.2 us instead of 2.6). Separate functions rather
    # than one with a branch per kind: each compiles on first use only, so a
    # network of one activation pays one compilation (about 2 s) instead of
    # four (8.7 s on the first run after installing)
    if 0 <= kind < len(_BACKWARD_BY_KIND):
        _BACKWARD_BY_KIND[kind](da, s, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate)
    else:  # IDENTITY: the derivative is da itself
        train_backward_step(da, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _backward_relu(da, s, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate):
    _backward_act_body(da, s, 0, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _backward_sigmoid(da, s, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate):
    _backward_act_body(da, s, 1, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _backward_tanh(da, s, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate):
    _backward_act_body(da, s, 2, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate)


#: indexed by the kinds of :data:`normlab.kernels._fused_numba.ACT_KINDS`
_BACKWARD_BY_KIND = (_backward_relu, _backward_sigmoid, _backward_tanh)


@njit(cache=True, nogil=True, inline="always")
def _backward_act_body(da, s, kind, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate):
    m, c = x.shape
    one, zero = x.dtype.type(1), x.dtype.type(0)
    db = np.zeros(c, np.float64)
    dg = np.zeros(c, np.float64)
    chunk = max(4, (CHUNK_ELEMENTS // max(c, 1)) // 4 * 4)  # the sums chunk by chunk, as _moments_sums
    pb = np.zeros(c if m > chunk else 0, np.float64)
    pg = np.zeros(c if m > chunk else 0, np.float64)
    for r0 in range(0, m, chunk):
        tb = db if r0 == 0 else pb
        tg = dg if r0 == 0 else pg
        if r0 > 0:
            for j in range(c):
                pb[j] = 0.0
                pg[j] = 0.0
        i = r0
        end = min(m, r0 + chunk)
        while i + 4 <= end:
            for j in range(c):
                _add4(tb, tg, j,
                      act_grad(kind, da[i, j], s[i, j], one, zero),
                      act_grad(kind, da[i + 1, j], s[i + 1, j], one, zero),
                      act_grad(kind, da[i + 2, j], s[i + 2, j], one, zero),
                      act_grad(kind, da[i + 3, j], s[i + 3, j], one, zero),
                      x[i, j], x[i + 1, j], x[i + 2, j], x[i + 3, j], mean[j], inv_std[j])
            i += 4
        while i < end:
            for j in range(c):
                _add1(tb, tg, j, act_grad(kind, da[i, j], s[i, j], one, zero), x[i, j], mean[j], inv_std[j])
            i += 1
        if r0 > 0:
            for j in range(c):
                db[j] += pb[j]
                dg[j] += pg[j]
    rows = _tile_rows(m, c)
    a, b, cc, mu = _dx_coefficients(db, dg, mean, inv_std, gamma, m, x.dtype, rows)
    if rows == 1:
        for i in range(m):
            for j in range(c):
                g = act_grad(kind, da[i, j], s[i, j], one, zero)
                out[i, j] = a[j] * g - b[j] - cc[j] * (x[i, j] - mu[j])
        _store_param_grads(dg, db, dgamma, dbeta, accumulate)
        return
    w = a.size
    xf, daf, sf, of = x.reshape(x.size), da.reshape(da.size), s.reshape(s.size), out.reshape(out.size)
    for b0 in range(0, m * c, w):
        xb, dab, sb, ob = xf[b0 : b0 + w], daf[b0 : b0 + w], sf[b0 : b0 + w], of[b0 : b0 + w]
        for k in range(xb.size):
            g = act_grad(kind, dab[k], sb[k], one, zero)
            ob[k] = a[k] * g - b[k] - cc[k] * (xb[k] - mu[k])
    _store_param_grads(dg, db, dgamma, dbeta, accumulate)
