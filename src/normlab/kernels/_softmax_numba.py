"""Row softmax and sparse cross-entropy from logits (numba), for small outputs.

A softmax over ``(n, K)`` logits in NumPy is five ufunc calls (max, subtract,
exp, sum, divide) and the cross-entropy on top of it four more; for the output
layer of a classifier (``60 x 10`` in the notes' MNIST network) each call costs
more than its arithmetic, so together they took about a tenth of a training
step. These kernels make one pass per row. numba's ``exp`` is a scalar libm
call, several times slower per element than NumPy's vectorized one, so the
callers use them only below :data:`MAX_SIZE` elements.

Per row ``i``, with ``s = z_i - max(z_i)`` and ``e = exp(s)``:

* softmax: ``p = e / sum(e)``;
* sparse cross-entropy with label ``y_i``: loss ``log(sum(e)) - s[y_i]``
  (averaged over rows, summed in float64) and gradient with respect to the
  logits ``(p - onehot(y_i)) / n``.

Same operations in the same order as the NumPy code in
:mod:`normlab.kernels.activations` and :mod:`normlab.kernels.losses`; ``exp``
and ``log`` may differ from NumPy's in the last bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: the largest ``z.size`` for which the callers use these kernels
MAX_SIZE = 4096


@njit(cache=True, nogil=True)
def _shifted_exp_row(z, i, e):
    """Write ``exp(z[i] - max(z[i]))`` into ``e[i]``; return ``(max(z[i]), sum of e[i])``."""
    k = z.shape[1]
    mx = z[i, 0]
    for j in range(1, k):
        if z[i, j] > mx:
            mx = z[i, j]
    total = z.dtype.type(0)
    for j in range(k):
        v = np.exp(z[i, j] - mx)
        e[i, j] = v
        total += v
    return mx, total


@njit(cache=True, nogil=True)
def softmax_rows(z, out):
    """``out = softmax(z)`` over the last axis of a 2-D array."""
    for i in range(z.shape[0]):
        _, total = _shifted_exp_row(z, i, out)
        for j in range(z.shape[1]):
            out[i, j] = out[i, j] / total


@njit(cache=True, nogil=True)
def sparse_ce_logits(labels, z, grad):
    """Mean cross-entropy of ``softmax(z)`` against integer ``labels``; writes dL/dz into ``grad``.

    Returns NaN, writing nothing, when a label is not in ``[0, K)``: the
    callers validate labels first, and this keeps a bad call from reading
    outside ``z``.
    """
    n, k = z.shape
    for i in range(n):
        if labels[i] < 0 or labels[i] >= k:
            return np.nan
    value = 0.0
    for i in range(n):
        mx, total = _shifted_exp_row(z, i, grad)
        y = labels[i]
        value += np.log(total) - (z[i, y] - mx)
        for j in range(k):
            grad[i, j] = grad[i, j] / total
        grad[i, y] -= 1
        for j in range(k):
            grad[i, j] /= n
    return value / n


@njit(cache=True, nogil=True)
def bias_softmax_sparse_ce(labels, z, bias, out, grad):
    """A softmax output layer and its sparse cross-entropy in one pass per row.

    Adds ``bias`` (size 0: none) to the logits ``z`` in place, writes
    ``softmax(z)`` into ``out`` and dL/dz into ``grad``, and returns the
    mean loss: :func:`softmax_rows` and :func:`sparse_ce_logits` with one
    ``exp`` per logit instead of two, giving the same numbers as the two.
    Returns NaN, writing nothing but the biased ``z``, when a label is not
    in ``[0, K)``.
    """
    n, k = z.shape
    if bias.size:
        for i in range(n):
            for j in range(k):
                z[i, j] = z[i, j] + bias[j]
    for i in range(n):
        if labels[i] < 0 or labels[i] >= k:
            return np.nan
    value = 0.0
    for i in range(n):
        mx, total = _shifted_exp_row(z, i, out)
        y = labels[i]
        value += np.log(total) - (z[i, y] - mx)
        for j in range(k):
            p = out[i, j] / total
            out[i, j] = p
            grad[i, j] = p
        grad[i, y] -= 1
        for j in range(k):
            grad[i, j] /= n
    return value / n
