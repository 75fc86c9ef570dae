"""Direct convolution loops (numba) for inputs with few channels; see :mod:`normlab.kernels._conv_direct`.

With ``C`` of 1 to a few the work per output pixel is ``kh kw C`` short vector
multiply-adds over the filters, and the im2col GEMM (inner dimension ``kh kw C``)
runs far below BLAS's rate. These kernels sweep the taps over one output row
kept in L1 (``Wo x F``), so ``y`` is written once, and read ``dy`` once for the
kernel and the bias gradient together. The inner loops run over row views
(``a[f] += x w[f]``), the form LLVM vectorizes here (a per-pixel accumulator of
scalars, or 4-D indexing in the innermost loop, stayed scalar and ran 5x slower).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def forward_rows(xp, w, bias, sh, sw, dh, dw, y, n0, n1):
    """``y[n]`` for images ``n0 <= n < n1``: each output pixel starts at ``bias`` and gets the
    taps ``x w[i, j, c, :]`` added in the order ``i``, ``j``, ``c``."""
    ho, wo, nf = y.shape[1], y.shape[2], y.shape[3]
    kh, kw, nc = w.shape[0], w.shape[1], w.shape[2]
    w2 = w.reshape(kh * kw * nc, nf)
    for n in range(n0, n1):
        for p in range(ho):
            yr = y[n, p]
            for q in range(wo):
                a = yr[q]
                for f in range(nf):
                    a[f] = bias[f]
            t = 0
            for i in range(kh):
                xr = xp[n, p * sh + i * dh]
                for j in range(kw):
                    for c in range(nc):
                        wr = w2[t]
                        for q in range(wo):
                            xv = xr[q * sw + j * dw, c]
                            a = yr[q]
                            for f in range(nf):
                                a[f] += xv * wr[f]
                        t += 1


@njit(cache=True, nogil=True)
def forward_rows_9(xp, w, bias, sh, sw, dh, dw, y, n0, n1):
    """:func:`forward_rows` for a 3 x 3 kernel over one input channel (an image network's first
    layer): the same sums in the same order (``bias``, then the taps ``(i, j)`` in order), kept in
    a register across the nine taps and stored once. The general kernel loads and stores each
    output row nine times and runs its ``F``-long loop nine times per pixel, whose set-up cost more
    than the arithmetic at 32 filters."""
    ho, wo, nf = y.shape[1], y.shape[2], y.shape[3]
    # the taps and the bias in one array of the kernel's own: the loop over f then reads two arrays
    # and writes one, few enough aliasing checks for LLVM to vectorize it (ten views were not)
    wb = np.empty((10, nf), y.dtype)
    for t in range(9):
        for f in range(nf):
            wb[t, f] = w[t // 3, t % 3, 0, f]
    for f in range(nf):
        wb[9, f] = bias[f]
    for n in range(n0, n1):
        for p in range(ho):
            x0 = xp[n, p * sh]
            x1 = xp[n, p * sh + dh]
            x2 = xp[n, p * sh + 2 * dh]
            yr = y[n, p]
            for q in range(wo):
                s0, s1, s2 = q * sw, q * sw + dw, q * sw + 2 * dw
                a0, a1, a2 = x0[s0, 0], x0[s1, 0], x0[s2, 0]
                b0, b1, b2 = x1[s0, 0], x1[s1, 0], x1[s2, 0]
                c0, c1, c2 = x2[s0, 0], x2[s1, 0], x2[s2, 0]
                a = yr[q]
                for f in range(nf):
                    v = wb[9, f] + a0 * wb[0, f]
                    v += a1 * wb[1, f]
                    v += a2 * wb[2, f]
                    v += b0 * wb[3, f]
                    v += b1 * wb[4, f]
                    v += b2 * wb[5, f]
                    v += c0 * wb[6, f]
                    v += c1 * wb[7, f]
                    v += c2 * wb[8, f]
                    a[f] = v


@njit(cache=True, nogil=True)
def kernel_grad_rows(xp, dy, kh, kw, sh, sw, dh, dw, acc, n0, n1):
    """Sums over images ``n0 <= n < n1`` (``acc`` is overwritten)::

        acc[(i kw + j) C + c, f] = sum_{n, p, q} xp[n, p sh + i dh, q sw + j dw, c] dy[n, p, q, f]
        acc[kh kw C, f]          = sum_{n, p, q} dy[n, p, q, f]          (the bias gradient)

    each summed in the order ``n``, ``p``, ``q``; one read of ``dy``."""
    ho, wo, nf = dy.shape[1], dy.shape[2], dy.shape[3]
    nc = xp.shape[3]
    nt = kh * kw * nc
    acc[:] = 0
    ab = acc[nt]
    for n in range(n0, n1):
        for p in range(ho):
            for q in range(wo):
                d = dy[n, p, q]
                for f in range(nf):
                    ab[f] += d[f]
                t = 0
                for i in range(kh):
                    r = p * sh + i * dh
                    for j in range(kw):
                        s = q * sw + j * dw
                        for c in range(nc):
                            xv = xp[n, r, s, c]
                            a = acc[t]
                            for f in range(nf):
                                a[f] += xv * d[f]
                            t += 1


@njit(cache=True, nogil=True)
def kernel_grad_rows_9(xp, dy, kh, kw, sh, sw, dh, dw, acc, n0, n1):
    """:func:`kernel_grad_rows` for a 3 x 3 kernel over one input channel: the ten sums of a pixel
    (nine taps and the bias) in one loop over ``f`` instead of ten, each sum in the same order
    (``n``, ``p``, ``q``), so the same bits."""
    ho, wo, nf = dy.shape[1], dy.shape[2], dy.shape[3]
    acc[:] = 0
    for n in range(n0, n1):
        for p in range(ho):
            x0 = xp[n, p * sh]
            x1 = xp[n, p * sh + dh]
            x2 = xp[n, p * sh + 2 * dh]
            for q in range(wo):
                s0, s1, s2 = q * sw, q * sw + dw, q * sw + 2 * dw
                a0, a1, a2 = x0[s0, 0], x0[s1, 0], x0[s2, 0]
                b0, b1, b2 = x1[s0, 0], x1[s1, 0], x1[s2, 0]
                c0, c1, c2 = x2[s0, 0], x2[s1, 0], x2[s2, 0]
                d = dy[n, p, q]
                for f in range(nf):
                    v = d[f]
                    acc[0, f] += a0 * v
                    acc[1, f] += a1 * v
                    acc[2, f] += a2 * v
                    acc[3, f] += b0 * v
                    acc[4, f] += b1 * v
                    acc[5, f] += b2 * v
                    acc[6, f] += c0 * v
                    acc[7, f] += c1 * v
                    acc[8, f] += c2 * v
                    acc[9, f] += v
