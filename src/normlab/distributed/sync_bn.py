"""Synchronized batch normalization: the statistics of the global batch, from shards on several ranks.

Each rank holds ``m_r`` of the ``m = sum_r m_r`` values of a feature.

Forward. Each rank takes its shard's count, mean and sum of squared
deviations in float64 (two passes), ``(m_r, mu_r, M2_r)``; one allgather
brings every rank's triple to every rank, and Chan's parallel formula
combines them::

    m   = sum_r m_r
    mu  = mu_0 + sum_r (m_r / m) (mu_r - mu_0)     (mu_0: the first non-empty shard's mean)
    M2  = sum_r M2_r + sum_r m_r (mu_r - mu)^2
    var = M2 / m                        (biased, as plain BN)

Deviations are taken from each shard's own mean, so a feature with a
large offset (``1e4 + N(0, 1)`` in float32) loses nothing to
cancellation, as ``E[x^2] - E[x]^2`` would. The combination is not a sum,
hence an allgather rather than an allreduce; for the few numbers a layer
sends both cost one latency. Every rank combines the same numbers in the
same (rank) order, so the statistics, and the moving averages fed from
them, are identical bit for bit on every rank.

Backward. With ``xhat = (x - mu) inv_std`` and the compact form of the
plain backward pass (:mod:`normlab.kernels.batchnorm`)::

    dx = gamma inv_std / m * (m dy - sum dy - xhat sum(dy xhat))

the two sums run over the global batch: one allreduce of the local
``(sum dy, sum dy xhat)``. The local sums are also the shard's
``dbeta`` and ``dgamma``; the model's allreduce of the flat gradient
buffer adds them up with every other gradient. ``dy`` must be the
gradient of the *global* loss (each rank's output gradient scaled by its
share of the batch, as :class:`~normlab.distributed.DataParallel` does).

Two implementations with one set of equations: the NumPy functions
(:func:`sync_train_forward`, :func:`sync_train_backward`) for any axis,
and, for features on the last axis where the numba row kernels take the
input, :func:`rows_train_forward` / :func:`rows_train_backward` on the
kernels of :mod:`normlab.kernels._bn_sync_numba` (the plain row kernels'
passes, split around the collectives; with the activation that follows
fused in, as for plain BN). Both send the same numbers in the same layout,
so ranks on different paths (an empty shard runs NumPy) agree.
"""

from __future__ import annotations

import numpy as np

from typing import NamedTuple

from ..kernels.batchnorm_sync import row_kernels
from ..kernels.batchnorm import BatchNormTrainCache, _moments_fast, reduced_count

__all__ = ["combine_moments", "sync_train_forward", "sync_train_backward", "SyncRowsCache", "rows_train_forward",
           "rows_train_backward", "TOO_FEW"]

_EMPTY = np.empty(0)
#: what :func:`rows_train_forward` returns, beside the statuses of the kernels, for a global count below 2
TOO_FEW = 3


def combine_moments(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(count, mean, M2)`` of the union of shards from rows ``(count_r, mean_r..., M2_r...)`` (Chan et al. 1979).

    ``parts`` has shape ``(ranks, 1 + 2C)``: each row a count, then ``C``
    means, then ``C`` sums of squared deviations from that mean.
    """
    c = (parts.shape[1] - 1) // 2
    n_r = parts[:, :1]
    mu_r, m2_r = parts[:, 1 : 1 + c], parts[:, 1 + c :]
    n = n_r.sum()
    w = np.divide(n_r, n, out=np.zeros_like(n_r), where=n > 0)
    # the means as offsets from the first shard's: a feature constant over the
    # global batch gets its value exactly, hence a variance of exactly 0
    full = np.flatnonzero(n_r[:, 0] > 0)
    mu0 = mu_r[full[0]] if full.size else np.zeros(c)
    mu = mu0 + (w * (mu_r - mu0)).sum(axis=0)
    m2 = m2_r.sum(axis=0) + (n_r * np.square(mu_r - mu)).sum(axis=0)
    return n, mu, m2


def _shard_moments(x, axes):
    """``(mu, m2, xc, hi)``: the shard's mean and sum of squared deviations in float64, ``xc = x - hi``.

    The sums of :func:`normlab.kernels.batchnorm._moments_fast` (no float64
    copy of ``x``): ``hi`` is the mean rounded to ``x``'s dtype, so
    ``x - mean = xc - (mean - hi)``. Where they overflow (float32 deviations
    beyond about 1.8e19), all of it again in float64.
    """
    m = reduced_count(x.shape, axes)
    hi, var, xc, lo = _moments_fast(x, axes, True)
    if not np.isfinite(var).all() and np.isfinite(x).all():
        x64 = x.astype(np.float64)
        mu = x64.mean(axis=axes, keepdims=True)
        x64 -= mu
        return mu, np.square(x64).sum(axis=axes, keepdims=True), x64, mu
    mu = hi.astype(np.float64) if lo is None else hi + lo
    return mu, var * m, xc, hi


def sync_train_forward(x, gamma, beta, *, axes: tuple, epsilon: float, comm):
    """Normalize ``x`` (this rank's shard) with the statistics of the global batch.

    ``comm.gather_stats(a)`` stacks every rank's ``a`` (1-D float64). Returns ``(y, cache,
    mean, var, count)``: ``mean`` and ``var`` (biased) of the global batch
    in float64, keepdims shape; ``count`` its values per feature.
    """
    m_r = reduced_count(x.shape, axes)
    shape = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
    if m_r:
        with np.errstate(over="ignore", invalid="ignore"):
            mu_r, m2_r, xc, hi = _shard_moments(x, axes)
    else:  # an empty shard contributes nothing
        mu_r = m2_r = np.zeros(shape)
        xc, hi = x.astype(np.float64), 0.0
    local = np.concatenate([[float(m_r)], np.ravel(mu_r), np.ravel(m2_r)])
    count, mu, m2 = combine_moments(comm.gather_stats(local, "synchronized batch normalization (forward)"))
    mean = mu.reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        var = (m2 / count).reshape(shape) if count else np.full(shape, np.nan)
        d = var + epsilon
        # where var + eps == 0 (epsilon=0, a constant feature), 1/sqrt(var + eps) is taken as 0:
        # y = beta and no input gradient, as in the plain kernels
        inv64 = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d != 0)
        shift = mean - hi  # x - mean = xc - shift
        if xc.dtype == x.dtype:
            xc -= shift.astype(x.dtype)
            xc *= inv64.astype(x.dtype)
            xhat = xc
        else:  # the float64 path of an overflow
            xhat = ((xc - shift) * inv64).astype(x.dtype)
    inv_std = inv64.astype(x.dtype)
    if gamma is not None:
        y = xhat * gamma
        if beta is not None:
            y += beta
    elif beta is not None:
        y = xhat + beta
    else:
        y = xhat.copy()
    return y, BatchNormTrainCache(xhat, inv_std, gamma, axes, int(count)), mean, var, int(count)


def sync_train_backward(dy, cache: BatchNormTrainCache, *, comm):
    """``(dx, dgamma, dbeta)``: ``dx`` from the global sums, ``dgamma``/``dbeta`` this shard's part.

    ``comm.sum_stats_(a)`` sums ``a`` (1-D float64) over the ranks in place.
    """
    xhat, inv_std, gamma, axes, m = cache
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = np.sum(dy * xhat, axis=axes, keepdims=True)
    sums = np.concatenate([dbeta.ravel(), dgamma.ravel()]).astype(np.float64)
    comm.sum_stats_(sums, "synchronized batch normalization (backward)")
    c = dbeta.size
    sum_dy = sums[:c].reshape(dbeta.shape).astype(dy.dtype)
    sum_dy_xhat = sums[c:].reshape(dgamma.shape).astype(dy.dtype)
    coef = inv_std / m if gamma is None else gamma * inv_std / m
    dx = dy * m
    dx -= sum_dy
    dx -= xhat * sum_dy_xhat
    dx *= coef
    return dx, dgamma, dbeta


# ------------------------------------------------------------- row kernels
class SyncRowsCache(NamedTuple):
    """What :func:`rows_train_backward` needs: the shard ``(m_r, C)``, the global statistics and count."""

    x: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray
    count: int


def rows_train_forward(x, gamma, beta, epsilon, momentum, unbiased, moving_mean, moving_var, out, mean, inv_std,
                       saved, stamp, comm, act_kind=None, act_out=None):
    """``out = BN(x)`` with the global batch's statistics (and ``act_out = f(out)``), on the row kernels.

    ``x``: this rank's shard as a C-contiguous ``(m_r, C)`` matrix, ``m_r >= 1``.
    Arguments as :func:`normlab.kernels.batchnorm_rows.train_forward`;
    ``unbiased``: the moving variance receives ``var * count / (count - 1)``
    (global count). One pass for the shard's ``(count, mean, M2)``, one
    allgather, one pass for the output. Returns ``(0, SyncRowsCache)``, or,
    with nothing written, ``(TOO_FEW, count)``, ``(NOT_FINITE, None)`` (NaN or
    inf input on some rank) or ``(OVERFLOW, None)``.
    """
    S = row_kernels()
    local = np.empty(1 + 2 * x.shape[1])
    S.shard_moments(x, local)
    parts = comm.gather_stats(local, "synchronized batch normalization (forward)")
    # the counts are whole numbers far below 2**53: their float sum is exact in any order
    count = int(sum(parts[:, 0].tolist()))
    if count < 2:
        return TOO_FEW, count
    gamma = _EMPTY if gamma is None else gamma
    beta = _EMPTY if beta is None else beta
    corr = count / (count - 1) if unbiased else 1.0
    if act_kind is None:
        status = S.sync_forward_step(parts, x, gamma, beta, epsilon, momentum, corr, moving_mean, moving_var, out,
                                     mean, inv_std, saved, stamp)
    else:
        status = S.sync_forward_act_step(parts, x, gamma, beta, epsilon, momentum, corr, moving_mean, moving_var,
                                         out, mean, inv_std, act_kind, act_out, saved, stamp)
    return (0, SyncRowsCache(x, mean, inv_std, count)) if status == 0 else (status, None)


def rows_train_backward(dy, cache: SyncRowsCache, gamma, dx, dgamma, dbeta, accumulate: bool, comm,
                        act_kind=None, act_s=None) -> np.ndarray:
    """dL/dx of :func:`rows_train_forward` into ``dx``; the shard's dgamma/dbeta written or added.

    One pass for the shard's ``(sum dy, sum dy xhat)``, one allreduce, one
    pass for ``dx``. With ``act_kind``, ``dy`` is the gradient at the
    activation's output and ``act_s`` what its derivative is taken from, as
    in :func:`normlab.kernels.batchnorm_rows.train_backward`.
    """
    S = row_kernels()
    x, mean, inv_std, count = cache
    kind = S.IDENTITY if act_kind is None else act_kind
    s = dy if act_kind is None else act_s
    sums = np.empty(2 * x.shape[1])
    # the compiled kernels of S.grad_sums / S.sync_dx, called directly: two Python frames less per layer
    S._SUMS[kind](dy, s, x, mean, inv_std, sums, _EMPTY if dgamma is None else dgamma,
                  _EMPTY if dbeta is None else dbeta, accumulate)
    comm.sum_stats_(sums, "synchronized batch normalization (backward)")
    S._DX[kind](dy, s, x, mean, inv_std, _EMPTY if gamma is None else gamma, float(count), sums, dx)
    return dx


