"""Vectorizable float32 ``exp`` and ``sigmoid`` for numba kernels.

numba compiles ``np.exp`` on a float32 scalar to a call into the
C library, which stops LLVM from vectorizing the loop around it: a fused
"batch norm then sigmoid" loop with ``np.exp`` runs at about 4 ns per element,
ten times NumPy's vectorized ``np.tanh``. The functions here use only
arithmetic, comparisons, a float-to-int conversion and a bit cast, so a loop
calling them vectorizes (about 0.5 ns per element on one core).

exp (Cody and Waite range reduction)
------------------------------------
``y`` is clamped to ``[-87, 88]`` (``exp`` stays a normal float32; NaN stays
NaN), then

    k = round(y / ln 2),    r = y - k ln 2   (|r| <= ln 2 / 2; ``ln 2`` split
                                               into a short head and a tail so
                                               that ``k * head`` is exact)
    exp(y) = 2^k * exp(r),  exp(r) = 1 + r + r^2/2! + ... + r^7/7!

The Taylor remainder ``r^8 / 8!`` is below 5e-9 relative for ``|r| <= 0.347``
(a tenth of a float32 ulp); ``2^k`` is built by writing ``k + 127`` into the
exponent bits. Measured error: at most 2 ulp (see the tests).

sigmoid
-------
``sigmoid(x) = 1 / (1 + exp(-x))``: no cancellation anywhere, relative error a
few ulp (NumPy's ``0.5 tanh(x / 2) + 0.5`` form, used on the NumPy path, is
accurate in absolute terms only: its relative error grows without bound in the
left tail). There is no ``tanh`` here: NumPy's float32 ``np.tanh`` is already
one vectorized pass, faster than a polynomial form compiled by numba.

These are for float32 only; float64 keeps NumPy's functions.
Polynomials are evaluated with fused multiply-adds (``fastmath={"contract"}``
and nothing else: no reassociation, NaN and inf keep their meaning).

numba caches each compiled kernel keyed on its own source file: after editing
this file, delete the ``__pycache__`` ``*.nbi``/``*.nbc`` files so that the
kernels calling these functions (batch norm) are recompiled with the change.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_f = np.float32
# Cody-Waite split of ln 2: LN2_HI has 9 significant bits, so k * LN2_HI is exact for |k| < 2^15
LN2_HI = _f(0.693359375)
LN2_LO = _f(-2.12194440e-4)
LOG2E = _f(1.44269504088896341)
EXP_LO = _f(-87.0)
EXP_HI = _f(88.0)
ZERO = _f(0.0)
ONE = _f(1.0)
HALF = _f(0.5)
# 1/n! for the Taylor polynomial
C2, C3, C4 = _f(1 / 2), _f(1 / 6), _f(1 / 24)
C5, C6, C7 = _f(1 / 120), _f(1 / 720), _f(1 / 5040)


@intrinsic
def _int32_bits_as_float32(typingctx, i):
    """Reinterpret the bits of an int32 as a float32 (no conversion)."""
    if i != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _exp_reduced(r):
    """``exp(r)`` for ``|r| <= ln 2 / 2`` (Taylor, degree 7, Horner)."""
    p = C7
    p = p * r + C6
    p = p * r + C5
    p = p * r + C4
    p = p * r + C3
    p = p * r + C2
    p = p * r + ONE
    return p * r + ONE


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def expf(y):
    """``exp(y)`` of a float32, vectorizable (see the module notes)."""
    # written so that NaN passes through the clamps (and comes out NaN)
    y = EXP_LO if y < EXP_LO else y
    y = EXP_HI if y > EXP_HI else y
    k = np.floor(y * LOG2E + HALF)
    r = (y - k * LN2_HI) - k * LN2_LO  # NaN for a NaN y, which carries through
    k = k if k == k else ZERO  # converting NaN to an integer is undefined in LLVM
    scale = _int32_bits_as_float32(np.int32((np.int32(k) + 127) << 23))
    return _exp_reduced(r) * scale


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def sigmoidf(x):
    """``1 / (1 + exp(-x))`` of a float32."""
    return ONE / (ONE + expf(-x))


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def sigmoid_array(x, out):
    """``out = sigmoidf(x)`` elementwise (1-D float32 arrays): the sigmoid activation's numba path."""
    for i in range(x.size):
        out[i] = sigmoidf(x[i])


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def exp_array(x, out):
    """``out = expf(x)`` elementwise (1-D float32 arrays); for the tests."""
    for i in range(x.size):
        out[i] = expf(x[i])
