"""Activations: Keras 3's activation functions, and the kernels layers train with.

``normlab.activations.relu(x, negative_slope=0.0, max_value=None,
threshold=0.0)`` and the rest are Keras's functions, on NumPy arrays, with
Keras's arguments and formulas (the forward pass only). ``get(name)``
returns the forward/backward kernel pair a layer uses
(:mod:`normlab.kernels.activations`, where the derivatives are); the names a
layer accepts are :func:`names` (``None`` means linear).
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import activations as _k
from .kernels.activations import KERNELS, ActivationKernel

__all__ = [
    "get", "names",
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish",
    "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid",
    "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax",
    "squareplus", "swish", "tanh", "tanh_shrink", "threshold",
]


def _x(x):
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _axes(x, axis):
    return tuple(a % x.ndim for a in axis) if isinstance(axis, (tuple, list)) else axis


def names() -> list[str]:
    """The activations a layer accepts by name (those with a derivative kernel)."""
    return sorted(KERNELS)


def get(identifier: str | None) -> ActivationKernel:
    """Return the kernel pair for ``identifier`` (a name or ``None`` for linear)."""
    if identifier is None:
        return KERNELS["linear"]
    if isinstance(identifier, ActivationKernel):
        return identifier
    if not isinstance(identifier, str) or identifier not in KERNELS:
        raise ValueError(
            f"Unknown activation {identifier!r}. Known names: {', '.join(names())}."
        )
    return KERNELS[identifier]


# ---------------------------------------------------------------- the ReLU family
def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's ``relu``: ``x`` above ``threshold`` (else 0), clipped at ``max_value``; below it,
    ``negative_slope * (x - threshold)`` when ``negative_slope`` is not 0."""
    x = _x(x)
    if negative_slope and max_value is None and threshold == 0:
        return leaky_relu(x, negative_slope)
    negative = np.maximum(threshold - x, 0.0) if negative_slope else 0.0
    out = x * (x > threshold) if threshold != 0 else np.maximum(x, 0.0)
    if max_value is not None:
        out = np.clip(out, 0.0, max_value)
    if negative_slope:
        out = out - negative_slope * negative
    return out.astype(x.dtype, copy=False)


def leaky_relu(x, negative_slope=0.2):
    """``x`` for ``x >= 0``, ``negative_slope * x`` below."""
    x = _x(x)
    return np.where(x >= 0, x, negative_slope * x).astype(x.dtype, copy=False)


def relu6(x):
    """``min(max(x, 0), 6)``."""
    x = _x(x)
    return np.clip(x, 0.0, 6.0).astype(x.dtype, copy=False)


def elu(x, alpha=1.0):
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` below."""
    x = _x(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))).astype(x.dtype, copy=False)


def selu(x):
    """``scale * elu(x, alpha)`` with Klambauer et al.'s constants."""
    return _k.selu(_x(x))


def celu(x, alpha=1.0):
    """``max(x, 0) + alpha (exp(min(x, 0) / alpha) - 1)``."""
    x = _x(x)
    return (np.maximum(x, 0.0) + alpha * np.expm1(np.minimum(x, 0.0) / alpha)).astype(x.dtype, copy=False)


def gelu(x, approximate=False):
    """``x Phi(x)``; with ``approximate=True`` the tanh form
    ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``."""
    x = _x(x)
    if approximate:
        return (0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))).astype(x.dtype)
    return _k.gelu(x)


# ---------------------------------------------------------------- smooth and sigmoid-like
def sigmoid(x):
    """``1 / (1 + exp(-x))``, stable for any magnitude."""
    return _k.sigmoid(_x(x))


def tanh(x):
    return np.tanh(_x(x))


def linear(x):
    """The identity."""
    return x


def exponential(x):
    """``exp(x)`` (inf where it overflows, as Keras)."""
    with np.errstate(over="ignore"):
        return np.exp(_x(x))


def softplus(x):
    """``log(1 + exp(x))``, without overflow."""
    x = _x(x)
    return np.logaddexp(0.0, x).astype(x.dtype, copy=False)


def softsign(x):
    """``x / (1 + |x|)``."""
    x = _x(x)
    return x / (1.0 + np.abs(x))


def silu(x):
    """``x sigmoid(x)`` (also called swish)."""
    x = _x(x)
    return x * _k.sigmoid(x)


swish = silu


def log_sigmoid(x):
    """``log(sigmoid(x)) = -softplus(-x)``."""
    x = _x(x)
    return -np.logaddexp(0.0, -x).astype(x.dtype, copy=False)


def mish(x):
    """``x tanh(softplus(x))``."""
    x = _x(x)
    return x * np.tanh(np.logaddexp(0.0, x)).astype(x.dtype, copy=False)


def squareplus(x, b=4):
    """``(x + sqrt(x^2 + b)) / 2``."""
    x = _x(x)
    return ((x + np.sqrt(x * x + b)) / 2.0).astype(x.dtype, copy=False)


def hard_sigmoid(x):
    """``clip(x / 6 + 1 / 2, 0, 1)``."""
    x = _x(x)
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0).astype(x.dtype, copy=False)


def hard_silu(x):
    """``x hard_sigmoid(x)`` (also called hard swish)."""
    x = _x(x)
    return x * hard_sigmoid(x)


hard_swish = hard_silu


def hard_tanh(x):
    """``clip(x, -1, 1)``."""
    x = _x(x)
    return np.clip(x, -1.0, 1.0).astype(x.dtype, copy=False)


def sparse_sigmoid(x):
    """0 for ``x <= -1``, 1 for ``x >= 1``, ``(x + 1) / 2`` between."""
    x = _x(x)
    return np.clip(0.5 * (x + 1.0), 0.0, 1.0).astype(x.dtype, copy=False)


def sparse_plus(x):
    """0 for ``x <= -1``, ``x`` for ``x >= 1``, ``(x + 1)^2 / 4`` between."""
    x = _x(x)
    return np.where(x <= -1, 0.0, np.where(x >= 1, x, (x + 1.0) ** 2 / 4.0)).astype(x.dtype, copy=False)


# ---------------------------------------------------------------- shrinkage and thresholds
def soft_shrink(x, threshold=0.5):
    """``x - threshold`` above it, ``x + threshold`` below ``-threshold``, 0 between."""
    x = _x(x)
    return np.where(x > threshold, x - threshold, np.where(x < -threshold, x + threshold, 0.0)).astype(x.dtype)


def hard_shrink(x, threshold=0.5):
    """``x`` where ``|x| > threshold``, else 0."""
    x = _x(x)
    return np.where(np.abs(x) > threshold, x, 0.0).astype(x.dtype, copy=False)


def tanh_shrink(x):
    """``x - tanh(x)``."""
    x = _x(x)
    return x - np.tanh(x)


def threshold(x, threshold, default_value):
    """``x`` where ``x > threshold``, else ``default_value``."""
    x = _x(x)
    return np.where(x > threshold, x, default_value).astype(x.dtype, copy=False)


# ---------------------------------------------------------------- over an axis
def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` over ``axis`` (an int or a tuple of axes)."""
    x = _x(x)
    ax = _axes(x, axis)
    e = np.exp(x - x.max(axis=ax, keepdims=True))
    return e / e.sum(axis=ax, keepdims=True)


def log_softmax(x, axis=-1):
    """``x - logsumexp(x)`` over ``axis`` (an int or a tuple of axes), stable for any magnitude."""
    x = _x(x)
    ax = _axes(x, axis)
    s = x - x.max(axis=ax, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=ax, keepdims=True))


def glu(x, axis=-1):
    """``a sigmoid(b)`` with ``a, b`` the two halves of ``x`` along ``axis``."""
    x = _x(x)
    a, b = np.split(x, 2, axis=axis)
    return a * _k.sigmoid(b)


def sparsemax(x, axis=-1):
    """The Euclidean projection of ``x`` onto the probability simplex along ``axis`` (Martins and Astudillo, 2016).

    ``max(x - tau, 0)`` with ``tau`` chosen so that the result sums to 1:
    sparse probabilities, exactly 0 for the low scores.
    """
    x = _x(x)
    z = np.moveaxis(x, axis, -1)
    srt = -np.sort(-z, axis=-1)
    k = np.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    cum = np.cumsum(srt, axis=-1)
    support = 1.0 + k * srt > cum
    k_z = support.sum(axis=-1, keepdims=True)
    tau = (np.take_along_axis(cum, k_z - 1, axis=-1) - 1.0) / k_z
    return np.moveaxis(np.maximum(z - tau, 0.0), -1, axis).astype(x.dtype, copy=False)
