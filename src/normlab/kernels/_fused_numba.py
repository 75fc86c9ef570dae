"""Fused kernels (numba): activation derivatives on flat arrays, and max-pool backward.

NumPy evaluates ``da * (z > 0)`` as two passes with a boolean temporary and a
casting multiply, and ``da * a * (1 - a)`` as three passes with two
temporaries; each kernel here reads its inputs once and writes ``dz`` once,
which is what the memory bandwidth allows:

=========  ================================
relu       dz = da if z > 0 else 0
sigmoid    dz = da * a * (1 - a)
tanh       dz = da * (1 - a * a)
=========  ================================

The callers in :mod:`normlab.kernels.activations` pass 1-D views
(``ravel`` of C-contiguous arrays of one dtype) and the constants ``zero`` /
``one`` as scalars of that dtype, so that float32 stays float32 and the
result equals NumPy's bit for bit (same operations in the same order); they
keep the NumPy expressions for everything else.
"""

from __future__ import annotations

import numpy as np
from numba import njit


#: activation codes of :func:`act_grad`
ACT_KINDS = {"relu": 0, "sigmoid": 1, "tanh": 2}
#: the code of "no activation" (``dz = da``), for kernels shared with the plain case
IDENTITY = 3


@njit(cache=True, nogil=True, inline="always")
def act_grad(kind, da, s, one, zero):
    """``dz`` of one element: the table above; ``s`` is ``z`` for relu, ``a`` otherwise."""
    if kind == 0:
        return da if s > 0 else zero
    if kind == 1:
        return (da * s) * (one - s)
    if kind == 2:
        return da * (one - s * s)
    return da


@njit(cache=True, nogil=True)
def relu_backward(da, z, out, zero):
    for i in range(da.size):
        out[i] = act_grad(0, da[i], z[i], zero, zero)


@njit(cache=True, nogil=True)
def sigmoid_backward(da, a, out, one):
    for i in range(da.size):
        out[i] = act_grad(1, da[i], a[i], one, one)


@njit(cache=True, nogil=True)
def tanh_backward(da, a, out, one):
    for i in range(da.size):
        out[i] = act_grad(2, da[i], a[i], one, one)


@njit(cache=True, nogil=True)
def max_pool2d_backward(dy, xp, y, ph, pw, sh, sw, dxp):
    """Add each ``dy[n, p, q, c]`` to its window's first maximal tap of ``xp`` in ``dxp``.

    ``xp``/``dxp``: the padded input and its gradient, channels-last (``dxp``
    zero on entry); taps are visited row-major and a per-channel flag keeps
    the first tap equal to the maximum (the NumPy path's tie rule).
    """
    n_, ho, wo, c_ = dy.shape
    taken = np.empty(c_, np.bool_)
    for n in range(n_):
        for p in range(ho):
            for q in range(wo):
                taken[:] = False
                for i in range(ph):
                    r = p * sh + i
                    for j in range(pw):
                        col = q * sw + j
                        for c in range(c_):
                            if not taken[c] and xp[n, r, col, c] == y[n, p, q, c]:
                                dxp[n, r, col, c] += dy[n, p, q, c]
                                taken[c] = True
