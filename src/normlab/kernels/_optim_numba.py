"""numba loops over the optimizer rules of :mod:`normlab.kernels.optim`, and the squared norm.

:func:`fused_kernel` turns a step (a rule with what goes before and after
it: clipping, the learning rate, momentum, weight decay; see
:func:`normlab.kernels.optim.step_source`) into one ``@njit`` loop that
reads each gradient, slot and parameter once and writes each slot and
parameter once, with the counters in the same call. The loop's text is the
same for every step (only the number of slots and constants changes), so it
is generated from one template rather than written out per rule: a new rule
is fused without further code.

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
# ZeroDivisionError check, whose branch keeps LLVM from vectorizing the loop (10x slower).
# The loop runs over slices of each segment from index 0: indexing from a start read
# out of an array (range(a, b)) needs negative-index checks that also stop the
# vectorizer (10x slower again)
_JIT = dict(cache=True, nogil=True, error_model="numpy")

_TEMPLATE = """
def {qualname}(g, p, S, k, neg_lr, beta, nesterov, f, lo, hi, scales, bounds, head, new_head, check):
    sq = np.nan
    if check:
        sq = sum_squares(g)
        if not np.isfinite(sq):
            return sq
    if bounds.size == 2:
        scale = scales[0]
        for i in range(p.size):
            {lhs} = _step({args_whole})
{stores}
            p[i] = p_new
    else:
        for j in range(bounds.size - 1):
            scale = scales[j]
            a, b = bounds[j], bounds[j + 1]
            gj, pj = g[a:b], p[a:b]
{rows}
            for i in range(pj.size):
                {lhs} = _step({args})
{stores_seg}
                pj[i] = p_new
    for j in range(head.size):
        head[j] = new_head[j]
    if check:
        head[2] = np.sqrt(sq)
    return sq
"""

_kernels: dict = {}


def clip_scalar(x, lo, hi):
    """``np.clip(x, lo, hi)`` for one float, which numba does not provide.

    NaN stays NaN, else ``min(max(x, lo), hi)``. It agrees with NumPy's
    ``np.clip`` bit for bit when neither bound is zero or NaN, as
    ``clipvalue``'s ``[-c, c]`` with ``c > 0`` (the tests check every kind
    of ``x``); for ``x`` and a bound that are zeros of opposite signs,
    NumPy's vectorized loops may return either.
    """
    if np.isnan(x):
        return x
    x = x if x > lo else lo
    if np.isnan(x):
        return x
    return x if x < hi else hi


def _inline(fn):
    return njit(inline="always", error_model="numpy")(fn)


def fused_kernel(kind):
    """The compiled loop for ``kind`` (a :class:`normlab.kernels.optim.StepKind`), built once per process.

    Signature: ``(g, p, S, consts, neg_lr, beta, nesterov, f, lo, hi,
    scales, bounds, head, new_head, check) -> float``: for each segment
    ``j`` of ``bounds``, the element step of
    :func:`normlab.kernels.optim.step_source` with ``scale = scales[j]``,
    with the semantics of :func:`normlab.kernels.optim.fused_step`.
    """
    kernel = _kernels.get(kind)
    if kernel is None:
        from . import optim as K

        name, step_src = K.step_source(kind)
        nslots = len(kind.rule.slots) + kind.momentum
        nconsts = kind.rule.fn.__code__.co_argcount - 1 - len(kind.rule.slots)
        parts = [kind.rule.fn, K.momentum.fn, K.clip_value, clip_scalar, K.decay]
        digest = zlib.crc32(b"".join(marshal.dumps(f.__code__) for f in parts)
                            + (step_src + _TEMPLATE).encode())
        qualname = f"fused_{name}_{digest:08x}"
        scalars = [f"k[{j}]" for j in range(nconsts)] + ["scale", "lo", "hi", "neg_lr", "beta", "nesterov", "f"]
        src = _TEMPLATE.format(
            qualname=qualname,
            lhs=", ".join(["p_new"] + [f"s{j}" for j in range(nslots)]) + ",",
            args_whole=", ".join(["g[i]", "p[i]"] + [f"S[{j}, i]" for j in range(nslots)] + scalars),
            args=", ".join(["gj[i]", "pj[i]"] + [f"S{j}[i]" for j in range(nslots)] + scalars),
            rows="\n".join(f"            S{j} = S[{j}, a:b]" for j in range(nslots)) or "            pass",
            stores="\n".join(f"            S[{j}, i] = s{j}" for j in range(nslots)) or "            pass",
            stores_seg="\n".join(f"                S{j}[i] = s{j}" for j in range(nslots)) or "                pass",
        )
        namespace = {
            "np": np,
            "sum_squares": sum_squares,
            "rule": _inline(kind.rule.fn),
            "momentum": _inline(K.momentum.fn),
            "clip_value": _inline(clip_scalar),
            "decay": _inline(K.decay),
        }
        exec(compile(step_src, __file__, "exec"), namespace)
        namespace["_step"] = _inline(namespace[name])
        # this file as the code's file: numba's cache needs a real source file
        exec(compile(src, __file__, "exec"), namespace)
        fn = namespace[qualname]
        fn.__module__ = __name__
        fn.__qualname__ = qualname
        kernel = _kernels[kind] = njit(**_JIT)(fn)
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


@njit(cache=True, nogil=True)
def add_scaled(g, w, c):
    """``g += w * c`` over C-contiguous arrays of one shape and dtype, ``c`` a scalar of it: the product rounded, then the sum.

    Two roundings per element, as NumPy's ``np.multiply(w, c, out=t)`` then
    ``np.add(g, t, out=g)`` (numba contracts no multiply-add into an FMA
    without ``fastmath``), so the same bits, in one pass instead of two calls.
    """
    n = g.size
    gf, wf = g.reshape(n), w.reshape(n)  # views (C order): no reshape per call in Python
    for i in range(n):
        t = wf[i] * c
        gf[i] = gf[i] + t
