"""Checks of what a layer is handed: input arrays, build shapes, constructor arguments.

Helpers of :class:`normlab.layers.Layer`, importable from
:mod:`normlab.layers.base` under the same names:

* :func:`as_float_array`: an input (or ``dy``, or new weights) as a floating
  ndarray, or a ``TypeError`` naming the layer;
* :func:`_checked_shape`: the input shape given to ``build_from_shape``;
* :func:`_declared_input_shape`: Keras's deprecated ``input_shape`` /
  ``input_dim`` constructor arguments;
* :func:`_checking_lookups`, :func:`_check_lookup`, :func:`_resolve`:
  initializer, regularizer and constraint arguments, resolved by name, with
  errors that name the layer and the argument.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import sys
import warnings
from typing import Any

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._registry import LookupFailed, argument_error, check_failed
from .._validation import InvalidParameterError, _as_constraint, validate_params


def as_float_array(x: Any, *, who: str, arg: str = "x") -> np.ndarray:
    """Convert ``x`` to a floating ndarray or raise a clear ``TypeError``."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{who}: '{arg}' must be array-like of numbers ({exc}).") from None
    if arr.dtype.kind in "biu":
        return arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{who}: '{arg}' must hold real numbers; got an array of dtype {arr.dtype}."
        )
    return arr


# constructor arguments resolved by name, by the ending of their name: (registry's module, base, forms the
# getter takes besides names, configs and instances)
_LOOKUP_KINDS = (
    ("_initializer", _initializers, _initializers.Initializer, (np.ndarray, np.generic), ("a NumPy array",)),
    ("_regularizer", _regularizers, _regularizers.Regularizer, (), ()),
    ("_constraint", _constraints, _constraints.Constraint, (), ()),
)


def _check_lookup(cls: type, name: str, value, module, base: type, also: tuple, also_words: tuple) -> None:
    """Reject ``value`` for the constructor argument ``name`` of ``cls`` unless ``module.get`` resolves it.

    The class's declared constraints for ``name`` judge the type first (their
    message, as the constructor's own check would word it); then the lookup:
    an unknown name, a config dict that is malformed or names an unknown
    class, or an object of the wrong type gives the template naming ``cls``,
    ``name`` and every accepted name, followed by the registry's reason.
    """
    declared = (getattr(cls, "_param_constraints", None) or {}).get(name)
    if declared is not None:
        validate_params(cls, {name: declared}, {name: value})
        cs = [_as_constraint(c) for c in declared]
        none_ok = any(c.is_satisfied_by(None) for c in cs)
        if also and not any(c.is_satisfied_by(np.zeros(1)) for c in cs):  # the declaration refuses arrays
            also_words = ()
    else:
        none_ok = base is not _initializers.Initializer
    reason = module.registry.problem(value, base, also)
    if reason is not None:
        extras = tuple(also_words) + (("None",) if none_ok else ())
        raise check_failed(cls, name, value, reason, module.registry.expected(base, extras))


def _checking_lookups(raw):
    """Wrap a layer's ``__init__`` so that its initializer / regularizer / constraint arguments are checked first.

    The layers resolve these arguments with ``initializers.get`` and the like,
    whose message names the unknown name but not the layer or the argument;
    checked here, before the constructor runs, an unknown name fails with the
    parameter template (``The 'kernel_initializer' parameter of Dense must be
    ...``) and leaves nothing behind (no layer name taken). Arguments left at
    their defaults are not checked; a call that does not bind (a missing or
    unexpected argument) goes to the constructor, which words its own error.
    """
    if getattr(raw, "_checks_lookups", False):
        return raw
    sig = inspect.signature(raw)
    lookups = [(pname, p.default, kind[1:]) for pname, p in sig.parameters.items()
               for kind in _LOOKUP_KINDS if pname.endswith(kind[0])]
    if not lookups:
        return raw

    @functools.wraps(raw)
    def __init__(self, *args, **kwargs):
        try:
            values = sig.bind(self, *args, **kwargs).arguments
        except TypeError:
            return raw(self, *args, **kwargs)
        for pname, default, kind in lookups:
            if pname in values and values[pname] is not default:
                _check_lookup(type(self), pname, values[pname], *kind)
        return raw(self, *args, **kwargs)

    __init__._checks_lookups = True
    return __init__


def _resolve(layer, arg: str, value, module, base: type):
    """``module.get(value)`` for :meth:`Layer.add_weight`'s argument ``arg``; a failed lookup names the layer."""
    try:
        return module.get(value)
    except LookupFailed as exc:
        err = argument_error(f"Layer {layer.name!r} ({type(layer).__name__}).add_weight", arg, value, exc, base)
        if err is None:
            raise
        raise err from None


def _checked_shape(input_shape, who: str) -> tuple:
    """``input_shape`` (batch axis first, ``None`` sizes allowed) as a tuple of ints >= 1, ``None`` read as 1."""
    try:
        dims = tuple(input_shape)
    except TypeError:
        dims = None
    ok = dims is not None and not isinstance(input_shape, (str, bytes)) and len(dims) >= 1 and all(
        d is None or (isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_)) and d >= 1)
        for d in dims
    )
    if not ok:
        raise InvalidParameterError(
            f"{who}: 'input_shape' must be a tuple of ints >= 1 or None (batch axis first), got {input_shape!r}."
        )
    return tuple(1 if d is None else int(d) for d in dims)


_INPUT_SHAPE_WARNING = (
    "Do not pass an `input_shape`/`input_dim` argument to a layer. When using Sequential models, "
    "prefer using an `Input(shape)` object as the first layer in the model instead."
)


def _declared_input_shape(who: str, kwargs: dict) -> tuple | None:
    """Pop Keras's deprecated ``input_shape``/``input_dim`` from ``kwargs``: ``(None,) + shape`` or None.

    As Keras 3's ``Layer.__init__``: ``input_dim=n`` means ``input_shape=(n,)``
    (and wins when both are given), either warns, and any other keyword is an
    error naming the layer.
    """
    input_dim = kwargs.pop("input_dim", None)
    input_shape = kwargs.pop("input_shape", None)
    if kwargs:
        raise TypeError(f"{who}: unrecognized keyword arguments {sorted(kwargs)}.")
    if input_dim is not None:
        if isinstance(input_dim, (bool, np.bool_)) or not isinstance(input_dim, numbers.Integral) or input_dim < 1:
            raise InvalidParameterError(
                f"The 'input_dim' parameter of {who} must be an int in the range [1, inf). Got {input_dim!r} instead."
            )
        input_shape = (int(input_dim),)
    if input_shape is None:
        return None
    ok = isinstance(input_shape, (tuple, list)) and all(
        d is None or (isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_)) and d >= 1)
        for d in input_shape
    )
    if not ok:
        raise InvalidParameterError(
            f"The 'input_shape' parameter of {who} must be a tuple of ints >= 1 or None (without the batch "
            f"axis). Got {input_shape!r} instead."
        )
    # point at the user's line, however deep the chain of __init__ calls
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("normlab."):
        frame, level = frame.f_back, level + 1
    warnings.warn(_INPUT_SHAPE_WARNING, UserWarning, stacklevel=level)
    return (None,) + tuple(None if d is None else int(d) for d in input_shape)
