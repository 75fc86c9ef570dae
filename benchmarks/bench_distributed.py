"""Data-parallel throughput: 2 MPI ranks (1 thread each) against 1 rank, and against torch at 2 threads.

Models (issue 25):

* ``mlp``: the BN-paper MLP, 784 - 3 x (Dense 100 without bias, BN, sigmoid)
  - Dense 10 softmax, batch 1024 (the global batch), Adam;
* ``cnn``: the Fashion-MNIST example CNN (``examples/fashion_mnist_cnn.py``,
  augmentation off), batch 128.

Batch normalization is synchronized (``--plain-bn``: per-rank statistics).
What is timed: one ``model.fit(epochs=1)`` over ``steps`` global batches
(shuffling, the accuracy metric and the reduction of the logs included:
once per epoch, as no callback reads a step's logs; ``--batch-logs`` adds one
that does, and with it the per-step sums and agreements on stopping),
after a warm-up fit of 2 steps; the data are random (the throughput does not
depend on them). Each rank reports the seconds it spent
inside the allreduce of the gradients (waiting for the other rank
included), and the busiest rank's CPU time per step less its polling for
the others (the work of a step, communication included): on a shared machine
the ratio of CPU times (``cpu_speedup_2_over_1``) says what a quiet one
would give, where the wall-clock ratio also measures the other processes. torch: the same network
(``nn.Linear``/``nn.BatchNorm1d``, or the benchmark twin of the CNN) at 2
threads, ``steps`` steps of the same batch size.

Rounds interleave the three runs (1 rank, 2 ranks, torch), each in a fresh
process; medians over the rounds. Usage::

    PYTHONPATH=src python benchmarks/bench_distributed.py --model mlp --rounds 5
    PYTHONPATH=src python benchmarks/bench_distributed.py --model cnn --steps 20 --rounds 3
    PYTHONPATH=src python benchmarks/bench_distributed.py --model mlp --compare-plain --no-torch --rounds 5
    PYTHONPATH=src python benchmarks/bench_distributed.py --layer --rounds 5
    PYTHONPATH=src python benchmarks/bench_distributed.py --model mlp --steps 60 --rounds 5 --ceiling --compare-plain
    PYTHONPATH=src mpiexec -n 2 python benchmarks/bench_distributed.py --model mlp --steps 60 --profile
    PYTHONPATH=src python benchmarks/bench_distributed.py --model mlp --steps 60 --rounds 5 --ceiling --no-torch \
        --floor fbg fg f n
    PYTHONPATH=src python benchmarks/bench_distributed.py --model cnn --steps 20 --rounds 5 --ceiling --no-torch \
        --compare-env NORMLAB_GRAD_BUCKETS=0,NORMLAB_MPI_PERSISTENT=0

``--compare-plain`` adds 2 ranks with plain BN to every round (synchronized
against plain in the same run); ``--layer`` times the synchronized BN +
activation pair against the plain one in one process, without collectives.
``--ceiling`` adds to every round two processes without MPI at half the
global batch each, started together, and one such process alone: the
machine's ceiling for 2 ranks (``ceiling_cpu_speedup``), split into
``half_batch_cpu_speedup`` and ``two_processes_cpu_efficiency``.
``--floor SPEC...`` adds to every round 2 processes under MPI without
``DataParallel``, each training its own model on half the batch with plain
BN and meeting the other where a synchronized run meets (``f``: after each
BN's forward, ``b``: after its backward, ``g``: the gradient allreduce;
``n``: no meeting): what the meetings alone cost on this machine
(``floor_speedup``), and the distribution code's own cost beyond them
(``2_ranks_over_floor``). ``--glue`` (one process, no MPI) times the
distribution code alone: ``DataParallel`` on a communicator whose other
rank mirrors this one, against the floor's model on the same, no waiting.
``--profile`` (under mpiexec) prints, for every rank, the wall and CPU
milliseconds per step spent in each part of a step. ``--compare-wait SPEC``
adds 2 ranks waiting in collectives another way (``--wait``; ``100,0,-,0``
is the earlier poll-and-yield), ``--compare-split-check`` 2 ranks checking
only their part of ``x`` for NaN/inf, ``--compare-env SPEC`` 2 ranks with
environment variables set (``NORMLAB_MPI_PERSISTENT=0``: nonblocking
collectives instead of persistent ones; ``NORMLAB_GRAD_BUCKETS=0``: the
gradients summed in one allreduce after the backward pass, not in parts
during it; ``A=0,B=0`` sets both); ``ratios_2_over_1`` gives every
2-rank run against 1 rank in samples per second, CPU time less polling and
CPU time with polling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = {"mlp": 1024, "cnn": 128}


def _one_thread_env(threads: int = 1) -> dict:
    n = str(threads)
    return dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n, NUMBA_NUM_THREADS=n,
                PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def build(model: str, sync: bool):
    import normlab
    from normlab import layers as L

    if model == "mlp":
        layers = []
        for _ in range(3):
            layers += [L.Dense(100, use_bias=False), L.BatchNormalization(synchronized=sync), L.Activation("sigmoid")]
        m = normlab.Sequential([*layers, L.Dense(10, activation="softmax")])
        return m, (784,)
    sys.path.insert(0, ROOT)
    from benchmarks.bench_fashion_epoch import load_example

    m = load_example().build_model(seed=0, augment="none")
    for layer in m.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.synchronized = sync
    return m, (28, 28, 1)


def _compiled_run(args):
    """The model of ``args`` compiled with ``DataParallel`` and run on two batches first (kernels
    compiled, ranks bound): ``(strategy, model, x, y, global batch)``."""
    import numpy as np

    import normlab
    from normlab.distributed import DataParallel

    dist = DataParallel(timeout=300)
    model, shape = build(args.model, not args.plain_bn)
    model.compile(normlab.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"],
                  distribute=dist)
    b = args.batch or BATCH[args.model]
    rng = np.random.default_rng(0)
    x = rng.random((b * args.steps,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    model.fit(x[: 2 * b], y[: 2 * b], batch_size=b, epochs=1, verbose=0, seed=0)
    return dist, model, x, y, b


def _set_wait(dist, spec) -> None:
    """``--wait SPIN,YIELD,NAP,WINDOW`` (microseconds; NAP ``-`` for none): the ranks' waiting in collectives."""
    if not spec:
        return
    spin, yld, nap, window = spec.split(",")
    c = dist._comm
    c.spin_seconds, c.yield_seconds = float(spin) * 1e-6, float(yld) * 1e-6
    c.nap_seconds = None if nap == "-" else float(nap) * 1e-6
    c.window_seconds = float(window) * 1e-6


def _callbacks(args):
    """``--batch-logs``: a callback with its own on_train_batch_end, so that fit sums the logs over the ranks
    and agrees on stopping at every step (without one, once per epoch)."""
    if not getattr(args, "batch_logs", False):
        return None
    import normlab

    class _ReadsBatchLogs(normlab.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.last = logs

    return [_ReadsBatchLogs()]


def worker(args) -> None:
    """One run under mpiexec (or alone): rank 0 prints a JSON line."""
    import numpy as np

    dist, model, x, y, b = _compiled_run(args)
    _set_wait(dist, args.wait)
    if args.split_check:
        # the proposed hook of BaseModel._finite (models/_model_inputs.py), simulated: each rank checks its part of x
        def finite(arr, owner):
            dist.check_finite(arr, owner)
            return arr

        model._finite = finite
    calls0, secs0, wait0 = dist.allreduce_calls, dist.allreduce_seconds, dist._comm.wait_cpu_seconds
    t, cpu, tcpu = time.perf_counter(), time.process_time(), time.thread_time()
    model.fit(x, y, batch_size=b, epochs=1, verbose=0, seed=1, callbacks=_callbacks(args))
    wall, cpu, tcpu = time.perf_counter() - t, time.process_time() - cpu, time.thread_time() - tcpu
    polling = dist._comm.wait_cpu_seconds - wait0
    # the busiest rank's CPU time less its polling for the other: the work of a step without the
    # waiting for a core (this machine is shared by other jobs)
    cpu -= polling
    everyone = dist._comm.allgather(np.array([cpu, tcpu - polling, polling, cpu + polling]))
    cpu, tcpu, polling, busy = (float(v) for v in everyone.max(axis=0))
    calls, secs = dist.allreduce_calls - calls0, dist.allreduce_seconds - secs0
    grad_bytes = model._flat[0].nbytes if model._flat is not None else 0
    if dist.is_chief:
        print(json.dumps({"ranks": dist.size, "seconds": wall, "samples_per_s": len(x) / wall,
                          "step_ms": 1e3 * wall / args.steps, "cpu_ms_per_step": 1e3 * cpu / args.steps,
                          "main_thread_cpu_ms_per_step": 1e3 * tcpu / args.steps,
                          "polling_ms_per_step": 1e3 * polling / args.steps,
                          "cpu_with_polling_ms_per_step": 1e3 * busy / args.steps,
                          "threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0,
                          "allreduce_ms_per_step": 1e3 * secs / max(calls, 1), "gradient_bytes": grad_bytes}))


class _Timers:
    """Wall and CPU (thread) seconds spent inside wrapped callables, by label, nested calls counted in each."""

    def __init__(self, comm=None):
        self.wall, self.cpu, self.calls, self.polling = {}, {}, {}, {}
        self.comm = comm  # its wait_cpu_seconds: the CPU time spent polling for the other ranks

    def wrap(self, owner, name, label):
        fn = getattr(owner, name)
        timers = self

        def timed(*a, **k):
            lab = label(*a, **k) if callable(label) else label
            w = timers.comm.wait_cpu_seconds if timers.comm is not None else 0.0
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                timers.wall[lab] = timers.wall.get(lab, 0.0) + time.perf_counter() - t
                timers.cpu[lab] = timers.cpu.get(lab, 0.0) + time.thread_time() - c
                timers.calls[lab] = timers.calls.get(lab, 0) + 1
                if timers.comm is not None:
                    timers.polling[lab] = timers.polling.get(lab, 0.0) + timers.comm.wait_cpu_seconds - w

        setattr(owner, name, timed)


def profile_worker(args) -> None:
    """Under mpiexec: where a rank's step goes (wall and CPU ms per step, by part); rank 0 prints a JSON line.

    Parts (nested ones inside their parents): the whole ``fit``; the step
    (``_train_step``); forward + backward (``_backprop``, synchronized BN's
    collectives inside); the gradient allreduce; synchronized BN's allgathers
    and allreduces; the optimizer's update; the per-step reduction of the logs
    and the agreement on stopping (each an allreduce); the metrics' update.
    What ``fit`` spends outside the step: the loop, the batches (the shard's
    gather), the metrics and logs.
    """
    import numpy as np

    dist, model, x, y, b = _compiled_run(args)
    T = _Timers(dist._comm)
    T.wrap(model, "_train_step", "step")
    T.wrap(model, "_backprop", "step: forward + backward")
    T.wrap(model, "_apply_optimizer", "step: optimizer update")
    comm = dist._comm
    T.wrap(comm, "allreduce_timed_", "step: gradient allreduce")
    T.wrap(comm, "allreduce_gradients_", "step: gradient allreduce")
    from normlab.distributed._comm import GradientBuckets

    T.wrap(GradientBuckets, "finish", "step: gradient allreduce")
    T.wrap(comm, "gather_stats", lambda a, what="": f"collective: {what}")
    T.wrap(comm, "sum_stats_", lambda a, what="": f"collective: {what}")
    T.wrap(comm, "allgather", lambda a, what="": f"collective: {what}")
    T.wrap(comm, "allreduce_", lambda a, what="": f"collective: {what}")
    T.wrap(comm, "finish", lambda req, what="": f"collective: {what} (finishing)")
    T.wrap(dist, "step_logs", "loop: step_logs (the logs' sums, per step or put off)")
    T.wrap(dist, "epoch_logs", "loop: epoch_logs (the put-off sum, per epoch)")
    T.wrap(dist, "agree_stop", "loop: agree_stop")
    T.wrap(dist, "any", "loop: any(stop_training) (the allreduces)")
    for m in model.metrics:
        T.wrap(m, "update_state", "loop: metric update")
    T.wrap(model, "fit", "fit")
    model.fit(x, y, batch_size=b, epochs=1, verbose=0, seed=1, callbacks=_callbacks(args))
    res = {"ranks": dist.size, "model": args.model, "batch": b, "steps": args.steps,
           "synchronized_bn": not args.plain_bn, "loadavg": os.getloadavg()[0],
           "wall_ms_per_step": {k: 1e3 * v / args.steps for k, v in T.wall.items()},
           "cpu_ms_per_step": {k: 1e3 * v / args.steps for k, v in T.cpu.items()},
           "cpu_less_polling_ms_per_step": {k: 1e3 * (v - T.polling[k]) / args.steps for k, v in T.cpu.items()},
           "calls_per_step": {k: v / args.steps for k, v in T.calls.items()}}
    everyone = comm.allgather(np.frombuffer(json.dumps(res).encode().ljust(8192), np.uint8))
    if dist.is_chief:
        print(json.dumps([json.loads(r.tobytes().decode()) for r in everyone]))


def solo_worker(args) -> None:
    """One process without MPI (no strategy): ``steps`` steps at ``--batch``; prints a JSON line.

    With ``--start-file``, after its warm-up it waits until that file
    exists (the driver creates it when every process is ready), so that
    processes started together time the same seconds.
    """
    import numpy as np

    import normlab

    model, shape = build(args.model, not args.plain_bn)
    model.compile(normlab.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    b = args.batch or BATCH[args.model]
    rng = np.random.default_rng(args.seed)
    x = rng.random((b * args.steps,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    model.fit(x[: 2 * b], y[: 2 * b], batch_size=b, epochs=1, verbose=0, seed=0)
    if args.start_file:
        open(args.start_file + f".ready{args.seed}", "w").close()
        while not os.path.exists(args.start_file):
            time.sleep(0.001)
    t, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=b, epochs=1, verbose=0, seed=1)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(json.dumps({"batch": b, "seconds": wall, "samples_per_s": len(x) / wall, "step_ms": 1e3 * wall / args.steps,
                      "cpu_ms_per_step": 1e3 * cpu / args.steps}))


def _meet_as_synchronized(model, comm, meet: str) -> dict:
    """Make the plain-BN ``model`` meet the other ranks where a synchronized step meets them, through ``comm``
    (a :class:`normlab.distributed._comm.Communicator`): ``f`` after each batch norm's forward kernel (an
    allgather of ``1 + 2C`` numbers), ``b`` after its backward kernel (an allreduce of ``2C``), ``g`` the flat
    gradient buffer's allreduce before the update. Returns ``(met, restore)``: the counts of the kernels'
    calls (``f``, ``b``), which a caller checks (a model whose batch norms take another path never meets),
    and what puts back the row kernels, patched for the whole process until then."""
    import numpy as np

    from normlab.kernels import batchnorm_rows as R

    plain_forward, plain_backward = R.train_forward, R.train_backward
    met = {"f": 0, "b": 0}

    def forward(x, *a, **k):
        out = plain_forward(x, *a, **k)
        met["f"] += 1
        if "f" in meet:
            comm.gather_stats(np.zeros(1 + 2 * x.shape[-1]), "the floor's forward meeting")
        return out

    def backward(dy, *a, **k):
        out = plain_backward(dy, *a, **k)
        met["b"] += 1
        if "b" in meet:
            comm.sum_stats_(np.zeros(2 * dy.shape[-1]), "the floor's backward meeting")
        return out

    R.train_forward, R.train_backward = forward, backward
    plain_apply = model._apply_optimizer

    def apply():
        if model._flat is not None and "g" in meet:
            comm.allreduce_gradients_(model._flat[0], "the floor's gradient allreduce")
        plain_apply()

    model._apply_optimizer = apply

    def restore():
        R.train_forward, R.train_backward = plain_forward, plain_backward

    return met, restore


def floor_worker(args) -> None:
    """Under mpiexec, no ``DataParallel``: each rank trains its own model on half the batch (plain batch norm,
    its own data), meeting the other ranks where a synchronized run meets them; rank 0 prints a JSON line.

    The meetings are the library's collectives (:class:`normlab.distributed._comm.Communicator`, the same
    persistent requests and waiting) at the same points of a step: after each batch norm's statistics in the
    forward pass an allgather of ``1 + 2C`` numbers, after its sums in the backward pass an allreduce of
    ``2C``, and the allreduce of the whole flat gradient buffer before the optimizer's update. What a
    synchronized run adds to this is the distribution's own code (sharding, scaling, the synchronized
    kernels' extra passes, the gradient parts); what this adds to the ceiling (2 processes that never meet)
    is what meeting costs on this machine: the collectives' own work and each meeting's wait for the
    slower rank. Timed as :func:`worker`.
    """
    import numpy as np

    import normlab
    from normlab.distributed._comm import Communicator, load_mpi

    MPI = load_mpi()
    comm = Communicator(MPI.COMM_WORLD, 300.0)
    half = (args.batch or BATCH[args.model]) // comm.size
    model, shape = build(args.model, False)
    model.compile(normlab.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    met, _ = _meet_as_synchronized(model, comm, args.meet)
    rng = np.random.default_rng(comm.rank)
    x = rng.random((half * args.steps,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    model.fit(x[: 2 * half], y[: 2 * half], batch_size=half, epochs=1, verbose=0, seed=0)
    wait0 = comm.wait_cpu_seconds
    t, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=half, epochs=1, verbose=0, seed=1)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    polling = comm.wait_cpu_seconds - wait0
    if not met["f"] or not met["b"]:  # the model's batch norms took another path: the floor would not meet
        raise RuntimeError(f"floor: the batch norms met {met} times; expected the row kernels in both passes")
    everyone = comm.allgather(np.array([cpu - polling, polling, cpu]))
    cpu, polling, busy = (float(v) for v in everyone.max(axis=0))
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "seconds": wall, "samples_per_s": comm.size * len(x) / wall,
                          "step_ms": 1e3 * wall / args.steps, "cpu_ms_per_step": 1e3 * cpu / args.steps,
                          "polling_ms_per_step": 1e3 * polling / args.steps,
                          "cpu_with_polling_ms_per_step": 1e3 * busy / args.steps}))


class _MirrorRequest:
    def __init__(self, act=None):
        self.act = act

    def Start(self):
        if self.act is not None:
            self.act()

    def Test(self):
        return True

    def Free(self):
        pass

    def __bool__(self):
        return True


class _MirrorComm:
    """An mpi4py communicator of ``size`` ranks in one process, every other rank a mirror of this one: a sum
    multiplies by ``size``, a gather repeats; nothing waits (the collectives ``Communicator`` uses)."""

    def __init__(self, size=2):
        self.size = size

    def Get_rank(self):
        return 0

    def Get_size(self):
        return self.size

    @staticmethod
    def _array(buf):
        return buf[0] if isinstance(buf, list) else buf

    def Allreduce_init(self, _, buf, op=None):
        a = self._array(buf)
        return _MirrorRequest(lambda: a.__imul__(self.size))

    def Allgather_init(self, send, recv):
        a, b = self._array(send), self._array(recv)

        def gather():
            b[...] = a

        return _MirrorRequest(gather)

    def Iallreduce(self, _, buf, op=None):
        self._array(buf).__imul__(self.size)
        return _MirrorRequest()

    def Iallgather(self, local, out):
        out[...] = local
        return _MirrorRequest()

    def Ibcast(self, buf, root=0):
        return _MirrorRequest()

    def Abort(self, code=1):
        os._exit(code)


def glue_ab(args) -> dict:
    """One process, no MPI: ``DataParallel`` (synchronized BN) on a 2-rank communicator whose other rank
    mirrors this one, against the floor's model (plain BN, the same collectives at the same points through
    :class:`normlab.distributed._comm.Communicator` on the same mirror), fits alternating round by round:
    the distribution code's own CPU cost per step, with no waiting. Medians of CPU ms per step."""
    import normlab
    from normlab.distributed import DataParallel
    from normlab.distributed._comm import Communicator

    normlab.set_num_threads(1)
    b = args.batch or BATCH[args.model]
    dp, shape = build(args.model, True)
    dp.compile(normlab.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"],
               distribute=DataParallel(comm=_MirrorComm(), timeout=300))
    floor, _ = build(args.model, False)
    floor.compile(normlab.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    comm = Communicator(_MirrorComm(), 300.0)
    _, restore = _meet_as_synchronized(floor, comm, "fbg")
    try:
        return _glue_rounds(args, dp, floor, shape, b)
    finally:
        restore()


def _glue_rounds(args, dp, floor, shape, b) -> dict:
    """:func:`glue_ab`'s rounds, its two models compiled and the floor's meetings in place."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((b * args.steps,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    half = b // 2
    runs = {"DataParallel, 2 mirrored ranks": (dp, x, y, b), "floor fbg, half the batch": (floor, x, y, half)}
    for m, xx, yy, bb in runs.values():
        m.fit(xx[: 2 * bb], yy[: 2 * bb], batch_size=bb, epochs=1, verbose=0, seed=0)
    times = {k: [] for k in runs}
    for _ in range(args.rounds * 3):
        for name, (m, xx, yy, bb) in runs.items():
            n = args.steps * bb
            c = time.process_time()
            m.fit(xx[:n], yy[:n], batch_size=bb, epochs=1, verbose=0, seed=1)
            times[name].append(1e3 * (time.process_time() - c) / args.steps)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["distribution_code_over_floor_cpu"] = out["DataParallel, 2 mirrored ranks"] / out["floor fbg, half the batch"]
    out["model"], out["loadavg"] = args.model, os.getloadavg()[0]
    return out


class _OneRank:
    """The collectives of a single rank (what they return without moving data): the passes alone."""

    def allgather(self, a, what=""):
        return a[None].copy()

    def allreduce_(self, a, what=""):
        return a

    gather_stats, sum_stats_ = allgather, allreduce_


def layer_ab(args) -> dict:
    """Training forward + backward of BN + activation at the shapes of a rank's shard, synchronized vs plain.

    One process, one thread, the synchronized pair given one rank's collectives
    (:class:`_OneRank`): the passes over the data without the communication.
    A and B alternate within each round; medians of microseconds per
    forward + backward.
    """
    import numpy as np

    import normlab
    from normlab import layers as L
    from normlab.distributed._sync_fused import SyncBatchNormActivation
    from normlab.layers.fused import BatchNormActivation

    normlab.set_num_threads(1)
    # a rank's shard on 2 ranks: the MLP's BN layers (batch 512 of 1024), the CNN's (64 of 128 images)
    cases = {"mlp": ((512, 100), "sigmoid"), "cnn 28x28x32": ((64 * 28 * 28, 32), "relu"),
             "cnn 14x14x64": ((64 * 14 * 14, 64), "relu"), "cnn dense 128": ((64, 128), "relu")}
    rng = np.random.default_rng(0)
    out = {}
    for name, (shape, act) in cases.items():
        x = rng.normal(size=shape).astype(np.float32) * 2 + 1
        da = rng.normal(size=shape).astype(np.float32)
        pairs = {}
        for kind in ("plain", "sync"):
            bn, a = L.BatchNormalization(synchronized=kind == "sync"), L.Activation(act)
            bn.build(shape)
            a.build(shape)
            if kind == "sync":
                bn._sync = _OneRank()
                pairs[kind] = SyncBatchNormActivation(bn, a)
            else:
                pairs[kind] = BatchNormActivation(bn, a)
        reps = max(3, int(2e7 // x.size))
        times = {k: [] for k in pairs}
        for _ in range(args.rounds * 3):
            for k, p in pairs.items():
                p._train_forward(x), p._train_backward(da)
                t = time.perf_counter()
                for _ in range(reps):
                    p._train_forward(x)
                    p._train_backward(da)
                times[k].append((time.perf_counter() - t) / reps * 1e6)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[name] = {"shape": list(shape), "activation": act, "plain_us": med["plain"], "sync_us": med["sync"],
                     "sync_over_plain": med["sync"] / med["plain"]}
    out["loadavg"] = os.getloadavg()[0]
    return out


def torch_run(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    b = args.batch or BATCH[args.model]
    rng = np.random.default_rng(0)
    if args.model == "mlp":
        mods = []
        for i in range(3):
            mods += [torch.nn.Linear(784 if i == 0 else 100, 100, bias=False), torch.nn.BatchNorm1d(100, eps=1e-3),
                     torch.nn.Sigmoid()]
        net = torch.nn.Sequential(*mods, torch.nn.Linear(100, 10))
        x = torch.from_numpy(rng.random((b, 784), dtype=np.float32))
    else:
        sys.path.insert(0, ROOT)
        from benchmarks.bench_fashion_epoch import build_torch_net

        model, _ = build("cnn", False)
        model.build((None, 28, 28, 1))
        net = build_torch_net(model)
        x = torch.from_numpy(rng.random((b, 1, 28, 28), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, b))
    opt, ce = torch.optim.Adam(net.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        ce(net(x), y).backward()
        opt.step()

    step(), step()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = time.perf_counter() - t
    print(json.dumps({"ranks": "torch-2-threads", "seconds": wall, "samples_per_s": b * args.steps / wall,
                      "step_ms": 1e3 * wall / args.steps}))


def latency(args) -> None:
    """Under mpiexec: median seconds of one bounded allreduce (float32 buffers) of several sizes."""
    import numpy as np

    from normlab.distributed._comm import Communicator, load_mpi

    c = Communicator(load_mpi().COMM_WORLD, 300)
    out = {}
    for nbytes in (64, 4096, 65536, 400_000, 4_000_000):
        buf = np.ones(nbytes // 4, np.float32)
        reps = 200 if nbytes < 100_000 else 20
        for _ in range(5):
            c.allreduce_(buf)
        ts = []
        for _ in range(7):
            c.comm.Barrier()
            t = time.perf_counter()
            for _ in range(reps):
                c.allreduce_(buf)
            ts.append((time.perf_counter() - t) / reps)
        out[str(nbytes)] = statistics.median(ts)
    if c.rank == 0:
        print(json.dumps({"ranks": c.size, "allreduce_seconds": out}))


def cost_table(compute_s_per_sample: float, batch: int, grad_bytes: int, bn_layers: int,
               links=(("this machine (shared memory)", None, None), ("10 Gbit/s", 1.25e9, 50e-6),
                      ("100 Gbit/s", 12.5e9, 5e-6)), measured=None, ns=(1, 2, 4, 8, 16, 32, 64, 128),
               fixed_s: float = 0.0) -> list:
    """Modelled step time and efficiency of a global batch ``batch`` on N ranks (see docs/distributed.md).

    ``T(N) = t0 + c B / N + 2 (N-1)/N G / W + 2 (N-1) a + 3 bn log2(N) a``: the part of a step that
    does not shrink with N (``fixed_s``), compute, a ring allreduce of the
    ``G`` gradient bytes (bandwidth ``W``, latency ``a`` per message), and per synchronized BN layer an
    allgather and an allreduce of a few numbers (recursive doubling: ``log2 N`` latencies, twice for the
    allreduce). ``measured``: ``(W, a)`` of this machine.
    """
    import math

    rows = []
    for name, w, a in links:
        if w is None:
            if measured is None:
                continue
            w, a = measured
        for n in ns:
            comm = 0.0 if n == 1 else 2 * (n - 1) / n * grad_bytes / w + 2 * (n - 1) * a
            bn = 0.0 if n == 1 else 3 * bn_layers * math.log2(n) * a
            t = fixed_s + compute_s_per_sample * batch / n + comm + bn
            rows.append({"link": name, "N": n, "step_ms": 1e3 * t, "allreduce_ms": 1e3 * comm, "sync_bn_ms": 1e3 * bn,
                         "efficiency": (fixed_s + compute_s_per_sample * batch) / (n * t)})
    return rows


BN_LAYERS = {"mlp": 3, "cnn": 4}


def cost_report(paths, latency_path) -> str:
    """Markdown tables of :func:`cost_table` from benchmark results (``--json``) and a ``--latency`` run."""
    with open(latency_path) as fh:
        lat = json.loads(fh.read().strip().splitlines()[-1])["allreduce_seconds"]
    a = lat["64"] / 2  # a 2-rank allreduce of a few bytes: two message latencies (reduce, then broadcast)
    big = int(max(lat, key=int))
    w = big / (lat[str(big)] - 2 * a)  # 2 ranks: 2 (N-1)/N G / W = G / W
    lines = [f"This machine (2 ranks, shared memory): latency a = {1e6 * a:.1f} us, bandwidth W = {w / 1e9:.2f} GB/s "
             f"(from {big / 1e6:g} MB in {1e3 * lat[str(big)]:.2f} ms).", ""]
    for path in paths:
        with open(path) as fh:
            res = json.load(fh)
        one, two = res["1 rank"], res["2 ranks"]
        # the model: all of the 1-rank step is compute that splits over the ranks. Measured, part of it did
        # not halve from 1 to 2 ranks: t0 (the update on every rank, per-step calls, synchronized BN's
        # NumPy passes), which caps the speedup at (t0 + c B) / t0 whatever the links
        c = one["cpu_ms_per_step"] / 1e3 / res["batch"]
        t0 = max(0.0, 2 * two["cpu_ms_per_step"] - one["cpu_ms_per_step"]) / 1e3
        g = res["2 ranks"]["gradient_bytes"] or one["gradient_bytes"]
        lines += [f"**{res['model']}** ({'synchronized' if res['synchronized_bn'] else 'plain'} BN), global batch "
                  f"{res['batch']}: c = {1e6 * c:.2f} us per sample (1 thread), gradient G = {g / 1e6:.2f} MB, "
                  f"{BN_LAYERS[res['model']] if res['synchronized_bn'] else 0} synchronized BN layers. Measured "
                  f"part of the step that did not halve on 2 ranks: t0 = {1e3 * t0:.2f} ms (caps the speedup at "
                  f"{(c * res['batch']) / t0 if t0 else float('inf'):.1f}x).", "",
                  "| link | N | step ms | allreduce ms | sync BN ms | efficiency |", "| --- | --- | --- | --- | --- | --- |"]
        bn = BN_LAYERS[res["model"]] if res["synchronized_bn"] else 0
        for r in cost_table(c, res["batch"], g, bn, measured=(w, a)):
            if r["link"].startswith("this") and r["N"] > 8:
                continue
            lines.append(f"| {r['link']} | {r['N']} | {r['step_ms']:.2f} | {r['allreduce_ms']:.3f} | "
                         f"{r['sync_bn_ms']:.3f} | {r['efficiency']:.0%} |")
        lines.append("")
    return "\n".join(lines)


def _run(cmd, env, timeout=900) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ceiling_round(args, me, together: bool = True) -> dict:
    """Two single processes without MPI (1 thread each, half the global batch each) timed over the same seconds.

    The hardware's ceiling for 2 ranks: what two independent halves of the
    training give on this machine (shared caches and memory bandwidth, the
    other jobs), with no communication, no sharding and no strategy. Each
    keeps its own optimizer update, as every rank does. Returns their summed
    samples per second and the slower one's CPU time per step (of its half
    batch: the step of a rank with nothing to wait for).

    ``together=False``: one such process alone (the half batch's step
    without a second process beside it). Against 1 process at the full
    batch it splits the ceiling in two: what halving the batch leaves
    (the step's parts that do not shrink with it: the update, per-layer
    calls) and what running two processes at once costs (the machine).
    """
    import tempfile

    half = (args.batch or BATCH[args.model]) // 2
    cmd = [a for a in me if a != "--worker"]
    i = cmd.index("--batch") if "--batch" in cmd else None
    if i is not None:
        del cmd[i : i + 2]
    with tempfile.TemporaryDirectory() as tmp:
        start = os.path.join(tmp, "start")
        procs = [subprocess.Popen([*cmd, "--batch", str(half), "--solo", "--seed", str(k), "--start-file", start],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_one_thread_env())
                 for k in ((1, 2) if together else (1,))]
        deadline = time.monotonic() + 600
        while not all(os.path.exists(f"{start}.ready{k}") for k in range(1, len(procs) + 1)):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        open(start, "w").close()
        outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"ceiling run failed:\n{out}\n{err}")
    rs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    return {"samples_per_s": sum(r["samples_per_s"] for r in rs), "step_ms": max(r["step_ms"] for r in rs),
            "cpu_ms_per_step": max(r["cpu_ms_per_step"] for r in rs),
            "overlap": min(r["seconds"] for r in rs) / max(r["seconds"] for r in rs)}


def _floor_name(spec: str) -> str:
    return f"floor: 2 processes meeting at {spec}, no DataParallel"


def driver(args) -> dict:
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    me = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--steps", str(args.steps)]
    if args.batch:
        me += ["--batch", str(args.batch)]
    if args.plain_bn:
        me += ["--plain-bn"]
    runs = {"1 rank": [], "2 ranks": [], "2 ranks plain BN": [], "2 ranks, per-step logs": [], "torch 2 threads": [],
            "ceiling: 2 processes, no MPI": [], "1 process, half batch, no MPI": [],
            }
    for _ in range(args.rounds):
        runs["1 rank"].append(_run([mpiexec, "-n", "1", *me, "--worker"], _one_thread_env()))
        runs["2 ranks"].append(_run([mpiexec, "-n", "2", *me, "--worker"], _one_thread_env()))
        if args.compare_plain and not args.plain_bn:
            runs["2 ranks plain BN"].append(_run([mpiexec, "-n", "2", *me, "--plain-bn", "--worker"],
                                                 _one_thread_env()))
        for spec in args.compare_wait or ():
            runs.setdefault(f"2 ranks, wait {spec}", []).append(
                _run([mpiexec, "-n", "2", *me, "--wait", spec, "--worker"], _one_thread_env()))
            if args.compare_plain and not args.plain_bn:
                runs.setdefault(f"2 ranks plain BN, wait {spec}", []).append(
                    _run([mpiexec, "-n", "2", *me, "--plain-bn", "--wait", spec, "--worker"], _one_thread_env()))
        for spec in args.compare_env or ():
            # the same 2-rank run with an environment variable set (the library's switches, e.g.
            # NORMLAB_MPI_PERSISTENT=0: nonblocking collectives instead of persistent ones)
            env = dict(_one_thread_env(), **dict(a.split("=", 1) for a in spec.split(",")))
            runs.setdefault(f"2 ranks, {spec}", []).append(_run([mpiexec, "-n", "2", *me, "--worker"], env))
            if args.compare_plain and not args.plain_bn:
                runs.setdefault(f"2 ranks plain BN, {spec}", []).append(
                    _run([mpiexec, "-n", "2", *me, "--plain-bn", "--worker"], env))
        if args.compare_split_check:
            runs.setdefault("2 ranks, x checked in parts", []).append(
                _run([mpiexec, "-n", "2", *me, "--split-check", "--worker"], _one_thread_env()))
        if args.compare_batch_logs:
            runs["2 ranks, per-step logs"].append(_run([mpiexec, "-n", "2", *me, "--batch-logs", "--worker"],
                                                       _one_thread_env()))
        if not args.no_torch:
            runs["torch 2 threads"].append(_run([*me, "--torch"], _one_thread_env(2)))
        for spec in args.floor or ():
            runs.setdefault(_floor_name(spec), []).append(
                _run([mpiexec, "-n", "2", *me, "--floor-worker", "--meet", spec], _one_thread_env()))
        if args.ceiling:
            runs["ceiling: 2 processes, no MPI"].append(_ceiling_round(args, me))
            runs["1 process, half batch, no MPI"].append(_ceiling_round(args, me, together=False))
    res = {"model": args.model, "batch": args.batch or BATCH[args.model], "steps": args.steps,
           "synchronized_bn": not args.plain_bn, "rounds": args.rounds,
           "loadavg": os.getloadavg()[0]}
    for name, rs in runs.items():
        if rs:
            res[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
    one, two = res["1 rank"]["samples_per_s"], res["2 ranks"]["samples_per_s"]
    res["speedup_2_over_1"] = two / one
    # what a quiet machine would give: the step's CPU time on 1 rank over the busiest rank's on 2
    res["cpu_speedup_2_over_1"] = res["1 rank"]["cpu_ms_per_step"] / res["2 ranks"]["cpu_ms_per_step"]
    if "2 ranks plain BN" in res:
        plain = res["2 ranks plain BN"]
        res["cpu_speedup_2_over_1_plain_bn"] = res["1 rank"]["cpu_ms_per_step"] / plain["cpu_ms_per_step"]
        # synchronized over plain on 2 ranks: what the synchronized passes and their collectives cost
        res["sync_over_plain_cpu_2_ranks"] = res["2 ranks"]["cpu_ms_per_step"] / plain["cpu_ms_per_step"]
        res["sync_over_plain_wall_2_ranks"] = res["2 ranks"]["step_ms"] / plain["step_ms"]
    if "2 ranks, per-step logs" in res:
        # what the per-step sums of the logs and agreements on stopping cost (a callback reading every step's logs)
        res["per_step_logs_over_per_epoch_cpu"] = (res["2 ranks, per-step logs"]["cpu_ms_per_step"]
                                                   / res["2 ranks"]["cpu_ms_per_step"])
    for name in list(res):
        if name.startswith("2 ranks") and isinstance(res[name], dict):
            # every 2-rank run against 1 rank: samples per second, CPU less polling, CPU with polling
            r = res[name]
            res.setdefault("ratios_2_over_1", {})[name] = {
                "samples_per_s": r["samples_per_s"] / one,
                "cpu": res["1 rank"]["cpu_ms_per_step"] / r["cpu_ms_per_step"],
                "cpu_with_polling": res["1 rank"]["cpu_ms_per_step"] / r["cpu_with_polling_ms_per_step"]}
    res["allreduce_share_of_step"] = res["2 ranks"]["allreduce_ms_per_step"] / res["2 ranks"]["step_ms"]
    if "torch 2 threads" in res:
        res["2_ranks_over_torch"] = two / res["torch 2 threads"]["samples_per_s"]
    if "ceiling: 2 processes, no MPI" in res:
        ceil = res["ceiling: 2 processes, no MPI"]
        res["ceiling_speedup"] = ceil["samples_per_s"] / one
        res["ceiling_cpu_speedup"] = res["1 rank"]["cpu_ms_per_step"] / ceil["cpu_ms_per_step"]
        # 2 ranks against the ceiling: what normlab's distribution costs beyond what the machine does
        res["2_ranks_over_ceiling"] = two / ceil["samples_per_s"]
        res["2_ranks_over_ceiling_cpu"] = ceil["cpu_ms_per_step"] / res["2 ranks"]["cpu_ms_per_step"]
        half = res["1 process, half batch, no MPI"]
        # the ceiling = (what halving the batch gives) x (what 2 processes at once keep of it)
        res["half_batch_cpu_speedup"] = res["1 rank"]["cpu_ms_per_step"] / half["cpu_ms_per_step"]
        res["two_processes_cpu_efficiency"] = half["cpu_ms_per_step"] / ceil["cpu_ms_per_step"]
    for spec in args.floor or ():
        floor = res[_floor_name(spec)]
        # 1 rank over 2 processes meeting as a synchronized run does, with no distribution code; and 2 ranks
        # against them: what normlab.distributed's own code costs beyond the meetings
        res.setdefault("floor_speedup", {})[spec] = floor["samples_per_s"] / one
        res.setdefault("floor_cpu_speedup", {})[spec] = (res["1 rank"]["cpu_ms_per_step"]
                                                         / floor["cpu_with_polling_ms_per_step"])
        res.setdefault("2_ranks_over_floor", {})[spec] = two / floor["samples_per_s"]
    res["loadavg_end"] = os.getloadavg()[0]
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(BATCH), default="mlp")
    p.add_argument("--steps", type=int, default=30, help="global batches timed per run")
    p.add_argument("--batch", type=int, default=None, help="the global batch (default: 1024 mlp, 128 cnn)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--plain-bn", action="store_true", help="per-rank batch statistics instead of synchronized")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--compare-plain", action="store_true",
                   help="also 2 ranks with plain BN in every round (synchronized against plain, same run)")
    p.add_argument("--batch-logs", action="store_true",
                   help="fit with a callback reading every step's logs (the per-step sums and stop agreements run)")
    p.add_argument("--compare-batch-logs", action="store_true",
                   help="also 2 ranks with --batch-logs in every round (per-step against per-epoch logs, same run)")
    p.add_argument("--wait", default=None, metavar="SPIN,YIELD,NAP,WINDOW",
                   help="how a rank waits in a collective, microseconds: poll SPIN, then poll and sched_yield "
                        "until YIELD, then sleep NAP between polls (each nap followed by WINDOW of polling; "
                        "NAP '-': yield forever); default: the library's")
    p.add_argument("--compare-wait", nargs="+", default=None, metavar="SPEC",
                   help="also 2 ranks (and 2 ranks plain BN with --compare-plain) with each --wait SPEC in every round")
    p.add_argument("--compare-env", nargs="+", default=None, metavar="NAME=VALUE[,NAME=VALUE]",
                   help="also 2 ranks (and 2 ranks plain BN with --compare-plain) with each spec's variables set, in "
                        "every round: NORMLAB_MPI_PERSISTENT=0 (nonblocking collectives instead of persistent ones), "
                        "NORMLAB_GRAD_BUCKETS=0 (the gradients' allreduce only after the backward pass)")
    p.add_argument("--split-check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compare-split-check", action="store_true",
                   help="also 2 ranks where each rank checks only its part of x for NaN/inf (DataParallel.check_finite "
                        "put in place of the model's check: the hook proposed for models/_model_inputs.py)")
    p.add_argument("--layer", action="store_true",
                   help="one process: a synchronized BN + activation pair against a plain one (no collectives)")
    p.add_argument("--ceiling", action="store_true",
                   help="also, in every round, 2 processes without MPI at half the batch each, started together: "
                        "the machine's ceiling for 2 ranks")
    p.add_argument("--floor", nargs="*", default=None, metavar="SPEC",
                   help="also, in every round, 2 processes under MPI without DataParallel, each on half the batch with "
                        "plain BN, meeting where a synchronized run meets, with the library's collectives: what the "
                        "meetings cost on this machine before any distribution code. SPEC says which meetings: f "
                        "(after each BN's forward), b (after each BN's backward), g (the gradient allreduce before "
                        "the update), n (none); default fbg")
    p.add_argument("--meet", default="fbg", help=argparse.SUPPRESS)
    p.add_argument("--glue", action="store_true",
                   help="one process, no MPI: DataParallel on a communicator whose other rank mirrors this one, "
                        "against the floor's model on the same: the distribution code's CPU cost without waiting")
    p.add_argument("--profile", action="store_true",
                   help="under mpiexec: wall and CPU ms per step by part of the step (allreduces, sync BN, update)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--solo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--start-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--torch", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--latency", action="store_true", help="under mpiexec: allreduce times of several sizes")
    p.add_argument("--cost-model", nargs="+", metavar="JSON", default=None,
                   help="results of --json runs, then a --latency output last: print the cost model's tables")
    args = p.parse_args(argv)
    if args.floor is not None and not args.floor:
        args.floor = ["fbg"]
    if args.worker:
        return worker(args)
    if args.solo:
        return solo_worker(args)
    if args.floor_worker:
        return floor_worker(args)
    if args.profile:
        return profile_worker(args)
    if args.glue:
        print(json.dumps(glue_ab(args), indent=1))
        return None
    if args.layer:
        print(json.dumps(layer_ab(args), indent=1))
        return None
    if args.torch:
        return torch_run(args)
    if args.latency:
        return latency(args)
    if args.cost_model:
        print(cost_report(args.cost_model[:-1], args.cost_model[-1]))
        return None
    res = driver(args)
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
