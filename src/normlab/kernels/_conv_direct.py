"""Direct convolution (no patch matrix): the forward pass and the kernel gradient as loops over taps.

Same equations as :mod:`normlab.kernels.conv`. With numba, one loop nest per
call (:mod:`._conv_direct_numba`, filters innermost); without it, one NumPy
product per tap ``(i, j)`` over the strided view of ``xp`` that the tap reads::

    y     = b + sum_{i, j} xp[:, i dh :: sh, j dw :: sw, :] @ W[i, j]
    dW[i, j] = sum_{n, p, q} xp[n, p sh + i dh, q sw + j dw, :]^T dy[n, p, q, :]

The input gradient has no direct form here: it uses the GEMM path's.
"""

from __future__ import annotations

import numpy as np

from . import _backend

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _conv_direct_numba as _nb
else:  # pragma: no cover
    _nb = None

__all__ = ["forward", "kernel_grad"]


def _fast(*arrays) -> bool:
    return _backend.numba_enabled() and all(a.dtype in (np.float32, np.float64) for a in arrays) and (
        len({a.dtype for a in arrays}) == 1
    )


def _tap(xp, i, j, strides, dilation, out_size):
    (sh, sw), (dh, dw), (ho, wo) = strides, dilation, out_size
    return xp[:, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]


def forward(xp, kernel, bias, strides, dilation, out_size) -> np.ndarray:
    """``y`` of shape ``(N, Ho, Wo, F)``."""
    kh, kw, _, f = kernel.shape
    dtype = np.result_type(xp.dtype, kernel.dtype)
    y = np.empty((xp.shape[0],) + tuple(out_size) + (f,), dtype=dtype)
    b = np.zeros(f, dtype) if bias is None else np.asarray(bias, dtype=dtype)
    if _fast(xp, kernel, y):
        _nb.forward(xp, kernel, b, *strides, *dilation, y)
        return y
    y[...] = b
    for i in range(kh):
        for j in range(kw):
            y += _tap(xp, i, j, strides, dilation, out_size) @ kernel[i, j]
    return y


def kernel_grad(xp, dy, kshape, strides, dilation) -> np.ndarray:
    """``dW`` of shape ``kshape`` ``(kh, kw, C, F)``."""
    kh, kw = kshape[:2]
    dk = np.zeros(kshape, dtype=dy.dtype)
    if _fast(xp, dy):
        _nb.kernel_grad(xp, dy, *strides, *dilation, dk)
        return dk
    for i in range(kh):
        for j in range(kw):
            v = _tap(xp, i, j, strides, dilation, dy.shape[1:3])
            dk[i, j] = np.tensordot(v, dy, axes=([0, 1, 2], [0, 1, 2]))
    return dk
