"""Row softmax and sparse cross-entropy from logits (numba), for small outputs.

A softmax over ``(n, K)`` logits in NumPy is five ufunc calls (max, subtract,
exp, sum, divide) and the cross-entropy on top of it four more; for the output
layer of a classifier (``60 x 10`` in the notes' MNIST network) each call costs
more than its arithmetic, so together they took about a tenth of a training
step. These kernels run in one call. On float32 they take the vectorizable
:func:`~normlab.kernels._expf_numba.expf` (at most 2 ulp from the C
library's, and 0 below ``exp(-87)``); on float64 numba's ``exp`` is a scalar
libm call, several times slower per element than NumPy's vectorized one. The
callers use them where :func:`takes` says so: small outputs, or short rows.

Per row ``i``, with ``s = z_i - max(z_i)`` and ``e = exp(s)``:

* softmax: ``p = e / sum(e)``;
* sparse cross-entropy with label ``y_i``: loss ``log(sum(e)) - s[y_i]``
  (averaged over rows, summed in float64) and gradient with respect to the
  logits ``(p - onehot(y_i)) / n``.

Same operations in the same order as the NumPy code in
:mod:`normlab.kernels.activations` and :mod:`normlab.kernels.losses`; ``exp``
and ``log`` may differ from NumPy's in the last bits. The three kernels share
their loops, so a softmax, a loss and the fused output-layer kernel agree
bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._expf_numba import EXP_LO as _EXP_LO
from ._expf_numba import expf

_F32_ZERO = np.float32(0)

#: the callers use these kernels for outputs of at most this many elements ...
MAX_SIZE = 4096
#: ... or of rows at most this long (NumPy's calls then cost more than the arithmetic)
MAX_ROW = 32


def takes(n: int, k: int) -> bool:
    """True when these kernels (rather than NumPy's vectorized calls) should take ``(n, k)`` logits.

    Measured on one core, float32: ``(1024, 10)`` 45 us here against 136 us
    for NumPy's softmax and cross-entropy; ``(1024, 100)`` about even;
    ``(128, 1000)`` 420 against 250 us (the row maxima and sums run one
    element at a time).
    """
    return n * k <= MAX_SIZE or k <= MAX_ROW


def _exp(v):  # pragma: no cover - replaced by its overload inside numba kernels
    return np.exp(v)


@overload(_exp, inline="always")
def _exp_overload(v):
    # float32: the vectorizable expf (a libm call per element stops the row
    # loops from vectorizing); float64: the C library's exp
    if v == types.float32:
        # expf clamps its argument at -87 (exp(-87) = 1.6e-38); below that
        # the softmax of the C library gives 0 (or a subnormal), and so does this
        return lambda v: expf(v) if v >= _EXP_LO else _F32_ZERO
    return lambda v: np.exp(v)


@njit(cache=True, nogil=True, inline="always")
def _shifted_exp(z, e):
    """Write ``exp(z[i] - max(z[i]))`` into ``e[i]`` for every row; return the row maxima and sums.

    One loop per step over all rows (maxima, then exponentials, then sums)
    rather than all steps per row: the exponential loop then runs without
    the reductions inside it.
    """
    n, k = z.shape
    mx = np.empty(n, z.dtype)
    for i in range(n):
        m = z[i, 0]
        for j in range(1, k):
            if z[i, j] > m:
                m = z[i, j]
        mx[i] = m
    for i in range(n):
        m = mx[i]
        for j in range(k):
            e[i, j] = _exp(z[i, j] - m)
    total = np.empty(n, z.dtype)
    for i in range(n):
        total[i] = _row_sum(e, i)
    return mx, total


# fastmath "reassoc" (kept to this function, which numba does not inline, so
# LLVM keeps the flag on its own instructions) lets the sum run as vector
# partial sums; a strict left-to-right sum waits on each addition's latency,
# 4 cycles per element. Every kernel here sums through it, so they agree.
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_sum(e, i):
    t = e.dtype.type(0)
    for j in range(e.shape[1]):
        t += e[i, j]
    return t


@njit(cache=True, nogil=True, error_model="numpy")
def softmax_rows(z, out):
    """``out = softmax(z)`` over the last axis of a 2-D array."""
    _, total = _shifted_exp(z, out)
    for i in range(z.shape[0]):
        t = total[i]
        for j in range(z.shape[1]):
            out[i, j] = out[i, j] / t


@njit(cache=True, nogil=True, error_model="numpy")
def _ce_rows(labels, z, e, out, grad):
    """Given ``e = exp(z - max)`` (:func:`_shifted_exp`), write softmax into ``out`` (size 0: skip) and dL/dz into ``grad``; return the loss."""
    n, k = z.shape
    mx, total = _shifted_exp(z, e)
    value = 0.0
    for i in range(n):
        value += np.log(total[i]) - (z[i, labels[i]] - mx[i])
    # n in z's dtype: a float32 division (as NumPy's ``e /= n``), which
    # vectorizes twice as wide as numba's default float64 one, same result
    nf = z.dtype.type(n)
    for i in range(n):
        t = total[i]
        for j in range(k):
            grad[i, j] = e[i, j] / t
        if out.size:
            for j in range(k):
                out[i, j] = grad[i, j]
        grad[i, labels[i]] -= 1
        for j in range(k):
            grad[i, j] = grad[i, j] / nf
    return value / n


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
    return _ce_rows(labels, z, grad, grad[:0, :0], grad)


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
    return _ce_rows(labels, z, grad, out, grad)
