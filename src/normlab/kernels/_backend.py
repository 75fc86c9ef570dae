"""Which implementation of the fused kernels runs: numba if importable, else NumPy.

numba is optional (the ``fast`` extra). Set the environment variable
``NORMLAB_DISABLE_NUMBA=1`` before importing normlab, or call
``use_numba(False)``, to force the NumPy path (the tests run both).

numba's compile cache
---------------------
The numba kernels are compiled on first use and the machine code is kept in
numba's cache, so that later runs start at once. numba looks for a writable
folder in this order:

1. ``NUMBA_CACHE_DIR``, if that environment variable is set;
2. the ``__pycache__`` folder next to normlab's kernel modules (inside the
   installed package);
3. the user's cache folder (``~/.cache/numba``, or ``$XDG_CACHE_HOME/numba``).

A read-only install run by a user with no writable home (containers,
service accounts) has none of them. normlab then points ``NUMBA_CACHE_DIR``
(for this process and the processes it starts) at a folder of its own under
the system's temporary folder, ``normlab-numba-cache-<uid>``, kept only if it
belongs to the current user and no one else can write to it (else a fresh
folder, removed at exit), and says so in one line on the ``normlab`` logger.
If not even a temporary folder can be written, the NumPy kernels are used
instead, again with one line. To choose the folder yourself, and to silence
the notice, set ``NUMBA_CACHE_DIR`` to a writable folder before starting
Python, for example ``export NUMBA_CACHE_DIR=/var/cache/myapp/numba``.
"""

from __future__ import annotations

import atexit
import importlib.abc
import logging
import os
import shutil
import stat
import sys
import tempfile

_DISABLED_BY_ENV = os.environ.get("NORMLAB_DISABLE_NUMBA", "") in ("1", "true", "yes")
_log = logging.getLogger("normlab")

try:  # pragma: no cover - depends on the environment
    import numba  # noqa: F401

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover
    NUMBA_AVAILABLE = False

#: Why the numba kernels cannot be used although numba is installed ("" when they can).
_UNUSABLE = ""
#: False when the kernels are cached in a one-off folder, removed at exit.
_CACHE_KEPT = True


def _cache_probe():  # pragma: no cover - never called, only located
    """A function in this folder: numba finds its cache folder as for the kernels beside it."""


def _cache_works() -> bool:
    """True when numba finds a writable cache folder for a function of this folder."""
    try:
        from numba.core.caching import FunctionCache
    except ImportError:  # pragma: no cover - a numba whose internals moved: let it decide alone
        return True
    try:
        FunctionCache(_cache_probe)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return False
    return True


def _is_private_dir(path: str) -> bool:
    """True when ``path`` is a real folder of this user that no one else can write to."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):  # also refuses a symbolic link
        return False
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # Windows: the temporary folder is the user's own
        return True
    # the cache files are loaded as code: a folder that others can write to is not safe
    return st.st_uid == getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _temporary_cache_dir() -> tuple[str | None, bool]:
    """A cache folder under the temporary folder, and whether it is kept for later runs.

    The folder is reused across runs where that is safe, else a new one is
    made and removed at exit; ``(None, False)`` if none can be made.
    """
    try:
        base = tempfile.gettempdir()
    except OSError:  # FileNotFoundError: no usable temporary folder at all
        return None, False
    uid = getattr(os, "getuid", lambda: "user")()
    path = os.path.join(base, f"normlab-numba-cache-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        path = ""
    if path and _is_private_dir(path):
        return path, True
    try:
        path = tempfile.mkdtemp(prefix="normlab-numba-cache-")
    except OSError:
        return None, False
    atexit.register(shutil.rmtree, path, True)
    return path, False


def _set_cache_dir(path: str | None) -> None:
    """Point numba's cache at ``path`` (None: unset), for numba now and for child processes."""
    from numba.core import config

    if path is None:
        os.environ.pop("NUMBA_CACHE_DIR", None)
        config.CACHE_DIR = ""
    else:
        # the environment too: numba re-reads NUMBA_* variables when it compiles
        os.environ["NUMBA_CACHE_DIR"] = path
        config.CACHE_DIR = path


def _ensure_numba_cache() -> str:
    """Make sure numba can cache normlab's kernels; returns "" or why numba must stay off.

    Called once, before any kernel module is imported (numba looks for the
    cache folder when a ``cache=True`` function is defined, and raises if it
    finds none).
    """
    global _CACHE_KEPT
    if _cache_works():
        return ""
    previous = os.environ.get("NUMBA_CACHE_DIR")
    path, kept = _temporary_cache_dir()
    if path is not None:
        _set_cache_dir(path)
        if _cache_works():
            _CACHE_KEPT = kept
            if not _DISABLED_BY_ENV:
                _log.warning(
                    "normlab: no writable folder for numba's compile cache; using %s "
                    "(set NUMBA_CACHE_DIR to choose one)", path
                )
            return ""
        _set_cache_dir(previous)
    reason = "no writable folder for numba's compile cache (set NUMBA_CACHE_DIR to one)"
    if not _DISABLED_BY_ENV:
        _log.warning("normlab: %s; using the NumPy kernels", reason)
    return reason


class _KernelModuleBlocker(importlib.abc.MetaPathFinder):
    """Makes ``import normlab.kernels._*_numba`` raise ImportError, with the reason.

    Installed only where numba is installed but cannot cache: defining a
    ``cache=True`` kernel would raise numba's RuntimeError, and code that
    imports a kernel module under ``try`` / ``except ImportError`` (as for a
    missing numba) must see the same ImportError.
    """

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == __package__ and name.startswith("_") and name.endswith("_numba"):
            raise ImportError(f"{fullname}: the numba kernels are off: {_UNUSABLE}", name=fullname)
        return None


if NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    _UNUSABLE = _ensure_numba_cache()
    if _UNUSABLE:
        # the modules that import the kernels check this flag, so none of them imports one
        NUMBA_AVAILABLE = False
        sys.meta_path.insert(0, _KernelModuleBlocker())

_enabled = NUMBA_AVAILABLE and not _DISABLED_BY_ENV


def numba_enabled() -> bool:
    """True when the numba kernels are used."""
    return _enabled


def numba_cache_enabled() -> bool:
    """True when the numba kernels are used and what they compile is kept for later runs.

    False without numba, and where the only writable cache folder is a
    one-off temporary one (then every process compiles the kernels again).
    """
    return _enabled and _CACHE_KEPT


def use_numba(flag: bool) -> bool:
    """Switch the numba kernels on or off; returns the previous setting.

    Turning them on without numba installed (or without a writable folder
    for its cache) raises ``ImportError``.
    """
    global _enabled
    if flag and not NUMBA_AVAILABLE:
        if _UNUSABLE:
            raise ImportError(f"use_numba(True): the numba kernels are off: {_UNUSABLE}")
        raise ImportError('use_numba(True): numba is not installed: pip install "normlab[fast]"')
    previous = _enabled
    _enabled = bool(flag)
    return previous
