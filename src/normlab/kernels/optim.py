"""Optimizer update rules, each written once, and the fused step that runs them.

A rule is a per-element function: plain arithmetic plus ``np.sqrt`` /
``np.sign`` / ``np.maximum``, taking the (transformed) gradient, the slot
values and the step's constants, and returning the direction and the new slot
values. The same function runs on whole arrays (NumPy: the links of
:mod:`normlab.optim.transforms`, and :func:`fused_step` without numba) and on
scalars inside one loop (numba: :func:`fused_step`), so both paths perform the
same IEEE operations in the same order and agree bit for bit.

Rules never contain a Python float literal: the callers pass every constant
already cast to the arrays' dtype (``dtype.type(1.0 - beta_1)``), which is what
NumPy does with a Python float against a float32 array, and a float32 scalar in
numba stays float32 (a literal would promote it to float64).

=================  =====================================================================
rule               direction (``g`` the gradient), slots
=================  =====================================================================
sgd                ``g``
adagrad            ``r = r + g*g``;  ``g / sqrt(r + eps)`` (keras) or ``g / (sqrt(r) + eps)``
rmsprop            ``r = r*rho + (g*g)*(1-rho)``;  ``g / sqrt(r + eps)`` or ``/ (sqrt(r) + eps)``
rmsprop_centered   also ``a = a*rho + g*(1-rho)``, with ``r - a*a`` in place of ``r``
adam               ``m = m + (g-m)(1-b1)``, ``v = v + (g*g-v)(1-b2)`` [, ``vh = max(vh, v)``];
                   keras ``m / (sqrt(v) + eps) * c``, torch ``m / (sqrt(v)/sqrt(bc2) + eps) / bc1``
nadam              Adam's moments; ``(g*(cg/cm) + m)*cm / (sqrt(v)/sqrt(bc2) + eps)``
lion               ``sign(m*b1 + g*(1-b1))``; ``m = m*b2 + g*(1-b2)``
momentum           (on steps ``s = -lr * d``) ``v = v*beta + s``; ``v``, or ``s + v*beta`` (Nesterov)
=================  =====================================================================
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import _backend
from .checks import sum_squares

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _optim_numba as _nb
else:  # pragma: no cover
    _nb = None

__all__ = [
    "Rule",
    "StepBuffers",
    "fused_step",
    "fused_available",
    "apply_rule",
    "sgd",
    "adagrad",
    "rmsprop",
    "rmsprop_centered",
    "adam",
    "adam_amsgrad",
    "nadam",
    "lion",
    "momentum",
]

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# elements per slice of the NumPy path: the rule's temporaries (64 KiB in float32)
# stay in cache and below glibc's mmap threshold; whole 100k-element buffers
# at once were 2-5x slower (an mmap, page faults and a munmap per temporary)
_CHUNK = 16384


def _slices(n: int):
    return [slice(a, a + _CHUNK) for a in range(0, n, _CHUNK)] or [slice(0, 0)]


def apply_rule(rule: Rule, g: np.ndarray, slots: list, consts: tuple, out: np.ndarray) -> None:
    """NumPy: ``out, *slots = rule(g, *slots, *consts)``, in place, in cache-sized slices.

    ``out`` may be ``g``. Arrays of the same shape; C-contiguous ones are
    processed in slices, others whole.
    """
    arrays = [g, out, *slots]
    if all(a.flags.c_contiguous for a in arrays):
        g, out, *slots = (a.reshape(-1) for a in arrays)
        parts = _slices(g.size)
    else:
        parts = [Ellipsis]
    for c in parts:
        d, *new = rule.fn(g[c], *(s[c] for s in slots), *consts)
        for s, v in zip(slots, new):
            s[c] = v
        out[c] = d


class Rule(NamedTuple):
    """A per-element update function and the names of the slots it reads and returns, in order."""

    fn: Callable
    slots: tuple

    @property
    def name(self) -> str:
        return self.fn.__name__

    def __call__(self, *args):
        return self.fn(*args)


def rule(*slots: str):
    """Declare ``fn(g, *slot_values, *constants) -> (direction, *new_slot_values)`` a rule."""
    return lambda fn: Rule(fn, tuple(slots))


# ------------------------------------------------------------------ rules
@rule()
def sgd(g):
    return (g,)


@rule("accumulator")
def adagrad(g, r, eps, keras):
    r = r + g * g
    d = np.sqrt(r + eps) if keras else np.sqrt(r) + eps
    return g / d, r


@rule("velocity")
def rmsprop(g, r, rho, one_minus_rho, eps, keras):
    r = r * rho + (g * g) * one_minus_rho
    d = np.sqrt(r + eps) if keras else np.sqrt(r) + eps
    return g / d, r


@rule("velocity", "average_gradient")
def rmsprop_centered(g, r, a, rho, one_minus_rho, eps, keras):
    r = r * rho + (g * g) * one_minus_rho
    a = a * rho + g * one_minus_rho
    d = r - a * a
    d = np.sqrt(d + eps) if keras else np.sqrt(d) + eps
    return g / d, r, a


@rule("momentum", "velocity")
def adam(g, m, v, one_minus_b1, one_minus_b2, eps, c1, c2, keras):
    """keras: ``c1 = sqrt(1 - b2^t) / (1 - b1^t)`` (c2 unused); torch: ``c1 = sqrt(1 - b2^t)``, ``c2 = 1 - b1^t``."""
    m = m + (g - m) * one_minus_b1
    v = v + (g * g - v) * one_minus_b2
    u = m / (np.sqrt(v) + eps) * c1 if keras else m / (np.sqrt(v) / c1 + eps) / c2
    return u, m, v


@rule("momentum", "velocity", "velocity_hat")
def adam_amsgrad(g, m, v, vh, one_minus_b1, one_minus_b2, eps, c1, c2, keras):
    m = m + (g - m) * one_minus_b1
    v = v + (g * g - v) * one_minus_b2
    vh = np.maximum(vh, v)
    u = m / (np.sqrt(vh) + eps) * c1 if keras else m / (np.sqrt(vh) / c1 + eps) / c2
    return u, m, v, vh


@rule("momentum", "velocity")
def nadam(g, m, v, one_minus_b1, one_minus_b2, eps, c_ratio, c_m, c_g, sqrt_bc2, use_m):
    """``m_hat = c_g g + c_m m``, written ``(g * (c_g / c_m) + m) * c_m`` (``g * c_g`` when ``c_m == 0``)."""
    m = m + (g - m) * one_minus_b1
    v = v + (g * g - v) * one_minus_b2
    u = (g * c_ratio + m) * c_m if use_m else g * c_g
    return u / (np.sqrt(v) / sqrt_bc2 + eps), m, v


@rule("momentum")
def lion(g, m, beta_1, one_minus_b1, beta_2, one_minus_b2):
    return np.sign(m * beta_1 + g * one_minus_b1), m * beta_2 + g * one_minus_b2


@rule("momentum")
def momentum(s, v, beta, nesterov):
    v = v * beta + s
    return (s + v * beta if nesterov else v), v


# ------------------------------------------------------------- fused step
class StepBuffers(NamedTuple):
    """One parameter group's bound memory, and its shadow, for :func:`fused_step`.

    ``p`` (n,), ``S`` (slots, n) and ``meta`` (float64) are views into the
    byte array ``arena`` and are everything it holds; ``p_sh``, ``S_sh`` and
    ``meta_sh`` are the same views into ``shadow``, a byte array of the
    same size. ``g`` (n,) is the gradient, of ``p``'s dtype.
    """

    g: np.ndarray
    p: np.ndarray
    S: np.ndarray
    meta: np.ndarray
    arena: np.ndarray
    shadow: np.ndarray
    p_sh: np.ndarray
    S_sh: np.ndarray
    meta_sh: np.ndarray


def fused_available(dtype) -> bool:
    """True when :func:`fused_step` on arrays of ``dtype`` runs as one compiled kernel."""
    return _backend.numba_enabled() and np.dtype(dtype) in _FAST_DTYPES


def fused_step(rule: Rule, consts: tuple, neg_lr, beta, nesterov: bool, has_momentum: bool,
               buf: StepBuffers, new_meta: np.ndarray, check: bool) -> float:
    """One update of a parameter group, as one indivisible write of ``p``, ``S`` and ``meta``.

    Per element::

        d, *slots = rule(g, *S[:k], *consts)        (k = len(rule.slots))
        s = d * neg_lr
        s, S[k] = momentum(s, S[k], beta, nesterov)  (has_momentum)
        p = p + s

    and ``meta[:] = new_meta``. With ``check``, the squared norm of ``g`` is
    computed first and, when it is not finite, nothing is written (the
    caller decides); otherwise ``meta[2]`` is set to its square root. Returns
    the squared norm (NaN when not ``check``).

    numba (float32/float64): one kernel call, which Python cannot interrupt
    halfway. NumPy: the rule on whole arrays, written into the shadow, then
    one ``np.copyto`` of the shadow into the arena.
    """
    g, p = buf.g, buf.p
    if _backend.numba_enabled() and p.dtype in _FAST_DTYPES and g.dtype == p.dtype:
        return _nb.fused_kernel(rule)(g, p, buf.S, consts, neg_lr, beta, nesterov, has_momentum,
                                      buf.meta, new_meta, check)
    sq = np.nan
    if check:
        sq = sum_squares(g)
        if not np.isfinite(sq):
            return sq
    k = len(rule.slots)
    S, S_sh = buf.S, buf.S_sh
    for c in _slices(p.size):
        d, *slots = rule.fn(g[c], *S[:k, c], *consts)
        for j, value in enumerate(slots):
            S_sh[j, c] = value
        s = d * neg_lr
        if has_momentum:
            s, S_sh[k, c] = momentum.fn(s, S[k, c], beta, nesterov)
        np.add(p[c], s, out=buf.p_sh[c])
    buf.meta_sh[...] = new_meta
    if check:
        buf.meta_sh[2] = np.sqrt(sq)
    np.copyto(buf.arena, buf.shadow)
    return sq
