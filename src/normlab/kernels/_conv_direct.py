"""Direct convolution (no patch matrix): the forward pass and the kernel gradient as loops over taps.

Same equations as :mod:`normlab.kernels.conv`. With numba, loops over one
output row at a time (:mod:`._conv_direct_numba`, filters innermost); without
it, one NumPy product per tap ``(i, j)`` over the strided view of ``xp`` that
the tap reads::

    y     = b + sum_{i, j} xp[:, i dh :: sh, j dw :: sw, :] @ W[i, j]
    dW[i, j] = sum_{n, p, q} xp[n, p sh + i dh, q sw + j dw, :]^T dy[n, p, q, :]
    db    = sum_{n, p, q} dy[n, p, q, :]                      (in the same pass as dW, numba)

This is the algorithm for inputs with few channels (the first layer of an image
network: ``"auto"`` takes it up to ``conv.DIRECT_MAX_CHANNELS``), where the
im2col GEMM's inner dimension is ``kh kw C`` and BLAS runs far below its rate.
The input gradient has no direct form here: it uses the GEMM path's.

Threads and bits: the images are cut into blocks of :data:`BLOCK_IMAGES`
(fixed by the shape); ``y`` is computed per image, ``dW`` and ``db`` per block
and the blocks' sums added in block order, so the bits do not depend on the
thread count.
"""

from __future__ import annotations

import numpy as np

from . import _backend, _threads

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _conv_direct_numba as _nb
else:  # pragma: no cover
    _nb = None

__all__ = ["BLOCK_IMAGES", "forward", "kernel_grad", "param_grads"]

#: images per block of the kernel gradient's partial sums (the split that fixes the bits)
BLOCK_IMAGES = 8


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
        xp, kernel = np.ascontiguousarray(xp), np.ascontiguousarray(kernel)
        n = xp.shape[0]
        rows = _nb.forward_rows_9 if kernel.shape[:3] == (3, 3, 1) else _nb.forward_rows
        _threads.run_parts(lambda n0, n1: rows(xp, kernel, b, *strides, *dilation, y, n0, n1), n,
                           _threads_for(n, y.size))
        return y
    y[...] = b
    for i in range(kh):
        for j in range(kw):
            y += _tap(xp, i, j, strides, dilation, out_size) @ kernel[i, j]
    return y


def _threads_for(n_images: int, elements: int) -> int:
    if n_images < 2 or elements < _threads.MIN_PARALLEL_ELEMENTS:
        return 1
    return min(_threads.get_num_threads(), n_images)


def param_grads(xp, dy, kshape, strides, dilation):
    """``(dW, db)``: with numba in one pass over ``dy`` (per block of images, blocks added in order);
    without, :func:`kernel_grad` and a sum."""
    if not _fast(xp, dy):
        return kernel_grad(xp, dy, kshape, strides, dilation), dy.reshape(-1, kshape[3]).sum(axis=0)
    kh, kw, c, f = kshape
    xp, dy = np.ascontiguousarray(xp), np.ascontiguousarray(dy)
    n = xp.shape[0]
    blocks = -(-n // BLOCK_IMAGES)
    part = np.empty((blocks, kh * kw * c + 1, f), dtype=dy.dtype)

    rows = _nb.kernel_grad_rows_9 if tuple(kshape[:3]) == (3, 3, 1) else _nb.kernel_grad_rows

    def run(b0, b1):
        for b in range(b0, b1):
            rows(xp, dy, kh, kw, *strides, *dilation, part[b], b * BLOCK_IMAGES,
                                 min(n, (b + 1) * BLOCK_IMAGES))

    _threads.run_parts(run, blocks, _threads_for(blocks, dy.size))
    total = part[0]
    for b in range(1, blocks):
        total += part[b]
    return total[:-1].reshape(kshape), total[-1].copy()


def kernel_grad(xp, dy, kshape, strides, dilation) -> np.ndarray:
    """``dW`` of shape ``kshape`` ``(kh, kw, C, F)``."""
    kh, kw = kshape[:2]
    if _fast(xp, dy):
        return param_grads(xp, dy, kshape, strides, dilation)[0]
    dk = np.zeros(kshape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            v = _tap(xp, i, j, strides, dilation, dy.shape[1:3])
            dk[i, j] = np.tensordot(v, dy, axes=([0, 1, 2], [0, 1, 2]))
    return dk
