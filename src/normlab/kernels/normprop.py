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

Backward. ``gamma_i u_i = x . w_i`` with the effective kernel
``w_i = gamma_i w_hat_i``, ``w_hat_i = W_i / ||W_i||``: the layer is a dense
layer whose kernel is weight-normalized with length ``g = gamma``
(:mod:`normlab.kernels.weightnorm`). With ``dz = do * [z > 0] / c``
(``dz = do`` when linear) and sums over the batch::

    dx       = dz w^T                    dbeta_i  = sum_n dz_ni
    dw       = x^T dz                    dgamma_i = sum_n dz_ni u_ni = w_hat_i . dw_i
    dW_i     = (gamma_i / ||W_i||) (dw_i - w_hat_i dgamma_i)

``dW_i`` is orthogonal to ``W_i``: a step never changes the row's norm to
first order. The same formulas hold at inference: NormProp has no
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
    w: np.ndarray  # (gamma / c) w_hat: the effective kernel (c = RELU_STD, or 1 when linear)
    z: np.ndarray  # x . w + beta / c = (gamma u + beta) / c
    c: float


def normprop_forward(
    x: np.ndarray, kernel: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, *, relu: bool
) -> tuple[np.ndarray, NormPropCache]:
    """Equation (1) (``relu=True``) or its linear form; returns ``(o, cache)``.

    ``x`` has shape ``(..., n_in)``, ``kernel`` ``(n_in, units)``; ``beta``
    may be ``None`` (no shift). Since ``ReLU(t) / c = ReLU(t / c)`` for
    ``c > 0``, the scale ``gamma_i / c`` goes on the small kernel, not on the
    batch: ``o = ReLU(x . w + beta / c) - RELU_MEAN / c`` with
    ``w_i = (gamma_i / c) W_i / ||W_i||``. A column of zeros in ``kernel``
    gives ``inf``/``nan``, as a zero vector has no direction.
    """
    c = RELU_STD if relu else 1.0
    dt = kernel.dtype
    inv_norm = 1.0 / np.sqrt(np.einsum("ij,ij->j", kernel, kernel)[None, :])
    w_hat = kernel * inv_norm
    w = w_hat * (gamma * np.asarray(1.0 / c, dtype=dt))
    z = x @ w
    if beta is not None:
        z += beta * np.asarray(1.0 / c, dtype=dt)
    if relu:
        o = np.maximum(z, 0)
        o -= np.asarray(RELU_MEAN / c, dtype=o.dtype)
    else:
        o = z
    return o, NormPropCache(x, w_hat, inv_norm, gamma, w, z, c)


def normprop_backward(
    do: np.ndarray, cache: NormPropCache, *, need_dx: bool = True, need_param_grads: bool = True
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Return ``(dx, grads)``; ``grads`` holds ``kernel``, ``gamma`` and ``beta`` (module docstring).

    ``dx`` is ``None`` when ``need_dx`` is false; ``grads`` is empty when
    ``need_param_grads`` is false.
    """
    k = cache
    dz = do * (k.z > 0) if k.c != 1.0 else do  # dL/d(x . w): the 1/c is in w
    dx = dz @ k.w.T if need_dx else None
    grads: dict[str, np.ndarray] = {}
    if need_param_grads:
        n_in, units = k.w_hat.shape
        dz2 = dz.reshape(-1, units)
        inv_c = np.asarray(1.0 / k.c, dtype=k.w.dtype)
        dw = k.x.reshape(-1, n_in).T @ dz2  # dL/dw times c: dL/d(gamma w_hat) = dw / c
        dot = np.einsum("ij,ij->j", dw, k.w_hat)[None, :]
        dw -= k.w_hat * dot
        dw *= (k.gamma * inv_c) * k.inv_norm
        grads["kernel"] = dw
        grads["gamma"] = dot.reshape(units) * inv_c
        grads["beta"] = dz2.sum(axis=0) * inv_c
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
