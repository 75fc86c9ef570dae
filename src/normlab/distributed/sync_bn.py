"""Synchronized batch normalization: the statistics of the global batch, from shards on several ranks.

Each rank holds ``m_r`` of the ``m = sum_r m_r`` values of a feature.

Forward. Each rank takes its shard's count, mean and sum of squared
deviations in float64 (two passes), ``(m_r, mu_r, M2_r)``; one allgather
brings every rank's triple to every rank, and Chan's parallel formula
combines them::

    m   = sum_r m_r
    mu  = sum_r m_r mu_r / m
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
"""

from __future__ import annotations

import numpy as np

from ..kernels.batchnorm import BatchNormTrainCache, reduced_count

__all__ = ["combine_moments", "sync_train_forward", "sync_train_backward"]


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
    mu = (w * mu_r).sum(axis=0)
    m2 = m2_r.sum(axis=0) + (n_r * np.square(mu_r - mu)).sum(axis=0)
    return n, mu, m2


def sync_train_forward(x, gamma, beta, *, axes: tuple, epsilon: float, comm):
    """Normalize ``x`` (this rank's shard) with the statistics of the global batch.

    ``comm.allgather(a)`` stacks every rank's ``a``. Returns ``(y, cache,
    mean, var, count)``: ``mean`` and ``var`` (biased) of the global batch
    in float64, keepdims shape; ``count`` its values per feature.
    """
    x64 = x.astype(np.float64)
    m_r = reduced_count(x.shape, axes)
    if m_r:
        mu_r = x64.mean(axis=axes, keepdims=True)
        xc = x64 - mu_r
        m2_r = np.square(xc).sum(axis=axes, keepdims=True)
    else:  # an empty shard contributes nothing
        shape = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
        mu_r = m2_r = np.zeros(shape)
    local = np.concatenate([[float(m_r)], mu_r.ravel(), m2_r.ravel()])
    count, mu, m2 = combine_moments(comm.allgather(local, "synchronized batch normalization (forward)"))
    mean = mu.reshape(mu_r.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (m2 / count).reshape(mu_r.shape) if count else np.full(mu_r.shape, np.nan)
        inv64 = 1.0 / np.sqrt(var + epsilon)
    xhat = ((x64 - mean) * inv64).astype(x.dtype)
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

    ``comm.allreduce_(a)`` sums ``a`` over the ranks in place.
    """
    xhat, inv_std, gamma, axes, m = cache
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = np.sum(dy * xhat, axis=axes, keepdims=True)
    sums = np.concatenate([dbeta.ravel(), dgamma.ravel()]).astype(np.float64)
    comm.allreduce_(sums, "synchronized batch normalization (backward)")
    c = dbeta.size
    sum_dy = sums[:c].reshape(dbeta.shape).astype(dy.dtype)
    sum_dy_xhat = sums[c:].reshape(dgamma.shape).astype(dy.dtype)
    coef = inv_std / m if gamma is None else gamma * inv_std / m
    dx = dy * m
    dx -= sum_dy
    dx -= xhat * sum_dy_xhat
    dx *= coef
    return dx, dgamma, dbeta
