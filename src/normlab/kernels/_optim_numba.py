"""numba loops over the optimizer rules of :mod:`normlab.kernels.optim`, and the squared norm.

:func:`fused_kernel` turns a rule (a per-element function) into one
``@njit`` loop that reads each gradient, slot and parameter once and writes
each slot and parameter once, with the momentum step and the counters in the
same call. The loop's text is the same for every rule (only the number of
slots and constants changes), so it is generated from one template rather
than written out per rule: a new rule is fused without further code.

Caching: numba caches a function by its qualified name and source file. The
generated loops are compiled with this module as their file and a name that
ends in a hash of the rule's code, so ``cache=True`` works (a second process
loads them from disk) and editing a rule, which lives in another file, gives
its loop a new name instead of a stale cache entry.
"""

from __future__ import annotations

import marshal
import zlib

import numpy as np
from numba import njit

# error_model="numpy": IEEE division (inf/nan on zero, as NumPy) instead of Python's
# ZeroDivisionError check, whose branch keeps LLVM from vectorizing the loop (10x slower)
_JIT = dict(cache=True, nogil=True, error_model="numpy")

_TEMPLATE = """
def {qualname}(g, p, S, k, neg_lr, beta, nesterov, has_momentum, meta, new_meta, check):
    sq = np.nan
    if check:
        sq = sum_squares(g)
        if not np.isfinite(sq):
            return sq
    for i in range(p.size):
        {lhs} = _rule({args})
{stores}
        s = d * neg_lr
        if has_momentum:
            s, v = _momentum(s, S[{nslots}, i], beta, nesterov)
            S[{nslots}, i] = v
        p[i] = p[i] + s
    for j in range(meta.size):
        meta[j] = new_meta[j]
    if check:
        meta[2] = np.sqrt(sq)
    return sq
"""

_kernels: dict = {}


def fused_kernel(rule):
    """The compiled loop for ``rule`` (a :class:`normlab.kernels.optim.Rule`), built once per process.

    Signature: ``(g, p, S, consts, neg_lr, beta, nesterov, has_momentum,
    meta, new_meta, check) -> float`` with the semantics of
    :func:`normlab.kernels.optim.fused_step`.
    """
    kernel = _kernels.get(rule)
    if kernel is None:
        from .optim import momentum

        code = rule.fn.__code__
        nslots = len(rule.slots)
        nconsts = code.co_argcount - 1 - nslots
        digest = zlib.crc32(marshal.dumps(code) + marshal.dumps(momentum.fn.__code__) + _TEMPLATE.encode())
        qualname = f"fused_{rule.name}_{digest:08x}"
        args = ["g[i]"] + [f"S[{j}, i]" for j in range(nslots)] + [f"k[{j}]" for j in range(nconsts)]
        src = _TEMPLATE.format(
            qualname=qualname,
            lhs=", ".join(["d"] + [f"s{j}" for j in range(nslots)]) + ("," if not nslots else ""),
            args=", ".join(args),
            stores="\n".join(f"        S[{j}, i] = s{j}" for j in range(nslots)) or "        pass",
            nslots=nslots,
        )
        namespace = {
            "np": np,
            "sum_squares": sum_squares,
            "_rule": njit(inline="always", error_model="numpy")(rule.fn),
            "_momentum": njit(inline="always", error_model="numpy")(momentum.fn),
        }
        # this file as the code's file: numba's cache needs a real source file
        exec(compile(src, __file__, "exec"), namespace)
        fn = namespace[qualname]
        fn.__module__ = __name__
        fn.__qualname__ = qualname
        kernel = _kernels[rule] = njit(**_JIT)(fn)
    return kernel


# fastmath "reassoc" lets LLVM split the sum into vector partial sums (without
# it a floating-point reduction runs one element at a time, ~8x slower): the
# order of the additions is unspecified, as in a BLAS dot product
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum_squares_native(a):
    s = a.dtype.type(0)
    for i in range(a.size):
        s += a[i] * a[i]
    return s


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum_squares_f64(a):
    s = 0.0
    for i in range(a.size):
        v = np.float64(a[i])
        s += v * v
    return s


@njit(cache=True, nogil=True)
def sum_squares(a):
    """``sum(a * a)`` over a 1-D array, as float64.

    Summed in ``a``'s dtype and, when that overflows (float32 squares beyond
    3.4e38), again in float64, so the result is inf or NaN only when an entry
    is (or when float64 itself overflows). Twice as fast as ``np.dot(a, a)``
    on float32 (OpenBLAS's sdot), which the NumPy path uses.
    """
    s = np.float64(_sum_squares_native(a))
    if not np.isfinite(s):
        s = _sum_squares_f64(a)
    return s
