"""Affine map ``y = x W + b`` over the last axis, and its backward pass.

Shapes: ``x`` is ``(..., n_in)``, ``W`` is ``(n_in, n_out)``, ``b`` is
``(n_out,)``. With ``x`` flattened to ``X`` of shape ``(m, n_in)``::

    dL/dX = dY W^T        dL/dW = X^T dY        dL/db = sum_i dY_i
"""

from __future__ import annotations

import numpy as np

from . import _backend, _threads

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _dense_numba as _nb
else:  # pragma: no cover
    _nb = None

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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


# ------------------------------------------------ a training step's fused passes
# (numba, kernels._dense_numba; the same bits as the NumPy expressions they replace)


def fused_size(shape, dtype) -> int:
    """How the fused kernels below take a C-contiguous 2-D array of ``shape`` and ``dtype``.

    0: they do not (no numba, another dtype, an empty array); 1: they do; 2: they do while
    normlab's kernels run on one thread (a larger array: the NumPy path splits it over threads).
    Decided once per workspace by a layer, which then checks only the arrays it did not make.
    """
    if not (_nb is not None and len(shape) == 2 and np.dtype(dtype) in _FAST_DTYPES and shape[0] * shape[1]):
        return 0
    return 1 if shape[0] * shape[1] < _threads.MIN_PARALLEL_ELEMENTS else 2


def fused_now(size_kind: int) -> bool:
    """True when the fused kernels run now, for a :func:`fused_size` of ``size_kind``."""
    return bool(size_kind) and _backend.numba_enabled() and (size_kind == 1 or _threads.get_num_threads() == 1)


def bias_relu(z: np.ndarray, bias: np.ndarray | None, a: np.ndarray) -> None:
    """``z += bias`` (in place) and ``a = maximum(z, 0)`` in one pass (numba; :func:`fused_now` must hold).

    ``z`` and ``a``: C-contiguous ``(m, n)`` arrays of one float dtype; ``bias``: ``(n,)`` of that
    dtype, or None. The same bits as ``np.add(z, bias, out=z)`` then ``np.maximum(z, 0)``.
    """
    _nb.bias_relu(z, z[0] if bias is None else bias, a, bias is not None, z.dtype.type(0))


def relu_backward_bias(da: np.ndarray, z: np.ndarray, dz: np.ndarray, db: np.ndarray) -> None:
    """``dz = da * relu'(z)`` and ``db = dz.sum(axis=0)`` in one pass (numba; :func:`fused_now` must hold).

    All C-contiguous, of one float dtype; ``da``, ``z``, ``dz``: ``(m, n)``; ``db``: ``(n,)``.
    ``relu'(z)`` is 1 where ``z > 0``, else 0 (``dz`` is then +0). The same bits as
    :func:`normlab.kernels.activations.relu_backward` then ``np.add.reduce(dz, axis=0, out=db)``.
    """
    _nb.relu_grad_colsum(da, z, dz, db, da.dtype.type(0))


def bias_gradient(dz: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = dz.sum(axis=0)`` for a 2-D ``dz``: rows added in order (``np.add.reduce``'s bits)."""
    dt = dz.dtype
    # identity with the native dtypes (a comparison with np.float32 converts the type: 0.3 us each)
    if _nb is not None and dz.ndim == 2 and (dt is _FAST_DTYPES[0] or dt is _FAST_DTYPES[1]) and out.dtype is dt \
            and dz.flags.c_contiguous and out.flags.c_contiguous and out.shape == dz.shape[1:] and dz.size \
            and _backend.numba_enabled():
        _nb.colsum(dz, out, dt.type(0))
        return
    np.add.reduce(dz, axis=0, out=out)


# ------------------------------------------------ the backward pass of a layer of few units
try:  # the kernel of its own module: switched on and off with numba alone (not with the fused passes above)
    from . import _dense_small_numba as _small
except ImportError:  # pragma: no cover - without numba
    _small = None
#: the most units a layer may have for :func:`small_backward` (a first check, before the shapes)
SMALL_UNITS = 4 if _small is None else _small.MAX_UNITS


def small_backward_size(m: int, k: int, n: int, dtype) -> bool:
    """True when :func:`small_backward` suits an ``(m, k) @ (k, n)`` layer of ``dtype`` (numba permitting).

    At most :data:`~normlab.kernels._dense_small_numba.MAX_UNITS` units, float32 or float64, and a
    product small enough that :func:`normlab.kernels._threads.matmul` would make it one BLAS call
    (larger ones are split over normlab's threads). Decided once per workspace by the layer.
    """
    return (_small is not None and 1 <= n <= _small.MAX_UNITS and m * k > 0 and np.dtype(dtype) in _FAST_DTYPES
            and m * k * n < _threads.MIN_PARALLEL_FLOPS)


def small_backward(x, dz, kernel, dkernel, dbias, dx, scratch) -> bool:
    """``dkernel = x.T @ dz``, ``dbias = dz.sum(0)`` (None: skipped) and ``dx = dz @ kernel.T`` (None: skipped), one call.

    numba (:mod:`normlab.kernels._dense_small_numba`, whose docstring gives the order of the sums);
    the caller checked :func:`small_backward_size`. All arrays C-contiguous and of one dtype;
    ``scratch`` is ``(n, k)``. Returns False, having written nothing, where numba is switched off.
    """
    if not _backend.numba_enabled():
        return False
    _small.backward(x, dz, kernel, dkernel, dkernel[0] if dbias is None else dbias, x if dx is None else dx,
                    scratch, dbias is not None, dx is not None)
    return True
