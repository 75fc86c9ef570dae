"""Which kernels run synchronized batch normalization's passes over a shard.

The kernels pick their own backend (as every module under ``kernels/`` does):
the numba row kernels of :mod:`normlab.kernels._bn_sync_numba` where numba is
enabled and the shard is a non-empty float32/float64 array with its features
on the last axis; otherwise the caller's NumPy path
(:mod:`normlab.distributed.sync_bn`).
"""

from __future__ import annotations

import numpy as np

from . import _backend

__all__ = ["rows_take", "row_kernels"]

_S = None  # the numba kernels, imported on first use (they compile then)


def rows_take(x) -> bool:
    """True when the row kernels take the shard ``x`` (numba enabled, float32/float64, not empty)."""
    return _backend.numba_enabled() and x.size > 0 and (x.dtype == np.float32 or x.dtype == np.float64)


def row_kernels():
    """The numba row kernels (:mod:`normlab.kernels._bn_sync_numba`), imported on first use."""
    global _S
    if _S is None:
        from . import _bn_sync_numba

        _S = _bn_sync_numba
    return _S
