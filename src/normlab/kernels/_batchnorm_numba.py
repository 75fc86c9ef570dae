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
from ._fused_numba import act_grad


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
def affine(x, scale, shift, out):
    """``out = x * scale + shift`` per feature."""
    m, c = x.shape
    for i in range(m):
        for j in range(c):
            out[i, j] = x[i, j] * scale[j] + shift[j]


def train_forward(x, gamma, beta, epsilon, out):
    """Return ``(mean, var, inv_std)`` (float64, shape (C,)) and write ``y`` into ``out``."""
    mean, var = moments(x)
    inv_std = 1.0 / np.sqrt(var + epsilon)
    scale = inv_std if gamma is None else gamma * inv_std
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    affine(x, scale.astype(x.dtype), shift.astype(x.dtype), out)
    return mean, var, inv_std


@njit(cache=True, nogil=True)
def _reduce_backward(dy, x, mean, inv_std):
    m, c = x.shape
    db = np.zeros(c, np.float64)
    dg = np.zeros(c, np.float64)
    i = 0
    while i + 4 <= m:  # four rows per sweep, as in moments
        for j in range(c):
            _add4(db, dg, j, dy[i, j], dy[i + 1, j], dy[i + 2, j], dy[i + 3, j],
                  x[i, j], x[i + 1, j], x[i + 2, j], x[i + 3, j], mean[j], inv_std[j])
        i += 4
    while i < m:
        for j in range(c):
            _add1(db, dg, j, dy[i, j], x[i, j], mean[j], inv_std[j])
        i += 1
    return db, dg


# The backward reductions, shared by train_backward_step and
# train_backward_act_step so that the two sum in the same order (their
# results must agree bit for bit): db += sum g, dg += sum g * xhat.
@njit(cache=True, nogil=True, inline="always")
def _add4(db, dg, j, g0, g1, g2, g3, x0, x1, x2, x3, mu, iv):
    db[j] += (np.float64(g0) + g1) + (np.float64(g2) + g3)
    dg[j] += (g0 * ((x0 - mu) * iv) + g1 * ((x1 - mu) * iv)) + (g2 * ((x2 - mu) * iv) + g3 * ((x3 - mu) * iv))


@njit(cache=True, nogil=True, inline="always")
def _add1(db, dg, j, g, x0, mu, iv):
    db[j] += g
    dg[j] += g * ((x0 - mu) * iv)


@njit(cache=True, nogil=True)
def _dx(dy, x, mean, a, b, cc, out):
    # dx = a * dy - b - cc * (x - mean), with the per-feature a, b, cc below
    m, c = x.shape
    for i in range(m):
        for j in range(c):
            out[i, j] = a[j] * dy[i, j] - b[j] - cc[j] * (x[i, j] - mean[j])


def train_backward(dy, x, mean, inv_std, gamma, out):
    """Write ``dx`` into ``out``; return ``(dgamma, dbeta)`` as float64 (C,)."""
    m = x.shape[0]
    db, dg = _reduce_backward(dy, x, mean, inv_std)
    g = inv_std if gamma is None else gamma * inv_std
    # g/m (m dy - db - xhat dg) with xhat = (x - mean) inv_std
    a = g
    b = g * db / m
    cc = g * dg * inv_std / m
    dt = x.dtype
    _dx(dy, x, mean.astype(dt), a.astype(dt), b.astype(dt), cc.astype(dt), out)
    return dg, db


@njit(cache=True, nogil=True)
def train_forward_step(
    x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out, mean_out, inv_std_out
):
    """The whole training forward of the layer in one call.

    ``gamma``/``beta`` of size 0 mean "absent" (1 and 0). Writes ``y`` into
    ``out``, the batch mean and ``1/sqrt(var + eps)`` (float64) into
    ``mean_out``/``inv_std_out`` and, only if every statistic is finite,
    applies the Keras moving-average update (the moving variance receives
    ``var * var_correction``: 1 for the biased, ``m / (m - 1)`` for the unbiased
    convention). Returns that finiteness flag.
    """
    m, c = x.shape
    finite, scale, shift = _train_statistics(
        x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out, inv_std_out
    )
    if not finite:
        return False
    for i in range(m):
        for j in range(c):
            out[i, j] = x[i, j] * scale[j] + shift[j]
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def train_forward_act_step(
    x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out, mean_out, inv_std_out,
    kind, act_out,
):
    """:func:`train_forward_step` followed by an activation, in one call.

    Writes the batch-norm output ``z`` into ``out`` (the activation's input,
    kept for its backward pass and for diagnostics) and ``f(z)`` into
    ``act_out``: relu (``kind`` 0, as ``np.maximum(z, 0)``) or sigmoid
    (``kind`` 1, float32 only, :func:`normlab.kernels._expf_numba.sigmoidf`,
    the function the numba path of the sigmoid activation uses).
    """
    m, c = x.shape
    finite, scale, shift = _train_statistics(
        x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out, inv_std_out
    )
    if not finite:
        return False
    zero = x.dtype.type(0)
    zf = out.reshape(out.size)
    af = act_out.reshape(act_out.size)
    # blocks of rows: z is written row by row, then f(z) runs as one flat loop
    # over the block while it is in cache; a per-row loop would leave c % 8
    # elements of every row to the scalar (slow) form of sigmoidf
    rows = max(1, 2048 // c)
    for i0 in range(0, m, rows):
        i1 = min(m, i0 + rows)
        for i in range(i0, i1):
            for j in range(c):
                out[i, j] = x[i, j] * scale[j] + shift[j]
        # slices indexed from 0: numba's negative-index handling of an
        # index of unknown sign would turn the loop into gathers and scatters
        zb = zf[i0 * c : i1 * c]
        ab = af[i0 * c : i1 * c]
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
                      inv_std_out):
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
    """
    m, c = x.shape
    db, dg = _reduce_backward(dy, x, mean, inv_std)
    a, b, cc, mu = _dx_coefficients(db, dg, mean, inv_std, gamma, m, x.dtype)
    for i in range(m):
        for j in range(c):
            out[i, j] = a[j] * dy[i, j] - b[j] - cc[j] * (x[i, j] - mu[j])
    _store_param_grads(dg, db, dgamma, dbeta, accumulate)


@njit(cache=True, nogil=True)
def _dx_coefficients(db, dg, mean, inv_std, gamma, m, dtype):
    """Per-feature ``a, b, cc, mean`` (in ``dtype``) of ``dx = a dy - b - cc (x - mean)``."""
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
    return a, b, cc, mu


@njit(cache=True, nogil=True)
def _store_param_grads(dg, db, dgamma, dbeta, accumulate):
    """Add (or, if not ``accumulate``, write) dgamma/dbeta; arrays of size 0 are skipped."""
    if dgamma.size:
        for j in range(dg.size):
            dgamma[j] = dgamma[j] + dg[j] if accumulate else dg[j]
    if dbeta.size:
        for j in range(db.size):
            dbeta[j] = dbeta[j] + db[j] if accumulate else db[j]


@njit(cache=True, nogil=True)
def train_backward_act_step(da, s, kind, x, mean, inv_std, gamma, out, dgamma, dbeta, accumulate, one, zero):
    """:func:`train_backward_step` for batch norm followed by an activation, in one call.

    ``da`` is the gradient with respect to the activation's output; its
    gradient with respect to the batch-norm output, ``dy = f'(z) da``, is
    recomputed where it is needed (both passes) instead of being written out
    and read back twice. ``s`` is what the activation's derivative is taken
    from: ``z`` for relu, ``a`` for sigmoid and tanh (``kind``, see
    :data:`normlab.kernels._fused_numba.ACT_KINDS`). Same results as the
    activation's backward followed by
    :func:`train_backward_step`, bit for bit.
    """
    m, c = x.shape
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
    a, b, cc, mu = _dx_coefficients(db, dg, mean, inv_std, gamma, m, x.dtype)
    for i in range(m):
        for j in range(c):
            g = act_grad(kind, da[i, j], s[i, j], one, zero)
            out[i, j] = a[j] * g - b[j] - cc[j] * (x[i, j] - mu[j])
    _store_param_grads(dg, db, dgamma, dbeta, accumulate)
