"""The two ways an optimizer's step runs: one fused kernel call, or the chain on the shadow arena.

Both are transactions (see :mod:`normlab.optim.layout`): parameters, slots
and counters change in one indivisible write, or not at all.
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels import optim as K
from ..kernels.checks import sum_squares
from . import transforms as T
from .layout import _SCALARS, _leaves, state_at

_new = tuple.__new__

class _Context:
    """What a fused binding's step needs beyond the learning rate and the gradients, made on its first step."""

    __slots__ = ("dt", "kinds", "beta", "nesterov", "lo", "hi", "ones", "norm_clip", "link_states", "by_lr")

    def __init__(self, b):
        plan = b.fused
        self.dt = dt = b.groups[0].dtype.type
        clip = plan.clip or ("", 0.0)
        pre = {"": "", "clip_value": "clip"}.get(clip[0], "scale")
        momentum = plan.momentum is not None
        # by whether this step decays (not when lr * weight_decay is 0, as the chain's decay link)
        self.kinds = (K.StepKind(plan.rule, pre, momentum, False), K.StepKind(plan.rule, pre, momentum, True))
        beta, self.nesterov = plan.momentum or (0.0, False)
        self.beta = dt(beta)
        self.lo, self.hi = (dt(-clip[1]), dt(clip[1])) if pre == "clip" else (dt(0), dt(0))
        self.ones = np.ones(1, dt)
        self.norm_clip = clip[0] if pre == "scale" else None
        path = plan.rule_path
        # the rule's state as seen with either copy of the slots live
        self.link_states = tuple(state_at(tree, path) if path is not None else None for tree in b.states)
        # what depends on the learning rate alone, kept while the rate is the same float object (a
        # constant rate: one object for good; a new rate, set by hand, by a schedule or a callback, is
        # another object, seen at the next step; identity, not ==, so that -0.0 is not taken for 0.0)
        self.by_lr = (None,)

    def for_lr(self, lr: float, decay: float) -> tuple:
        """``(lr, kind, dtype(-lr), dtype(-lr * decay))`` for this step's rate."""
        by_lr = self.by_lr
        if by_lr[0] is not lr:
            f = -lr * decay
            by_lr = self.by_lr = (lr, self.kinds[f != 0.0], self.dt(-lr), self.dt(f))  # one write: no torn state
        return by_lr


def fused(opt, b, it: int, lr: float, names) -> None:
    """The step of a binding with a :class:`~.layout.FusedPlan`: norms first where a clip needs them, then one kernel.

    The same operations in the same order as the chain: a clipped norm
    scales the gradients by ``dtype(c / norm)`` (1 where not clipped: an
    exact no-op), as ``clip_by_norm`` and ``clip_by_global_norm`` multiply
    by the Python float ``c / norm``; the global norm is summed over the
    arrays the chain sees, as the chain's step computes it.
    """
    plan = b.fused
    buf = b.groups[0].buffers
    ctx = buf.work.get("context")
    if ctx is None:
        ctx = buf.work["context"] = _Context(b)
    dt = ctx.dt
    info = _new(T.StepInfo, (it, lr, None))  # the named tuples without their Python-level constructors (every step)
    link_state = ctx.link_states[int(b.head[K.LIVE])]
    head = b.new_head
    head[0] = it + 1
    head[1] = b.meta[1]
    head[2] = math.nan
    if plan.commit is not None:
        head[_SCALARS:] = plan.commit(info, link_state)
    scales, check = ctx.ones, True
    if ctx.norm_clip is not None:
        sqs = [sum_squares(a) for a in b.chain_grads]
        norm = math.sqrt(sum(sqs))
        if not math.isfinite(norm) and opt._refuse(norm, names):
            return
        c = plan.clip[1]
        per = sqs if ctx.norm_clip == "clip_norm" else [sum(sqs)]
        scales = np.array([_scale(math.sqrt(sq), c) for sq in per], dt)
        check, head[2] = False, norm
    _, kind, neg_lr, f = ctx.for_lr(lr, plan.decay)
    args = _new(K.StepArgs, (plan.consts(info, link_state, dt), neg_lr, ctx.beta, ctx.nesterov, f, ctx.lo, ctx.hi,
                             scales))
    sq = K.fused_step(kind, args, buf, head, check)
    if not check or math.isfinite(sq):
        return
    norm = math.sqrt(sq)
    if opt._refuse(norm, names):
        return
    head[2] = norm
    K.fused_step(kind, args, buf, head, False)


def _scale(norm: float, c: float) -> float:
    """The factor a clip to norm ``c`` applies (NaN for a non-finite norm, as the clipping links)."""
    if not math.isfinite(norm):
        return math.nan
    return c / norm if norm > c else 1.0


def chain(opt, b, it: int, lr: float, names) -> None:
    """The step of any chain: it runs on the shadow state, then one copy of the shadow arena commits it."""
    norm = b.global_norm()
    if not math.isfinite(norm) and opt._refuse(norm, names):
        return
    b.refresh_shadow_state()
    extra = b.state_sh[-1] if (opt.use_ema or opt.gradient_accumulation_steps) else None
    n = opt.gradient_accumulation_steps
    if n:
        acc, count = extra["gradient_accumulator"], extra["accumulation_step"]
        if int(count) + 1 < n:  # Keras's (_iterations + 1) % n != 0: add the gradients up, change nothing else
            for a, g in zip(acc, b.chain_grads):
                np.add(g, a, out=a)
            count[...] = count + 1
            for p, out in zip(b.chain_params, b.chain_params_sh):
                np.copyto(out, p)
            b.meta_sh[...] = (it, b.meta[1], norm)
            if opt.use_ema:
                _ema(opt, extra["average"], b.chain_params_sh, it)
            np.copyto(b.arena, b.shadow)  # the commit
            return
        for w, g, a in zip(b.work, b.chain_grads, acc):
            np.add(g, a, out=w)
            np.divide(w, n, out=w)  # Keras's (g + acc) / n: the mean over the n calls
            a[...] = 0
        count[...] = 0
    else:
        for w, g in zip(b.work, b.chain_grads):
            np.copyto(w, g)
    updates, state = opt._transform.update(b.work, b.state_sh, b.chain_params, T.StepInfo(it, lr, b.scratch))
    # links that return new arrays rather than updating theirs in place
    if not (type(state) is tuple and len(state) == len(b.state_sh)
            and all(x is y for x, y in zip(state, b.state_sh))):
        shadow = dict(_leaves(b.state_sh))
        for path, a in _leaves(state):
            if shadow[path] is not a:
                np.copyto(shadow[path], a)
    for p, u, out in zip(b.chain_params, updates, b.chain_params_sh):
        np.add(p, u, out=out)
    b.meta_sh[...] = (it + 1, b.meta[1], norm)
    if opt.use_ema:
        _ema(opt, extra["average"], b.chain_params_sh, it)
    np.copyto(b.arena, b.shadow)  # the commit


def _ema(opt, averages, params, it: int) -> None:
    """Keras's moving average of the parameters after a call, on the shadow (``it``: updates before this call).

    ``a <- m a + (1 - m) w`` with ``m = ema_momentum`` (0 before the first
    update: ``a <- w``), in the parameters' dtype; then, when
    ``(it + 1) % ema_overwrite_frequency == 0``, ``w <- a``. With gradient
    accumulation this runs at every call, as in Keras.
    """
    m = opt.ema_momentum if it != 0 else 0.0
    for a, w in zip(averages, params):
        dt = w.dtype.type
        np.multiply(a, dt(m), out=a)
        a += (dt(1) - dt(m)) * w
    f = opt.ema_overwrite_frequency
    if f and (it + 1) % f == 0:
        for a, w in zip(averages, params):
            np.copyto(w, a)
