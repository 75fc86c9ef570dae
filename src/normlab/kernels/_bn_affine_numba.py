"""The elementwise passes of the fused batch-norm kernels: ``out = (x - center) * scale + shift`` per feature.

``x`` is ``(m, C)``, features last; the per-feature coefficients are
vectors of size ``C``. Each pass runs as flat loops over blocks of rows, the
coefficients repeated to match (:func:`_tile_rows`, :func:`_tiled`): the
training forward (:mod:`normlab.kernels._bn_forward_numba`), the inference
forward (:mod:`normlab.kernels.batchnorm_rows`), the backward pass's ``dx``
(:mod:`normlab.kernels._bn_backward_numba`) and group normalization all
write their outputs in these blocks.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
