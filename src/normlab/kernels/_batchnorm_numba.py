"""Fused batch-norm kernels (numba) for ``x`` viewed as ``(m, C)``, features last.

Same equations as :mod:`normlab.kernels.batchnorm`, fused so that each array
is streamed as few times as possible:

* forward: one pass for the statistics (sums of ``x - s`` and ``(x - s)^2``
  accumulated in float64 with a per-feature shift ``s = x[0]``, which keeps
  the one-pass variance free of cancellation for data with a large offset;
  float32 deviations never overflow these sums, float64 ones beyond about
  1e154 take a scaled second pass), one pass writing
  ``y = (x - mean) * scale + shift``; ``xhat`` is not stored, the backward
  pass recomputes it from ``x``;
* backward: one pass for ``dbeta = sum(dy)`` and ``dgamma = sum(dy * xhat)``,
  one pass writing ``dx = g * inv_std / m * (m dy - dbeta - xhat dgamma)``.

Rows are the outer loop so the inner loop over features is contiguous and
vectorizes. The two reduction passes take four rows per sweep (partial sums of
four rows, then one update of the float64 per-feature sums): with one row per
sweep, loading and storing the per-feature sums for every element made them
compute-bound, at about 1.4x the time of a plain read of the data.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._expf_numba import sigmoidf
from ._fused_numba import IDENTITY, act_grad

#: statuses of the training forward kernels
OK, NOT_FINITE, OVERFLOW = 0, 1, 2
#: the largest finite float32 / float64 (the moving variance's overflow check)
_F32_MAX = float(np.finfo(np.float32).max)
_F64_MAX = float(np.finfo(np.float64).max)
#: largest ``|mean * scale|`` for which the forward pass folds the mean into the shift (see _train_statistics)
_FOLD_BOUND = 4.0


@njit(cache=True, nogil=True)
def moments(x):
    """Per-feature mean and biased variance (float64) of ``(m, C)`` ``x`` (module docstring).

    Where a float64 sum overflows (float64 deviations beyond about 1e154;
    float32 ones never do), the feature is redone by
    :func:`_column_moments_scaled`; NaN or inf input gives NaN.
    """
    mean, var, s1, s2 = _moments_sums(x)
    total = 0.0  # a loop rather than np.sum: one compilation less on the first run
    for j in range(s1.size):
        total += s1[j] + s2[j]
    if not np.isfinite(total):
        for j in range(x.shape[1]):
            if not (np.isfinite(s1[j]) and np.isfinite(s2[j])):
                mean[j], var[j] = _column_moments_scaled(x, j)
    return mean, var


#: elements per chunk of the reductions: sums over more rows are taken chunk by chunk (see chunk_rows)
CHUNK_ELEMENTS = 1 << 17


def chunk_rows(m: int, c: int) -> int:
    """Rows per chunk of the two reductions: a multiple of 4 near ``CHUNK_ELEMENTS / c``.

    Each chunk's sums start from zero and are added to the totals in chunk
    order, here and in the threaded kernels
    (:mod:`normlab.kernels._bn_chunks_numba`), which hand whole chunks to
    their threads: the totals are the same bit for bit whichever runs, at
    any thread count. Inputs of one chunk (``m <= chunk_rows``) are summed
    as before chunks existed. (The kernels write the formula out: a
    compiled helper cost compilation time on the first run.)
    """
    return max(4, (CHUNK_ELEMENTS // max(c, 1)) // 4 * 4)


@njit(cache=True, nogil=True, fastmath=False)
def _moments_sums(x):
    m, c = x.shape
    shift = np.empty(c, np.float64)
    s1 = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    rows = max(4, (CHUNK_ELEMENTS // max(c, 1)) // 4 * 4)  # chunk_rows, written out (compiles faster)
    # the first chunk sums straight into the totals (as before chunks existed), the others
    # into p1, p2, then added: no extra arrays or passes for an input of one chunk
    p1 = np.zeros(c if m > rows else 0, np.float64)
    p2 = np.zeros(c if m > rows else 0, np.float64)
    for j in range(c):
        shift[j] = x[0, j]
    for r0 in range(0, m, rows):
        t1 = s1 if r0 == 0 else p1
        t2 = s2 if r0 == 0 else p2
        if r0 > 0:
            for j in range(c):
                p1[j] = 0.0
                p2[j] = 0.0
        i = r0
        end = min(m, r0 + rows)
        # four rows per sweep: the per-feature sums are loaded and stored once per
        # four elements instead of once per element, which made this pass
        # compute-bound (about 1.4x the time of a plain read of x)
        while i + 4 <= end:
            for j in range(c):
                s = shift[j]
                d0 = x[i, j] - s
                d1 = x[i + 1, j] - s
                d2 = x[i + 2, j] - s
                d3 = x[i + 3, j] - s
                t1[j] += (d0 + d1) + (d2 + d3)
                t2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            i += 4
        while i < end:
            for j in range(c):
                d = x[i, j] - shift[j]
                t1[j] += d
                t2[j] += d * d
            i += 1
        if r0 > 0:
            for j in range(c):
                s1[j] += p1[j]
                s2[j] += p2[j]
    mean = np.empty(c, np.float64)
    var = np.empty(c, np.float64)
    for j in range(c):
        mu = s1[j] / m
        mean[j] = shift[j] + mu
        v = s2[j] / m - mu * mu
        var[j] = v if v > 0.0 else 0.0
    return mean, var, s1, s2


@njit(cache=True, nogil=True)
def _column_moments_scaled(x, j):
    """Mean and variance of column ``j`` with the values scaled by ``2^-e`` (exact), ``2^e >= max |x|``.

    The fallback of :func:`moments` where its sums overflow. The variance is
    ``inf`` only where it exceeds the float64 range itself; NaN or inf input
    gives NaN.
    """
    m = x.shape[0]
    amax = 0.0
    for i in range(m):
        a = abs(np.float64(x[i, j]))
        if not a <= 1.8e308:
            return np.nan, np.nan
        amax = max(amax, a)
    e = math.frexp(amax)[1]
    k = math.ldexp(1.0, -e)
    shift = x[0, j] * k
    s1 = 0.0
    s2 = 0.0
    for i in range(m):
        d = x[i, j] * k - shift
        s1 += d
        s2 += d * d
    mu = s1 / m
    v = s2 / m - mu * mu
    return math.ldexp(shift + mu, e), math.ldexp(v if v > 0.0 else 0.0, 2 * e)


@njit(cache=True, nogil=True)
def all_finite(x):
    """True when no entry of the 2-D ``x`` is NaN or inf (the failure path tells bad input from overflow)."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if not np.isfinite(x[i, j]):
                return False
    return True


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


@njit(cache=True, nogil=True)
def centered_affine_blocks(x, center, scale, shift, out, rows):
    """``out = (x - center) scale + shift`` per feature (coefficients tiled when ``rows > 1``).

    The mean is subtracted before scaling rather than folded into the shift
    (``x scale + (shift - center scale)``): the folded form cancels two large
    products for a feature whose mean is large against its spread, and a
    constant feature (``x == center``) would not give ``shift`` exactly.
    """
    p, c = x.shape
    if rows == 1:
        for i in range(p):
            for j in range(c):
                out[i, j] = (x[i, j] - center[j]) * scale[j] + shift[j]
        return
    w = rows * c
    mt, st, ht = _tiled(center, rows, x.dtype), _tiled(scale, rows, x.dtype), _tiled(shift, rows, x.dtype)
    xf, of = x.reshape(x.size), out.reshape(out.size)
    for b0 in range(0, p * c, w):
        xb, ob = xf[b0 : b0 + w], of[b0 : b0 + w]
        for q in range(xb.size):
            ob[q] = (xb[q] - mt[q]) * st[q] + ht[q]


@njit(cache=True, nogil=True)
def centered_affine(x, center, scale, shift, out):
    """``out = (x - center) * scale + shift`` per feature."""
    m, c = x.shape
    centered_affine_blocks(x, center, scale, shift, out, _tile_rows(m, c))


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

    ``gamma``/``beta`` of size 0 mean "absent" (1 and 0). Writes
    ``y = (x - mean) * gamma / sqrt(var + eps) + beta`` into ``out``, the
    batch mean and ``1/sqrt(var + eps)`` (float64) into
    ``mean_out``/``inv_std_out`` and applies the Keras moving-average update
    (the moving variance receives ``var * var_correction``: 1 for the
    biased, ``m / (m - 1)`` for the unbiased convention). Returns a status:
    :data:`OK`, or :data:`NOT_FINITE` (NaN or inf in ``x``) or
    :data:`OVERFLOW` (a statistic or an updated moving statistic beyond the
    range of its dtype: float32 moving variances of deviations beyond about
    1.8e19), in which cases nothing is written.

    ``saved`` (optional, float64, ``2 c + 1`` values) receives, when the
    update happens, the moving mean and variance as they were before it and
    then ``stamp``: a caller that may have to undo the step restores them when
    the stamp is its own (written in the same call as the update, so an
    interrupt cannot separate the two).
    """
    m, c = x.shape
    status, center, scale, shift = _train_statistics(
        x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out, inv_std_out,
        saved, stamp,
    )
    if status != OK:
        return status
    if center.size:
        centered_affine_blocks(x, center, scale, shift, out, _tile_rows(m, c))
    else:
        _affine_blocks(x, scale, shift, out, _tile_rows(m, c))
    return OK


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
    status, center, scale, shift = _train_statistics(
        x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out, inv_std_out,
        saved, stamp,
    )
    if status != OK:
        return status
    affine_act_blocks(x, center, scale, shift, out, act_out, kind)
    return OK


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def affine_act_blocks(x, center, scale, shift, out, act_out, kind):
    """``out = (x - center) scale + shift`` (``center`` empty: ``x scale + shift``), ``act_out = f(out)``.

    The elementwise pass of :func:`train_forward_act_step`, also run on row
    ranges by the threaded kernels (:mod:`normlab.kernels._bn_chunks_numba`).
    Inlined into the one-call kernel: compiled as a function of its own
    it is linked and optimized once more, a cost paid on the first run.
    """
    m, c = x.shape
    zero = x.dtype.type(0)
    # blocks of at least 2048 elements: z is written, then f(z) runs as one
    # flat loop over the block while it is in cache (a loop per row would
    # leave c % 8 elements of every row to the scalar form of sigmoidf)
    rows = max(1, min(m, 2048 // c))
    w = rows * c
    folded = center.size == 0  # y = x scale + shift (see _train_statistics)
    mt = _tiled(center, rows, x.dtype)
    st = _tiled(scale, rows, x.dtype)
    ht = _tiled(shift, rows, x.dtype)
    xf = x.reshape(x.size)
    zf = out.reshape(out.size)
    af = act_out.reshape(act_out.size)
    for b0 in range(0, m * c, w):
        xb = xf[b0 : b0 + w]
        zb = zf[b0 : b0 + w]
        ab = af[b0 : b0 + w]
        if folded:
            for k in range(xb.size):
                zb[k] = xb[k] * st[k] + ht[k]
        else:
            for k in range(xb.size):
                zb[k] = (xb[k] - mt[k]) * st[k] + ht[k]
        if kind == 0:
            for k in range(zb.size):
                z = zb[k]
                ab[k] = z if z >= zero else zero
        else:
            for k in range(zb.size):
                ab[k] = sigmoidf(zb[k])


@njit(cache=True, nogil=True)
def _train_statistics(x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, mean_out,
                      inv_std_out, saved=None, stamp=0.0, moments_in=None):
    """Batch statistics, the moving-average update and the per-feature ``center``/``scale``/``shift`` of ``y``.

    ``y = (x - center) scale + shift`` with ``center`` the mean rounded to
    ``x``'s dtype; what that rounding drops (``mean - center``) is folded
    into ``shift``, so a large mean costs no accuracy. Where every feature
    has ``|mean * scale| <= _FOLD_BOUND`` or is constant, ``center`` comes
    back empty and ``y = x scale + shift`` (the mean folded into ``shift``,
    a constant feature given ``scale = 0``): one operation less per element
    (0.4 us of the 3.2 us forward of a 60 x 100 batch), at most a few units
    in the last place of ``_FOLD_BOUND`` more error than the centered form.
    Returns ``(status, center, scale, shift)``; nothing is written unless
    the status is :data:`OK` (the new moving statistics are formed, and
    checked to fit their dtype, before any is stored).

    ``moments_in``: the batch ``(mean, var)`` (float64) when already computed
    (the threaded kernels' chunked sums); None computes them here. (An
    argument rather than a second function: with None numba prunes the
    other branch, and the one-call kernels compile as before, a
    separate function cost 0.3 s more compilation on the first run.)
    """
    if moments_in is None:
        mean, var = moments(x)
    else:
        mean, var = moments_in
    m, c = x.shape
    center = np.empty(c, x.dtype)
    scale = np.empty(c, x.dtype)
    shift = np.empty(c, x.dtype)
    for j in range(c):
        if not (np.isfinite(mean[j]) and np.isfinite(var[j])):
            # finite input: a float64 variance beyond 1.8e308
            return (OVERFLOW if all_finite(x) else NOT_FINITE), center, scale, shift
    # an updated moving mean is a weighted mean of two values in its dtype's range; an
    # updated variance may not be, which only the rare large batch variance can cause
    # loops and constants rather than np.max and np.finfo: two compilations less on the first run
    vmax = 0.0
    for j in range(c):
        vmax = max(vmax, var[j])
    if vmax * var_correction > (_F32_MAX if moving_var.itemsize == 4 else _F64_MAX if moving_var.itemsize == 8
                                 else 65504.0):
        tm, tv = moving_mean.dtype.type, moving_var.dtype.type
        for j in range(c):
            # the updated values as their buffers will hold them (recomputed, the same bits, below)
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
        v = var[j] + epsilon
        # 0 only with epsilon=0 and a constant feature: 1/sqrt taken as 0, so y = beta and dx = 0
        # (the convention of normlab.kernels.batchnorm); for v > 0 the same division as ever
        inv = 1.0 / np.sqrt(v) if v > 0.0 else 0.0
        mean_out[j] = mean[j]
        inv_std_out[j] = inv
        g = gamma[j] * inv if gamma.size else inv
        center[j] = mean[j]
        scale[j] = g
        shift[j] = (beta[j] if beta.size else 0.0) - (mean[j] - center[j]) * g
        folded = folded and (var[j] == 0.0 or abs(mean[j] * g) <= _FOLD_BOUND)
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
