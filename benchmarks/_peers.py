"""The optional peers of the benchmarks: jax (imported once, with its threads pinned), torch.compile.

jax's CPU backend (XLA) fixes its thread pool when it is first imported, so
:func:`jax_module` imports it with ``XLA_FLAGS`` asking for one thread when
the benchmark runs at one thread (``set_jax_threads(1)`` before the first
import), and with XLA's default (every core) otherwise. A run at several
thread counts therefore runs each count in a process of its own
(``benchmarks/run.py --threads 1 2``).
"""

from __future__ import annotations

import os
import sys

__all__ = ["jax_module", "set_jax_threads", "jax_threads"]

_jax = None
_threads = None


def set_jax_threads(n: int) -> None:
    """Ask for ``n`` XLA threads: takes effect only if jax has not been imported yet."""
    global _threads
    if "jax" in sys.modules or _threads is not None:
        return
    _threads = int(n)
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def jax_threads():
    """The thread count jax was imported for (None: XLA's default, every core)."""
    return _threads


def jax_module():
    """``jax`` configured for float32 on the CPU, or None where it is not installed."""
    global _jax
    if _jax is None:
        try:
            import jax
        except ImportError:
            _jax = False
        else:
            jax.config.update("jax_platforms", "cpu")
            _jax = jax
    return _jax or None
