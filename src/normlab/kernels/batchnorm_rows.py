"""Batch normalization of rows: features on the last axis, the input seen as an ``(m, C)`` matrix.

The equations are those of :mod:`normlab.kernels.batchnorm`; here each pass
is one call of a fused kernel (:mod:`normlab.kernels._batchnorm_numba`) that
reads the input once for the statistics and once for the output, with the
moving-average update, and optionally the activation that follows, in the
same call. The layer asks :func:`takes` whether these kernels take an input
(numba installed and enabled, float32 or float64, not empty); where they do
not, it runs the NumPy functions of :mod:`normlab.kernels.batchnorm`. Which
implementation runs is decided here, never in the layer.

Conventions of the kernels: the mean is accumulated in float64, the
variance is two-pass, ``mean`` and ``inv_std = 1 / sqrt(var + eps)`` are
float64 vectors; ``gamma``/``beta`` absent are passed as size-0 arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _backend, _threads
from .batchnorm import inverse_std

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _batchnorm_numba as _F
    from ._fused_numba import ACT_KINDS as _ACT_KINDS
else:  # pragma: no cover
    _F = None
    _ACT_KINDS = {}
_C = None  # the chunked kernels, imported on the first large input (they compile only then)

#: the kernels' code of each activation they fuse backward (empty without numba)
KINDS = dict(_ACT_KINDS)
#: what :func:`train_forward` returns instead of a cache: NaN or inf input, or a statistic beyond its dtype's range
NOT_FINITE, OVERFLOW = 1, 2

__all__ = ["RowsTrainCache", "RowsInferenceCache", "NOT_FINITE", "OVERFLOW", "enabled", "takes",
           "activation_kind", "train_forward", "train_backward", "inference_forward", "inference_backward"]

_EMPTY = np.empty(0)
_new = tuple.__new__


class RowsTrainCache(NamedTuple):
    """What :func:`train_backward` needs: the ``(m, C)`` input and its batch statistics."""

    x: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray


class RowsInferenceCache(NamedTuple):
    """What :func:`inference_backward` needs (the moving statistics used, and ``gamma * inv_std``)."""

    x: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray
    scale: np.ndarray


def takes(x: np.ndarray) -> bool:
    """True when these kernels take ``x`` (features on its last axis is the caller's promise)."""
    return _backend.numba_enabled() and x.size > 0 and (x.dtype == np.float32 or x.dtype == np.float64)


def activation_kind(activation, dtype, *, forward: bool) -> int | None:
    """The code under which the kernels fuse ``activation`` with batch norm, or None where they do not.

    Forward: relu (float32 and float64) and sigmoid (float32: its vectorized
    form; float64 keeps NumPy's); not tanh, which NumPy already computes in
    one vectorized pass. Backward: relu, sigmoid and tanh. None without numba.
    """
    if not _backend.numba_enabled():
        return None
    kind = _ACT_KINDS.get(activation)
    if forward and not (kind == 0 or (kind == 1 and dtype == np.float32)):
        return None
    return kind


def enabled() -> bool:
    """True while these kernels can run at all (numba installed and enabled)."""
    return _backend.numba_enabled()


def train_forward(x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out, mean,
                  inv_std, saved, stamp, act_kind=None, act_out=None):
    """``out = BN(x)`` with the batch statistics (and ``act_out = f(out)`` for ``act_kind``), in one call.

    (Positional arguments: the training step calls this for every layer.)
    ``x`` is ``(m, C)`` and C-contiguous; ``out``, ``act_out``, ``mean``
    and ``inv_std`` are written, and the moving statistics updated
    (``moving = momentum * moving + (1 - momentum) * batch``, the variance
    times ``var_correction``) after their old values and ``stamp`` were
    written into ``saved`` (float64, ``2 C + 1``: a failed training step
    restores them when the stamp is its own).
    Returns the cache for :func:`train_backward`, or, with nothing written,
    :data:`NOT_FINITE` (NaN or inf in ``x``) or :data:`OVERFLOW` (finite
    ``x`` whose variance, or the updated moving statistic, exceeds the range
    of its dtype; for float32 buffers, deviations beyond about 1.8e19).
    """
    gamma = _EMPTY if gamma is None else gamma
    beta = _EMPTY if beta is None else beta
    if x.size >= _threads.MIN_PARALLEL_ELEMENTS and _threads.get_num_threads() > 1:
        status = _train_forward_chunked(x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var,
                                        out, mean, inv_std, saved, stamp, act_kind, act_out)
    elif act_kind is None:
        status = _F.train_forward_step(x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var,
                                   out, mean, inv_std, saved, stamp)
    else:
        status = _F.train_forward_act_step(x, gamma, beta, epsilon, momentum, var_correction, moving_mean,
                                           moving_var, out, mean, inv_std, act_kind, act_out, saved, stamp)
    # tuple.__new__: the named tuple without its Python-level constructor (every step, every layer)
    return _new(RowsTrainCache, (x, mean, inv_std)) if status == 0 else status


def train_backward(dy, cache: RowsTrainCache, gamma, dx, dgamma, dbeta, accumulate: bool,
                   act_kind=None, act_s=None) -> np.ndarray:
    """dL/dx of :func:`train_forward` into ``dx`` (and dgamma, dbeta written or added).

    With ``act_kind``, ``dy`` is the gradient at the activation's output and
    ``act_s`` what its derivative is taken from (``z`` for relu, ``a``
    otherwise). ``dgamma``/``dbeta`` None are skipped. The same numbers as
    the activation's backward pass followed by the plain one.
    """
    gamma = _EMPTY if gamma is None else gamma
    dgamma = _EMPTY if dgamma is None else dgamma
    dbeta = _EMPTY if dbeta is None else dbeta
    x, mean, inv_std = cache
    if x.size >= _threads.MIN_PARALLEL_ELEMENTS and _threads.get_num_threads() > 1:
        _train_backward_chunked(dy, x, mean, inv_std, gamma, dx, dgamma, dbeta, accumulate, act_kind, act_s)
    elif act_kind is None:
        _F.train_backward_step(dy, x, mean, inv_std, gamma, dx, dgamma, dbeta, accumulate)
    else:
        _F.train_backward_act_step(dy, act_s, act_kind, x, mean, inv_std, gamma, dx, dgamma, dbeta, accumulate)
    return dx


def _chunks():
    global _C
    if _C is None:
        from . import _bn_chunks_numba

        _C = _bn_chunks_numba
    return _C


def _train_forward_chunked(x, gamma, beta, epsilon, momentum, var_correction, moving_mean, moving_var, out, mean,
                           inv_std, saved, stamp, act_kind, act_out):
    """:func:`train_forward` of a large input: the passes split over row chunks and threads.

    The same bits as the one-call kernel, whatever the number of threads (see
    :mod:`normlab.kernels._bn_chunks_numba`).
    """
    C = _chunks()
    m, c = x.shape
    rows = C.chunk_rows(m, c)
    n = -(-m // rows)
    threads = _threads.get_num_threads()
    shift = x[0].astype(np.float64)
    p1 = np.zeros((n, c))
    p2 = np.zeros((n, c))
    _threads.run_parts(lambda k0, k1: C.moment_partials(x, shift, rows, k0, k1, p1, p2), n, threads)
    batch_mean, batch_var = C.moments_from_partials(x, shift, p1, p2)
    status, center, scale, shift = _F._train_statistics(x, gamma, beta, epsilon, momentum, var_correction,
                                                        moving_mean, moving_var, mean, inv_std, saved, stamp,
                                                        (batch_mean, batch_var))
    if status != 0:
        return status
    if act_kind is not None:
        def part(k0, k1):
            r = slice(k0 * rows, k1 * rows)
            _F.affine_act_blocks(x[r], center, scale, shift, out[r], act_out[r], act_kind)
    else:
        tile = _F._tile_rows(m, c)
        affine = _F.centered_affine_blocks if center.size else None

        def part(k0, k1):
            r = slice(k0 * rows, k1 * rows)
            if affine is None:
                _F._affine_blocks(x[r], scale, shift, out[r], tile)
            else:
                affine(x[r], center, scale, shift, out[r], tile)
    _threads.run_parts(part, n, threads)
    return 0


def _train_backward_chunked(dy, x, mean, inv_std, gamma, dx, dgamma, dbeta, accumulate, act_kind, act_s):
    """:func:`train_backward` of a large input: the passes split over row chunks and threads."""
    C = _chunks()
    m, c = x.shape
    rows = C.chunk_rows(m, c)
    n = -(-m // rows)
    threads = _threads.get_num_threads()
    kind = 3 if act_kind is None else act_kind
    s = dy if act_kind is None else act_s
    pdb = np.zeros((n, c))
    pdg = np.zeros((n, c))
    partials = C.GRAD_PARTIALS[kind]
    _threads.run_parts(lambda k0, k1: partials(dy, s, x, mean, inv_std, rows, k0, k1, pdb, pdg), n, threads)
    db = C.sum_partials(pdb)
    dg = C.sum_partials(pdg)
    a, b, cc, mu = _F._dx_coefficients(db, dg, mean, inv_std, gamma, m, x.dtype, _F._tile_rows(m, c))
    dx_part = C.DX[kind]

    def part(k0, k1):
        r = slice(k0 * rows, k1 * rows)
        dx_part(dy[r], s[r], x[r], a, b, cc, mu, dx[r])

    _threads.run_parts(part, n, threads)
    _F._store_param_grads(dg, db, dgamma, dbeta, accumulate)


def inference_forward(x, gamma, beta, moving_mean, moving_var, *, epsilon, out) -> RowsInferenceCache:
    """``out = (x - mean) * scale + beta`` with the moving statistics: one pass over ``x``.

    Centered rather than folded into ``x * scale + shift``: an input equal
    to the moving mean gives ``beta`` exactly (see
    :func:`normlab.kernels._batchnorm_numba.centered_affine_blocks`).
    """
    inv_std = inverse_std(moving_var.astype(np.float64), epsilon)  # 0 where var + eps == 0 (epsilon=0)
    mean = moving_mean.astype(np.float64)
    scale = inv_std if gamma is None else gamma * inv_std
    center = mean.astype(x.dtype)
    # what rounding the mean to x's dtype drops (nothing for buffers of that dtype)
    shift = (center - mean) * scale
    if beta is not None:
        shift += beta
    _F.centered_affine(x, center, scale.astype(x.dtype), shift.astype(x.dtype), out)
    return RowsInferenceCache(x, mean, inv_std, scale)


def inference_backward(dy, cache: RowsInferenceCache):
    """``(dx, dgamma, dbeta)`` of :func:`inference_forward` (``y`` is affine in ``x``)."""
    x = cache.x
    dx = dy * cache.scale.astype(dy.dtype)
    dbeta = dy.sum(axis=0, dtype=np.float64)
    dgamma = np.sum(dy * ((x - cache.mean) * cache.inv_std), axis=0)
    return dx, dgamma, dbeta
