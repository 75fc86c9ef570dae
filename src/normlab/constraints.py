"""Weight constraints: projections applied to a weight after each optimizer update (Keras 3 semantics).

=================================  ==========================================================
class                              ``w`` after the update is replaced by
=================================  ==========================================================
MaxNorm(max_value=2, axis=0)       ``w * clip(n, 0, max_value) / (eps + n)``
NonNeg()                           ``max(w, 0)``
UnitNorm(axis=0)                   ``w / (eps + n)``
MinMaxNorm(min_value=0,            ``w * (rate * clip(n, min, max) + (1 - rate) * n) / (eps + n)``
max_value=1, rate=1, axis=0)
=================================  ==========================================================

with ``n = sqrt(sum(w ** 2, axis, keepdims=True))`` and ``eps = 1e-7``
(Keras's ``backend.epsilon()``). ``axis=0`` takes the norm of each column
of a ``Dense`` kernel ``(n_in, units)``, that is of the weights incident to
one unit (the max-norm of Srivastava et al. 2014, paired with dropout); for a
``Conv2D`` kernel ``(kh, kw, c_in, filters)`` pass ``axis=[0, 1, 2]`` to
constrain each filter.

A constraint is a projection, not a penalty: it has no gradient and does
not enter the loss. A model applies it after the optimizer has committed
its step (as Keras does), through :meth:`normlab.layers.Layer.apply_constraints`.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._registry import Registry
from ._validation import Interval, _Constraint, validate_params

registry = Registry("constraint")

__all__ = [
    "Constraint", "MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm",
    "max_norm", "non_neg", "unit_norm", "min_max_norm", "get", "serialize", "deserialize", "config_entries",
]

#: Keras's ``backend.epsilon()``
EPSILON = 1e-7


class _Axis(_Constraint):
    """An int or a non-empty list/tuple of ints (the axes a norm is taken over)."""

    def describe(self):
        return "an int or a non-empty list of ints"

    def is_satisfied_by(self, value):
        if isinstance(value, bool):
            return False
        if isinstance(value, numbers.Integral):
            return True
        return (isinstance(value, (list, tuple)) and len(value) > 0 and all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in value))

    def invalid_examples(self):
        return ["0", 1.5, [], [0, "1"], True]


_AXIS = [_Axis()]
_NONNEG = [Interval(numbers.Real, 0, None)]


def _axis_value(axis):
    return int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis]


class Constraint:
    """Base class: ``constraint(w) -> w projected`` (a new array, ``w`` untouched)."""

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return w

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _norms(w, axis):
    ax = axis if isinstance(axis, int) else tuple(axis)
    return np.sqrt(np.sum(np.square(w), axis=ax, keepdims=True))


def _checked_axes(who, w, axis):
    axes = [axis] if isinstance(axis, int) else list(axis)
    for a in axes:
        if not -w.ndim <= a < w.ndim:
            raise ValueError(f"{who}: 'axis' {axis!r} is out of range for a weight of shape {w.shape}.")


@registry.register
class MaxNorm(Constraint):
    """Rescale each slice whose L2 norm (over ``axis``) exceeds ``max_value`` down to it.

    Parameters
    ----------
    max_value : float >= 0, default 2
    axis : int or list of ints, default 0
        Axes the norm runs over (0: each column of a Dense kernel).
    """

    _param_constraints = {"max_value": _NONNEG, "axis": _AXIS}

    def __init__(self, max_value: float = 2, axis=0):
        validate_params("MaxNorm", self._param_constraints, {"max_value": max_value, "axis": axis})
        self.max_value = float(max_value)
        self.axis = _axis_value(axis)

    def __call__(self, w):
        _checked_axes("MaxNorm", w, self.axis)
        n = _norms(w, self.axis)
        return w * (np.clip(n, 0, self.max_value) / (EPSILON + n)).astype(w.dtype, copy=False)

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


@registry.register
class NonNeg(Constraint):
    """``max(w, 0)``: the weights stay non-negative."""

    def __call__(self, w):
        return np.maximum(w, 0)


@registry.register
class UnitNorm(Constraint):
    """Divide by the L2 norm over ``axis`` (plus ``1e-7``): unit-norm slices.

    Parameters
    ----------
    axis : int or list of ints, default 0
    """

    _param_constraints = {"axis": _AXIS}

    def __init__(self, axis=0):
        validate_params("UnitNorm", self._param_constraints, {"axis": axis})
        self.axis = _axis_value(axis)

    def __call__(self, w):
        _checked_axes("UnitNorm", w, self.axis)
        return w / (EPSILON + _norms(w, self.axis)).astype(w.dtype, copy=False)

    def get_config(self):
        return {"axis": self.axis}


@registry.register
class MinMaxNorm(Constraint):
    """Move the L2 norm of each slice into ``[min_value, max_value]`` (fully when ``rate=1``).

    The new norm is ``rate * clip(n, min_value, max_value) + (1 - rate) * n``.

    Parameters
    ----------
    min_value : float >= 0, default 0
    max_value : float >= 0, default 1
    rate : float in [0, 1], default 1
        1 enforces the bounds at once; smaller values move towards them.
    axis : int or list of ints, default 0
    """

    _param_constraints = {"min_value": _NONNEG, "max_value": _NONNEG,
                          "rate": [Interval(numbers.Real, 0, 1, closed="both")], "axis": _AXIS}

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis=0):
        validate_params("MinMaxNorm", self._param_constraints,
                        {"min_value": min_value, "max_value": max_value, "rate": rate, "axis": axis})
        if min_value > max_value:
            raise ValueError(f"MinMaxNorm: 'min_value' ({min_value}) must not exceed 'max_value' ({max_value}).")
        self.min_value, self.max_value, self.rate = float(min_value), float(max_value), float(rate)
        self.axis = _axis_value(axis)

    def __call__(self, w):
        _checked_axes("MinMaxNorm", w, self.axis)
        n = _norms(w, self.axis)
        desired = self.rate * np.clip(n, self.min_value, self.max_value) + (1 - self.rate) * n
        return w * (desired / (EPSILON + n)).astype(w.dtype, copy=False)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


# Keras's lower-case shortcuts (keras.constraints.max_norm, ...)
max_norm, non_neg, unit_norm, min_max_norm = MaxNorm, NonNeg, UnitNorm, MinMaxNorm


def get(identifier) -> Constraint | None:
    """Resolve ``None``, a name (``"max_norm"``, ``"MaxNorm"``, ...), a config or an instance."""
    return registry.get(identifier, base=Constraint)


def serialize(constraint: Constraint | None) -> dict | None:
    return registry.serialize(constraint)


def deserialize(config: dict) -> Constraint:
    return registry.deserialize(config)


def config_entries(**constraints) -> dict:
    """The serialized constraints among ``constraints`` that are set (a layer's ``get_config`` entries)."""
    return {k: serialize(c) for k, c in constraints.items() if c is not None}
