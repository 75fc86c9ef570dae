"""Timing helpers shared by the benchmarks.

Method (``time_interleaved``): every candidate is warmed up, then its inner
loop size ``number`` is calibrated so that one repeat lasts about
``target_s`` seconds; then ``repeats`` rounds are run, each round timing
every candidate once (the order alternates between rounds so that slow drifts
of a noisy machine hit all candidates alike). The reported time is the median
over the repeats of (repeat time / number). The garbage collector is paused
inside a repeat, as :mod:`timeit` does (one full collection runs before
calibrating each case, none between repeats).
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import time
from typing import Callable, Iterator, Mapping

import numpy as np

try:  # optional: the torch half of every benchmark
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = [
    "TimingConfig",
    "FULL",
    "QUICK",
    "torch_available",
    "pinned_threads",
    "time_interleaved",
    "measure_bandwidth",
    "machine_info",
]


class TimingConfig:
    """How hard to time: ``repeats`` rounds of ~``target_s`` seconds each after ``warmup`` calls."""

    def __init__(
        self,
        repeats: int = 7,
        target_s: float = 0.2,
        warmup: int = 3,
        max_number: int = 100_000,
        collect: bool = True,
    ):
        if repeats < 1 or target_s <= 0 or warmup < 0:
            raise ValueError("repeats >= 1, target_s > 0 and warmup >= 0 are required")
        self.repeats = int(repeats)
        self.target_s = float(target_s)
        self.warmup = int(warmup)
        self.max_number = int(max_number)
        self.collect = bool(collect)

    def as_dict(self) -> dict:
        return {"repeats": self.repeats, "target_s": self.target_s, "warmup": self.warmup, "collect": self.collect}

    def __repr__(self) -> str:
        return f"TimingConfig(repeats={self.repeats}, target_s={self.target_s}, warmup={self.warmup})"


FULL = TimingConfig(repeats=7, target_s=0.2, warmup=3)
QUICK = TimingConfig(repeats=3, target_s=0.005, warmup=1, max_number=50, collect=False)


def torch_available() -> bool:
    return torch is not None


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[dict]:
    """Pin NumPy's BLAS (and every OpenMP pool), torch's intra-op pool and, if already
    running, numba's parallel pool to ``n`` threads.

    Yields a dict describing what was pinned; restores the previous settings on exit.
    """
    info = {"threads": int(n), "threadpoolctl": threadpool_limits is not None, "torch": torch is not None}
    with contextlib.ExitStack() as stack:
        if threadpool_limits is not None:
            stack.enter_context(threadpool_limits(limits=int(n)))
        if torch is not None:
            old = torch.get_num_threads()
            torch.set_num_threads(int(n))
            stack.callback(torch.set_num_threads, old)
        # numba's parallel pool only if it is already running: launching it just to pin it
        # starts OpenMP workers that can stall torch's steps by 100x on a busy 2-core machine
        numba = sys.modules.get("numba")
        par = sys.modules.get("numba.np.ufunc.parallel")
        if numba is not None and par is not None and getattr(par, "_is_initialized", False):
            try:
                old_nb = numba.get_num_threads()
                numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
                stack.callback(numba.set_num_threads, old_nb)
                info["numba"] = True
            except Exception:  # pragma: no cover - numba without a threading layer
                info["numba"] = False
        yield info


def _run_number(fn: Callable[[], object], number: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


def _calibrate(fn: Callable[[], object], cfg: TimingConfig) -> int:
    """Smallest power-of-two-ish ``number`` whose loop takes >= ~target_s (warm-up included)."""
    for _ in range(cfg.warmup):
        fn()
    number = 1
    while True:
        dt = _run_number(fn, number)
        if dt >= cfg.target_s or number >= cfg.max_number:
            break
        if dt <= 0:
            number *= 10
            continue
        # aim a little past the target, grow by at most 10x per round
        number = min(cfg.max_number, max(number + 1, min(number * 10, int(number * cfg.target_s * 1.2 / dt))))
    return number


def time_interleaved(fns: Mapping[str, Callable[[], object]], cfg: TimingConfig = FULL) -> dict[str, dict]:
    """Time each callable; returns ``{name: {"median_s", "min_s", "max_s", "number", "repeats", "per_call_s"}}``.

    All times are seconds per call. Candidates run interleaved (see module docstring).
    """
    names = list(fns)
    if cfg.collect:  # once per case: a full collection after importing torch costs ~0.1 s
        gc.collect()
    numbers = {k: _calibrate(fns[k], cfg) for k in names}
    samples: dict[str, list[float]] = {k: [] for k in names}
    for r in range(cfg.repeats):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            samples[k].append(_run_number(fns[k], numbers[k]) / numbers[k])
    out = {}
    for k in names:
        s = samples[k]
        out[k] = {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "max_s": max(s),
            "number": numbers[k],
            "repeats": len(s),
            "per_call_s": s,
        }
    return out


def measure_bandwidth(mib: float = 256.0, repeats: int = 7) -> dict:
    """Sustained memory bandwidth (bytes/s) from NumPy streaming kernels on arrays far larger than cache.

    Two probes, each the median of ``repeats`` calls on ``mib``-MiB float32 arrays:

    * ``copy``: ``np.copyto(dst, src)``, counted as 2 x nbytes (1 read + 1 write);
    * ``add``: ``np.add(a, b, out=c)``, counted as 3 x nbytes (2 reads + 1 write).

    Write-allocate traffic is not counted, which is how a kernel's "bytes moved"
    is usually counted too. ``bandwidth_Bps`` is the larger of the two (the most
    optimistic, hence the safest for a lower bound on time).
    """
    n = max(1024, int(mib * 2**20 / 4))
    a = np.ones(n, dtype=np.float32)
    b = np.full(n, 2.0, dtype=np.float32)
    c = np.empty(n, dtype=np.float32)
    np.copyto(c, a)  # touch the pages
    copies, adds = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(c, a)
        t1 = time.perf_counter()
        np.add(a, b, out=c)
        t2 = time.perf_counter()
        copies.append(t1 - t0)
        adds.append(t2 - t1)
    nbytes = a.nbytes
    copy_bw = 2 * nbytes / statistics.median(copies)
    add_bw = 3 * nbytes / statistics.median(adds)
    return {
        "array_mib": nbytes / 2**20,
        "repeats": repeats,
        "copy_Bps": copy_bw,
        "add_Bps": add_bw,
        "bandwidth_Bps": max(copy_bw, add_bw),
        "method": (
            f"median of {repeats}: np.copyto on {nbytes / 2**20:.0f} MiB float32 (2 x nbytes) and "
            f"np.add(a, b, out=c) (3 x nbytes); write-allocate not counted; the larger is used"
        ),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _normlab_backend() -> str:
    """Which BN kernels normlab runs (numba or NumPy), if it says."""
    try:
        from normlab.kernels import _backend

        if _backend.numba_enabled():
            import numba

            return f"numba {numba.__version__}"
        return "numpy"
    except Exception:
        return "numpy"


def machine_info() -> dict:
    import normlab

    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "normlab": getattr(normlab, "__version__", "?"),
        "torch": torch.__version__ if torch is not None else None,
        "normlab_kernels": _normlab_backend(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = sorted({f"{p.get('internal_api')} {p.get('version')}" for p in threadpool_info() if p.get("user_api") == "blas"})
    except ImportError:  # pragma: no cover
        pass
    return info
