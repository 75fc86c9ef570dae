"""Normalization propagation (Arpit, Zhou, Kota and Govindaraju, ICML 2016): pure functions.

NormProp normalizes every hidden layer *without* batch statistics. It
normalizes the data once (each input feature to zero mean and unit
variance, with the statistics of the training set) and then propagates that
normalization through the layers with data-independent, analytic estimates
of each layer's mean and variance.

Pre-activation. For ``u = W x`` with ``E[x] = 0`` and ``Cov(x) = I``,
``E[u_i] = 0`` and ``Var(u_i) = ||W_i||^2`` (the paper's Theorem 1: the
covariance of ``u`` is close to the identity when the rows ``W_i`` have
unit norm and are incoherent). The paper therefore divides each
pre-activation by the norm of its weight row (its correction of the weight
norms), so that ``u_i = W_i^T x / ||W_i||_2`` has variance 1.

ReLU. If ``u_i ~ N(0, 1)``, ``ReLU(u_i)`` is a rectified Gaussian with::

    E[ReLU(u)]   = sqrt(1 / (2 pi))            ~ 0.39894
    Var[ReLU(u)] = (1/2) (1 - 1/pi)            ~ 0.34085

so subtracting the one and dividing by the square root of the other gives
the next layer an input of mean 0 and variance 1 again, with no statistics
computed from data. With the learnable scale ``gamma_i`` and shift
``beta_i`` the layer is the paper's equation::

    o_i = [ReLU(gamma_i W_i^T x / ||W_i||_2 + beta_i) - sqrt(1/(2 pi))] / sqrt((1/2)(1 - 1/pi))     (1)

Layout. normlab's kernel has shape ``(n_in, units)``: the paper's row
``W_i`` is column ``i`` here, and the norm is taken over the input axis.
A linear layer (no ReLU; the network's output) is
``o_i = gamma_i W_i^T x / ||W_i||_2 + beta_i``.

Initialization of gamma. The Jacobian of (1) with respect to ``x`` is
``J = (1/c) diag(gamma_i [z_i > 0]) W_hat`` with ``c = sqrt((1/2)(1 - 1/pi))``
and ``W_hat`` the unit-norm rows. With ``gamma = 1`` half the units are
active on average, so ``E[J J^T]_ii = (1/2) / c^2 = 1 / (1 - 1/pi)`` and the
singular values of ``J`` are about ``sqrt(1 / (1 - 1/pi)) ~ 1.21``: each layer
would amplify the backward signal by 1.21. The paper initializes
``gamma = 1/1.21`` to bring them back to 1; :data:`GAMMA_INIT` is that value.

Backward. With ``dz = do * [z > 0] / c`` (``dz = do`` when linear),
``w_hat = W / ||W||`` and per unit ``i`` (sums over the batch)::

    dgamma_i = sum_n dz_ni u_ni          dbeta_i = sum_n dz_ni
    du       = dz * gamma                dx      = du W_hat^T
    dW_hat   = x^T du                    dW_i    = (dW_hat_i - w_hat_i (w_hat_i . dW_hat_i)) / ||W_i||

(the last is the unit-norm projection of weight normalization,
:mod:`normlab.kernels.weightnorm`, with ``g = 1``: the gradient is
orthogonal to ``W_i``, so a step never changes the row's norm to first
order). The same formulas hold at inference: NormProp has no
training/inference difference and works with a batch of one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "RELU_MEAN",
    "RELU_VAR",
    "RELU_STD",
    "JACOBIAN_GAIN",
    "GAMMA_INIT",
    "NormPropCache",
    "normprop_forward",
    "normprop_backward",
    "rectified_gaussian_moments",
]

#: ``E[ReLU(u)]`` for ``u ~ N(0, 1)``: ``sqrt(1 / (2 pi))``
RELU_MEAN = math.sqrt(1.0 / (2.0 * math.pi))
#: ``Var[ReLU(u)]`` for ``u ~ N(0, 1)``: ``(1/2)(1 - 1/pi)``
RELU_VAR = 0.5 * (1.0 - 1.0 / math.pi)
RELU_STD = math.sqrt(RELU_VAR)
#: root-mean-square singular value of the Jacobian of (1) at ``gamma = 1``: ``sqrt(1 / (1 - 1/pi)) ~ 1.2113``
JACOBIAN_GAIN = math.sqrt(1.0 / (1.0 - 1.0 / math.pi))
#: the paper's initial ``gamma``: ``1 / 1.21`` (:data:`JACOBIAN_GAIN` rounded as the paper rounds it)
GAMMA_INIT = 1.0 / 1.21


class NormPropCache(NamedTuple):
    """What :func:`normprop_backward` needs."""

    x: np.ndarray  # input, any rank, features last
    w_hat: np.ndarray  # (n_in, units), unit-norm columns
    inv_norm: np.ndarray  # (1, units): 1 / ||W_i||
    gamma: np.ndarray  # (units,)
    u: np.ndarray  # x . w_hat, shape (..., units)
    z: np.ndarray  # gamma u + beta
    relu: bool


def normprop_forward(
    x: np.ndarray, kernel: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, *, relu: bool
) -> tuple[np.ndarray, NormPropCache]:
    """Equation (1) (``relu=True``) or its linear form; returns ``(o, cache)``.

    ``x`` has shape ``(..., n_in)``, ``kernel`` ``(n_in, units)``; ``beta``
    may be ``None`` (no shift). A column of zeros in ``kernel`` gives
    ``inf``/``nan``, as a zero vector has no direction.
    """
    acc = np.float64 if kernel.dtype.itemsize < 8 else None
    sq = np.sum(np.square(kernel), axis=0, keepdims=True, dtype=acc)
    inv_norm = (1.0 / np.sqrt(sq)).astype(kernel.dtype, copy=False)
    w_hat = kernel * inv_norm
    u = x @ w_hat
    z = u * gamma
    if beta is not None:
        z += beta
    if relu:
        o = np.maximum(z, 0)
        o -= np.asarray(RELU_MEAN, dtype=o.dtype)
        o *= np.asarray(1.0 / RELU_STD, dtype=o.dtype)
    else:
        o = z
    return o, NormPropCache(x, w_hat, inv_norm, gamma, u, z, relu)


def normprop_backward(
    do: np.ndarray, cache: NormPropCache, *, need_dx: bool = True, need_param_grads: bool = True
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Return ``(dx, grads)``; ``grads`` holds ``kernel``, ``gamma`` and ``beta`` (module docstring).

    ``dx`` is ``None`` when ``need_dx`` is false; ``grads`` is empty when
    ``need_param_grads`` is false.
    """
    c = cache
    if c.relu:
        dz = do * (c.z > 0)
        dz *= np.asarray(1.0 / RELU_STD, dtype=dz.dtype)
    else:
        dz = do
    du = dz * c.gamma
    dx = du @ c.w_hat.T if need_dx else None
    grads: dict[str, np.ndarray] = {}
    if need_param_grads:
        n_in, units = c.w_hat.shape
        dz2, u2 = dz.reshape(-1, units), c.u.reshape(-1, units)
        dw_hat = c.x.reshape(-1, n_in).T @ du.reshape(-1, units)
        dot = np.sum(dw_hat * c.w_hat, axis=0, keepdims=True)
        grads["kernel"] = (dw_hat - c.w_hat * dot) * c.inv_norm
        grads["gamma"] = np.sum(dz2 * u2, axis=0)
        grads["beta"] = dz2.sum(axis=0)
    return dx, grads


def rectified_gaussian_moments(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """``(E[ReLU(z)], Var[ReLU(z)])`` for ``z ~ N(mean, std^2)`` (elementwise, ``std > 0``).

    With ``a = mean / std``, ``Phi`` and ``phi`` the standard normal cdf and
    density: ``E = mean Phi(a) + std phi(a)`` and
    ``E[ReLU(z)^2] = (mean^2 + std^2) Phi(a) + mean std phi(a)``. At
    ``(0, 1)`` these are :data:`RELU_MEAN` and :data:`RELU_VAR`; elsewhere
    they show what the fixed constants of (1) ignore once ``gamma`` and
    ``beta`` move away from 1 and 0.
    """
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    a = mean / std
    phi = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    big_phi = 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(a / math.sqrt(2.0)))
    m1 = mean * big_phi + std * phi
    m2 = (mean * mean + std * std) * big_phi + mean * std * phi
    return m1, m2 - m1 * m1
