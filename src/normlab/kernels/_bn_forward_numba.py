"""The training forward of the fused batch-norm kernels, plain and followed by an activation.

For ``x`` viewed as ``(m, C)``, features last, one call does the whole
training forward of the layer: the batch statistics
(:mod:`normlab.kernels._bn_moments_numba`), the Keras moving-average update
(all of it or, with a status saying why, none of it), and one pass writing
``y = (x - mean) * scale + shift`` (:mod:`normlab.kernels._bn_affine_numba`),
in :func:`train_forward_act_step` with the following activation in the same
pass. ``xhat`` is not stored: the backward pass
(:mod:`normlab.kernels._bn_backward_numba`) recomputes it from ``x``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._bn_affine_numba import _affine_blocks, _tile_rows, _tiled, centered_affine_blocks
from ._bn_moments_numba import all_finite, moments
from ._expf_numba import sigmoidf

#: statuses of the training forward kernels
OK, NOT_FINITE, OVERFLOW = 0, 1, 2
#: the largest finite float32 / float64 (the moving variance's overflow check)
_F32_MAX = float(np.finfo(np.float32).max)
_F64_MAX = float(np.finfo(np.float64).max)
#: largest ``|mean * scale|`` for which the forward pass folds the mean into the shift (see _train_statistics)
_FOLD_BOUND = 4.0


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
