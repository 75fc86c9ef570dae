"""Optimizer update rules, each written once, and the fused step that runs them.

A rule is a per-element function: plain arithmetic plus ``np.sqrt`` /
``np.sign`` / ``np.maximum``, taking the (transformed) gradient, the slot
values and the step's constants, and returning the direction and the new slot
values. The same function runs on arrays (NumPy: the links of
:mod:`normlab.optim.transforms`, and :func:`fused_step` without numba, both as
traced ufunc calls without temporaries, :mod:`normlab.kernels._optim_numpy`)
and on scalars inside one loop (numba: :func:`fused_step`), so both paths
perform the same IEEE operations in the same order and agree bit for bit.

A fused step is the rule with what goes around it, also per element
(:func:`step_source`): a clip (:func:`clip_value`, or a scale per variable
for a clipped norm), the learning rate, :data:`momentum` and decoupled
weight decay (:func:`decay`), in the order of the chain they replace.

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
from . import _optim_numpy as _np
from .checks import sum_squares

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _optim_numba as _nb
else:  # pragma: no cover
    _nb = None

__all__ = [
    "Rule",
    "StepBuffers",
    "StepKind",
    "StepArgs",
    "step_source",
    "fused_step",
    "fused_available",
    "apply_rule",
    "apply_elementwise",
    "clip_value",
    "decay",
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
_F32, _F64 = _FAST_DTYPES


_FLAGS = (bool, np.bool_)


def _is_flag(a) -> bool:
    """An argument passed to a traced function as it is (a branch may depend on it)."""
    return a is None or a.__class__ in _FLAGS


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                      and a.shape == b.shape and a.strides == b.strides)


def apply_elementwise(fn: Callable, args: list, outputs: list, aliases: tuple = ()) -> None:
    """NumPy: ``outputs[k][...] = fn(*args)[k]``, elementwise, without temporaries (``fn`` may return one value for one output).

    ``args``: arrays of the outputs' shape, scalars, and flags (Python
    bools or None, passed as they are). ``aliases``: ``(k, i)`` pairs where
    ``outputs[k]`` is the same array as ``args[i]`` (an in-place update).
    C-contiguous arrays run as the traced ufunc calls of
    :mod:`normlab.kernels._optim_numpy`, in slices; others (or a function
    that cannot be traced) are evaluated whole, on temporaries. Either way
    the operations, hence the results, are the same.
    """
    arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim] + list(outputs)
    shape = outputs[0].shape
    if all(a.flags.c_contiguous and a.shape == shape for a in arrays):
        static = {i: a for i, a in enumerate(args) if _is_flag(a)}
        position = [i for i in range(len(args)) if i not in static]
        at = {i: j for j, i in enumerate(position)}
        inputs = [args[i].reshape(-1) if isinstance(args[i], np.ndarray) and args[i].ndim else args[i]
                  for i in position]
        outs = [o.reshape(-1) for o in outputs]
        prog = _np.program(fn, inputs, static, outs, tuple((k, at[i]) for k, i in aliases))
        if prog is not None:
            _np.run(prog, inputs, outs)
            return
    results = fn(*args)
    if not isinstance(results, tuple):
        results = (results,)
    for o, r in zip(outputs, results):
        o[...] = r


def apply_rule(rule: Rule, g: np.ndarray, slots: list, consts: tuple, out: np.ndarray) -> None:
    """NumPy: ``out, *slots = rule(g, *slots, *consts)``, in place (``out`` may be ``g``)."""
    k = len(slots)
    aliases = tuple((j, j) for j in range(1, k + 1))
    if _same_memory(out, g):
        aliases = ((0, 0),) + aliases
    elif np.may_share_memory(out, g):
        out_tmp = np.empty_like(out)
        apply_elementwise(rule.fn, [g, *slots, *consts], [out_tmp, *slots], aliases)
        np.copyto(out, out_tmp)
        return
    apply_elementwise(rule.fn, [g, *slots, *consts], [out, *slots], aliases)


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


# ------------------------------------------------- before and after the rule
def clip_value(g, lo, hi):
    """``g`` clipped to ``[lo, hi]`` (Keras's ``clipvalue``, with ``lo = -hi``); NaN stays NaN.

    ``np.clip``, one pass in NumPy (``np.maximum`` then ``np.minimum`` with
    a scalar bound took 5x as long); numba runs NumPy's formula for it on
    scalars (:func:`normlab.kernels._optim_numba.clip_scalar`).
    """
    return np.clip(g, lo, hi)


def decay(s, p, f):
    """The step ``s`` with decoupled weight decay, ``f = -lr * weight_decay``: ``s + p * f``."""
    return s + p * f


# ------------------------------------------------------------- fused step
class StepKind(NamedTuple):
    """What a fused step does around its rule; the compiled loop is specialized to it.

    ``pre``: ``""``, ``"clip"`` (``g = clip_value(g, lo, hi)``) or
    ``"scale"`` (``g = g * scale``, one scale per segment of the buffer: a
    clipped norm). ``momentum``: the step goes through :data:`momentum`.
    ``decay``: :func:`decay` is applied to the step.
    """

    rule: Rule
    pre: str = ""
    momentum: bool = False
    decay: bool = False


class StepArgs(NamedTuple):
    """The values of one fused step, each in the parameters' dtype (``consts``: the rule's)."""

    consts: tuple
    neg_lr: np.floating
    beta: np.floating
    nesterov: bool
    f: np.floating  # -lr * weight_decay
    lo: np.floating
    hi: np.floating
    scales: np.ndarray  # one per segment (or one for the whole buffer)


#: the arguments after the rule's constants, in order
STEP_SCALARS = ("scale", "lo", "hi", "neg_lr", "beta", "nesterov", "f")


def step_source(kind: StepKind) -> tuple[str, str]:
    """The per-element step of ``kind`` as Python source: ``(function name, text)``.

    The one composition of a fused step, run by the numba loop (compiled,
    on scalars) and by NumPy (traced, on arrays)::

        def step(g, p, s0, ..., m, c0, ..., scale, lo, hi, neg_lr, beta, nesterov, f):
            g = g * scale                              (pre == "scale")
            g = clip_value(g, lo, hi)                  (pre == "clip")
            d, s0, ... = rule(g, s0, ..., c0, ...)
            s = d * neg_lr
            s, m = momentum(s, m, beta, nesterov)      (momentum)
            s = decay(s, p, f)                         (decay)
            return p + s, s0, ..., m

    It names the rule ``rule`` and the other parts by their names in this
    module; the caller supplies them.
    """
    r = kind.rule
    nslots = len(r.slots)
    nconsts = r.fn.__code__.co_argcount - 1 - nslots
    slots = [f"s{j}" for j in range(nslots)]
    consts = [f"c{j}" for j in range(nconsts)]
    name = f"step_{r.name}_{kind.pre or 'plain'}{'_momentum' if kind.momentum else ''}{'_decay' if kind.decay else ''}"
    args = ["g", "p", *slots, *(["m"] if kind.momentum else []), *consts, *STEP_SCALARS]
    body = []
    if kind.pre == "scale":
        body.append("g = g * scale")
    elif kind.pre == "clip":
        body.append("g = clip_value(g, lo, hi)")
    body.append(f"{', '.join(['d', *slots])}, = rule({', '.join(['g', *slots, *consts])})")
    body.append("s = d * neg_lr")
    if kind.momentum:
        body.append("s, m = momentum(s, m, beta, nesterov)")
    if kind.decay:
        body.append("s = decay(s, p, f)")
    body.append(f"return {', '.join(['p + s', *slots, *(['m'] if kind.momentum else [])])},")
    return name, f"def {name}({', '.join(args)}):\n" + "".join(f"    {line}\n" for line in body)


_step_functions: dict = {}


def _step_function(kind: StepKind) -> Callable:
    """:func:`step_source` as a Python function (for NumPy)."""
    fn = _step_functions.get(kind)
    if fn is None:
        name, src = step_source(kind)
        namespace = {"np": np, "rule": kind.rule.fn, "momentum": momentum.fn, "clip_value": clip_value,
                     "decay": decay}
        exec(compile(src, f"<normlab {name}>", "exec"), namespace)
        fn = _step_functions[kind] = namespace[name]
    return fn


class StepBuffers(NamedTuple):
    """One parameter group's bound memory for :func:`fused_step`.

    ``p`` (n,) and ``head`` (float64: the counters, the index of the live
    half of ``S``, then the rule's scalar slots) are views into the byte
    array ``commit[0]``; ``p_sh`` and ``head_sh`` are the same views into
    ``commit[1]``, a byte array of the same size, the shadow. ``S`` holds
    the slots twice, ``S[0]`` and ``S[1]`` (slots, n): ``S[int(head[3])]``
    is the live copy, the other one is free. ``g`` (n,) is the gradient, of
    ``p``'s dtype. ``segments`` (int64) are the bounds of the variables in
    the buffer, ``[0, n1, n1 + n2, ..., n]``, and ``whole`` is ``[0, n]``;
    ``work`` holds the NumPy path's work arrays and traced step.
    """

    g: np.ndarray
    p: np.ndarray
    S: tuple
    head: np.ndarray
    p_sh: np.ndarray
    head_sh: np.ndarray
    commit: tuple
    segments: np.ndarray
    whole: np.ndarray
    work: dict


#: the index in ``head`` of the live copy of the slots
LIVE = 3


def fused_available(dtype) -> bool:
    """True when :func:`fused_step` on arrays of ``dtype`` runs as one compiled kernel."""
    return _backend.numba_enabled() and np.dtype(dtype) in _FAST_DTYPES


def fused_step(kind: StepKind, args: StepArgs, buf: StepBuffers, new_head: np.ndarray, check: bool) -> float:
    """One update of a parameter group, as one indivisible write of ``p``, the slots and ``head``.

    Per element, :func:`step_source`'s step on ``g``, ``p`` and the rows of
    the live slots (the rule's, then the momentum), with ``args``; then
    ``head[:] = new_head``, whose entry :data:`LIVE` is set here. With
    ``args.scales`` of one entry per variable (``len(buf.segments) - 1``),
    variable ``j`` gets ``scales[j]``. With ``check``, the squared norm of
    ``g`` is computed first and, when it is not finite, nothing is written
    (the caller decides); otherwise ``head[2]`` is set to its square root.
    Returns the squared norm (NaN when not ``check``).

    numba (float32/float64): one kernel call, which Python cannot interrupt
    halfway, updates the live slots in place. NumPy: the step's ufunc calls
    write the new slots into the free copy and the new parameters into the
    shadow; then one ``np.copyto`` of the shadow's head and parameters
    commits them, the head naming the other copy live from then on.
    """
    g, p = buf.g, buf.p
    whole = len(args.scales) == 1
    live = int(buf.head[LIVE])
    dt = p.dtype
    # identity with the native dtypes (``in _FAST_DTYPES`` compares by value: 0.3 us each, every step)
    if (dt is _F32 or dt is _F64 or dt in _FAST_DTYPES) and g.dtype == dt and _backend.numba_enabled():
        bounds = buf.whole if whole else buf.segments
        new_head[LIVE] = live
        return _nb.fused_kernel(kind)(g, p, buf.S[live], args.consts, args.neg_lr, args.beta, args.nesterov,
                                      args.f, args.lo, args.hi, args.scales, bounds, buf.head, new_head, check)
    sq = np.nan
    if check:
        sq = sum_squares(g)
        if not np.isfinite(sq):
            return sq
    work = buf.work
    scale = args.scales[0]
    if not whole:  # one scale per element, for one pass over the buffer
        scale = work.get("scale")
        if scale is None:
            scale = work["scale"] = np.empty_like(p)
        b = buf.segments
        for j, value in enumerate(args.scales):
            scale[b[j] : b[j + 1]] = value
    rows = work.get("rows")
    if rows is None:  # the slot rows of either copy, as 1-D arrays
        rows = work["rows"] = (list(buf.S[0]), list(buf.S[1]))
    consts = args.consts
    # the traced step, kept with the buffers: the flags are all it depends on beyond the binding
    key = (kind, whole, args.nesterov, *[c if c is None or c.__class__ in _FLAGS else 0 for c in consts])
    entry = work.get(key)
    if entry is None:
        full = [g, p, *rows[live], *consts, scale, args.lo, args.hi, args.neg_lr, args.beta, args.nesterov, args.f]
        static = {i: a for i, a in enumerate(full) if _is_flag(a)}
        # every traced argument but the rule's constants is an array or a number
        dynamic = [j for j, c in enumerate(consts) if not _is_flag(c)]
        prog = _np.program(_step_function(kind), [a for i, a in enumerate(full) if i not in static], static,
                           [buf.p_sh, *rows[1 - live]], ())
        entry = work[key] = (prog, dynamic)
    prog, dynamic = entry
    if prog is None:  # pragma: no cover - every rule of this module traces
        apply_elementwise(_step_function(kind), [g, p, *rows[live], *consts, scale, args.lo, args.hi, args.neg_lr,
                                                 args.beta, args.nesterov, args.f], [buf.p_sh, *rows[1 - live]])
    else:
        _np.run(prog, [g, p, *rows[live], *[consts[j] for j in dynamic], scale, args.lo, args.hi, args.neg_lr,
                       args.beta, args.f], [buf.p_sh, *rows[1 - live]])
    new_head[LIVE] = 1 - live
    buf.head_sh[...] = new_head
    if check:
        buf.head_sh[2] = np.sqrt(sq)
    np.copyto(*buf.commit)
    return sq




def add_scaled(g: np.ndarray, w: np.ndarray, c: float) -> bool:
    """``g += w * dtype(c)`` in one pass (an L2 penalty's gradient ``2 l2 w`` added in place); False where it does not apply.

    numba, for C-contiguous ``g`` and ``w`` of one shape and float dtype: the
    same two roundings per element as ``np.multiply(w, c, out=t)`` then
    ``np.add(g, t, out=g)``, so the same bits. Else nothing is done (the
    caller keeps the NumPy calls).
    """
    dt = g.dtype
    # identity with the two native dtypes: comparing a dtype with np.float32 converts the type each time
    # (0.3 us a comparison, more than the kernel's own work on a small layer)
    if _nb is None or not (dt is _F32 or dt is _F64) or w.dtype is not dt or w.shape != g.shape \
            or not (g.flags.c_contiguous and w.flags.c_contiguous) or not _backend.numba_enabled():
        return False
    _nb.add_scaled(g, w, dt.type(c))
    return True


def add_scaled_again(g: np.ndarray, w: np.ndarray, c_native) -> None:
    """:func:`add_scaled` on arrays it took before (the same objects), with ``c`` already in their dtype.

    For a caller that keeps what it checked (a training step's L2 penalties: the same
    bound arrays every step); numba must still be enabled (the caller checks).
    """
    _nb.add_scaled(g, w, c_native)
