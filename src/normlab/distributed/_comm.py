"""The collectives data-parallel training needs, each bounded in time.

MPI's collectives wait forever for a rank that never arrives (one that
raised elsewhere, or stopped). Every collective here is started
non-blocking and waited on with a deadline: a rank that waits longer than
``timeout`` seconds prints where it waited and ends the job with
``MPI_Abort``. :meth:`Communicator.abort` is also how an exception on one
rank ends every rank (see :meth:`normlab.distributed.DataParallel.guard`).

The collectives a training step repeats with the same sizes (synchronized
batch normalization's statistics and sums, the gradient allreduce) run as
MPI-4 persistent collectives where the library has them
(``MPI_Allgather_init``/``MPI_Allreduce_init``): bound once to buffers of
their own, started and waited on every step, which saves the per-call
setup of a nonblocking collective (argument checks, a new schedule).
Elsewhere, or with an MPI library without them, the nonblocking ones.

The time spent inside the gradient allreduce is counted
(``allreduce_seconds``, ``allreduce_calls``), and the CPU time spent
polling for other ranks (``wait_cpu_seconds``), for the benchmarks.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
import weakref

import numpy as np

__all__ = ["Communicator", "load_mpi"]

_INSTALL = 'pip install "normlab[distributed]" mpich'

#: the communicators holding persistent requests: theirs are freed before MPI finalizes (MPICH reports
#: inactive ones left), and when a communicator is collected (their buffers are released with them)
_HOLDERS = weakref.WeakSet()
_FREE_HOOK = []


def _free_persistent() -> None:
    for holder in list(_HOLDERS):
        holder.free_persistent()


def load_mpi():
    """``mpi4py.MPI``, or an ImportError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"normlab.distributed needs mpi4py and an MPI library; install both with: {_INSTALL}"
        ) from exc
    return MPI


class Communicator:
    """An MPI communicator whose collectives end the job instead of hanging.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    timeout : float or None
        Seconds a rank may wait in one collective; None waits forever.
    """

    def __init__(self, comm, timeout: float | None):
        self.MPI = load_mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = timeout
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0
        self.wait_cpu_seconds = 0.0  # CPU time spent polling for other ranks (benchmarks subtract it)
        self.where = "setup"  # what the job is doing, for a timeout's message
        # how _wait waits (benchmarks change them; nap_seconds None: poll and yield until done)
        self.spin_seconds, self.yield_seconds = self.SPIN, self.YIELD
        self.nap_seconds, self.window_seconds = self.NAP, self.WINDOW
        #: persistent collectives in use (None: the MPI library has none, or they are switched off)
        self.persistent = hasattr(comm, "Allreduce_init") and os.environ.get("NORMLAB_MPI_PERSISTENT", "1") != "0"
        self._bound: dict = {}  # ("gather" | "sum", n) -> (send buffer, receive buffer, persistent request)
        self._flat_bound = None  # (buffer, request) of the gradient allreduce
        self._requests: list = []  # every persistent request made here (see free_persistent)
        self.before_stats_sum = None  # called before each sum of synchronized BN's backward (gradient buckets)

    # ----------------------------------------------------------- waiting
    #: how a rank waits for the others (seconds; see :meth:`_wait`): poll only, then poll and yield, then nap
    SPIN, YIELD, NAP, WINDOW = 100e-6, 1e-3, 20e-6, 100e-6

    def _wait(self, req, what: str) -> None:
        """Wait for ``req``, polling it; past ``timeout`` seconds end the job with a message naming ``what``.

        ``Test()`` drives MPI's progress (with one thread per rank MPICH
        moves data only inside MPI calls), so the rank keeps calling it, in
        three phases: for ``spin_seconds`` (100 us) it only polls: the usual
        wait (a few microseconds for synchronized BN's statistics, about
        0.1 ms for the MLP's 400 KB gradient allreduce) ends here with the
        caches warm; then, until ``yield_seconds`` (1 ms), it yields the core
        (``sched_yield``) between polls to a process ready on the same core;
        past that the other rank is not running (on a machine shared with
        other jobs: waiting for a core), and this one sleeps ``nap_seconds``
        (20 us; about 75 us with Linux's default timer slack) between
        windows of ``window_seconds`` (100 us) of polling, so that its core
        is idle and the scheduler can run the rank it waits for there.
        ``sched_yield`` alone does not do that: the polling rank stays
        runnable and keeps its share of its core. Each window after a nap
        lets a transfer that started meanwhile run at polling speed.
        """
        if req.Test():
            return
        cpu = time.thread_time()
        start = time.monotonic()
        deadline = None if self.timeout is None else start + self.timeout
        spin_until, nap_after = start + self.spin_seconds, start + self.yield_seconds
        nap, window = self.nap_seconds, self.window_seconds
        while not req.Test():
            now = time.monotonic()
            if deadline is not None and now > deadline:
                self.abort(
                    f"normlab.distributed: rank {self.rank} of {self.size} waited {self.timeout:g} s in "
                    f"{what} ({self.where}) for the other ranks; one of them has stopped or is doing something "
                    f"else. Ending the job."
                )
            if now < spin_until:
                continue
            if now < nap_after or nap is None:
                os.sched_yield()
                continue
            time.sleep(nap)
            nap_after = time.monotonic() + window
        self.wait_cpu_seconds += time.thread_time() - cpu

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` on stderr and end every rank of the job."""
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(2, (message.rstrip("\n") + "\n").encode())
            # mpiexec forwards a rank's output through its process manager, which the abort
            # ends too: give it a moment, or the message can be lost (seen with MPICH's hydra)
            time.sleep(0.5)
        finally:
            self.comm.Abort(code)

    # ------------------------------------------------------- collectives
    def allreduce_(self, buf: np.ndarray, what: str = "an allreduce") -> np.ndarray:
        """Sum ``buf`` (contiguous) over the ranks, in place."""
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self._wait(req, what)
        return buf

    def start_allreduce_(self, buf: np.ndarray):
        """Start summing ``buf`` (contiguous) over the ranks in place; finish with :meth:`finish`.

        Every rank must start its collectives in the same order (MPI's rule
        for nonblocking collectives).
        """
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def finish(self, req, what: str) -> None:
        """Wait for a collective :meth:`start_allreduce_` started (bounded by ``timeout``, as every wait)."""
        self._wait(req, what)

    def allreduce_timed_(self, buf: np.ndarray, what: str) -> np.ndarray:
        t = time.perf_counter()
        self.allreduce_(buf, what)
        self.allreduce_seconds += time.perf_counter() - t
        self.allreduce_calls += 1
        return buf

    # ------------------------------------------- persistent collectives
    def _register(self, req):
        if not _FREE_HOOK:
            # after mpi4py's own exit hook (registered when MPI was imported), so it runs before MPI_Finalize
            atexit.register(_free_persistent)
            _FREE_HOOK.append(True)
        _HOLDERS.add(self)
        self._requests.append(req)
        return req

    def release(self, req) -> None:
        """Free one persistent request made here (inactive: freeing it is local to this rank)."""
        if any(r is req for r in self._requests):
            self._requests = [r for r in self._requests if r is not req]
            if not self.MPI.Is_finalized():
                req.Free()

    def free_persistent(self) -> None:
        """Free every persistent request made here; later calls bind new ones."""
        requests, self._requests = self._requests, []
        self._bound, self._flat_bound = {}, None
        if requests and not self.MPI.Is_finalized():
            for req in requests:
                if req:  # not MPI.REQUEST_NULL
                    req.Free()

    def __del__(self):
        try:
            self.free_persistent()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _bind(self, kind: str, n: int):
        """``(send, recv, request)`` of the persistent collective ``kind`` on ``n`` float64 values, made on first use.

        Making one is itself a collective call: every rank makes the same ones
        in the same order, as they reach the same calls of a step. None where
        the library has no persistent collectives (every rank alike: one MPI
        library per job).
        """
        key = (kind, n)
        got = self._bound.get(key)
        if got is None and self.persistent:
            MPI = self.MPI
            send = np.zeros(n)
            try:
                if kind == "gather":
                    recv = np.zeros((self.size, n))
                    req = self.comm.Allgather_init([send, MPI.DOUBLE], [recv, MPI.DOUBLE])
                else:
                    recv = send
                    req = self.comm.Allreduce_init(MPI.IN_PLACE, [send, MPI.DOUBLE], op=MPI.SUM)
            except (NotImplementedError, MPI.Exception):  # pragma: no cover - an MPI library before MPI-4
                self.persistent = False
                return None
            got = self._bound[key] = (send, recv, self._register(req))
        return got

    def gather_stats(self, local: np.ndarray, what: str = "an allgather") -> np.ndarray:
        """Every rank's ``local`` (1-D float64, the same size everywhere) stacked in rank order: ``(size, n)``.

        :meth:`allgather` for the few numbers a layer sends every step, on a
        persistent collective of that size. The result is a new array.
        """
        bound = self._bind("gather", local.size) if local.dtype == np.float64 and local.ndim == 1 else None
        if bound is None:
            return self.allgather(local, what)
        send, recv, req = bound
        send[...] = local
        req.Start()
        self._wait(req, what)
        return recv.copy()

    def sum_stats_(self, buf: np.ndarray, what: str = "an allreduce") -> np.ndarray:
        """Sum the 1-D float64 ``buf`` over the ranks in place (:meth:`allreduce_` on a persistent collective).

        Synchronized batch normalization's backward sums: ``before_stats_sum``,
        when set, runs first (:class:`GradientBuckets` starts there the
        allreduce of the gradients that are final by then).
        """
        bound = self._bind("sum", buf.size) if buf.dtype == np.float64 and buf.ndim == 1 else None
        if bound is None:
            hook = self.before_stats_sum
            if hook is not None:
                hook()
            return self.allreduce_(buf, what)
        send, _, req = bound
        send[...] = buf
        hook = self.before_stats_sum
        if hook is not None:
            hook()
        req.Start()
        self._wait(req, what)
        buf[...] = send
        return buf

    def allreduce_gradients_(self, flat: np.ndarray, what: str) -> np.ndarray:
        """:meth:`allreduce_timed_` of the flat gradient buffer, on a persistent collective bound to it.

        The binding is kept while the same buffer comes back (a model's
        gradients live in one buffer from compile to compile); a new one
        replaces it (every rank compiles the same model at the same point).
        """
        bound = self._flat_bound
        if bound is None or bound[0] is not flat:
            if bound is not None:
                self.release(bound[1])
                self._flat_bound = bound = None
            if self.persistent and flat.flags.c_contiguous and flat.dtype.char in "fd":
                MPI = self.MPI
                try:
                    req = self.comm.Allreduce_init(MPI.IN_PLACE, flat, op=MPI.SUM)
                except (NotImplementedError, MPI.Exception):  # pragma: no cover - an MPI library before MPI-4
                    self.persistent = False
                else:
                    self._flat_bound = bound = (flat, self._register(req))
        if bound is None:
            return self.allreduce_timed_(flat, what)
        t = time.perf_counter()
        bound[1].Start()
        self._wait(bound[1], what)
        self.allreduce_seconds += time.perf_counter() - t
        self.allreduce_calls += 1
        return flat

    def bind_sum(self, buf: np.ndarray):
        """A persistent in-place sum of ``buf`` (contiguous) over the ranks, or None (no persistent collectives)."""
        if not self.persistent:
            return None
        MPI = self.MPI
        try:
            return self._register(self.comm.Allreduce_init(MPI.IN_PLACE, buf, op=MPI.SUM))
        except (NotImplementedError, MPI.Exception):  # pragma: no cover - an MPI library before MPI-4
            self.persistent = False
            return None

    def allgather(self, local: np.ndarray, what: str = "an allgather") -> np.ndarray:
        """Every rank's ``local`` (same shape everywhere), stacked in rank order: shape ``(size,) + local.shape``."""
        local = np.ascontiguousarray(local)
        out = np.empty((self.size,) + local.shape, local.dtype)
        req = self.comm.Iallgather(local, out)
        self._wait(req, what)
        return out

    def allgatherv(self, local: np.ndarray, counts: list[int], what: str = "a gather of outputs") -> np.ndarray:
        """Rows of every rank (``counts[r]`` rows from rank ``r``), concatenated in rank order on every rank."""
        local = np.ascontiguousarray(local)
        row = int(np.prod(local.shape[1:], dtype=np.int64))
        out = np.empty((sum(counts),) + local.shape[1:], local.dtype)
        sizes = [c * row for c in counts]
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        mpi_type = self.MPI._typedict[local.dtype.char]
        req = self.comm.Iallgatherv([local, sizes[self.rank], mpi_type], [out, (sizes, displs), mpi_type])
        self._wait(req, what)
        return out

    def bcast_(self, buf: np.ndarray, what: str = "a broadcast", root: int = 0) -> np.ndarray:
        """Rank ``root``'s ``buf`` into every rank's ``buf`` (contiguous), in place."""
        req = self.comm.Ibcast(buf, root=root)
        self._wait(req, what)
        return buf

    def bcast_json(self, value, what: str = "a broadcast", root: int = 0):
        """Rank ``root``'s JSON-serializable ``value`` on every rank (no pickle between ranks)."""
        data = json.dumps(value).encode() if self.rank == root else b""
        n = self.bcast_(np.array([len(data)], np.int64), what, root)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self.bcast_(buf, what, root)
        return json.loads(buf.tobytes().decode())

    def any(self, flag: bool, what: str = "an agreement") -> bool:
        """True on every rank when ``flag`` is true on some rank."""
        return bool(self.allreduce_(np.array([1.0 if flag else 0.0]), what)[0] > 0)


class GradientBuckets:
    """The allreduce of the flat gradient buffer in parts, each started once its gradients are final.

    Backward passes the layers from the output down; a synchronized batch
    norm meets the other ranks there (its two sums), and by then the
    gradients of every layer above it are final. ``points`` holds, for each
    of those meetings in the order the backward pass reaches them, the part
    ``(lo, hi)`` of the buffer to start summing just before it (None: too
    small to start alone, summed with the next part), and ``last`` the rest,
    started by :meth:`finish` after the backward pass. A started part moves
    while the ranks poll in later collectives (with one thread per rank
    MPICH moves data only inside MPI calls), so what is left after the
    backward pass is the lowest layers' part.

    For 2 ranks each element is still ``a + b`` (the same bits as one
    allreduce of the whole buffer); with more ranks MPICH may choose another
    algorithm for a part than for the whole, so the sums can differ from the
    whole buffer's in the last bits, the same on every rank. Every rank
    starts the same parts at the same meetings (the same model), so the
    collectives are started in the same order everywhere. A meeting that
    does not happen (a frozen layer) only starts the next part later.
    """

    def __init__(self, comm: Communicator, flat: np.ndarray, points: list, last: tuple):
        self.comm, self.flat = comm, flat
        self.points = points
        self.last = last
        parts = [p for p in points if p is not None] + ([last] if last[1] > last[0] else [])
        self._req = {}
        for lo, hi in parts:
            self._req[(lo, hi)] = comm.bind_sum(flat[lo:hi])
        self._next = 0
        self._active: list = []

    def _start(self, part) -> None:
        req = self._req[part]
        if req is None:
            req = self.comm.start_allreduce_(self.flat[part[0] : part[1]])
        else:
            req.Start()
        self._active.append(req)

    def at_meeting(self) -> None:
        """The hook run before each synchronized BN's backward sums: start this meeting's part, if any."""
        i = self._next
        self._next = i + 1
        if i < len(self.points) and self.points[i] is not None:
            self._start(self.points[i])

    def finish(self, what: str) -> None:
        """Start the parts not started yet (in order), then wait for every part."""
        comm = self.comm
        t = time.perf_counter()
        try:
            for p in self.points[self._next :]:
                if p is not None:
                    self._start(p)
            if self.last[1] > self.last[0]:
                self._start(self.last)
            for req in self._active:
                comm._wait(req, what)
        finally:
            self._next, self._active = 0, []
        comm.allreduce_seconds += time.perf_counter() - t
        comm.allreduce_calls += 1

    def drain(self, what: str) -> None:
        """Wait for the parts started so far, without starting more (the buffer is then the caller's again)."""
        try:
            for req in self._active:
                self.comm._wait(req, what)
        finally:
            self._active = []

    def free(self) -> None:
        for req in self._req.values():
            if req is not None:
                self.comm.release(req)
        self._req = {}
