"""A one-line notice while numba compiles kernels (the command line's first run).

numba compiles each kernel on its first call and, with ``cache=True``, saves
the machine code so that later processes load it instead. Only a real
compilation fires numba's ``"numba:compile"`` event (a kernel loaded from the
cache or already in memory does not), so listening for it tells exactly
whether a piece of work compiled anything, without guessing from the cache
folder's contents.

:func:`compile_notice` wraps a short warm-up (the command's own networks, a
step or two): if anything compiles, it writes
``normlab: compiling numba kernels (once: later runs load them from the
cache)...`` when the first compilation starts and completes the line with
`` done in 9.1 s`` at the end, so the wait is announced before it happens and
its length is reported on the same line. When nothing compiles it writes
nothing; without numba, or with ``NORMLAB_DISABLE_NUMBA=1``, it does nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time

from . import _backend

__all__ = ["compile_notice", "CompileWatch"]


class CompileWatch:
    """What a :func:`compile_notice` block compiled.

    Attributes
    ----------
    compiled : int
        Number of kernel compilations (0: everything came from the cache).
    seconds : float
        Wall time from the first compilation to the end of the block (0.0 when
        nothing compiled).
    """

    def __init__(self):
        self.compiled = 0
        self.seconds = 0.0


def _cache_note() -> str:
    # the other part of normlab that decides where numba may cache may have
    # found no writable folder; then every run compiles, and saying "once"
    # would be untrue
    caching = getattr(_backend, "numba_cache_enabled", None)
    if callable(caching) and not caching():
        return "no writable cache folder, so every run compiles them: set NUMBA_CACHE_DIR to keep them"
    return "once: later runs load them from the cache"


@contextlib.contextmanager
def compile_notice(stream=None, prefix: str = "normlab"):
    """Announce, on one line of ``stream`` (default stderr), any numba compilation inside the block.

    Parameters
    ----------
    stream : file-like, optional
        Where the line goes (``sys.stderr`` at the time of the call by default).
    prefix : str, default "normlab"
        The line's first word (the command's name).

    Yields
    ------
    CompileWatch
        Filled in when the block ends.
    """
    watch = CompileWatch()
    if not _backend.numba_enabled():
        yield watch
        return
    from numba.core import event

    out = sys.stderr if stream is None else stream
    started = []

    class _Listener(event.Listener):
        def on_start(self, ev):
            watch.compiled += 1
            if not started:
                started.append(time.perf_counter())
                # stdout first, so that what the command printed before comes before the notice
                # when both streams go to one terminal or file
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                out.write(f"{prefix}: compiling numba kernels ({_cache_note()})...")
                out.flush()

        def on_end(self, ev):
            pass

    listener = _Listener()
    event.register("numba:compile", listener)
    ok = False
    try:
        yield watch
        ok = True
    finally:
        event.unregister("numba:compile", listener)
        if started:
            watch.seconds = time.perf_counter() - started[0]
            # on an error, end the line so that the error's message starts on its own
            out.write(f" done in {watch.seconds:.1f} s\n" if ok else "\n")
            out.flush()
