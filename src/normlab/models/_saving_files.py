"""Files on disk for :mod:`normlab.models.saving` and :mod:`normlab.models.keras_format`.

The error every malformed model file raises, atomic writing (a temporary
name in the target's directory, then a rename) and opening a path only when
it is a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

import numpy as np


class ModelFileError(ValueError):
    """A file is not a readable normlab model (foreign, truncated, corrupted, tampered)."""

# the public name (a re-export of normlab.models.saving): in reprs and tracebacks
ModelFileError.__module__ = "normlab.models.saving"


def _all_finite(arr: np.ndarray) -> bool:
    # min and max propagate NaN and see inf without a temporary of the array's size
    return arr.size == 0 or bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


def _write_atomically(path, write) -> None:
    """Write a file through ``write(fh)`` under a temporary name, then rename it over ``path``'s target."""
    target = os.path.realpath(os.fspath(path))  # a symbolic link: replace what it points to, keep the link
    directory, base = os.path.split(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None  # a new file: 0o666 less the umask, as os.open below gives it
    fd, tmp = _create_temporary(directory, base)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                if hasattr(os, "fchmod"):
                    os.fchmod(fh.fileno(), mode)
                else:  # pragma: no cover - Windows
                    os.chmod(tmp, mode)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _create_temporary(directory: str, base: str) -> tuple[int, str]:
    # tempfile.mkstemp creates 0o600 files; O_EXCL with 0o666 lets the umask decide, as open() does
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.path.join(directory, f".{base}.*.tmp"))


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def _open_regular_file(path):
    """Open ``path`` for reading; ``(file, size)``. Refuses what is not a regular file."""
    name = os.fspath(path)
    # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files)
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path}: not a regular file (a device, pipe or socket).")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise
