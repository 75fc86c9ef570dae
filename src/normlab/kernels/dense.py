"""Affine map ``y = x W + b`` over the last axis, and its backward pass.

Shapes: ``x`` is ``(..., n_in)``, ``W`` is ``(n_in, n_out)``, ``b`` is
``(n_out,)``. With ``x`` flattened to ``X`` of shape ``(m, n_in)``::

    dL/dX = dY W^T        dL/dW = X^T dY        dL/db = sum_i dY_i
"""

from __future__ import annotations

import numpy as np


def dense_forward(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Return ``x @ kernel + bias``."""
    y = x @ kernel
    if bias is not None:
        y += bias
    return y


def dense_backward(
    dy: np.ndarray, x: np.ndarray, kernel: np.ndarray, *, need_param_grads: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return ``(dx, dkernel, dbias)``; the last two are ``None`` when not needed."""
    dx = dy @ kernel.T
    if not need_param_grads:
        return dx, None, None
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    return dx, x2.T @ dy2, dy2.sum(axis=0)
