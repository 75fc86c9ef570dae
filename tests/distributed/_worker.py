"""Run under ``mpiexec -n 2``: ``python _worker.py SCENARIO OUTDIR``; rank 0 writes OUTDIR/SCENARIO.npz.

Scenarios: ``main`` (every numerical check), ``raise`` (rank 1 raises in a
callback), ``stall`` (rank 1 stops answering; the collectives time out),
``nan`` (a NaN in the last sample: in rank 1's part of x, which only rank 1
checks), ``overlap`` (the gradients' allreduce in parts, persistent collectives).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import normlab  # noqa: E402
from normlab.distributed import DataParallel  # noqa: E402

import _cases as C  # noqa: E402


def flat(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def main(out: str) -> None:
    dist = DataParallel(timeout=60)
    comm = dist._comm
    res = {"size": np.array(dist.size)}
    for name, (build, make, kw) in C.FIT.items():
        x, y = make()
        m = C.compile_(build(), dist)
        verbose = 2 if name == "mlp" else 0
        h = m.fit(x, y, verbose=verbose, callbacks=[normlab.callbacks.CSVLogger(os.path.join(out, f"{name}.csv"))]
                  if name == "mlp" else None, **kw)
        w = flat(m)
        both = comm.allgather(w)
        res[f"{name}/weights"] = w
        res[f"{name}/rank_spread"] = np.array(np.max(np.abs(both[0] - both[1])))
        res[f"{name}/loss"] = np.array(h.history["loss"])
        res[f"{name}/accuracy"] = np.array(h.history["accuracy"])
        res[f"{name}/predict"] = m.predict(x, batch_size=16, verbose=0)
        res[f"{name}/evaluate"] = np.array(m.evaluate(x, y, batch_size=16, verbose=0))
    # a checkpoint written after 2 of 3 epochs resumes bit for bit on the same number of ranks
    x, y = C.data()
    m = C.compile_(C.mlp("sync"), dist)
    m.fit(x, y, batch_size=32, epochs=2, seed=1, verbose=0)
    path = os.path.join(out, "sync_2epochs.npz")
    if dist.is_chief:
        m.save(path)
    comm.any(False)  # a barrier: the file is there
    r = normlab.load_model(path)
    r.compile(r.optimizer, r.loss, metrics=["accuracy"], distribute=dist)
    r.fit(x, y, batch_size=32, epochs=3, initial_epoch=2, seed=1, verbose=0)
    res["resume/weights"] = flat(r)
    # train_on_batch takes the global batch
    m = C.compile_(C.mlp("sync"), dist)
    m.build((None, 6))
    m.set_weights(C.fixed_weights(m))
    res["tob/result"] = np.array(m.train_on_batch(x[:33], y[:33], return_dict=False))
    res["tob/weights"] = flat(m)
    # a generator builds the model on its first batch (no seed: each rank would draw its own weights)
    m = C.compile_(C.mlp("sync"), dist)
    m.fit(((x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)), epochs=1, verbose=0)
    both = comm.allgather(flat(m))
    res["stream/rank_spread"] = np.array(np.max(np.abs(both[0] - both[1])))
    # float32 features with a large offset: the synchronized statistics keep their digits
    rng = np.random.default_rng(dist.rank + 10)
    shard = (1e4 + rng.normal(size=(64, 3)) * np.array([1.0, 0.01, 100.0])).astype(np.float32)
    bn = normlab.layers.BatchNormalization(momentum=0.0, synchronized=True)
    bn._sync = comm
    res["offset/y"] = comm.allgather(bn(shard, training=True))
    res["offset/shards"] = comm.allgather(shard)
    res["offset/mean"] = bn.buffers["moving_mean"].copy()
    res["offset/var"] = bn.buffers["moving_variance"].copy()
    per_step_collectives(dist, res)
    gradient_check(comm, res)
    if dist.is_chief:
        np.savez(os.path.join(out, "main.npz"), **res)


class _BatchLogs(normlab.callbacks.Callback):
    """Reads every step's logs; with ``stop_at`` (rank, epoch, batch), that rank alone sets stop_training there."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.stop_at, self.seen, self.epoch = stop_at, [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([self.epoch, batch, logs["loss"], logs["accuracy"]])
        if self.stop_at == (normlab.distributed.rank(), self.epoch, batch):
            self.model.stop_training = True


class _StopAtEpochBegin(normlab.callbacks.Callback):
    """No per-batch hook: rank 0 alone sets stop_training when epoch ``epoch`` begins."""

    def __init__(self, epoch):
        super().__init__()
        self.at = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at and normlab.distributed.rank() == 0:
            self.model.stop_training = True


def per_step_collectives(dist, res) -> None:
    """fit's per-step sums of the logs and agreements on stopping: run when a callback needs them, else put off."""
    comm = dist._comm
    x, y = C.data()
    counts: dict = {}
    plain = comm.allreduce_

    def counted(buf, what="an allreduce"):
        counts[what] = counts.get(what, 0) + 1
        return plain(buf, what)

    comm.allreduce_ = counted
    try:
        # no per-batch callback: the epoch's logs are summed once, the ranks agree after its first step and at its end
        m = C.compile_(C.mlp("sync"), dist)
        h = m.fit(x, y, batch_size=32, epochs=3, seed=1, verbose=0)
        res["quiet/loss"] = np.array(h.history["loss"])
        res["quiet/accuracy"] = np.array(h.history["accuracy"])
        res["quiet/log_sums"] = np.array(counts.get("the sum of losses and metrics", 0))
        res["quiet/agreements"] = np.array(counts.get("the agreement on stopping", 0))
        counts.clear()
        # EarlyStopping's per-batch hook only counts steps: still once per epoch
        m = C.compile_(C.mlp("sync"), dist)
        m.fit(x, y, batch_size=32, epochs=3, seed=1, verbose=0,
              callbacks=[normlab.callbacks.EarlyStopping(monitor="loss", patience=10)])
        res["early/log_sums"] = np.array(counts.get("the sum of losses and metrics", 0))
        counts.clear()
        # a callback reading every step's logs sees them summed over the ranks at every step
        cb = _BatchLogs()
        m = C.compile_(C.mlp("sync"), dist)
        h = m.fit(x, y, batch_size=32, epochs=3, seed=1, verbose=0, callbacks=[cb])
        res["reader/batch_logs"] = np.array(cb.seen)
        res["reader/loss"] = np.array(h.history["loss"])
        res["reader/log_sums"] = np.array(counts.get("the sum of losses and metrics", 0))
        res["reader/agreements"] = np.array(counts.get("the agreement on stopping", 0))
    finally:
        comm.allreduce_ = plain
    # rank 1 alone stops at epoch 1, batch 1: every rank stops there
    cb = _BatchLogs(stop_at=(1, 1, 1))
    m = C.compile_(C.mlp("sync"), dist)
    m.fit(x, y, batch_size=32, epochs=3, seed=1, verbose=0, callbacks=[cb])
    res["stop_batch/steps"] = comm.allgather(np.array([len(cb.seen)]))
    res["stop_batch/rank_spread"] = np.array(np.ptp(comm.allgather(flat(m)), axis=0).max())
    # rank 0 alone sets the flag when epoch 1 begins (no per-batch hook): every rank stops after that epoch's first step
    m = C.compile_(C.mlp("sync"), dist)
    m.fit(x, y, batch_size=32, epochs=3, seed=1, verbose=0, callbacks=[_StopAtEpochBegin(1)])
    res["stop_epoch/steps"] = comm.allgather(np.array([m.optimizer.iterations]))
    res["stop_epoch/rank_spread"] = np.array(np.ptp(comm.allgather(flat(m)), axis=0).max())


def gradient_check(comm, res) -> None:
    """Central differences of the global loss sum_r sum(c_r * y_r) against the synchronized backward pass."""
    rng = np.random.default_rng(100 + comm.rank)
    x = rng.normal(size=(5 + comm.rank, 4)) * 3 + 7  # uneven shards: 5 and 6 rows
    c = rng.normal(size=x.shape)
    bn = normlab.layers.BatchNormalization(synchronized=True, epsilon=1e-3, dtype="float64")
    bn.build(x.shape)
    bn.params["gamma"][:] = [0.5, 1.5, -1.0, 2.0]
    bn.params["beta"][:] = [0.1, -0.2, 0.3, 0.0]
    bn._sync = comm

    def loss():
        y = bn(x, training=True)
        return comm.allreduce_(np.array([np.sum(c * y)]))[0]

    loss()
    dx = bn.backward(c)
    dgamma = comm.allreduce_(bn.grads["gamma"].copy())
    dbeta = comm.allreduce_(bn.grads["beta"].copy())
    h = 1e-6
    num_dx, ana_dx = [], []
    for owner in range(comm.size):
        n = comm.allgather(np.array([x.size]))[owner][0]
        for i in range(int(n)):
            vals = []
            for sign in (1, -1):
                if comm.rank == owner:
                    x.flat[i] += sign * h
                vals.append(loss())
                if comm.rank == owner:
                    x.flat[i] -= sign * h
            num_dx.append((vals[0] - vals[1]) / (2 * h))
            ana_dx.append(comm.allgather(np.array([dx.flat[i] if comm.rank == owner else 0.0]))[owner][0])
    num_p = []
    for key in ("gamma", "beta"):
        p = bn.params[key]
        for j in range(p.size):
            vals = []
            for sign in (1, -1):
                p.flat[j] += sign * h
                vals.append(loss())
                p.flat[j] -= sign * h
            num_p.append((vals[0] - vals[1]) / (2 * h))
    res["grad/num_dx"], res["grad/ana_dx"] = np.array(num_dx), np.array(ana_dx)
    res["grad/num_params"] = np.array(num_p)
    res["grad/ana_params"] = np.concatenate([dgamma.ravel(), dbeta.ravel()])


class _Fail(normlab.callbacks.Callback):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def on_train_batch_end(self, batch, logs=None):
        from normlab.distributed import rank

        if rank() == 1 and batch == 1:
            if self.mode == "raise":
                raise ValueError("boom on rank 1 at batch 1")
            time.sleep(60)  # stops answering: the other rank times out


def failing(mode: str) -> None:
    x, y = C.data()
    dist = DataParallel(timeout=120)
    m = C.compile_(C.mlp("sync"), dist)
    if mode == "nan":
        x = x.copy()
        x[-1, 0] = np.nan
    dist._comm.any(False)  # both ranks have started (imports take seconds on a loaded machine) ...
    dist._comm.timeout = 3  # ... and from here a rank that waits 3 s for the other ends the job
    m.fit(x, y, batch_size=32, epochs=2, seed=1, verbose=0, callbacks=[] if mode == "nan" else [_Fail(mode)])
    print("fit returned (it should not)", flush=True)


def kernels(out: str) -> None:
    """On the numba kernels: the synchronized row kernels, fused with relu, in training; their gradient check."""
    dist = DataParallel(timeout=120)
    res = {}
    for name in ("sync", "cnn"):
        build, make, kw = C.FIT[name]
        x, y = make()
        m = C.compile_(build(), dist)
        h = m.fit(x, y, verbose=0, **kw)
        res[f"{name}/weights"] = flat(m)
        res[f"{name}/loss"] = np.array(h.history["loss"])
        res[f"{name}/fused"] = np.array([type(n.layer).__name__ == "SyncBatchNormActivation"
                                         for n in m._executor.nodes]).any()
    gradient_check(dist._comm, res)
    if dist.is_chief:
        np.savez(os.path.join(out, "kernels.npz"), **res)


def overlap(out: str) -> None:
    """The gradients' allreduce in parts started during the backward pass, and persistent collectives: the same
    bits as one allreduce after it on nonblocking collectives (2 ranks: every element is a + b either way)."""
    res = {}
    for name in ("deep", "cnn", "sync"):
        build, make, kw = C.FIT[name]
        x, y = make()
        for setting, persistent in (("1", True), ("0", True), ("0", False)):
            os.environ["NORMLAB_GRAD_BUCKETS"] = setting  # "1": every meeting starts its part, however small
            dist = DataParallel(timeout=120)
            dist._comm.persistent = persistent
            m = C.compile_(build(), dist)
            h = m.fit(x, y, verbose=0, **kw)
            key = f"{name}/buckets={setting},persistent={int(persistent)}"
            res[key + "/weights"] = flat(m)
            res[key + "/loss"] = np.array(h.history["loss"])
            res[key + "/rank_spread"] = np.array(np.ptp(dist._comm.allgather(flat(m)), axis=0).max())
            buckets = dist._buckets[2] if dist._buckets is not None else None
            started = [] if buckets is None else [p for p in buckets.points if p is not None] + [buckets.last]
            res[key + "/parts"] = np.array(started, dtype=np.int64).reshape(-1, 2)
            res[key + "/bound"] = np.array(len(dist._comm._bound))
    os.environ.pop("NORMLAB_GRAD_BUCKETS", None)
    if DataParallel().is_chief:
        np.savez(os.path.join(out, "overlap.npz"), **res)


if __name__ == "__main__":
    scenario, outdir = sys.argv[1], sys.argv[2]
    if scenario == "main":
        main(outdir)
    elif scenario == "kernels":
        kernels(outdir)
    elif scenario in ("overlap", "overlap-numba"):
        overlap(outdir)
    else:
        failing(scenario)
