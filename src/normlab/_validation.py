"""Declared parameter constraints, checked at construction.

Every public class declares the constraints of its hyperparameters once, as a
class attribute ``_param_constraints``, and calls :func:`validate_params` from
``__init__``. Invalid values are rejected with one error class and one message
template::

    The 'momentum' parameter of BatchNormalization must be a float in the
    range [0, 1]. Got 1.5 instead.

The declarations also drive a common test that generates invalid values.

Keras's wording, second. Where Keras words its own error for an argument, a
class declares it next to its constraints, as ``_keras_messages``: a mapping
from the parameter's name to a function of the rejected value that returns
Keras's sentence, or ``None`` where Keras itself would not complain (its
condition, not ours, decides). The sentence follows normlab's::

    The 'momentum' parameter of SGD must be a float in the range [0, 1].
    Got 2.0 instead. `momentum` must be a float between [0, 1].

so the message still names the parameter and the class first, and a test
or script written against Keras (``assertRaisesRegex``) finds its wording.
:func:`validate_params` consults the declaration when its ``owner`` is the
class; a hand-written check builds its error with :func:`invalid_parameter`.
Which values are accepted stays normlab's decision.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

__all__ = [
    "InvalidParameterError",
    "Interval",
    "Options",
    "Boolean",
    "Instance",
    "NoneOk",
    "Callable",
    "validate_params",
    "invalid_parameter",
    "real_array",
]


class InvalidParameterError(ValueError, TypeError):
    """A hyperparameter has an invalid type or value.

    It derives from both ``ValueError`` and ``TypeError`` so that callers
    catching either (as users of scikit-learn and Keras do) see it.
    """


class _Constraint:
    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def invalid_examples(self) -> list:
        """Values that violate this constraint (used by the common tests)."""
        return []


@dataclass(frozen=True)
class Interval(_Constraint):
    """A real (or integral) number in an interval.

    ``closed`` is one of "both", "left", "right", "neither"; ``None`` bounds are
    infinite. Booleans are never accepted as numbers; ``momentum=0`` (an int)
    is accepted where a float is asked for.
    """

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return False
        if self.kind is numbers.Integral:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real):
            return False
        if not np.isfinite(float(value)):
            return False
        lo_ok = self.low is None or (
            value >= self.low if self.closed in ("both", "left") else value > self.low
        )
        hi_ok = self.high is None or (
            value <= self.high if self.closed in ("both", "right") else value < self.high
        )
        return bool(lo_ok and hi_ok)

    def describe(self) -> str:
        name = "an int" if self.kind is numbers.Integral else "a float"
        if self.low is None and self.high is None:
            return f"{name}"
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{name} in the range {left}{lo}, {hi}{right}"

    def invalid_examples(self) -> list:
        out: list = ["a string", float("nan")]
        if self.low is not None:
            out.append(self.low - 1)
            if self.closed in ("right", "neither"):
                out.append(self.low)
        if self.high is not None:
            out.append(self.high + 1)
            if self.closed in ("left", "neither"):
                out.append(self.high)
        if self.kind is numbers.Integral:
            out.append(1.5)
        return out


@dataclass(frozen=True)
class Options(_Constraint):
    """One of a fixed set of values (usually strings)."""

    options: tuple

    def __init__(self, options: Iterable):
        object.__setattr__(self, "options", tuple(options))

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            return value in self.options
        except TypeError:
            return False

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def invalid_examples(self) -> list:
        return ["__not_an_option__"]


class Boolean(_Constraint):
    """A Python or NumPy bool."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def describe(self) -> str:
        return "a bool"

    def invalid_examples(self) -> list:
        return ["yes", 2]


@dataclass(frozen=True)
class Instance(_Constraint):
    """An instance of the given type(s)."""

    types: tuple
    label: str = ""

    def __init__(self, *types: type, label: str = ""):
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "label", label)

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.types)

    def describe(self) -> str:
        if self.label:
            return self.label
        return "an instance of " + " or ".join(t.__name__ for t in self.types)


class NoneOk(_Constraint):
    """``None``."""

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def describe(self) -> str:
        return "None"


class Callable(_Constraint):
    """Any callable."""

    def is_satisfied_by(self, value: Any) -> bool:
        return callable(value)

    def describe(self) -> str:
        return "a callable"


def _as_constraint(c: Any) -> _Constraint:
    if isinstance(c, _Constraint):
        return c
    if c is None:
        return NoneOk()
    if c == "boolean":
        return Boolean()
    if isinstance(c, type):
        return Instance(c)
    raise TypeError(f"unknown constraint {c!r}")  # programming error in a declaration


def _keras_sentence(owner, name: str, value: Any) -> str | None:
    hook = getattr(owner, "_keras_messages", {}).get(name) if isinstance(owner, type) else None
    if hook is None:
        return None
    try:
        return hook(value)
    except (TypeError, ValueError, AttributeError):  # Keras's own check fails on this value before it words anything
        return None


def invalid_parameter(owner, name: str, expected: str, value: Any, keras: str | None = None) -> InvalidParameterError:
    """The error for ``value`` given as ``name`` to ``owner``: normlab's template, then Keras's sentence.

    Parameters
    ----------
    owner : type or str
        The class (its ``_keras_messages`` are consulted) or a function name.
    expected : str
        What the parameter must be ("a float in the range [0, 1]").
    keras : str, optional
        Keras's sentence, for a check across arguments that a one-value
        declaration cannot word; by default the owner's declaration gives it.
    """
    label = owner.__name__ if isinstance(owner, type) else str(owner)
    message = f"The {name!r} parameter of {label} must be {expected}. Got {value!r} instead."
    if keras is None:
        keras = _keras_sentence(owner, name, value)
    return InvalidParameterError(message if keras is None else f"{message} {keras}")


def validate_params(owner, constraints: dict, values: dict) -> None:
    """Check ``values`` against ``constraints`` and raise on the first violation.

    Parameters
    ----------
    owner : type or str
        The class, whose name the message uses and whose ``_keras_messages``
        add Keras's sentence (module docstring), or a function's name.
    constraints : dict
        Maps a parameter name to a list of constraints; the value must satisfy
        at least one of them.
    values : dict
        Maps parameter names to the values given.
    """
    for name, allowed in constraints.items():
        if name not in values:
            continue
        value = values[name]
        cs = [_as_constraint(c) for c in allowed]
        if any(c.is_satisfied_by(value) for c in cs):
            continue
        if len(cs) == 1:
            desc = cs[0].describe()
        else:
            desc = ", ".join(c.describe() for c in cs[:-1]) + " or " + cs[-1].describe()
        raise invalid_parameter(owner, name, desc, value)


def real_array(value, who: str, label: str) -> np.ndarray:
    """``value`` as an array of real numbers (bool, int or float), or a ``TypeError`` naming ``who`` and ``label``.

    ``label`` is how the message names the argument, quotes included
    (``"'y_true'"``, ``"'weights[3]' (dense/kernel)"``).
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged nested lists and the like
        raise TypeError(f"{who}: {label} must be an array of numbers ({exc}).") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{who}: {label} must hold real numbers, got dtype {arr.dtype}.")
    return arr
