"""Weight normalization (Salimans and Kingma 2016): a kernel as direction times length.

The notes: "learn separate direction and length". A kernel ``w`` whose last
axis indexes the output units (Dense ``(n_in, units)``; a convolution
``(kh, kw, c_in, c_out)``) is reparameterized per output unit ``k``::

    ||v||_k = sqrt(sum_{i} v_{ik}^2)          norm over every axis but the last
    w_hat   = v / ||v||                        unit-norm direction
    w       = g * w_hat                        g_k: the length of unit k

Backward, from ``dw = dL/dw``, per unit (sums over every axis but the last).
Since ``dw_j/dg = v_j/||v||``::

    dg = sum_j dw_j v_j / ||v|| = sum_j dw_j w_hat_j

and since ``d||v||/dv_i = v_i/||v||``,
``dw_j/dv_i = g (delta_ij/||v|| - v_i v_j/||v||^3)``, so::

    dv = (g/||v||) * (dw - w_hat * sum_j dw_j w_hat_j) = (g/||v||) * (dw - w_hat * dg)

``dv`` is ``dw`` scaled by ``g/||v||`` and projected away from ``v``
(``sum_i dv_i v_i = 0``): a gradient step never shortens ``v`` to first
order, which is what makes the learning rate self-stabilizing.

The parameterization fixes the scale of the pre-activations only through
``g``, so it "requires good init". The data-dependent initialization of the
paper, for pre-activations ``t = x . w_hat`` of an initial batch (statistics
per unit over every axis but the last)::

    g    = 1 / std(t)
    bias = -mean(t) / std(t)

makes the pre-activations ``x . w + bias = g t + bias = (t - mean(t)) / std(t)``:
zero mean and unit variance per unit on that batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .batchnorm import batch_moments

__all__ = ["WeightNormCache", "weight_norm_forward", "weight_norm_backward", "data_dependent_init"]


class WeightNormCache(NamedTuple):
    """What :func:`weight_norm_backward` needs."""

    w_hat: np.ndarray  # v / ||v||
    g: np.ndarray  # (n_out,)
    inv_norm: np.ndarray  # 1 / ||v||, keepdims shape (1, ..., 1, n_out)


def weight_norm_forward(v: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, WeightNormCache]:
    """Return ``(w, cache)`` with ``w = g * v / ||v||`` (norm over all axes but the last)."""
    axes = tuple(range(v.ndim - 1))
    acc = np.float64 if v.dtype.itemsize < 8 else None
    sq = np.sum(np.square(v), axis=axes, keepdims=True, dtype=acc)
    inv_norm = (1.0 / np.sqrt(sq)).astype(v.dtype, copy=False)
    w_hat = v * inv_norm
    return w_hat * g, WeightNormCache(w_hat, g, inv_norm)


def weight_norm_backward(dw: np.ndarray, cache: WeightNormCache) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(dv, dg)`` (module docstring); ``dg`` has the shape of ``g``."""
    w_hat, g, inv_norm = cache
    axes = tuple(range(dw.ndim - 1))
    dg = np.sum(dw * w_hat, axis=axes, keepdims=True)
    dv = dw - w_hat * dg
    dv *= g * inv_norm
    return dv, dg.reshape(g.shape)


def data_dependent_init(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(g, bias) = (1/std(t), -mean(t)/std(t))`` per unit (last axis).

    ``t`` are pre-activations computed with the unit-norm direction ``w_hat``
    and no bias. A unit with zero variance gets ``inf``/``nan``; the caller
    decides what to do about it.
    """
    axes = tuple(range(t.ndim - 1))
    mean, var, _ = batch_moments(t, axes=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 1.0 / np.sqrt(var)
        bias = -mean * g
    return g.reshape(-1), bias.reshape(-1)
