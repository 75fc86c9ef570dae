"""Batch statistics for the fused batch-norm kernels: per-feature mean and biased variance of ``(m, C)`` ``x``.

One pass over ``x`` accumulates the sums of ``x - s`` and ``(x - s)^2`` in
float64 with a per-feature shift ``s = x[0]``, which keeps the one-pass
variance free of cancellation for data with a large offset; float32
deviations never overflow these sums, float64 ones beyond about 1e154 take
a scaled second pass (:func:`_column_moments_scaled`).

Rows are the outer loop so the inner loop over features is contiguous and
vectorizes. The pass takes four rows per sweep (partial sums of four rows,
then one update of the float64 per-feature sums): with one row per sweep,
loading and storing the per-feature sums for every element made it
compute-bound, at about 1.4x the time of a plain read of the data. Sums over
more rows than :func:`chunk_rows` are taken chunk by chunk, in the chunks the
threaded kernels (:mod:`normlab.kernels._bn_chunks_numba`) use, so that both
give the same bits.

Used by the training forward (:mod:`normlab.kernels._bn_forward_numba`),
group normalization and the synchronized kernels; the backward reductions
(:mod:`normlab.kernels._bn_backward_numba`) sum over the same chunks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


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
