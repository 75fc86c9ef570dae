"""Dropout and noise injection: random masks, forward and backward (pure functions).

Every noise layer applies, in training, an elementwise affine map whose
coefficients are drawn afresh at each forward call::

    y = x * s + t              =>      dL/dx = dL/dy * s                    (1)

``s`` and ``t`` broadcast against ``x`` (a ``noise_shape`` with ones shares one
draw along those axes) and the backward pass reuses the ``s`` of the forward
call. At inference every layer is the identity, which is the expectation of
(1) over the noise for all but AlphaDropout (whose expectation is exact only
on mean-0, variance-1 inputs).

=================  ===========================================  =======================
layer              s                                            t
=================  ===========================================  =======================
Dropout            m / (1 - rate),  m ~ Bernoulli(1 - rate)     0
SpatialDropout2D   same, one ``m`` per (sample, channel)        0
AlphaDropout       a m                                          a alpha' (1 - m) + b
GaussianNoise      1                                            n ~ N(0, stddev^2)
GaussianDropout    g ~ N(1, rate / (1 - rate))                  0
=================  ===========================================  =======================

Inverted dropout and the notes' weight scaling. The notes keep a unit with
probability ``p`` (``p = 1 - rate``) and scale the *following* weights at test
time, ``W_test = p W``: the next layer sees ``W (m * h)`` in training, whose
expectation over ``m`` is ``p W h = W_test h``. Inverted dropout divides by
``p`` in training instead, ``h~ = m * h / p`` with ``E[h~] = h``, so the test
network uses the weights unchanged. The two are the same family of networks:
a network trained with inverted dropout and weights ``W`` computes in training
exactly what the notes' network with weights ``W / p`` computes, and at test
time the notes' ``p (W / p) = W``. Only the parametrization differs (by the
constant ``p``), and no rescaling is needed at inference.
``Dropout(rate, scaling="inference")`` is the notes' form (``s = m`` in
training, ``y = p x`` at inference, :func:`dropout_inference`); scaling the
layer's output by ``p`` is scaling the next layer's weights, ``W (p h) =
(p W) h``, with the bias left alone, as in the notes.

AlphaDropout (Klambauer et al. 2017). For SELU activations, with
``lambda = 1.0507..``, ``alpha = 1.6733..``, dropped units are set to the
negative saturation value ``alpha' = -lambda alpha`` instead of 0. With
``q = 1 - rate`` and inputs of mean 0 and variance 1,
``x~ = m x + (1 - m) alpha'`` has mean ``rate alpha'`` and variance
``q (1 + rate alpha'^2)``; the affine correction::

    a = (q (1 + rate alpha'^2))^(-1/2),     b = -a rate alpha'

restores mean 0 and variance 1: ``y = a x~ + b = (a m) x + (a alpha' (1 - m) + b)``.

GaussianDropout multiplies by ``g ~ N(1, rate / (1 - rate))``: the same mean
and variance as the multiplicative factor ``m / (1 - rate)`` of dropout.

NoisyDense (Fortunato et al. 2017, "Noisy networks for exploration"). Each
weight is ``w = mu + sigma * eps`` with learnable ``mu`` and ``sigma``. With
factorized Gaussian noise, for ``n_in`` inputs and ``n_out`` units::

    f(e) = sign(e) sqrt(|e|)
    eps_kernel[i, j] = f(e_in[i]) f(e_out[j]),   eps_bias[j] = f(e_out[j]),
    e_in ~ N(0, I_n_in),  e_out ~ N(0, I_n_out)

(``n_in + n_out`` draws instead of ``n_in n_out + n_out``). Independent noise
draws every ``eps`` from N(0, 1). With ``z = x W + b`` and the dense backward
``dW = X^T dZ``, ``db = sum_i dZ_i``, ``dX = dZ W^T``::

    dmu_kernel = dW      dsigma_kernel = dW * eps_kernel
    dmu_bias   = db      dsigma_bias   = db * eps_bias
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activations import SELU_ALPHA, SELU_SCALE
from .dense import dense_backward, dense_forward

__all__ = [
    "NoiseCache",
    "resolve_noise_shape",
    "dropout_mask",
    "dropout_inference",
    "alpha_dropout_coefficients",
    "gaussian_noise",
    "gaussian_dropout_factor",
    "noise_forward",
    "noise_backward",
    "scale_noise",
    "factorized_noise",
    "independent_noise",
    "NoisyDenseCache",
    "noisy_dense_forward",
    "noisy_dense_backward",
]

#: ``alpha' = -lambda alpha``, the value SELU saturates to for large negative inputs
ALPHA_PRIME = -SELU_SCALE * SELU_ALPHA


class NoiseCache(NamedTuple):
    """The multiplicative factor ``s`` of (1); ``None`` means 1 (additive noise)."""

    scale: np.ndarray | None


def resolve_noise_shape(input_shape: tuple, noise_shape: tuple | None) -> tuple:
    """Concrete noise shape: ``None`` entries take the input's size (Keras).

    Each entry must be 1 (one draw shared along that axis) or the input's size.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if noise_shape is None:
        return input_shape
    if len(noise_shape) != len(input_shape):
        raise ValueError(
            f"noise_shape {tuple(noise_shape)} must have the rank of the input shape {input_shape}."
        )
    out = tuple(d if n is None else int(n) for n, d in zip(noise_shape, input_shape))
    for n, d in zip(out, input_shape):
        if n != 1 and n != d:
            raise ValueError(
                f"noise_shape {tuple(noise_shape)} does not broadcast to the input shape "
                f"{input_shape}: each entry must be None, 1 or the input's size."
            )
    return out


def dropout_mask(rng: np.random.Generator, shape: tuple, *, rate: float, dtype, inverted: bool = True) -> np.ndarray:
    """``s = m / (1 - rate)`` (``inverted``) or ``s = m``, with ``m = [u >= rate]``, ``u ~ U[0, 1)``.

    ``m`` keeps an entry with probability ``1 - rate``; both forms draw the
    same ``m`` from the same generator state.
    """
    keep = rng.random(shape, dtype=np.dtype(dtype)) >= rate
    if not inverted:
        return keep.astype(dtype)
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - rate), dtype=dtype)


def dropout_inference(x: np.ndarray, *, rate: float, scaling: str) -> np.ndarray:
    """Dropout at inference: ``x`` (``scaling="inverted"``) or ``(1 - rate) x`` (``"inference"``, the notes)."""
    if scaling == "inverted":
        return x
    return x * np.asarray(1.0 - rate, dtype=x.dtype)


def alpha_dropout_coefficients(
    rng: np.random.Generator, shape: tuple, *, rate: float, dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(s, t) = (a m, a alpha' (1 - m) + b)`` of AlphaDropout."""
    keep = (rng.random(shape, dtype=np.dtype(dtype)) >= rate).astype(dtype)
    a = ((1.0 - rate) * (1.0 + rate * ALPHA_PRIME**2)) ** -0.5
    b = -a * rate * ALPHA_PRIME
    s = keep * np.asarray(a, dtype=dtype)
    t = (1.0 - keep) * np.asarray(a * ALPHA_PRIME, dtype=dtype)
    t += np.asarray(b, dtype=dtype)
    return s, t


def gaussian_noise(rng: np.random.Generator, shape: tuple, *, stddev: float, dtype) -> np.ndarray:
    """``t ~ N(0, stddev^2)``."""
    n = rng.standard_normal(shape, dtype=np.dtype(dtype))
    n *= np.asarray(stddev, dtype=dtype)
    return n


def gaussian_dropout_factor(rng: np.random.Generator, shape: tuple, *, rate: float, dtype) -> np.ndarray:
    """``s ~ N(1, rate / (1 - rate))``."""
    g = gaussian_noise(rng, shape, stddev=np.sqrt(rate / (1.0 - rate)), dtype=dtype)
    g += np.asarray(1.0, dtype=dtype)
    return g


def noise_forward(
    x: np.ndarray, *, scale: np.ndarray | None = None, shift: np.ndarray | None = None
) -> tuple[np.ndarray, NoiseCache]:
    """``y = x * scale + shift`` (either may be ``None``); returns ``(y, cache)``."""
    y = x * scale if scale is not None else x.copy()
    if shift is not None:
        y += shift
    return y, NoiseCache(scale)


def noise_backward(dy: np.ndarray, cache: NoiseCache) -> np.ndarray:
    """``dx = dy * scale`` (equation (1))."""
    return dy * cache.scale if cache.scale is not None else dy


# ------------------------------------------------------------------ NoisyDense
def scale_noise(e: np.ndarray) -> np.ndarray:
    """``f(e) = sign(e) sqrt(|e|)``."""
    return np.sign(e) * np.sqrt(np.abs(e))


def factorized_noise(
    rng: np.random.Generator, n_in: int, n_out: int, *, dtype
) -> tuple[np.ndarray, np.ndarray]:
    """``(eps_kernel, eps_bias) = (f(e_in) f(e_out)^T, f(e_out))``; ``e_in`` is drawn first."""
    dt = np.dtype(dtype)
    e_in = scale_noise(rng.standard_normal(n_in, dtype=dt))
    e_out = scale_noise(rng.standard_normal(n_out, dtype=dt))
    return np.multiply.outer(e_in, e_out), e_out


def independent_noise(
    rng: np.random.Generator, n_in: int, n_out: int, *, dtype
) -> tuple[np.ndarray, np.ndarray]:
    """``(eps_kernel, eps_bias)``, every entry N(0, 1); the kernel's are drawn first."""
    dt = np.dtype(dtype)
    return rng.standard_normal((n_in, n_out), dtype=dt), rng.standard_normal(n_out, dtype=dt)


class NoisyDenseCache(NamedTuple):
    """What :func:`noisy_dense_backward` needs."""

    x: np.ndarray
    kernel: np.ndarray
    eps_kernel: np.ndarray | None
    eps_bias: np.ndarray | None


def noisy_dense_forward(
    x: np.ndarray,
    mu_kernel: np.ndarray,
    sigma_kernel: np.ndarray,
    mu_bias: np.ndarray | None,
    sigma_bias: np.ndarray | None,
    *,
    eps_kernel: np.ndarray | None,
    eps_bias: np.ndarray | None,
) -> tuple[np.ndarray, NoisyDenseCache]:
    """``z = x (mu_k + sigma_k eps_k) + (mu_b + sigma_b eps_b)``; ``eps`` of ``None``: no noise."""
    kernel = mu_kernel if eps_kernel is None else mu_kernel + sigma_kernel * eps_kernel
    bias = mu_bias
    if mu_bias is not None and eps_bias is not None:
        bias = mu_bias + sigma_bias * eps_bias
    return dense_forward(x, kernel, bias), NoisyDenseCache(x, kernel, eps_kernel, eps_bias)


def noisy_dense_backward(
    dz: np.ndarray, cache: NoisyDenseCache, *, need_dx: bool = True, need_param_grads: bool = True
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Return ``(dx, grads)`` with ``grads`` keyed ``mu_kernel``, ``sigma_kernel``, ``mu_bias``, ``sigma_bias``.

    ``grads`` is empty when ``need_param_grads`` is false and holds all four
    keys otherwise (a layer without bias ignores the last two); ``sigma``'s
    gradient is zero for a forward call without noise.
    """
    grads: dict[str, np.ndarray] = {}
    if not need_param_grads:
        return (dz @ cache.kernel.T if need_dx else None), grads
    if need_dx:
        dx, dw, db = dense_backward(dz, cache.x, cache.kernel)
    else:  # the first layer of a model: skip dx = dZ W^T
        x2 = cache.x.reshape(-1, cache.x.shape[-1])
        dz2 = dz.reshape(-1, dz.shape[-1])
        dx, dw, db = None, x2.T @ dz2, dz2.sum(axis=0)
    grads["mu_kernel"] = dw
    grads["sigma_kernel"] = dw * cache.eps_kernel if cache.eps_kernel is not None else np.zeros_like(dw)
    grads["mu_bias"] = db
    grads["sigma_bias"] = db * cache.eps_bias if cache.eps_bias is not None else np.zeros_like(db)
    return dx, grads
