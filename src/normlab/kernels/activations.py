"""Elementwise activations and their derivatives (pure functions).

Each activation is a pair ``forward(z) -> a`` and ``backward(da, z, a) -> dz``
where ``dz = da * a'(z)``; the backward pass receives both the input ``z`` and
the output ``a`` so that each derivative uses whichever is cheaper:

==============  =========================================  ==========================
name            a(z)                                       a'(z)
==============  =========================================  ==========================
linear          z                                          1
sigmoid         1 / (1 + exp(-z)) = (tanh(z/2) + 1) / 2    a (1 - a)
tanh            tanh(z)                                    1 - a^2
relu            max(z, 0)                                  [z > 0]
leaky_relu      z if z > 0 else s z   (s = 0.2, Keras)     1 or s
elu             z if z > 0 else alpha (exp(z) - 1)         1 or a + alpha
selu            lambda * elu_alpha(z)                      lambda or a + lambda alpha
gelu            z Phi(z)  (exact, erf form)                Phi(z) + z phi(z)
softmax         exp(z_i) / sum_j exp(z_j)  (last axis)     a * (da - sum(da * a))
==============  =========================================  ==========================

SELU constants (Klambauer et al. 2017): ``alpha = 1.6732632423543772``,
``lambda = 1.0507009873554805``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from normlab.kernels import _backend, _threads

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from normlab.kernels import _expf_numba as _nbx
    from normlab.kernels import _fused_numba as _nb
    from normlab.kernels import _softmax_numba as _nbsm
else:  # pragma: no cover
    _nb = _nbsm = _nbx = None

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LEAKY_RELU_SLOPE = 0.2

try:  # scipy's erf is exact and vectorised; it is optional for the core
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - exercised only without scipy
    _erf_py = np.frompyfunc(math.erf, 1, 1)

    def _erf(x):
        return _erf_py(x).astype(x.dtype)


class ActivationKernel(NamedTuple):
    """A named forward/backward pair."""

    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    backward: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def linear(z):
    return z


def linear_backward(da, z, a):
    return da


def sigmoid(z):
    if z.dtype == np.float32 and z.flags.c_contiguous and _backend.numba_enabled():
        # one vectorized pass, within 3 ulp (normlab.kernels._expf_numba); the
        # fused batch norm + sigmoid kernel computes the same numbers
        a = np.empty_like(z)
        _threads.elementwise(_nbx.sigmoid_array, (z.reshape(-1), a.reshape(-1)))
        return a
    # tanh is about twice as fast as exp in NumPy's float32 loops and never overflows
    a = np.multiply(z, 0.5)
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def _fusable(da, a) -> bool:
    """True when the numba kernels may take ``da`` and ``a`` as flat views."""
    # written out rather than with all(...): this runs once per layer and step
    return (
        _backend.numba_enabled()
        and (da.dtype == np.float32 or da.dtype == np.float64)
        and a.dtype == da.dtype
        and a.shape == da.shape
        and da.flags.c_contiguous
        and a.flags.c_contiguous
    )


def sigmoid_backward(da, z, a):
    if _fusable(da, a):
        out = np.empty_like(da)
        _threads.elementwise(_nb.sigmoid_backward, (da.ravel(), a.ravel(), out.ravel()), da.dtype.type(1))
        return out
    return da * a * (1.0 - a)


def tanh(z):
    return np.tanh(z)


def tanh_backward(da, z, a):
    if _fusable(da, a):
        out = np.empty_like(da)
        _threads.elementwise(_nb.tanh_backward, (da.ravel(), a.ravel(), out.ravel()), da.dtype.type(1))
        return out
    return da * (1.0 - a * a)


def relu(z):
    return np.maximum(z, 0)


def relu_backward(da, z, a):
    if _fusable(da, z):
        out = np.empty_like(da)
        _threads.elementwise(_nb.relu_backward, (da.ravel(), z.ravel(), out.ravel()), da.dtype.type(0))
        return out
    return da * (z > 0)


def leaky_relu(z, negative_slope=LEAKY_RELU_SLOPE):
    return np.where(z > 0, z, z * negative_slope)


def leaky_relu_backward(da, z, a, negative_slope=LEAKY_RELU_SLOPE):
    return np.where(z > 0, da, da * negative_slope)


def elu(z, alpha=1.0):
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))


def elu_backward(da, z, a, alpha=1.0):
    return np.where(z > 0, da, da * (a + alpha))


def selu(z):
    return SELU_SCALE * elu(z, SELU_ALPHA)


def selu_backward(da, z, a):
    return np.where(z > 0, SELU_SCALE * da, da * (a + SELU_SCALE * SELU_ALPHA))


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu(z):
    return 0.5 * z * (1.0 + _erf(z * _INV_SQRT2))


def gelu_backward(da, z, a):
    cdf = 0.5 * (1.0 + _erf(z * _INV_SQRT2))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * z * z)
    return da * (cdf + z * pdf)


def small_rows(z) -> bool:
    """True when the numba row kernels of :mod:`normlab.kernels._softmax_numba` should take ``z``."""
    # numba_enabled() first: without numba, _nbsm is None
    return (
        _backend.numba_enabled()
        and z.ndim == 2
        and z.size > 0
        and _nbsm.takes(*z.shape)
        and (z.dtype == np.float32 or z.dtype == np.float64)
        and z.flags.c_contiguous
    )


def softmax(z, axis=-1):
    if (axis == -1 or axis == 1) and small_rows(z):
        out = np.empty_like(z)
        _nbsm.softmax_rows(z, out)
        return out
    # subtracting the max leaves the result unchanged and prevents overflow
    e = z - z.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_backward(da, z, a, axis=-1):
    return a * (da - (da * a).sum(axis=axis, keepdims=True))


def log_softmax(z, axis=-1):
    """``z - logsumexp(z)``, stable for any magnitude."""
    s = z - z.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


KERNELS: dict[str, ActivationKernel] = {
    k.name: k
    for k in (
        ActivationKernel("linear", linear, linear_backward),
        ActivationKernel("sigmoid", sigmoid, sigmoid_backward),
        ActivationKernel("tanh", tanh, tanh_backward),
        ActivationKernel("relu", relu, relu_backward),
        ActivationKernel("leaky_relu", leaky_relu, leaky_relu_backward),
        ActivationKernel("elu", elu, elu_backward),
        ActivationKernel("selu", selu, selu_backward),
        ActivationKernel("gelu", gelu, gelu_backward),
        ActivationKernel("softmax", softmax, softmax_backward),
    )
}
