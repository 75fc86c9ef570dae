"""Learning-rate schedules (Keras 3's classes, arguments and formulas).

A schedule maps the optimizer's step count ``step`` (``optimizer.iterations``:
0 for the first update) to a learning rate. Any optimizer accepts one
wherever it accepts a float ``learning_rate``; the schedule's position is
the step count, which the optimizer's state holds, so a resumed run
continues on the same curve.

=========================  ==================================================
schedule                   ``lr(step)``
=========================  ==================================================
ExponentialDecay           ``lr0 * rate ** (step / steps)`` (floor with staircase)
PiecewiseConstantDecay     ``values[i]`` for ``boundaries[i-1] < step <= boundaries[i]``
PolynomialDecay            ``(lr0 - end) * (1 - min(step, steps) / steps) ** power + end``
InverseTimeDecay           ``lr0 / (1 + rate * step / steps)`` (floor with staircase)
CosineDecay                linear warm-up, then ``lr_peak * ((1 - a) * (1 + cos(pi k / steps)) / 2 + a)``
CosineDecayRestarts        cosine decay restarted after ``steps * t_mul ** i`` steps (SGDR)
=========================  ==================================================

The notes' linear decay,
``alpha_k = alpha_0 - (k / tau) (alpha_0 - alpha_tau)`` for ``k <= tau`` and
``alpha_tau`` after, is ``PolynomialDecay(alpha_0, tau, alpha_tau, power=1)``.
Values are computed in float64.
"""

from __future__ import annotations

import bisect
import math
import numbers

import numpy as np

from .._registry import Registry
from .._validation import Boolean, Instance, Interval, NoneOk, validate_params

registry = Registry("learning rate schedule")

__all__ = [
    "LearningRateSchedule",
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "InverseTimeDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "get",
    "serialize",
    "deserialize",
]

_LR = [Interval(numbers.Real, 0, None)]
_POS = [Interval(numbers.Real, 0, None, closed="neither")]
_NAME = [str]


class LearningRateSchedule:
    """Base class: ``schedule(step) -> float``.

    Subclasses implement ``__call__(step)`` and ``get_config()``; registered
    subclasses round-trip through :func:`serialize` / :func:`deserialize`.
    """

    def __call__(self, step) -> float:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step).")

    def get_config(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} must implement get_config() to be saved.")

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def _validate(self, values: dict) -> None:
        validate_params(type(self), self._param_constraints, values)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    __hash__ = object.__hash__


def _step(step, who: str = "A learning-rate schedule") -> float:
    """``step`` as a float >= 0, or an error naming the schedule (``who``).

    A 0-d array (Keras passes its ``iterations`` variable) counts as its value.
    """
    if isinstance(step, np.ndarray) and step.ndim == 0 and step.dtype.kind in "iuf":
        step = step[()]
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (numbers.Real, np.number)):
        raise TypeError(f"{who}: 'step' must be an int or float with step >= 0, got {step!r}.")
    s = float(step)
    if not s >= 0:  # also rejects NaN
        raise ValueError(f"{who}: 'step' must be an int or float with step >= 0, got {step!r}.")
    return s


@registry.register
class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    With ``staircase=True`` the exponent is ``floor(step / decay_steps)``: the
    rate drops by the factor ``decay_rate`` every ``decay_steps`` steps.
    """

    _param_constraints = {
        "initial_learning_rate": _LR,
        "decay_steps": _POS,
        "decay_rate": _POS,
        "staircase": [Boolean()],
        "name": _NAME,
    }

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        self._validate(dict(initial_learning_rate=initial_learning_rate, decay_steps=decay_steps,
                            decay_rate=decay_rate, staircase=staircase, name=name))
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step) -> float:
        p = _step(step, type(self).__name__) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        try:
            return self.initial_learning_rate * self.decay_rate**p
        except OverflowError:  # a growing rate (decay_rate > 1) beyond the floats: inf, which the optimizer refuses
            return math.inf

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


@registry.register
class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last
    boundary (Keras's convention: a boundary step still gets the earlier value).

    ``boundaries`` must increase strictly and ``values`` have one more entry.
    """

    _param_constraints = {
        "boundaries": [Instance(list, tuple, label="a list of increasing numbers")],
        "values": [Instance(list, tuple, label="a list of learning rates")],
        "name": _NAME,
    }

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        self._validate(dict(boundaries=boundaries, values=values, name=name))
        who = type(self).__name__
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"{who}: 'values' must have one more entry than 'boundaries'; got {len(boundaries)} "
                f"boundaries and {len(values)} values."
            )
        num = Interval(numbers.Real, None, None)
        for b in boundaries:
            if not num.is_satisfied_by(b):
                raise ValueError(f"{who}: 'boundaries' must hold finite numbers, got {boundaries!r}.")
        if any(b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"{who}: 'boundaries' must increase strictly, got {boundaries!r}.")
        for v in values:
            if not _LR[0].is_satisfied_by(v):
                raise ValueError(f"{who}: 'values' must hold finite learning rates >= 0, got {values!r}.")
        self.boundaries = list(boundaries)
        self.values = [float(v) for v in values]
        self.name = name

    def __call__(self, step) -> float:
        return self.values[bisect.bisect_left(self.boundaries, _step(step, type(self).__name__))]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


@registry.register
class PolynomialDecay(LearningRateSchedule):
    """Decay from ``initial_learning_rate`` to ``end_learning_rate`` in ``decay_steps`` steps::

        lr(step) = (lr0 - end) * (1 - min(step, decay_steps) / decay_steps) ** power + end

    then constant. ``power=1`` is the notes' linear decay
    ``alpha_k = alpha_0 - (k / tau)(alpha_0 - alpha_tau)`` (``tau =
    decay_steps``, ``alpha_tau = end_learning_rate``; the notes suggest
    ``alpha_tau ~ 0.01 alpha_0``). With ``cycle=True`` the horizon
    ``decay_steps`` is replaced by its first multiple at or beyond ``step``
    (``decay_steps`` itself at step 0): past each multiple the rate jumps
    back up and decays to ``end_learning_rate`` again over a longer horizon.
    """

    _param_constraints = {
        "initial_learning_rate": _LR,
        "decay_steps": _POS,
        "end_learning_rate": _LR,
        "power": _POS,
        "cycle": [Boolean()],
        "name": _NAME,
    }

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False,
                 name="PolynomialDecay"):
        self._validate(dict(initial_learning_rate=initial_learning_rate, decay_steps=decay_steps,
                            end_learning_rate=end_learning_rate, power=power, cycle=cycle, name=name))
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.end_learning_rate = float(end_learning_rate)
        self.power = float(power)
        self.cycle = bool(cycle)
        self.name = name

    def __call__(self, step) -> float:
        s = _step(step, type(self).__name__)
        horizon = float(self.decay_steps)
        if self.cycle:
            horizon *= 1.0 if s == 0 else math.ceil(s / self.decay_steps)
        else:
            s = min(s, horizon)
        p = s / horizon
        return (self.initial_learning_rate - self.end_learning_rate) * (1.0 - p) ** self.power + self.end_learning_rate

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
            "name": self.name,
        }


@registry.register
class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``.

    With ``staircase=True``, ``step / decay_steps`` is floored.
    """

    _param_constraints = {
        "initial_learning_rate": _LR,
        "decay_steps": _POS,
        "decay_rate": [Interval(numbers.Real, 0, None)],
        "staircase": [Boolean()],
        "name": _NAME,
    }

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        self._validate(dict(initial_learning_rate=initial_learning_rate, decay_steps=decay_steps,
                            decay_rate=decay_rate, staircase=staircase, name=name))
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step) -> float:
        p = _step(step, type(self).__name__) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


def _cosine(k: float, steps: float, peak: float, alpha: float) -> float:
    c = 0.5 * (1.0 + math.cos(math.pi * k / steps))
    return peak * ((1.0 - alpha) * c + alpha)


@registry.register
class CosineDecay(LearningRateSchedule):
    """Optional linear warm-up, then cosine decay (Loshchilov & Hutter; Goyal et al.).

    Without ``warmup_target``: ``lr(step) = lr0 * ((1 - alpha) * c + alpha)``
    with ``c = (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2``.

    With ``warmup_target``: for ``step < warmup_steps`` the rate rises
    linearly, ``lr0 + (warmup_target - lr0) * step / warmup_steps``; then it
    decays as above from ``warmup_target`` over ``decay_steps`` more steps
    and stays at ``warmup_target * alpha``.
    """

    _param_constraints = {
        "initial_learning_rate": _LR,
        "decay_steps": _POS,
        "alpha": [Interval(numbers.Real, 0, 1)],
        "name": _NAME,
        "warmup_target": [NoneOk(), Interval(numbers.Real, 0, None)],
        "warmup_steps": [Interval(numbers.Integral, 0, None)],
    }

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        self._validate(dict(initial_learning_rate=initial_learning_rate, decay_steps=decay_steps, alpha=alpha,
                            name=name, warmup_target=warmup_target, warmup_steps=warmup_steps))
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.alpha = float(alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step) -> float:
        s = _step(step, type(self).__name__)
        steps = float(self.decay_steps)
        if self.warmup_target is None:
            return _cosine(min(s, steps), steps, self.initial_learning_rate, self.alpha)
        w = self.warmup_steps
        s = min(s, steps + w)
        if s < w:
            return (self.warmup_target - self.initial_learning_rate) * (s / w) + self.initial_learning_rate
        return _cosine(s - w, steps, self.warmup_target, self.alpha)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


@registry.register
class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR, Loshchilov & Hutter 2016).

    Period ``i`` (from 0) lasts ``first_decay_steps * t_mul ** i`` steps; at
    fraction ``f`` of it (Keras's formula: the floor ``alpha`` is not
    scaled by ``m_mul ** i``)::

        lr = lr0 * ((1 - alpha) * m_mul ** i * (1 + cos(pi f)) / 2 + alpha)

    ``t_mul >= 1`` (periods never shrink).
    """

    _param_constraints = {
        "initial_learning_rate": _LR,
        "first_decay_steps": _POS,
        "t_mul": [Interval(numbers.Real, 1, None)],
        "m_mul": [Interval(numbers.Real, 0, None)],
        "alpha": [Interval(numbers.Real, 0, 1)],
        "name": _NAME,
    }

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        self._validate(dict(initial_learning_rate=initial_learning_rate, first_decay_steps=first_decay_steps,
                            t_mul=t_mul, m_mul=m_mul, alpha=alpha, name=name))
        self.initial_learning_rate = float(initial_learning_rate)
        self.first_decay_steps = first_decay_steps
        self.t_mul = float(t_mul)
        self.m_mul = float(m_mul)
        self.alpha = float(alpha)
        self.name = name

    def _period(self, f: float) -> tuple[int, float]:
        """``(i, fraction)`` for ``f = step / first_decay_steps`` periods of the first length."""
        t = self.t_mul
        if t == 1.0:
            i = math.floor(f)
            return i, f - i
        # start of period i: (t^i - 1) / (t - 1); log gives i, then fix rounding at the edges
        i = max(0, math.floor(math.log(1.0 + f * (t - 1.0)) / math.log(t)))
        start = lambda k: (t**k - 1.0) / (t - 1.0)  # noqa: E731
        while i > 0 and start(i) > f:
            i -= 1
        while start(i + 1) <= f:
            i += 1
        return i, (f - start(i)) / t**i

    def __call__(self, step) -> float:
        i, frac = self._period(_step(step, type(self).__name__) / self.first_decay_steps)
        c = 0.5 * self.m_mul**i * (1.0 + math.cos(math.pi * frac))
        return self.initial_learning_rate * ((1.0 - self.alpha) * c + self.alpha)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
            "name": self.name,
        }


def get(identifier) -> LearningRateSchedule | None:
    """Resolve ``None``, a config dict or an instance."""
    return registry.get(identifier, base=LearningRateSchedule)


def serialize(schedule: LearningRateSchedule) -> dict:
    """``{"class_name": ..., "config": {...}}`` (plain JSON)."""
    return registry.serialize(schedule)


def deserialize(config: dict) -> LearningRateSchedule:
    return registry.deserialize(config)
