"""Loss values and their gradients (pure functions, mean over the batch).

Shapes: ``p`` (or logits ``z``) is ``(N, K)``; ``y`` is ``(N, K)``, or ``(N,)``
integer class indices for the sparse loss. Every loss is the mean over the
``N`` samples of a per-sample value, so each gradient carries a ``1/N``
(the categorical ones take any rank ``(N, ..., K)`` and average over the
``M = size / K`` values).

======================  =====================================  ================================
loss                    per-sample value                       gradient
======================  =====================================  ================================
mean squared error      mean_k (p_k - y_k)^2                   2 (p - y) / (N K)
binary CE, probs        -mean_k [y log p + (1-y) log(1-p)]     (p - y) / (p (1-p) N K)
binary CE, logits       mean_k [max(z,0) - z y + log(1+e^-|z|)]   (sigmoid(z) - y) / (N K)
categorical CE, probs   -sum_k y_k log q_k, q = p / sum_k p_k  (dq - sum_k dq_k q_k) / (S N), dq = -y / q
categorical CE, logits  logsumexp(z) - sum_k y_k z_k           (softmax(z) sum_k y_k - y) / N
sparse CE, logits       logsumexp(z) - z_y                     (softmax(z) - onehot(y)) / N
sparse CE, probs        -log q_y, q = p / sum_k p_k            as categorical CE, probs
======================  =====================================  ================================

The logits forms are the fused, numerically stable ones: they never take
``log`` of a probability that underflowed to 0 and their gradient is bounded.
Probability inputs are clipped to ``[eps, 1 - eps]`` with ``eps = 1e-7`` as
in Keras (the gradient is 0 where clipping is active). As Keras does, the
categorical losses first divide probabilities by their sum over the classes
``S`` (rows that do not sum to 1, e.g. the output of a layer other than
softmax, are normalized); for a softmax output ``S`` is 1 to rounding.
"""

from __future__ import annotations

import numpy as np

from . import _backend
from .activations import _nbsm, log_softmax, sigmoid, small_rows, softmax

EPSILON = 1e-7
_EMPTY = np.empty(0)


def mse(y, p):
    d = p - y
    return float(np.mean(d * d))


def mse_grad(y, p):
    return (2.0 / p.size) * (p - y)


def _clip(p):
    return np.clip(p, EPSILON, 1.0 - EPSILON)


def binary_crossentropy(y, p):
    pc = _clip(p)
    return float(-np.mean(y * np.log(pc) + (1.0 - y) * np.log1p(-pc)))


def binary_crossentropy_grad(y, p):
    pc = _clip(p)
    g = (pc - y) / (pc * (1.0 - pc) * p.size)
    return np.where((p > EPSILON) & (p < 1.0 - EPSILON), g, 0.0).astype(p.dtype, copy=False)


def binary_crossentropy_logits(y, z):
    # max(z, 0) - z y + log(1 + exp(-|z|)) is log(1 + e^z) - z y without overflow
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def binary_crossentropy_logits_grad(y, z):
    return (sigmoid(z) - y) / z.size


def categorical_crossentropy(y, p):
    m = p.size // p.shape[-1]
    q = p / p.sum(axis=-1, keepdims=True)
    return float(-np.sum(y * np.log(_clip(q))) / m)


def categorical_crossentropy_grad(y, p):
    m = p.size // p.shape[-1]
    s = p.sum(axis=-1, keepdims=True)
    q = p / s
    # dL/dq (0 where clipping is active), then through q = p / S: dq_k/dp_j = (delta_kj - q_k) / S
    dq = np.where((q > EPSILON) & (q < 1.0 - EPSILON), -y / _clip(q), 0.0)
    g = (dq - np.sum(dq * q, axis=-1, keepdims=True)) / (s * m)
    return g.astype(p.dtype, copy=False)


def categorical_crossentropy_logits(y, z):
    m = z.size // z.shape[-1]
    return float(-np.sum(y * log_softmax(z)) / m)


def categorical_crossentropy_logits_grad(y, z):
    m = z.size // z.shape[-1]
    return (softmax(z) * y.sum(axis=-1, keepdims=True) - y) / m


def _sparse_ce_small(labels, z):
    """``(value, grad)`` from the numba row kernel, or None where it does not apply.

    All three sparse-from-logits functions go through it, so they give the
    same numbers whichever path runs.
    """
    if small_rows(z) and labels.dtype == np.intp and labels.shape == z.shape[:1]:
        grad = np.empty_like(z)
        value = _nbsm.sparse_ce_logits(labels, z, grad)
        if value == value:  # NaN: a label out of range (the NumPy code raises) or NaN logits
            return float(value), grad
    return None


def sparse_categorical_crossentropy_logits(labels, z):
    small = _sparse_ce_small(labels, z)
    if small is not None:
        return small[0]
    n = z.shape[0]
    ls = log_softmax(z)
    return float(-ls[np.arange(n), labels].sum() / n)


def sparse_categorical_crossentropy_logits_grad(labels, z):
    small = _sparse_ce_small(labels, z)
    if small is not None:
        return small[1]
    n = z.shape[0]
    g = softmax(z)
    g[np.arange(n), labels] -= 1.0
    g /= n
    return g


def sparse_categorical_crossentropy_logits_value_and_grad(labels, z):
    """Both of the two functions above from one ``exp`` of the shifted logits.

    The same operations in the same order, so the same numbers: the training
    step needs both, and on a small output layer each NumPy call counts.
    """
    small = _sparse_ce_small(labels, z)
    if small is not None:
        return small
    n = z.shape[0]
    rows = np.arange(n)
    s = z - z.max(axis=-1, keepdims=True)
    e = np.exp(s)
    total = e.sum(axis=-1, keepdims=True)
    value = float(-(s[rows, labels] - np.log(total)[:, 0]).sum() / n)
    e /= total
    e[rows, labels] -= 1.0
    e /= n
    return value, e


def dense_softmax_sparse_ce(labels, z, bias, grad):
    """A softmax output layer's last steps and its sparse cross-entropy, in one pass per row.

    ``z`` holds the logits before the bias (``x W``); the bias (None: no bias)
    is added to it in place, ``grad`` receives dL/dz (as
    :func:`sparse_categorical_crossentropy_logits_value_and_grad`) and the
    result is ``(loss, softmax(z))``, the numbers the layer's forward pass
    and that function give. Returns None, having written at most the bias
    into ``z``, where the one-pass kernel does not take these logits (no
    numba, a size NumPy's calls handle better, :func:`small_rows`), a label
    is out of range or the logits hold NaN: the caller then takes the
    general path from scratch.
    """
    if not (small_rows(z) and labels.dtype == np.intp and labels.shape == z.shape[:1]):
        return None
    return dense_softmax_sparse_ce_checked(labels, z, bias, grad)


def one_pass_shape(z) -> bool:
    """Whether :func:`dense_softmax_sparse_ce`'s one-pass kernel suits logits of ``z``'s shape and
    dtype, numba's switch aside: what a layer may decide once per workspace (:func:`small_rows`
    less the checks that change from call to call)."""
    return _nbsm is not None and z.size > 0 and _nbsm.takes(*z.shape) and (z.dtype == np.float32 or z.dtype == np.float64)


def dense_softmax_sparse_ce_checked(labels, z, bias, grad):
    """:func:`dense_softmax_sparse_ce` for a caller that has checked what does not change between its
    steps: :func:`one_pass_shape` for ``z`` (C-contiguous), ``labels`` intp with one per row of
    ``z``, ``bias`` None or C-contiguous of ``z``'s dtype. The same numbers; None where numba is
    switched off or a label is out of range (the caller then takes the general path)."""
    if not _backend.numba_enabled():
        return None
    out = np.empty_like(z)
    value = _nbsm.bias_softmax_sparse_ce(labels, z, _EMPTY if bias is None else bias, out, grad)
    if value != value:
        return None
    return float(value), out


def sparse_categorical_crossentropy(labels, p):
    n = p.shape[0]
    q = p[np.arange(n), labels] / p.sum(axis=-1)
    return float(-np.log(_clip(q)).sum() / n)


def sparse_categorical_crossentropy_grad(labels, p):
    n = p.shape[0]
    rows = np.arange(n)
    s = p.sum(axis=-1)
    q = p[rows, labels] / s
    # -log q_y with q = p / S: d/dp_j = (dq_y) (delta_jy - q_y) / S, dq_y = -1 / q_y (0 where clipped)
    dq = np.where((q > EPSILON) & (q < 1.0 - EPSILON), -1.0 / _clip(q), 0.0)
    g = np.broadcast_to((-dq * q / (s * n))[:, None], p.shape).astype(p.dtype)
    g[rows, labels] += (dq / (s * n)).astype(p.dtype)
    return g
