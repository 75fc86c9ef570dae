"""The numba row kernels of synchronized batch norm against its NumPy functions, on 2 ranks simulated by threads.

:class:`ThreadComm` gives each of two threads the collectives of one rank
(the kernels release the GIL, the threads meet at a barrier), so shards of a
global batch run through the real passes without MPI. The NumPy functions
(:mod:`normlab.distributed.sync_bn`, the path of ``NORMLAB_DISABLE_NUMBA=1``)
are the reference: the same equations, summed in another order.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("numba")

from normlab import layers as L  # noqa: E402
from normlab.distributed import sync_bn as S  # noqa: E402
from normlab.distributed._sync_fused import SyncBatchNormActivation  # noqa: E402
from normlab.kernels import _backend  # noqa: E402
from normlab.kernels import batchnorm_rows as R  # noqa: E402

TOL = {"float64": dict(rtol=1e-12, atol=1e-13), "float32": dict(rtol=2e-5, atol=2e-6)}


class ThreadComm:
    """Rank ``rank`` of ``size`` threads: ``allgather``/``gather_stats`` and ``allreduce_``/``sum_stats_`` as
    :class:`normlab.distributed._comm.Communicator`."""

    def __init__(self, shared, rank):
        self.shared, self.rank, self.size = shared, rank, shared["size"]

    def _exchange(self, a):
        slots, barrier = self.shared["slots"], self.shared["barrier"]
        slots[self.rank] = np.array(a, copy=True)
        barrier.wait()
        out = np.stack(slots)
        barrier.wait()
        return out

    def allgather(self, a, what=""):
        return self._exchange(np.ascontiguousarray(a))

    def allreduce_(self, a, what=""):
        total = self._exchange(a)
        a[...] = total[0]
        for r in range(1, self.size):
            a += total[r]
        return a

    gather_stats, sum_stats_ = allgather, allreduce_


def on_ranks(fn, *per_rank, numba=True):
    """``[fn(comm_r, *args_r) for r]`` with each rank in its own thread, on the numba kernels or NumPy.

    The kernel switch is process-wide: it is set here, once, and not by the
    ranks (two threads saving and restoring it in turn can leave it off).
    """
    previous = _backend.use_numba(numba)
    try:
        return _on_ranks(fn, per_rank)
    finally:
        _backend.use_numba(previous)


def _on_ranks(fn, per_rank):
    n = len(per_rank)
    shared = {"size": n, "slots": [None] * n, "barrier": threading.Barrier(n, timeout=60)}
    out, errors = [None] * n, []

    def run(r):
        try:
            out[r] = fn(ThreadComm(shared, r), *per_rank[r])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def shards(dtype, rows=(7, 12), c=5, seed=0):
    rng = np.random.default_rng(seed)
    xs = [(rng.normal(size=(m, c)) * np.linspace(0.5, 3, c) + np.linspace(-2, 50, c)).astype(dtype) for m in rows]
    dys = [rng.normal(size=(m, c)).astype(dtype) for m in rows]
    return xs, dys


def _layer_pass(comm, x, dy, numba, dtype, center=True, scale=True, act=None):
    """Forward and backward of a synchronized BN (and ``act``, fused on the numba path) on this rank's shard."""
    assert _backend.numba_enabled() == numba  # on_ranks(..., numba=) sets it for both ranks
    bn = L.BatchNormalization(synchronized=True, momentum=0.8, center=center, scale=scale, dtype=dtype)
    bn.build(x.shape)
    if scale:
        bn.params["gamma"][:] = np.linspace(-1.5, 2.0, x.shape[1])
    if center:
        bn.params["beta"][:] = np.linspace(0.3, -0.4, x.shape[1])
    bn._sync = comm
    if act is None:
        y, dx = bn(x, training=True), None
        dx = bn.backward(dy)
    elif numba:
        a = L.Activation(act, dtype=dtype)
        pair = SyncBatchNormActivation(bn, a)
        y = pair._train_forward(x).copy()
        dx = pair._train_backward(dy).copy()
    else:
        a = L.Activation(act, dtype=dtype)
        y = a(bn(x, training=True), training=True)
        dx = bn.backward(a.backward(dy))
    kind = bn._cache[0]
    grads = [bn.grads[k].copy() for k in ("gamma", "beta") if k in bn.grads]
    return [np.array(y), np.array(dx), *grads, bn.buffers["moving_mean"].copy(),
            bn.buffers["moving_variance"].copy()], kind


# (each dtype, and gamma/beta present or absent, compiles the kernels again: a cold cache pays seconds per case)
@pytest.mark.parametrize("dtype, center, scale", [("float64", True, True), ("float32", True, True),
                                                  ("float32", False, False)])
def test_row_kernels_match_the_numpy_functions(dtype, center, scale):
    xs, dys = shards(dtype)
    args = [(x, dy, True, dtype, center, scale) for x, dy in zip(xs, dys)]
    fast = on_ranks(_layer_pass, *args)
    slow = on_ranks(_layer_pass, *[(x, dy, False, dtype, center, scale) for x, dy in zip(xs, dys)], numba=False)
    for (a, kind_a), (b, kind_b) in zip(fast, slow):
        assert (kind_a, kind_b) == ("sync_rows", "sync")
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, **TOL[dtype])
    # every rank holds the same moving statistics, bit for bit
    np.testing.assert_array_equal(fast[0][0][-1], fast[1][0][-1])


def test_two_shards_give_plain_batch_norm_of_the_whole_batch():
    xs, dys = shards("float64")
    fast = on_ranks(_layer_pass, *[(x, dy, True, "float64") for x, dy in zip(xs, dys)])
    bn = L.BatchNormalization(momentum=0.8, dtype="float64")
    bn.build(xs[0].shape)
    bn.params["gamma"][:] = np.linspace(-1.5, 2.0, 5)
    bn.params["beta"][:] = np.linspace(0.3, -0.4, 5)
    y = bn(np.concatenate(xs), training=True)
    dx = bn.backward(np.concatenate(dys))
    np.testing.assert_allclose(np.concatenate([f[0][0] for f in fast]), y, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([f[0][1] for f in fast]), dx, rtol=1e-11, atol=1e-13)
    # the shards' parameter gradients add up to the whole batch's
    np.testing.assert_allclose(fast[0][0][2] + fast[1][0][2], bn.grads["gamma"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fast[0][0][-1], bn.buffers["moving_variance"], rtol=1e-13)


@pytest.mark.parametrize("act, dtype", [("relu", "float64"), ("relu", "float32"), ("sigmoid", "float32"),
                                        ("tanh", "float64")])
def test_the_fused_pair_matches_the_two_layers(dtype, act):
    xs, dys = shards(dtype, rows=(9, 4))
    fused = on_ranks(_layer_pass, *[(x, dy, True, dtype, True, True, act) for x, dy in zip(xs, dys)])
    apart = on_ranks(_layer_pass, *[(x, dy, False, dtype, True, True, act) for x, dy in zip(xs, dys)],
                     numba=False)
    for (a, kind), (b, _) in zip(fused, apart):
        assert kind == "sync_rows"
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, **TOL[dtype])


def _kernel_pass(comm, x, dy, epsilon):
    c = x.shape[1]
    out, dx = np.empty_like(x), np.empty_like(x)
    mean, inv_std = np.empty(c), np.empty(c)
    gamma, beta = np.full(c, 2.0, x.dtype), np.linspace(-1, 1, c).astype(x.dtype)
    dgamma, dbeta = np.zeros(c, x.dtype), np.zeros(c, x.dtype)
    status, cache = S.rows_train_forward(x, gamma, beta, epsilon, 0.9, False, np.zeros(c, x.dtype),
                                         np.ones(c, x.dtype), out, mean, inv_std, np.empty(2 * c + 1), 1.0, comm)
    if status:
        return status
    S.rows_train_backward(dy, cache, gamma, dx, dgamma, dbeta, False, comm)
    return out, dx, beta


def _numpy_pass(comm, x, dy, epsilon):
    c = x.shape[1]
    gamma, beta = np.full(c, 2.0, x.dtype), np.linspace(-1, 1, c).astype(x.dtype)
    out, cache, _, _, _ = S.sync_train_forward(x, gamma, beta, axes=(0,), epsilon=epsilon, comm=comm)
    dx, _, _ = S.sync_train_backward(dy, cache, comm=comm)
    return out, dx, beta


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("path", [_kernel_pass, _numpy_pass], ids=["numba", "numpy"])
def test_epsilon_zero_on_a_constant_feature_gives_beta_and_no_input_gradient(dtype, path):
    """The plain kernels' convention: where var + eps == 0, 1/sqrt(var + eps) is taken as 0."""
    xs, dys = shards(dtype)
    for x in xs:
        x[:, 2] = 3.1  # constant over the global batch (not a power of 2 times a small integer)
    res = on_ranks(path, *[(x, dy, 0.0) for x, dy in zip(xs, dys)])
    for out, dx, beta in res:
        assert np.all(out[:, 2] == beta[2]) and np.all(dx[:, 2] == 0)
        assert np.isfinite(out).all() and np.isfinite(dx).all()


def test_nan_on_one_rank_is_reported_as_such_on_every_rank():
    xs, dys = shards("float32")
    xs[1][3, 1] = np.nan
    assert on_ranks(_kernel_pass, *[(x, dy, 1e-3) for x, dy in zip(xs, dys)]) == [R.NOT_FINITE] * 2
    xs, dys = shards("float64")
    xs[0][0, 0] = 1e300  # finite, but its variance leaves float64
    assert on_ranks(_kernel_pass, *[(x, dy, 1e-3) for x, dy in zip(xs, dys)]) == [R.OVERFLOW] * 2


def _step_then_undo(comm, x):
    bn = L.BatchNormalization(synchronized=True, dtype="float32")
    bn.build(x.shape)
    bn._sync = comm
    before = [b.copy() for b in bn.buffers.values()]
    bn._begin_step(7.0)
    bn._train_forward(x)
    moved = any(not np.array_equal(a, b) for a, b in zip(before, bn.buffers.values()))
    bn._rollback(7.0)  # what a failed step does
    return bn._cache[0], moved, all(np.array_equal(a, b) for a, b in zip(before, bn.buffers.values()))


def test_a_failed_step_gives_the_moving_statistics_back():
    xs, _ = shards("float32")
    assert on_ranks(_step_then_undo, *[(x,) for x in xs]) == [("sync_rows", True, True)] * 2
