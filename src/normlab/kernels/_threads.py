"""How many threads normlab's own kernels use, and the pool that runs them.

One limit for two pools
-----------------------
normlab's numba kernels and NumPy's BLAS (OpenBLAS in NumPy's wheels) run
one after the other inside a training step, never at the same time, so they
share one thread limit instead of each taking every core:

* with `threadpoolctl <https://github.com/joblib/threadpoolctl>`_ installed
  (it comes with scikit-learn), the limit is **BLAS's own current thread
  count**: ``threadpoolctl.threadpool_limits(1)`` (as a context manager or
  not), ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` at start-up, or
  :func:`set_num_threads`, which sets BLAS's limit, all pin both;
* without threadpoolctl (or with a BLAS it does not know), the limit is the
  value of :func:`set_num_threads`, else of ``NORMLAB_NUM_THREADS``,
  ``OMP_NUM_THREADS`` or ``OPENBLAS_NUM_THREADS`` (in this order), else the
  number of cores this process may run on.

:func:`get_num_threads` returns the limit in force.

One pool at a time
------------------
Sharing the limit is not enough: OpenBLAS's pthreads workers busy-wait for
about 0.1 s after every BLAS call made on more than one thread, so a step that
calls BLAS on 2 threads and then runs normlab's own threads has three busy
threads on two cores. Inside :func:`one_pool` (a training step) BLAS is held on
one thread and normlab's threads do all the splitting, the products included
(:func:`matmul`; the convolutions split their GEMMs by images). The held limit
is process-wide: two Python threads training two models at once share it.

Why Python threads
------------------
The kernels that split their work are ordinary ``@njit(nogil=True)``
functions; a small pool of Python threads (:class:`concurrent.futures.
ThreadPoolExecutor`) calls them on contiguous parts of the data, and the
calling thread works on the first part itself. numba's ``parallel=True``
was not used, for three reasons:

* fork: ``Bagging`` (``normlab.ensemble``) trains in processes started by
  ``fork``, and numba's OpenMP threading layer aborts a child forked after
  it started its threads; the workqueue layer is not thread-safe when two
  Python threads launch parallel kernels at once. A Python pool is simply
  forgotten in the child (``os.register_at_fork``) and a new one made on
  first use there;
* reproducibility: the split of every reduction is fixed by the shape alone
  (chunks of a fixed number of rows, their partial sums added in chunk
  order), and each thread takes whole chunks, so the result is the same bit
  for bit at 1, 2 or 64 threads. ``prange`` reductions leave the split to
  the scheduler;
* the first run: a ``parallel=True`` kernel compiles several times more
  slowly than its serial form, and the serial form is needed anyway for
  small inputs, where starting threads costs more than it saves.

Small inputs stay on the calling thread: see :data:`MIN_PARALLEL_ELEMENTS`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["get_num_threads", "set_num_threads", "run_parts", "split", "elementwise", "MIN_PARALLEL_ELEMENTS",
           "BLOCK", "blas_single", "one_pool", "matmul", "matmuls"]

#: Elements (of the largest array a kernel streams) below which a kernel runs on one thread.
#: Measured on the 2-core machine of benchmarks/README.md ("Threads"), batch norm + relu forward
#: and backward, one-call kernel against the chunked kernels on 2 threads, quiet moments: 1024 x 100
#: 0.75x (the hand-offs cost more than the second core gives), 1024 x 1024 0.98x, 8192 x 512 1.55x,
#: 65536 x 64 1.49x. Data that fits in the caches gains nothing from a second core here; streaming
#: from memory does.
#: Image-shaped batch norm + relu (many rows, 64 channels), float32, forward + backward, the
#: calling thread's CPU time on 2 threads against 1 (the critical path when a core is free; the
#: machine was too loaded for wall clocks): 0.2M elements 0.99x, 0.4M 1.17x, 0.8M 1.58x, 1.6M
#: (the CNN's 128 x 14 x 14 x 64) 1.75x, for 1.49x, 1.27x, 1.20x and 1.11x the total CPU time.
#: With the 1024 x 1024 break-even above, the threshold sits just under 1.6M.
MIN_PARALLEL_ELEMENTS = 3 << 19

#: elements per part of an elementwise kernel split over threads
BLOCK = 1 << 16

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_user_threads: int | None = None
#: threadpoolctl's controllers of the BLAS libraries (None: not looked up yet; (): none found)
_blas = None
#: the limit while :func:`one_pool` holds BLAS on one thread (None: not inside one_pool)
_held: int | None = None


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _env_threads() -> int | None:
    for name in ("NORMLAB_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _blas_controllers():
    """threadpoolctl's controllers of the loaded BLAS libraries, looked up once (about 0.2 s)."""
    global _blas
    if _blas is None:
        try:
            import numpy  # noqa: F401  - its BLAS must be loaded to be found
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas = ()
        else:
            try:
                found = ThreadpoolController().select(user_api="blas").lib_controllers
            except Exception:  # pragma: no cover - a threadpoolctl that cannot inspect this process
                found = []
            _blas = tuple(sorted(found, key=lambda c: not _is_numpys(c)))
    return _blas


def _is_numpys(controller) -> bool:
    """Whether ``controller`` is NumPy's own BLAS (the library in NumPy's wheel, ``numpy.libs``).

    :func:`get_num_threads` reads the first controller: with SciPy loaded there are two
    OpenBLAS libraries (NumPy's ``scipy_openblas64_`` and SciPy's ``scipy_openblas``), listed
    in no fixed order, and a limit set before SciPy was loaded (``threadpool_limits(1)`` at the
    top of a script) pins NumPy's alone: the limit read from SciPy's then said 2 threads, and
    every 1-thread step paid for holding BLAS on one thread and back.
    """
    import numpy  # noqa: PLC0415

    path = os.path.realpath(getattr(controller, "filepath", "") or "")
    home = os.path.realpath(os.path.dirname(numpy.__file__))
    return path.startswith(home + os.sep) or path.startswith(home + ".libs" + os.sep)


def get_num_threads() -> int:
    """The number of threads normlab's kernels use at most (module docstring: the one limit)."""
    if _held is not None:
        return _held
    blas = _blas_controllers()
    if blas:
        # a C call (under 1 us): follows every change of BLAS's limit, whoever makes it
        n = blas[0].get_num_threads()
        if n:
            return max(1, int(n))
    if _user_threads is not None:
        return _user_threads
    return _env_threads() or _cpu_count()


def set_num_threads(n: int) -> int:
    """Set the thread limit of normlab's kernels and of NumPy's BLAS; returns the previous limit.

    Parameters
    ----------
    n : int
        From 1 to 65536 (a Python or NumPy integer, not a bool). With
        threadpoolctl installed this sets BLAS's own limit (as
        ``threadpoolctl.threadpool_limits(n, user_api="blas")`` would, for
        good), which normlab's kernels follow; without it, normlab's limit
        alone. BLAS may hold fewer than asked (OpenBLAS: the number it was
        built for); :func:`get_num_threads` says what is in force.

    Raises
    ------
    InvalidParameterError
        (a ``ValueError`` and a ``TypeError``) for anything else, before
        anything is changed. 65536 is above any machine's core count and far
        from the C ``int`` of BLAS's setter, where a larger value wraps
        around (``2**32 + 1`` arrived there as 1 thread).

    Notes
    -----
    To pin the threads for a block of code only, use threadpoolctl's context
    manager, which normlab follows as well::

        with threadpoolctl.threadpool_limits(1):
            model.fit(x, y)
    """
    global _user_threads
    import numbers

    from .._validation import Interval, validate_params

    validate_params("set_num_threads", {"n": [Interval(numbers.Integral, 1, 1 << 16)]}, {"n": n})
    n = int(n)
    previous = get_num_threads()
    for controller in _blas_controllers():
        controller.set_num_threads(n)
    _user_threads = n
    return previous


def split(parts: int, threads: int) -> list[tuple[int, int]]:
    """``threads`` contiguous ranges of ``range(parts)``, as equal as possible (empty ones left out)."""
    t = max(1, min(threads, parts))
    return [(k * parts // t, (k + 1) * parts // t) for k in range(t)]


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="normlab")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def run_parts(fn, parts: int, threads: int | None = None) -> None:
    """Call ``fn(lo, hi)`` on contiguous ranges of ``range(parts)`` covering it, on up to ``threads`` threads.

    The calling thread runs the first range; the others go to the pool. Which
    thread runs which range does not change what is computed: ``fn`` writes
    each part's results to places of their own. The first exception raised
    by any range is raised here, after every range has finished.
    """
    if threads is None:
        threads = get_num_threads()
    ranges = split(parts, threads)
    if len(ranges) == 1:
        fn(0, parts)
        return
    pool = _executor(len(ranges) - 1)
    futures = [pool.submit(fn, lo, hi) for lo, hi in ranges[1:]]
    error = None
    try:
        fn(*ranges[0])
    except BaseException as e:  # noqa: BLE001 - re-raised once the other parts are done
        error = e
    for f in futures:
        try:
            f.result()
        except BaseException as e:  # noqa: BLE001
            error = error or e
    if error is not None:
        raise error


def elementwise(kernel, arrays, *scalars) -> None:
    """``kernel(*arrays, *scalars)`` on 1-D ``arrays`` of one length, split over threads when they are large.

    For kernels that compute each element from the same element of their
    inputs: every element gets the same value whatever the split. Below
    :data:`MIN_PARALLEL_ELEMENTS` one call on the calling thread.
    """
    n = arrays[0].size
    if n < MIN_PARALLEL_ELEMENTS:
        kernel(*arrays, *scalars)
        return
    threads = get_num_threads()
    if threads == 1:
        kernel(*arrays, *scalars)
        return

    def part(k0, k1):
        lo, hi = k0 * BLOCK, min(n, k1 * BLOCK)
        kernel(*[a[lo:hi] for a in arrays], *scalars)

    run_parts(part, -(-n // BLOCK), threads)


def _restore_blas(ctrls, old) -> None:
    for c, k in zip(ctrls, old):
        if k != 1:
            c.set_num_threads(k)


@contextlib.contextmanager
def blas_single(threads: int | None = None):
    """BLAS on one thread inside the block when ``threads`` (default: the limit) is over one; restored after.

    For kernels whose own threads each call BLAS: two pools on two cores would fight.
    The limits are restored even when an exception (a ``KeyboardInterrupt``) arrives at
    any line of this function (see :func:`one_pool`).
    """
    if threads is None:
        threads = get_num_threads()
    ctrls = _blas_controllers() if threads > 1 else ()
    old = [c.get_num_threads() for c in ctrls]
    restored = False
    try:
        try:
            # inside the try: an interrupt after the first controller changed gives it back
            for c, k in zip(ctrls, old):
                if k != 1:
                    c.set_num_threads(1)
            yield
        finally:
            _restore_blas(ctrls, old)
            restored = True
    finally:
        if not restored:  # the first restore was interrupted (see one_pool): again, to the end
            _restore_blas(ctrls, old)


@contextlib.contextmanager
def one_pool():
    """Inside the block, normlab's pool is the only one: BLAS runs on one thread, and the
    kernels that split their work (including :func:`matmul`) take the limit in force.

    Why: OpenBLAS's pthreads workers busy-wait (``sched_yield`` in a loop) for about
    2**28 cycles (0.1 s here) after **every** BLAS call made on more than one thread,
    whatever the thread limit is set to afterwards. A training step that calls BLAS on
    2 threads and then runs normlab's own threads had three busy threads on two cores:
    the Fashion-MNIST CNN step at 2 threads took 2.6x the CPU time of its 1-thread step
    and no less wall time (benchmarks/README.md, "Two pools"). With one pool, BLAS's
    workers sleep.

    Nested blocks are free. The limit is read when the outermost block starts; what
    changes it inside the block takes effect after.

    The held state is process-wide, so it is given back whatever interrupts the block,
    at any line: every change is made inside the ``try`` whose ``finally`` undoes it, and
    the undoing runs twice over when an exception interrupts the first (a
    ``KeyboardInterrupt`` delivered there; ``sys.settrace`` drops a trace function that
    raises, so tests/models/test_interrupts.py, which injects one at every line of a
    step in turn, reaches each line once). A held limit left behind pinned every later
    :func:`get_num_threads` (tests/kernels/test_threads.py ran BLAS on 2 threads while
    normlab believed it ran on 1).
    """
    global _held
    if _held is not None:
        yield
        return
    n = get_num_threads()
    released = False
    try:
        try:
            if n == 1:
                # held at 1 all the same: matmul then runs the row blocks a 2-thread step splits, in
                # turn, so the bits do not depend on the thread count whatever the BLAS
                _held = 1
                yield
            else:
                with blas_single(n):
                    _held = n
                    yield
        finally:
            _held = None
            released = True
    finally:
        if not released:
            _held = None


#: multiply-adds below which :func:`matmul` is one BLAS call (a hand-off costs ~30-100 us)
MIN_PARALLEL_FLOPS = 1 << 23
#: the most row blocks :func:`matmul` cuts a product into
MATMUL_BLOCKS = 8
#: multiply-adds per row block: a product of at least MIN_PARALLEL_FLOPS gets one block per
#: MATMUL_BLOCK_FLOPS, at least 2 and at most MATMUL_BLOCKS. Run in turn on one thread, the
#: BN-paper net's products (batch 1024) took 0-2 % more CPU time than one call in 2 blocks, 0-3 %
#: in 4, 3-10 % in 8; at 2 threads the critical path of its 1024 x 100 x 100 product was 295 us
#: in eight 128-row blocks, 257 us in two (one call: 358 us). Its 1024 x 784 x 100 products get
#: 4 blocks, the 100-unit ones 2
MATMUL_BLOCK_FLOPS = 1 << 24
#: block bounds fall on multiples of this many rows. A step runs the same blocks at any thread
#: count (one_pool holds 1 thread too), which gives the same bits with any BLAS; besides, with
#: OpenBLAS 0.3.31's Haswell kernels (also those of AMD Zen) a float32 row gets the bits of one
#: whole call when its block starts on a multiple of 12 rows (not of 16 or 64); float64 keeps
#: them at multiples of 48 too, so there the blocks also match a plain ``x @ w``
#: (tests/kernels/test_threads.py)
MATMUL_ALIGN = 48


def _row_blocks(m: int, k: int, n: int) -> list[tuple[int, int]] | None:
    """The row blocks of an ``(m, k) @ (k, n)`` product inside :func:`one_pool`, fixed by the
    shape alone; None: one call (small, or one block)."""
    if m * k * n < MIN_PARALLEL_FLOPS:
        return None
    units = -(-m // MATMUL_ALIGN)
    blocks = min(MATMUL_BLOCKS, units, max(2, m * k * n // MATMUL_BLOCK_FLOPS))
    if blocks < 2:
        return None
    return [(u0 * MATMUL_ALIGN, min(m, u1 * MATMUL_ALIGN)) for u0, u1 in split(units, blocks)]


def matmuls(products) -> None:
    """``np.matmul(a, b, out=out)`` for each ``(a, b, out)`` of ``products`` (2-D, independent),
    their row blocks (:func:`matmul`) split over normlab's threads in one hand-off.

    Each product is cut as :func:`matmul` cuts it alone, so each gives the same bits as
    :func:`matmul` would. For the two products of a Dense layer's backward pass
    (``dW = x.T @ dz`` and ``dx = dz @ W.T``): one hand-off instead of two, and the products
    too small to be cut run side by side.
    """
    import numpy as np  # noqa: PLC0415

    held = _held
    if held is None or sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in products) < MIN_PARALLEL_FLOPS:
        # no product cut, no hand-off (every product of a small batch): one call each, without
        # the bookkeeping below
        for a, b, out in products:
            np.matmul(a, b, out=out)
        return
    jobs = []
    for a, b, out in products:
        blocks = _row_blocks(a.shape[0], a.shape[1], b.shape[1])
        if blocks is None:
            jobs.append((a, b, out, 0, a.shape[0]))
        else:
            jobs.extend((a, b, out, lo, hi) for lo, hi in blocks)
    if len(jobs) < 2:
        for a, b, out, lo, hi in jobs:
            np.matmul(a[lo:hi], b, out=out[lo:hi])
        return

    def part(j0, j1):
        for a, b, out, lo, hi in jobs[j0:j1]:
            np.matmul(a[lo:hi], b, out=out[lo:hi])

    run_parts(part, len(jobs), held)


def matmul(a, b, out=None):
    """``a @ b`` for 2-D ``a`` and ``b``; inside :func:`one_pool`, large products are cut
    into blocks of rows of ``a``, each one single-threaded BLAS call, the blocks split
    over normlab's threads.

    The blocks depend on the shape alone (at most :data:`MATMUL_BLOCKS` of them, at
    least 2 for a product of :data:`MIN_PARALLEL_FLOPS` multiply-adds or more, their
    bounds on multiples of :data:`MATMUL_ALIGN` rows), not on the thread count, and
    one thread runs the same blocks in turn: a BLAS may sum a row in another order
    depending on how many rows it is given (OpenBLAS 0.3.31's float32 kernels do), so
    a split that followed the thread count would change the bits. Each row's sum over
    the inner axis is never cut. Outside :func:`one_pool` it is one BLAS call.
    ``out``: as :func:`numpy.matmul`.
    """
    import numpy as np  # noqa: PLC0415 - keep this module free of a top-level NumPy import

    if _held is None or a.shape[0] * a.shape[1] * b.shape[1] < MIN_PARALLEL_FLOPS:
        return np.matmul(a, b, out=out)  # one call, without matmuls' bookkeeping (every small product)
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    matmuls([(a, b, out)])
    return out


def _forget_pool_in_child() -> None:
    # the parent's threads do not exist in a forked child: start a new pool there on first use
    global _pool, _pool_size, _lock
    _pool, _pool_size = None, 0
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget_pool_in_child)
