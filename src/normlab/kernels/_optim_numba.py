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


@njit(cache=True, nogil=True)
def adam_keras(g, p, m, v, one_minus_b1, one_minus_b2, eps, correction, neg_lr):
    for i in range(p.size):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * one_minus_b1
        vi = v[i] + (gi * gi - v[i]) * one_minus_b2
        m[i] = mi
        v[i] = vi
        u = mi / (np.sqrt(vi) + eps) * correction
        p[i] = p[i] + u * neg_lr

