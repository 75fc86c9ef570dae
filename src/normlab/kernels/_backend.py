"""Which implementation of the fused kernels runs: numba if importable, else NumPy.

numba is optional (the ``fast`` extra). Set the environment variable
``NORMLAB_DISABLE_NUMBA=1`` before importing normlab, or call
``use_numba(False)``, to force the NumPy path (the tests run both).
"""

from __future__ import annotations

import os

try:  # pragma: no cover - depends on the environment
    import numba  # noqa: F401

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover
    NUMBA_AVAILABLE = False

_enabled = NUMBA_AVAILABLE and os.environ.get("NORMLAB_DISABLE_NUMBA", "") not in ("1", "true", "yes")


def numba_enabled() -> bool:
    """True when the numba kernels are used."""
    return _enabled


def use_numba(flag: bool) -> bool:
    """Switch the numba kernels on or off; returns the previous setting.

    Turning them on without numba installed raises ``ImportError``.
    """
    global _enabled
    if flag and not NUMBA_AVAILABLE:
        raise ImportError('numba is not installed: pip install "normlab[fast]"')
    previous = _enabled
    _enabled = bool(flag)
    return previous
