"""Fused batch-norm kernels (numba) for ``x`` viewed as ``(m, C)``, features last.

Same equations as :mod:`normlab.kernels.batchnorm`, fused so that each array
is streamed as few times as possible:

* forward: one pass for the statistics (sums of ``x - s`` and ``(x - s)^2``
  accumulated in float64 with a per-feature shift ``s = x[0]``, which keeps
  the one-pass variance free of cancellation for data with a large offset),
  one pass writing ``y``; ``xhat`` is not stored, the backward pass recomputes
  it from ``x``;
* backward: one pass for ``dbeta = sum(dy)`` and ``dgamma = sum(dy * xhat)``,
  one pass writing ``dx = g * inv_std / m * (m dy - dbeta - xhat dgamma)``.

Rows are the outer loop so the inner loop over features is contiguous and
vectorizes. The two reduction passes take four rows per sweep (partial sums of
four rows, then one update of the float64 per-feature sums): with one row per
sweep, loading and storing the per-feature sums for every element made them
compute-bound, at about 1.4x the time of a plain read of the data.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._expf_numba import sigmoidf
from ._fused_numba import IDENTITY, act_grad


@njit(cache=True, nogil=True, fastmath=False)
def moments(x):
    m, c = x.shape
    shift = np.empty(c, np.float64)
    s1 = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    for j in range(c):
        shift[j] = x[0, j]
    i = 0
    # four rows per sweep: the per-feature sums are loaded and stored once per
    # four elements instead of once per element, which made this pass
    # compute-bound (about 1.4x the time of a plain read of x)
    while i + 4 <= m:
        for j in range(c):
            s = shift[j]
            d0 = x[i, j] - s
            d1 = x[i + 1, j] - s
            d2 = x[i + 2, j] - s
            d3 = x[i + 3, j] - s
            s1[j] += (d0 + d1) + (d2 + d3)
            s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        i += 4
    while i < m:
        for j in range(c):
            d = x[i, j] - shift[j]
            s1[j] += d
            s2[j] += d * d
        i += 1
    mean = np.empty(c, np.float64)
    var = np.empty(c, np.float64)
    for j in range(c):
        mu = s1[j] / m
        mean[j] = shift[j] + mu
        v = s2[j] / m - mu * mu
        var[j] = v if v > 0.0 else 0.0
    return mean, var


@njit(cache=True, nogil=True)
def _tile_rows(m, c):
    """Rows per block of the elementwise passes.

    Each pass runs as flat loops over blocks of ``rows * c`` contiguous
    elements, with the per-feature coefficients repeated ``rows`` times
    (:func:`_tiled`) to match. With few features (64 channels of an image
    batch) one row per block leaves a short inner loop and its setup costs
    (alias checks, the vector remainder) for every 64 elements, about 20 %
    of a pass over 16 MB; blocks of 512 elements remove that. Wide or
    small inputs (``rows == 1``) keep plain loops over rows and features,
    which cost less than building the tiles and slicing the blocks (a
    ``60 x 100`` batch-norm step pays about 1 us for them).
    """
    if c >= 256 or m * c < 65536:
        return 1
    return min(m, 512 // c)


@njit(cache=True, nogil=True)
def _tiled(v, rows, dtype):
    """``v`` (per feature) repeated ``rows`` times, in ``dtype``."""
    c = v.size
    t = np.empty(rows * c, dtype)
    for r in range(rows):
        for j in range(c):
            t[r * c + j] = v[j]
    return t


@njit(cache=True, nogil=True)
def _affine_blocks(x, scale, shift, out, rows):
    """``out = x * scale + shift`` per feature, as flat loops over blocks of ``rows`` rows."""
    m, c = x.shape
    if rows == 1:
        for i in range(m):
            for j in range(c):
                out[i, j] = x[i, j] * scale[j] + shift[j]
        return
    w = rows * c
    st = _tiled(scale, rows, x.dtype)
    ht = _tiled(shift, rows, x.dtype)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    for b0 in range(0, m * c, w):
        # slices indexed from 0: numba's negative-index handling of an index
        # of unknown sign would turn the loop into gathers and scatters
        xb = xf[b0 : b0 + w]
        ob = of[b0 : b0 + w]
        for k in range(xb.size):
            ob[k] = xb[k] * st[k] + ht[k]


@njit(cache=True, nogil=True)
def affine(x, scale, shift, out):
    """``out = x * scale + shift`` per feature."""
    m, c = x.shape
    _affine_blocks(x, scale, shift, out, _tile_rows(m, c))


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
def train_forward_step(
    x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out, mean_out, inv_std_out,
    saved=None, stamp=0.0,
):
    """The whole training forward of the layer in one call.

    ``gamma``/``beta`` of size 0 mean "absent" (1 and 0). Writes ``y`` into
    ``out``, the batch mean and ``1/sqrt(var + eps)`` (float64) into
    ``mean_out``/``inv_std_out`` and, only if every statistic is finite,
    applies the Keras moving-average update (the moving variance receives
    ``var * var_correction``: 1 for the biased, ``m / (m - 1)`` for the unbiased
    convention). Returns that finiteness flag.

    ``saved`` (optional, float64, ``2 c + 1`` values) receives, when the
    update happens, the moving mean and variance as they were before it and
    then ``stamp``: a caller that may have to undo the step restores them when
    the stamp is its own (written in the same call as the update, so an
    interrupt cannot separate the two).
    """
    m, c = x.shape
    finite, scale, shift = _train_statistics(
        x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out, inv_std_out,
        saved, stamp,
    )
    if not finite:
        return False
    _affine_blocks(x, scale, shift, out, _tile_rows(m, c))
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def train_forward_act_step(
    x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out, mean_out, inv_std_out,
    kind, act_out, saved=None, stamp=0.0,
):
    """:func:`train_forward_step` followed by an activation, in one call.

    Writes the batch-norm output ``z`` into ``out`` (the activation's input,
    kept for its backward pass and for diagnostics) and ``f(z)`` into
    ``act_out``: relu (``kind`` 0, as ``np.maximum(z, 0)``) or sigmoid
    (``kind`` 1, float32 only, :func:`normlab.kernels._expf_numba.sigmoidf`,
    the function the numba path of the sigmoid activation uses). ``saved``
    and ``stamp``: as in :func:`train_forward_step`.
    """
    m, c = x.shape
    finite, scale, shift = _train_statistics(
        x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out, inv_std_out,
        saved, stamp,
    )
    if not finite:
        return False
    zero = x.dtype.type(0)
    # blocks of at least 2048 elements: z is written, then f(z) runs as one
    # flat loop over the block while it is in cache (a loop per row would
    # leave c % 8 elements of every row to the scalar form of sigmoidf)
    rows = max(1, min(m, 2048 // c))
    w = rows * c
    st = _tiled(scale, rows, x.dtype)
    ht = _tiled(shift, rows, x.dtype)
    xf = x.reshape(x.size)
    zf = out.reshape(out.size)
    af = act_out.reshape(act_out.size)
    for b0 in range(0, m * c, w):
        xb = xf[b0 : b0 + w]
        zb = zf[b0 : b0 + w]
        ab = af[b0 : b0 + w]
        for k in range(xb.size):
            zb[k] = xb[k] * st[k] + ht[k]
        if kind == 0:
            for k in range(zb.size):
                z = zb[k]
                ab[k] = z if z >= zero else zero
        else:
            for k in range(zb.size):
                ab[k] = sigmoidf(zb[k])
    return True


@njit(cache=True, nogil=True)
def _train_statistics(x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out,
                      inv_std_out, saved=None, stamp=0.0):
    """Batch statistics, the moving-average update and the per-feature ``scale``/``shift`` of ``y``.

    Returns ``(finite, scale, shift)``; nothing is written unless every
    statistic is finite.
    """
    m, c = x.shape
    mean, var = moments(x)
    scale = np.empty(c, x.dtype)
    shift = np.empty(c, x.dtype)
    for j in range(c):
        if not (np.isfinite(mean[j]) and np.isfinite(var[j])):
            return False, scale, shift
    if saved is not None:
        for j in range(c):
            saved[j] = moving_mean[j]
            saved[c + j] = moving_var[j]
        saved[2 * c] = stamp
    for j in range(c):
        inv = 1.0 / np.sqrt(var[j] + epsilon)
        mean_out[j] = mean[j]
        inv_std_out[j] = inv
        g = gamma[j] * inv if gamma.size else inv
        scale[j] = g
        shift[j] = (beta[j] if beta.size else 0.0) - mean[j] * g
        moving_mean[j] = momentum * moving_mean[j] + (1.0 - momentum) * mean[j]
        moving_var[j] = momentum * moving_var[j] + (1.0 - momentum) * var[j] * var_correction
    return True, scale, shift


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
        a[j] = g
        b[j] = g * db[j] / m
        cc[j] = g * dg[j] * inv_std[j] / m
        mu[j] = mean[j]
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
    i = 0
    while i + 4 <= m:
        for j in range(c):
            _add4(db, dg, j,
                  act_grad(kind, da[i, j], s[i, j], one, zero),
                  act_grad(kind, da[i + 1, j], s[i + 1, j], one, zero),
                  act_grad(kind, da[i + 2, j], s[i + 2, j], one, zero),
                  act_grad(kind, da[i + 3, j], s[i + 3, j], one, zero),
                  x[i, j], x[i + 1, j], x[i + 2, j], x[i + 3, j], mean[j], inv_std[j])
        i += 4
    while i < m:
        for j in range(c):
            _add1(db, dg, j, act_grad(kind, da[i, j], s[i, j], one, zero), x[i, j], mean[j], inv_std[j])
        i += 1
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
