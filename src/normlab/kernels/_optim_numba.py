"""Fused optimizer updates (numba): one pass over the parameters per step.

The optimizers of :mod:`normlab.optim` are chains of gradient
transformations; each link is a few NumPy calls over every parameter, so an
SGD step over a flat buffer of ``n`` values reads and writes it about eight
times (copy the gradient, scale it, add it) and an Adam step about twenty.
When an optimizer's chain is just its update rule (no clipping, no weight
decay), :meth:`normlab.optim.Optimizer.apply` runs these kernels instead:
they read each gradient, slot and parameter once and write each slot and
parameter once.

They perform the chain's operations in the chain's order on scalars of the
arrays' dtype (the callers convert the constants exactly as NumPy casts a
Python float against a float32 array), so the result equals the chain's bit
for bit; the tests compare the two paths step by step.

=============  ============================================================
sgd            s = g * (-lr);  p += s
sgd_momentum   s = g * (-lr);  v = v * beta + s;  p += (s + v * beta) if nesterov else v
adam (Keras)   m = m + (g - m) * (1 - b1);  v = v + (g * g - v) * (1 - b2);
               u = m / (sqrt(v) + eps) * (sqrt(1 - b2^t) / (1 - b1^t));  p += u * (-lr)
rmsprop        r = r * rho + g * g * (1 - rho);  s = g / sqrt(r + eps) * (-lr)
               (or sqrt(r) + eps), then momentum on s as in sgd_momentum
adagrad        r = r + g * g;  p += g / sqrt(r + eps) * (-lr)  (or sqrt(r) + eps)
=============  ============================================================
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def sgd(g, p, neg_lr):
    for i in range(p.size):
        p[i] = p[i] + g[i] * neg_lr


@njit(cache=True, nogil=True)
def sgd_momentum(g, p, v, neg_lr, beta, nesterov):
    for i in range(p.size):
        s = g[i] * neg_lr
        vi = v[i] * beta + s
        v[i] = vi
        if nesterov:
            p[i] = p[i] + (s + vi * beta)
        else:
            p[i] = p[i] + vi


# error_model="numpy": IEEE division (inf/nan on zero, as NumPy) instead of Python's
# ZeroDivisionError check, whose branch keeps LLVM from vectorizing the loop (10x slower)
@njit(cache=True, nogil=True, error_model="numpy")
def adam_keras(g, p, m, v, one_minus_b1, one_minus_b2, eps, correction, neg_lr):
    for i in range(p.size):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * one_minus_b1
        vi = v[i] + (gi * gi - v[i]) * one_minus_b2
        m[i] = mi
        v[i] = vi
        u = mi / (np.sqrt(vi) + eps) * correction
        p[i] = p[i] + u * neg_lr



@njit(cache=True, nogil=True, error_model="numpy")
def rmsprop(g, p, r, v, rho, one_minus_rho, eps, neg_lr, beta, nesterov, keras_form):
    """Uncentered RMSprop; ``v`` of size 0 means no momentum."""
    momentum = v.size > 0
    for i in range(p.size):
        gi = g[i]
        ri = r[i] * rho + (gi * gi) * one_minus_rho
        r[i] = ri
        d = np.sqrt(ri + eps) if keras_form else np.sqrt(ri) + eps
        s = (gi / d) * neg_lr
        if momentum:
            vi = v[i] * beta + s
            v[i] = vi
            s = s + vi * beta if nesterov else vi
        p[i] = p[i] + s


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad(g, p, r, eps, neg_lr, keras_form):
    for i in range(p.size):
        gi = g[i]
        ri = r[i] + gi * gi
        r[i] = ri
        d = np.sqrt(ri + eps) if keras_form else np.sqrt(ri) + eps
        p[i] = p[i] + (gi / d) * neg_lr


# fastmath "reassoc" lets LLVM split the sum into vector partial sums (without
# it a floating-point reduction runs one element at a time, ~8x slower): the
# order of the additions is unspecified, as in a BLAS dot product
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum_squares_native(a):
    s = a.dtype.type(0)
    for i in range(a.size):
        s += a[i] * a[i]
    return s


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum_squares_f64(a):
    s = 0.0
    for i in range(a.size):
        v = np.float64(a[i])
        s += v * v
    return s


@njit(cache=True, nogil=True)
def sum_squares(a):
    """``sum(a * a)`` over a 1-D array, as float64.

    Summed in ``a``'s dtype and, when that overflows (float32 squares beyond
    3.4e38), again in float64, so the result is inf or NaN only when an entry
    is (or when float64 itself overflows). Twice as fast as ``np.dot(a, a)``
    on float32 (OpenBLAS's sdot), which the NumPy path uses.
    """
    s = np.float64(_sum_squares_native(a))
    if not np.isfinite(s):
        s = _sum_squares_f64(a)
    return s


@njit(cache=True, nogil=True)
def sgd_if_finite(g, p, neg_lr):
    """:func:`sum_squares` of ``g``, then, only if it is finite, :func:`sgd`; returns the sum.

    The global-norm check and the plain SGD step of one flat buffer in one
    call (the step of a model whose parameters share one buffer).
    """
    s = sum_squares(g)
    if np.isfinite(s):
        sgd(g, p, neg_lr)
    return s
