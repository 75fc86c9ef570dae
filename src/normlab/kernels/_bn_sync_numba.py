"""Synchronized batch-norm kernels (numba) for a shard ``x`` viewed as ``(m_r, C)``, features last.

The equations are those of :mod:`normlab.distributed.sync_bn`; the passes
over the data are those of the plain row kernels
(:mod:`normlab.kernels._batchnorm_numba`), whose loops are reused, split
where a collective must run between them:

* forward: :func:`shard_moments` (one pass: count, mean and sum of squared
  deviations ``M2`` of the shard, in float64, with the plain kernels'
  shifted sums), then, after the allgather of those triples,
  :func:`sync_forward_step` / :func:`sync_forward_act_step`: Chan's
  combination, the moving-average update and one pass writing
  ``y = (x - mean) * scale + shift`` (and ``f(y)``) with the global
  statistics, as the plain one-call kernels do with their own;
* backward: :func:`grad_sums` (one pass: the shard's ``sum dy`` and
  ``sum dy xhat``, with ``dy = f'(z) da`` recomputed where an activation was
  fused), then, after the allreduce of those sums, :func:`sync_dx` (one pass
  writing ``dx = g inv_std / m (m dy - sum dy - xhat sum(dy xhat))`` with the
  global count and sums).

Convention for ``var + eps == 0`` (``epsilon=0`` and a constant feature):
``1/sqrt(var + eps)`` is taken as 0, so the output is ``beta`` and the input
gradient 0, as in the plain kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _batchnorm_numba as _F
from ._bn_forward_numba import _F32_MAX, _F64_MAX
from ._fused_numba import IDENTITY, act_grad

#: statuses of the forward kernels (those of the plain kernels)
OK, NOT_FINITE, OVERFLOW = _F.OK, _F.NOT_FINITE, _F.OVERFLOW


@njit(cache=True, nogil=True)
def shard_moments(x, out):
    """``out = (m_r, mean_1..C, M2_1..C)`` (float64) of the shard ``x`` (``m_r >= 1`` rows)."""
    m, c = x.shape
    mean, var = _F.moments(x)
    out[0] = m
    for j in range(c):
        out[1 + j] = mean[j]
        out[1 + c + j] = var[j] * m


@njit(cache=True, nogil=True)
def _combine(parts, mean, var):
    """Chan's combination of the rows of ``parts`` into the global ``mean`` and biased ``var``; returns the count.

    The same operations in the same order as
    :func:`normlab.distributed.sync_bn.combine_moments` (sums over ranks
    in rank order), so both give the same bits.
    """
    ranks = parts.shape[0]
    c = mean.size
    n = 0.0
    first = -1  # the first rank with values: its means are the shift
    for r in range(ranks):
        n += parts[r, 0]
        if first < 0 and parts[r, 0] > 0:
            first = r
    for j in range(c):
        mu0 = parts[first, 1 + j] if first >= 0 else 0.0
        t = 0.0
        for r in range(ranks):
            t += (parts[r, 0] / n) * (parts[r, 1 + j] - mu0)
        mu = mu0 + t
        s = 0.0
        d = 0.0
        for r in range(ranks):
            s += parts[r, 1 + c + j]
            e = parts[r, 1 + j] - mu
            d += parts[r, 0] * (e * e)
        mean[j] = mu
        var[j] = (s + d) / n
    return n


@njit(cache=True, nogil=True)
def _sync_statistics(parts, x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out,
                     inv_std_out, saved, stamp):
    """The plain kernels' ``_train_statistics`` on the global statistics combined from ``parts``.

    Returns ``(status, center, scale, shift)`` of ``y = (x - center) scale
    + shift`` (``center`` empty: ``x scale + shift``); nothing is written
    unless the status is :data:`OK`. NaN or inf input on any rank gives a
    non-finite shard mean there, hence :data:`NOT_FINITE` on every rank
    (finite input always has a finite mean); a finite input whose variance
    or moving statistic leaves its dtype's range gives :data:`OVERFLOW`.
    """
    m, c = x.shape
    center = np.empty(c, x.dtype)
    scale = np.empty(c, x.dtype)
    shift = np.empty(c, x.dtype)
    mean = np.empty(c, np.float64)
    var = np.empty(c, np.float64)
    _combine(parts, mean, var)
    for j in range(c):
        if not (np.isfinite(mean[j]) and np.isfinite(var[j])):
            for r in range(parts.shape[0]):
                for k in range(c):
                    if not np.isfinite(parts[r, 1 + k]):
                        return NOT_FINITE, center, scale, shift
            return OVERFLOW, center, scale, shift
    vmax = 0.0
    for j in range(c):
        vmax = max(vmax, var[j])
    if vmax * var_correction > (_F32_MAX if moving_var.itemsize == 4 else _F64_MAX if moving_var.itemsize == 8
                                 else 65504.0):
        tm, tv = moving_mean.dtype.type, moving_var.dtype.type
        for j in range(c):
            if not (np.isfinite(tm(momentum * moving_mean[j] + (1.0 - momentum) * mean[j]))
                    and np.isfinite(tv(momentum * moving_var[j] + (1.0 - momentum) * var[j] * var_correction))):
                return OVERFLOW, center, scale, shift
    if saved is not None:
        for j in range(c):
            saved[j] = moving_mean[j]
            saved[c + j] = moving_var[j]
        saved[2 * c] = stamp
    folded = True
    for j in range(c):
        d = var[j] + epsilon
        inv = 1.0 / np.sqrt(d) if d > 0.0 else 0.0  # the convention for var + eps == 0
        mean_out[j] = mean[j]
        inv_std_out[j] = inv
        g = gamma[j] * inv if gamma.size else inv
        center[j] = mean[j]
        scale[j] = g
        shift[j] = (beta[j] if beta.size else 0.0) - (mean[j] - center[j]) * g
        folded = folded and (var[j] == 0.0 or abs(mean[j] * g) <= _F._FOLD_BOUND)
        moving_mean[j] = momentum * moving_mean[j] + (1.0 - momentum) * mean[j]
        moving_var[j] = momentum * moving_var[j] + (1.0 - momentum) * var[j] * var_correction
    if not folded:
        return OK, center, scale, shift
    for j in range(c):
        if var[j] == 0.0:  # constant: y = beta exactly
            scale[j] = 0.0
            shift[j] = beta[j] if beta.size else 0.0
        else:
            g = np.float64(scale[j])
            shift[j] = (beta[j] if beta.size else 0.0) - mean[j] * g
    return OK, center[:0], scale, shift


@njit(cache=True, nogil=True)
def sync_forward_step(parts, x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out,
                      mean_out, inv_std_out, saved, stamp):
    """``out = BN(x)`` with the global statistics combined from ``parts`` (shape ``(ranks, 1 + 2C)``).

    Arguments and status as the plain ``train_forward_step``; ``var_correction``
    is that of the global count.
    """
    m, c = x.shape
    status, center, scale, shift = _sync_statistics(parts, x, gamma, beta, epsilon, momentum, var_correction,
                                                    moving_mean, moving_var, mean_out, inv_std_out, saved, stamp)
    if status != OK:
        return status
    if center.size:
        _F.centered_affine_blocks(x, center, scale, shift, out, _F._tile_rows(m, c))
    else:
        _F._affine_blocks(x, scale, shift, out, _F._tile_rows(m, c))
    return OK


@njit(cache=True, nogil=True, error_model="numpy")
def sync_forward_act_step(parts, x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out,
                          mean_out, inv_std_out, kind, act_out, saved, stamp):
    """:func:`sync_forward_step` followed by the activation ``kind`` (relu; sigmoid in float32) into ``act_out``."""
    status, center, scale, shift = _sync_statistics(parts, x, gamma, beta, epsilon, momentum, var_correction,
                                                    moving_mean, moving_var, mean_out, inv_std_out, saved, stamp)
    if status != OK:
        return status
    _F.affine_act_blocks(x, center, scale, shift, out, act_out, kind)
    return OK


# ------------------------------------------------------------------ backward
@njit(cache=True, nogil=True, inline="always")
def _sums_body(da, s, kind, x, mean, inv_std, sums, dgamma, dbeta, accumulate):
    m, c = x.shape
    one, zero = x.dtype.type(1), x.dtype.type(0)
    db = np.zeros(c, np.float64)
    dg = np.zeros(c, np.float64)
    i = 0
    while i + 4 <= m:
        for j in range(c):
            _F._add4(db, dg, j,
                     act_grad(kind, da[i, j], s[i, j], one, zero),
                     act_grad(kind, da[i + 1, j], s[i + 1, j], one, zero),
                     act_grad(kind, da[i + 2, j], s[i + 2, j], one, zero),
                     act_grad(kind, da[i + 3, j], s[i + 3, j], one, zero),
                     x[i, j], x[i + 1, j], x[i + 2, j], x[i + 3, j], mean[j], inv_std[j])
        i += 4
    while i < m:
        for j in range(c):
            _F._add1(db, dg, j, act_grad(kind, da[i, j], s[i, j], one, zero), x[i, j], mean[j], inv_std[j])
        i += 1
    for j in range(c):
        sums[j] = db[j]
        sums[c + j] = dg[j]
    _F._store_param_grads(dg, db, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True, inline="always")
def _dx_body(da, s, kind, x, mean, inv_std, gamma, count, sums, out):
    m, c = x.shape
    one, zero = x.dtype.type(1), x.dtype.type(0)
    rows = _F._tile_rows(m, c)
    a, b, cc, mu = _F._dx_coefficients(sums[:c], sums[c:], mean, inv_std, gamma, count, x.dtype, rows)
    if rows == 1:
        for i in range(m):
            for j in range(c):
                g = act_grad(kind, da[i, j], s[i, j], one, zero)
                out[i, j] = a[j] * g - b[j] - cc[j] * (x[i, j] - mu[j])
        return
    w = a.size
    xf, daf, sf, of = x.reshape(x.size), da.reshape(da.size), s.reshape(s.size), out.reshape(out.size)
    for b0 in range(0, m * c, w):
        xb, dab, sb, ob = xf[b0 : b0 + w], daf[b0 : b0 + w], sf[b0 : b0 + w], of[b0 : b0 + w]
        for k in range(xb.size):
            g = act_grad(kind, dab[k], sb[k], one, zero)
            ob[k] = a[k] * g - b[k] - cc[k] * (xb[k] - mu[k])


# one compiled kernel per activation with its kind a constant (see the plain
# kernels' train_backward_act_step: a run-time kind keeps branches in the loops)
@njit(cache=True, nogil=True)
def _sums_identity(da, s, x, mean, inv_std, sums, dgamma, dbeta, accumulate):
    _sums_body(da, s, IDENTITY, x, mean, inv_std, sums, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _sums_relu(da, s, x, mean, inv_std, sums, dgamma, dbeta, accumulate):
    _sums_body(da, s, 0, x, mean, inv_std, sums, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _sums_sigmoid(da, s, x, mean, inv_std, sums, dgamma, dbeta, accumulate):
    _sums_body(da, s, 1, x, mean, inv_std, sums, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _sums_tanh(da, s, x, mean, inv_std, sums, dgamma, dbeta, accumulate):
    _sums_body(da, s, 2, x, mean, inv_std, sums, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _dx_identity(da, s, x, mean, inv_std, gamma, count, sums, out):
    _dx_body(da, s, IDENTITY, x, mean, inv_std, gamma, count, sums, out)


@njit(cache=True, nogil=True)
def _dx_relu(da, s, x, mean, inv_std, gamma, count, sums, out):
    _dx_body(da, s, 0, x, mean, inv_std, gamma, count, sums, out)


@njit(cache=True, nogil=True)
def _dx_sigmoid(da, s, x, mean, inv_std, gamma, count, sums, out):
    _dx_body(da, s, 1, x, mean, inv_std, gamma, count, sums, out)


@njit(cache=True, nogil=True)
def _dx_tanh(da, s, x, mean, inv_std, gamma, count, sums, out):
    _dx_body(da, s, 2, x, mean, inv_std, gamma, count, sums, out)


#: indexed by the kinds of :data:`normlab.kernels._fused_numba.ACT_KINDS`, then IDENTITY
_SUMS = (_sums_relu, _sums_sigmoid, _sums_tanh, _sums_identity)
_DX = (_dx_relu, _dx_sigmoid, _dx_tanh, _dx_identity)


def grad_sums(da, s, kind, x, mean, inv_std, sums, dgamma, dbeta, accumulate):
    """The shard's ``sums = (sum dy, sum dy xhat)`` (float64, ``2C``), also added (or written) to dgamma/dbeta.

    ``dy = f'(z) da`` for the activation ``kind`` (``s``: ``z`` for relu, ``a``
    otherwise); ``kind`` IDENTITY: ``dy = da`` (pass ``s = da``).
    ``dgamma``/``dbeta`` of size 0 are skipped. ``xhat = (x - mean) inv_std``.
    """
    _SUMS[kind](da, s, x, mean, inv_std, sums, dgamma, dbeta, accumulate)


def sync_dx(da, s, kind, x, mean, inv_std, gamma, count, sums, out):
    """``out = dx`` from the global ``count`` and the allreduced ``sums`` of :func:`grad_sums`.

    ``gamma`` of size 0 means 1; ``inv_std`` 0 (``var + eps == 0``) gives 0.
    """
    _DX[kind](da, s, x, mean, inv_std, gamma, float(count), sums, out)
