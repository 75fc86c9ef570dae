"""The collectives data-parallel training needs, each bounded in time.

MPI's collectives wait forever for a rank that never arrives (one that
raised elsewhere, or stopped). Every collective here is started
non-blocking and waited on with a deadline: a rank that waits longer than
``timeout`` seconds prints where it waited and ends the job with
``MPI_Abort``. :meth:`Communicator.abort` is also how an exception on one
rank ends every rank (see :meth:`normlab.distributed.DataParallel.guard`).

The time spent inside the gradient allreduce is counted
(``allreduce_seconds``, ``allreduce_calls``), and the CPU time spent
polling for other ranks (``wait_cpu_seconds``), for the benchmarks.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

__all__ = ["Communicator", "load_mpi"]

_INSTALL = 'pip install "normlab[distributed]" mpich'


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
