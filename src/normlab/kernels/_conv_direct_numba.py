"""Direct convolution loops (numba) for inputs with few channels; see :mod:`normlab.kernels._conv_direct`.

With ``C`` of 1 to 4 the im2col GEMM has an inner dimension of ``9 C`` and
runs at ~15 GFLOP/s; these loops keep the filters innermost (contiguous, one
vector FMA per tap and input channel) and never build the patch matrix.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def forward(xp, w, bias, sh, sw, dh, dw, y):
    """``y[n, p, q, :] = bias + sum_{i, j, c} xp[n, p sh + i dh, q sw + j dw, c] w[i, j, c, :]``
    (each pixel summed in a local row, then stored: 1.25x faster than adding into ``y``)."""
    n_, ho, wo, nf = y.shape
    kh, kw, nc = w.shape[0], w.shape[1], w.shape[2]
    acc = np.empty(nf, y.dtype)
    for n in range(n_):
        for p in range(ho):
            for q in range(wo):
                for f in range(nf):
                    acc[f] = bias[f]
                for i in range(kh):
                    r = p * sh + i * dh
                    for j in range(kw):
                        s = q * sw + j * dw
                        for c in range(nc):
                            xv = xp[n, r, s, c]
                            for f in range(nf):
                                acc[f] += xv * w[i, j, c, f]
                for f in range(nf):
                    y[n, p, q, f] = acc[f]


@njit(cache=True, nogil=True)
def kernel_grad(xp, dy, sh, sw, dh, dw, dk):
    """``dk[i, j, c, :] = sum_{n, p, q} xp[n, p sh + i dh, q sw + j dw, c] dy[n, p, q, :]``
    (``dk`` zero on entry; summed in the order n, p, q)."""
    n_, ho, wo, nf = dy.shape
    kh, kw, nc = dk.shape[0], dk.shape[1], dk.shape[2]
    for n in range(n_):
        for p in range(ho):
            for q in range(wo):
                for i in range(kh):
                    r = p * sh + i * dh
                    for j in range(kw):
                        s = q * sw + j * dw
                        for c in range(nc):
                            xv = xp[n, r, s, c]
                            for f in range(nf):
                                dk[i, j, c, f] += xv * dy[n, p, q, f]
