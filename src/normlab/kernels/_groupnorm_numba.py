"""Fused group-norm kernels (numba) for channels-last ``x`` viewed as ``(N, P, C)``.

``P`` is the number of positions (the product of the spatial axes, 1 for
``(N, C)`` input) and the ``C`` channels form ``G`` contiguous groups of
``K = C / G``. Same equations as :func:`normlab.kernels.layernorm.group_norm_forward`
and its backward, per sample ``s`` and group ``g`` over the ``P K`` values of
the group:

* forward: per-channel means and variances over the positions (the batch-norm
  statistics kernel, :func:`normlab.kernels._batchnorm_numba.moments`, on the
  sample's ``(P, C)`` slice), combined per group as
  ``mean_g = mean_c(mean_c)`` and ``var_g = mean_c(var_c + (mean_c - mean_g)^2)``
  (exact: every channel has ``P`` values; the group mean is summed from its
  first channel's, so a constant group gives ``y = beta`` exactly); then
  ``y = (x - mean_g) gamma_c inv_g + beta_c``, the mean subtracted before
  scaling (:func:`normlab.kernels._batchnorm_numba.centered_affine_blocks`);
* backward: per-channel ``A_c = sum_p dy`` and ``B_c = sum_p dy xhat`` (the
  batch-norm reductions), per group ``S1 = sum_c gamma_c A_c`` and
  ``S2 = sum_c gamma_c B_c``, then
  ``dx = inv_g / (P K) (P K gamma_c dy - S1 - xhat S2)``; ``dgamma_c`` and
  ``dbeta_c`` are ``B_c`` and ``A_c`` summed over the samples.

Each sample's slice is read twice (statistics, then output) while it is in
cache for the usual image sizes; the NumPy path reshapes, reduces over
strided axes and allocates several temporaries the size of ``x``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._batchnorm_numba import _add1, _add4, _tile_rows, _tiled, centered_affine_blocks, moments
from ._layernorm_numba import add_param_grads


@njit(cache=True, nogil=True)
def forward(x, groups, gamma, beta, epsilon, out, mean_out, inv_out):
    """Write ``y`` into ``out`` (both ``(N, P, C)``) and the group statistics into ``(N, G)`` arrays.

    ``mean_out`` receives each group's mean and ``inv_out`` its
    ``1 / sqrt(var + epsilon)`` (float64). ``gamma``/``beta`` of size 0 mean
    1 and 0.
    """
    n, p, c = x.shape
    k = c // groups
    rows = _tile_rows(p, c)
    scale = np.empty(c, x.dtype)
    shift = np.empty(c, x.dtype)
    center = np.empty(c, x.dtype)
    for s in range(n):
        xs = x[s]
        mean_c, var_c = moments(xs)
        for g in range(groups):
            # from the group's first channel mean: exact for a constant group
            m0 = mean_c[g * k]
            mg = 0.0
            for j in range(g * k, (g + 1) * k):
                mg += mean_c[j] - m0
            mg = m0 + mg / k
            vg = 0.0
            for j in range(g * k, (g + 1) * k):
                d = mean_c[j] - mg
                vg += var_c[j] + d * d
            vg /= k
            inv = 1.0 / np.sqrt(vg + epsilon)
            mean_out[s, g] = mg
            inv_out[s, g] = inv
            ctr = x.dtype.type(mg)
            for j in range(g * k, (g + 1) * k):
                sc = gamma[j] * inv if gamma.size else inv
                scale[j] = sc
                # what rounding the mean to x's dtype drops, as in batch norm
                shift[j] = (beta[j] if beta.size else 0.0) - (mg - np.float64(ctr)) * sc
                center[j] = ctr
        centered_affine_blocks(xs, center, scale, shift, out[s], rows)


@njit(cache=True, nogil=True)
def _channel_sums(dy, x, mu, iv, a_sum, b_sum):
    """``a_sum[c] = sum_p dy``, ``b_sum[c] = sum_p dy (x - mu_c) iv_c`` over the rows of ``(P, C)`` slices."""
    p, c = x.shape
    for j in range(c):
        a_sum[j] = 0.0
        b_sum[j] = 0.0
    i = 0
    while i + 4 <= p:  # four rows per sweep, as the batch-norm reductions
        for j in range(c):
            _add4(a_sum, b_sum, j, dy[i, j], dy[i + 1, j], dy[i + 2, j], dy[i + 3, j],
                  x[i, j], x[i + 1, j], x[i + 2, j], x[i + 3, j], mu[j], iv[j])
        i += 4
    while i < p:
        for j in range(c):
            _add1(a_sum, b_sum, j, dy[i, j], x[i, j], mu[j], iv[j])
        i += 1


@njit(cache=True, nogil=True)
def _dx_pass(dy, x, a, b, cc, mu, out, rows):
    """``out = a dy - b - cc (x - mu)`` per channel; coefficients tiled ``rows`` times when ``rows > 1``."""
    p, c = x.shape
    if rows == 1:
        for i in range(p):
            for j in range(c):
                out[i, j] = a[j] * dy[i, j] - b[j] - cc[j] * (x[i, j] - mu[j])
        return
    w = rows * c
    at, bt, ct, mt = _tiled(a, rows, x.dtype), _tiled(b, rows, x.dtype), _tiled(cc, rows, x.dtype), _tiled(mu, rows, x.dtype)
    xf, df, of = x.reshape(x.size), dy.reshape(dy.size), out.reshape(out.size)
    for b0 in range(0, p * c, w):
        xb, db, ob = xf[b0 : b0 + w], df[b0 : b0 + w], of[b0 : b0 + w]
        for q in range(xb.size):
            ob[q] = at[q] * db[q] - bt[q] - ct[q] * (xb[q] - mt[q])


@njit(cache=True, nogil=True)
def backward(dy, x, groups, gamma, mean, inv_std, out, dgamma, dbeta):
    """Write ``dx`` into ``out``; add the parameter gradients into ``dgamma``/``dbeta`` (size 0: skipped).

    ``mean``/``inv_std`` are the ``(N, G)`` statistics of :func:`forward`;
    ``gamma`` of size 0 means 1.
    """
    n, p, c = x.shape
    k = c // groups
    count = p * k
    rows = _tile_rows(p, c)
    mu = np.empty(c, np.float64)
    iv = np.empty(c, np.float64)
    a_sum = np.empty(c, np.float64)
    b_sum = np.empty(c, np.float64)
    dg_tot = np.zeros(c, np.float64)
    db_tot = np.zeros(c, np.float64)
    a = np.empty(c, x.dtype)
    b = np.empty(c, x.dtype)
    cc = np.empty(c, x.dtype)
    mu_dt = np.empty(c, x.dtype)
    c1 = np.empty(c, x.dtype)
    iv_dt = np.empty(c, x.dtype)
    # below this, cc = inv^2 s2 / count would lose digits in x's dtype (std beyond ~1e19 in float32)
    small = np.finfo(x.dtype).tiny / np.finfo(x.dtype).eps
    for s in range(n):
        xhat_form = False
        for g in range(groups):
            for j in range(g * k, (g + 1) * k):
                mu[j] = mean[s, g]
                iv[j] = inv_std[s, g]
        _channel_sums(dy[s], x[s], mu, iv, a_sum, b_sum)
        for g in range(groups):
            s1 = 0.0
            s2 = 0.0
            for j in range(g * k, (g + 1) * k):
                gm = gamma[j] if gamma.size else 1.0
                s1 += gm * a_sum[j]
                s2 += gm * b_sum[j]
            inv = inv_std[s, g]
            c64 = inv * inv * s2 / count
            for j in range(g * k, (g + 1) * k):
                gm = gamma[j] if gamma.size else 1.0
                mu_dt[j] = mu[j]
                a[j] = gm * inv
                # cc (x - mean) = cc (x - mu_dt) - cc (mean - mu_dt), the second part into b
                b[j] = inv * s1 / count - c64 * (mu[j] - np.float64(mu_dt[j]))
                cc[j] = c64
                c1[j] = inv * s2 / count
                iv_dt[j] = inv
            xhat_form = xhat_form or (c64 != 0.0 and abs(c64) < small)
        if xhat_form:  # rare: cc (x - mu) as (inv s2 / count) ((x - mu) inv)
            xs, dys, os = x[s], dy[s], out[s]
            for i in range(p):
                for j in range(c):
                    os[i, j] = a[j] * dys[i, j] - b[j] - c1[j] * ((xs[i, j] - mu_dt[j]) * iv_dt[j])
        else:
            _dx_pass(dy[s], x[s], a, b, cc, mu_dt, out[s], rows)
        for j in range(c):
            dg_tot[j] += b_sum[j]
            db_tot[j] += a_sum[j]
    add_param_grads(dg_tot, db_tot, dgamma, dbeta)
