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
