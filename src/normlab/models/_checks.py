"""Checks and small helpers of the model API: finiteness after a cast, argument checks, class weights,
and the attribute snapshots behind :meth:`~normlab.models.base.BaseModel._all_or_nothing`."""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval, validate_params
from ..kernels.checks import all_finite
from ..layers.base import Layer

def _check_finite(arr: np.ndarray, who: str, arg: str, original: np.ndarray | None = None) -> None:
    """Raise unless ``arr`` is finite; ``original`` is what it was cast from, to name an overflow."""
    if all_finite(arr):
        return
    if original is not None and original is not arr and all_finite(original):
        raise ValueError(
            f"{who}: '{arg}' holds finite values beyond the range of {arr.dtype} (largest "
            f"{float(np.finfo(arr.dtype).max):.4g}): casting it to the model's dtype would overflow to inf."
        )
    raise ValueError(f"{who}: '{arg}' holds NaN or inf values.")


def _cast_checked(arr: np.ndarray, dtype, who: str, arg: str) -> np.ndarray:
    """``arr`` as ``dtype``, checked finite after the cast (a float64 value above float32's range overflows)."""
    if arr.dtype == dtype:
        return arr
    with np.errstate(over="ignore"):
        cast = arr.astype(dtype)
    if cast.dtype.itemsize < arr.dtype.itemsize:
        _check_finite(cast, who, arg, arr)
    return cast


_SIZE = [Interval(numbers.Integral, 1, None)]
_COUNT = [Interval(numbers.Integral, 0, None)]


def _check_int(value, name: str, who: str, low: int) -> int:
    validate_params(who, {name: [Interval(numbers.Integral, low, None)]}, {name: value})
    return int(value)


def _check_bool(value, name: str, owner: str) -> None:
    if value is not True and value is not False and not isinstance(value, np.bool_):
        validate_params(owner, {name: [Boolean()]}, {name: value})  # raises, with the standard message


def _check_class_weight(class_weight, owner: str):
    if class_weight is None:
        return None
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, (numbers.Integral, str)) or \
                (isinstance(k, str) and not k.lstrip("-").isdigit()):
            raise ValueError(f"{owner}: 'class_weight' keys must be class indices (ints), got {k!r}.")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
            raise ValueError(f"{owner}: 'class_weight' values must be finite numbers >= 0, got {v!r} for class {k!r}.")
    return {int(k): float(v) for k, v in class_weight.items()}


def _class_weights(y: np.ndarray, class_weight: dict, owner: str) -> np.ndarray:
    """Each sample's class weight (Keras: 1 for a class not listed)."""
    if y.dtype == np.intp:  # sparse labels, as the loss prepared them
        if y.ndim != 1:
            raise ValueError(f"{owner}: 'class_weight' needs one label per sample; got labels of shape {y.shape} "
                             f"(use 'sample_weight' per value instead).")
        classes = y
    elif y.ndim == 2 and y.shape[1] > 1:
        classes = np.argmax(y, axis=1)
    elif y.ndim <= 2:
        classes = np.round(y.reshape(len(y))).astype(np.intp)
    else:
        raise ValueError(f"{owner}: 'class_weight' is not supported for targets of shape {y.shape}.")
    table = np.ones(max(int(classes.max(initial=0)), max(class_weight, default=0)) + 1)
    for k, v in class_weight.items():
        if k >= 0:
            table[k] = v
    return table[np.maximum(classes, 0)]


def _layer_tree(layers) -> list:
    """``layers`` and every layer they hold (wrappers), each once."""
    out: list = []
    stack = list(layers)
    while stack:
        layer = stack.pop()
        if any(layer is seen for seen in out):
            continue
        out.append(layer)
        for value in vars(layer).values():
            if isinstance(value, Layer):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(v for v in value if isinstance(v, Layer))
    return out


def _attributes(obj) -> dict:
    # a shallow copy of the object's attributes, with their dicts and lists copied: what
    # building and binding change (they add entries and replace arrays; they write none in place)
    return {k: (v.copy() if type(v) in (dict, list) else v) for k, v in vars(obj).items()}


def metric_weight(metric, sample_weight):
    """The sample weights a compiled metric takes: Keras weighs only ``weighted_metrics``.

    ``compile(metrics=...)`` count every sample once, whatever ``sample_weight``
    or ``class_weight`` says; ``compile(weighted_metrics=...)`` take the weights
    (Keras 3's CompileMetrics). A metric not made by ``compile`` keeps the
    weights it is given.
    """
    return sample_weight if getattr(metric, "_sample_weighted", True) else None
