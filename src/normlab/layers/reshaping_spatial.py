"""Spatial reshaping layers: Cropping, ZeroPadding and UpSampling in 1, 2 and 3 dimensions (Keras 3).

All act on the spatial axes of ``(batch, *spatial, channels)`` inputs
(``data_format="channels_last"``, Keras's default) or
``(batch, channels, *spatial)`` (``"channels_first"``); the 1-D cropping and
up-sampling layers are channels-last only, as in Keras.

==============  ===========================================  ===============================
layer           y                                            dL/dx
==============  ===========================================  ===============================
CroppingND      x[:, a_1:n_1-b_1, ..., :]                    dy zero-padded back
ZeroPaddingND   x with a_i zeros before, b_i after axis i     the slice of dy over x
UpSamplingND    W_1 ... W_k x (one matrix per spatial axis)  W_k^T ... W_1^T dy
==============  ===========================================  ===============================

Up-sampling by ``s`` along an axis of length ``n`` is a linear map
``W (s n x n)``: "nearest" repeats each entry ``s`` times
(``W[o, o // s] = 1``); "bilinear" (2-D only) interpolates at the
half-pixel-centred source position ``(o + 1/2) / s - 1/2`` clamped to
``[0, n - 1]``, as TensorFlow's and JAX's resize do, so the backward pass is
the transpose.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._validation import Interval, NoneOk, Options, _Constraint, validate_params
from .base import Layer

__all__ = ["Cropping1D", "Cropping2D", "Cropping3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
           "UpSampling1D", "UpSampling2D", "UpSampling3D"]

_FORMAT = [NoneOk(), Options(("channels_last", "channels_first"))]


def _is_count(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= 0


def _pairs(value, rank: int):
    """Keras's forms of a per-axis (before, after) argument as ``((a_1, b_1), ...)``, or None if invalid.

    An int ``v``: ``(v, v)`` on every axis; for rank 1, a pair ``(a, b)``; for
    rank > 1, ``rank`` ints (symmetric per axis) or ``rank`` pairs.
    """
    if _is_count(value):
        return ((int(value),) * 2,) * rank
    if not isinstance(value, (tuple, list)):
        return None
    if rank == 1:
        return ((int(value[0]), int(value[1])),) if len(value) == 2 and all(map(_is_count, value)) else None
    if len(value) != rank:
        return None
    out = []
    for v in value:
        if _is_count(v):
            out.append((int(v), int(v)))
        elif isinstance(v, (tuple, list)) and len(v) == 2 and all(map(_is_count, v)):
            out.append((int(v[0]), int(v[1])))
        else:
            return None
    return tuple(out)


class _PairsSpec(_Constraint):
    def __init__(self, rank: int):
        self.rank = rank

    def is_satisfied_by(self, value) -> bool:
        return _pairs(value, self.rank) is not None

    def describe(self) -> str:
        if self.rank == 1:
            return "an int >= 0 or a pair of ints >= 0"
        return f"an int >= 0, a tuple of {self.rank} ints >= 0 or a tuple of {self.rank} pairs of ints >= 0"

    def invalid_examples(self) -> list:
        return ["1", -1, (1,), (1, 2, 3, 4), 1.5]


class _SizeSpec(_Constraint):
    def __init__(self, rank: int):
        self.rank = rank

    def is_satisfied_by(self, value) -> bool:
        ok = lambda v: _is_count(v) and v >= 1  # noqa: E731
        if ok(value):
            return True
        return isinstance(value, (tuple, list)) and len(value) == self.rank and all(map(ok, value))

    def describe(self) -> str:
        return f"an int >= 1 or a tuple of {self.rank} ints >= 1"

    def invalid_examples(self) -> list:
        return [0, -2, 2.5, "2", True, (2,) * (self.rank + 1)]


class _ShapeCache(NamedTuple):
    x_shape: tuple


class _Spatial(Layer):
    """Shared handling of the spatial axes; subclasses set ``rank`` and ``_has_format``."""

    rank = 1
    _has_format = True

    def _init_format(self, data_format):
        self.data_format = "channels_last" if data_format is None else data_format

    def _axes(self) -> tuple:
        first = 2 if self.data_format == "channels_first" else 1
        return tuple(range(first, first + self.rank))

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        self.compute_output_shape(tuple(shape))

    def build(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) expects inputs of rank {self.rank + 2} "
                             f"(batch, spatial axes, channels), got shape {tuple(input_shape)}.")
        self.compute_output_shape(tuple(input_shape))

    def _format_config(self) -> dict:
        return {"data_format": self.data_format} if self._has_format else {}


# ------------------------------------------------------------------ cropping
class _Cropping(_Spatial):
    def __init__(self, cropping, data_format=None, **kwargs):
        values = {"cropping": cropping, **({"data_format": data_format} if self._has_format else {})}
        validate_params(type(self).__name__, self._param_constraints, values)
        super().__init__(**kwargs)
        self.cropping = _pairs(cropping, self.rank)
        self._init_format(data_format)

    def compute_output_shape(self, input_shape):
        out = list(input_shape)
        for ax, (a, b) in zip(self._axes(), self.cropping):
            n = input_shape[ax]
            if n is None:
                continue
            if n - a - b <= 0:
                raise ValueError(
                    f"Layer {self.name!r} ({type(self).__name__}): Values in `cropping` argument should be smaller "
                    f"than the corresponding spatial dimension of the input (the `cropping` parameter of "
                    f"`{type(self).__name__}` layer must be smaller than the input length): cropping {(a, b)} of "
                    f"axis {ax} of size {n}, input shape {tuple(input_shape)}."
                )
            out[ax] = n - a - b
        return tuple(out)

    def _index(self, shape):
        idx = [slice(None)] * len(shape)
        for ax, (a, b) in zip(self._axes(), self.cropping):
            idx[ax] = slice(a, shape[ax] - b)
        return tuple(idx)

    def call(self, x, training):
        y = x[self._index(x.shape)]
        if training:
            self._cache = _ShapeCache(x.shape)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        shape = self._cache.x_shape
        dx = np.zeros(shape, dy.dtype)
        dx[self._index(shape)] = dy
        return dx

    def get_config(self):
        cropping = self.cropping[0] if self.rank == 1 else self.cropping
        return {"cropping": cropping, **self._format_config(), **super().get_config()}


class Cropping1D(_Cropping):
    """Crop the time axis of ``(batch, steps, features)``: ``cropping`` int or ``(before, after)``."""

    rank, _has_format = 1, False
    min_ndim = 3
    _param_constraints = {"cropping": [_PairsSpec(1)]}

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(cropping, **kwargs)


class Cropping2D(_Cropping):
    """Crop rows and columns: ``cropping`` int, ``(sym_rows, sym_cols)`` or ``((top, bottom), (left, right))``."""

    rank = 2
    min_ndim = 4
    _param_constraints = {"cropping": [_PairsSpec(2)], "data_format": _FORMAT}

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


class Cropping3D(_Cropping):
    """Crop three spatial axes: an int, three ints or three ``(before, after)`` pairs."""

    rank = 3
    min_ndim = 5
    _param_constraints = {"cropping": [_PairsSpec(3)], "data_format": _FORMAT}

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


# --------------------------------------------------------------- zero padding
class _ZeroPadding(_Spatial):
    def __init__(self, padding, data_format=None, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"padding": padding, "data_format": data_format})
        super().__init__(**kwargs)
        self.padding = _pairs(padding, self.rank)
        self._init_format(data_format)

    def compute_output_shape(self, input_shape):
        out = list(input_shape)
        for ax, (a, b) in zip(self._axes(), self.padding):
            if input_shape[ax] is not None:
                out[ax] = input_shape[ax] + a + b
        return tuple(out)

    def _width(self, ndim):
        width = [(0, 0)] * ndim
        for ax, p in zip(self._axes(), self.padding):
            width[ax] = p
        return width

    def call(self, x, training):
        y = np.pad(x, self._width(x.ndim))
        if training:
            self._cache = _ShapeCache(x.shape)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        shape = self._cache.x_shape
        idx = tuple(slice(a, a + n) for (a, _), n in zip(self._width(dy.ndim), shape))
        return dy[idx]

    def get_config(self):
        padding = self.padding[0] if self.rank == 1 else self.padding
        return {"padding": padding, "data_format": self.data_format, **super().get_config()}


class ZeroPadding1D(_ZeroPadding):
    """Pad the steps axis with zeros: ``padding`` int or ``(before, after)``."""

    rank = 1
    min_ndim = 3
    _param_constraints = {"padding": [_PairsSpec(1)], "data_format": _FORMAT}

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding2D(_ZeroPadding):
    """Pad rows and columns with zeros: an int, ``(sym_rows, sym_cols)`` or two ``(before, after)`` pairs."""

    rank = 2
    min_ndim = 4
    _param_constraints = {"padding": [_PairsSpec(2)], "data_format": _FORMAT}

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding3D(_ZeroPadding):
    """Pad three spatial axes with zeros: an int, three ints or three ``(before, after)`` pairs."""

    rank = 3
    min_ndim = 5
    _param_constraints = {"padding": [_PairsSpec(3)], "data_format": _FORMAT}

    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


# ---------------------------------------------------------------- up-sampling
def _resize_matrix(n: int, s: int, interpolation: str, dtype) -> np.ndarray:
    """The ``(s n, n)`` matrix of up-sampling one axis by ``s`` (see the module docstring)."""
    w = np.zeros((s * n, n), dtype)
    o = np.arange(s * n)
    if interpolation == "nearest":
        w[o, o // s] = 1
        return w
    src = np.clip((o + 0.5) / s - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    np.add.at(w, (o, lo), 1 - frac)
    np.add.at(w, (o, hi), frac)
    return w


class _UpSampling(_Spatial):
    def __init__(self, size, data_format=None, interpolation="nearest", **kwargs):
        values = {"size": size}
        if self._has_format:
            values["data_format"] = data_format
        if "interpolation" in self._param_constraints:
            values["interpolation"] = interpolation
        validate_params(type(self).__name__, self._param_constraints, values)
        super().__init__(**kwargs)
        self.size = (int(size),) * self.rank if _is_count(size) else tuple(int(v) for v in size)
        self._init_format(data_format)
        self.interpolation = interpolation

    def compute_output_shape(self, input_shape):
        out = list(input_shape)
        for ax, s in zip(self._axes(), self.size):
            if input_shape[ax] is not None:
                out[ax] = input_shape[ax] * s
        return tuple(out)

    def _apply(self, a, transpose: bool):
        for ax, s in zip(self._axes(), self.size):
            n = a.shape[ax] // s if transpose else a.shape[ax]
            if self.interpolation == "nearest":
                if transpose:  # W^T sums each group of s copies
                    shape = a.shape[:ax] + (n, s) + a.shape[ax + 1:]
                    a = a.reshape(shape).sum(axis=ax + 1)
                else:
                    a = np.repeat(a, s, axis=ax)
                continue
            w = _resize_matrix(n, s, self.interpolation, a.dtype)
            a = np.moveaxis(np.tensordot(w.T if transpose else w, a, axes=([1], [ax])), 0, ax)
        return a

    def call(self, x, training):
        y = self._apply(x, transpose=False)
        if training:
            self._cache = _ShapeCache(x.shape)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return self._apply(dy, transpose=True)

    def get_config(self):
        size = self.size[0] if self.rank == 1 else self.size
        config = {"size": size, **self._format_config()}
        if "interpolation" in self._param_constraints:
            config["interpolation"] = self.interpolation
        return {**config, **super().get_config()}


class UpSampling1D(_UpSampling):
    """Repeat each step ``size`` times along the steps axis of ``(batch, steps, features)``."""

    rank, _has_format = 1, False
    min_ndim = 3
    _param_constraints = {"size": [Interval(numbers.Integral, 1, None)]}

    def __init__(self, size=2, **kwargs):
        super().__init__(size, **kwargs)


class UpSampling2D(_UpSampling):
    """Up-sample rows and columns by ``size`` (int or pair); ``interpolation`` "nearest" or "bilinear".

    Keras's other interpolations (bicubic, lanczos, area, ...) are not
    available: they are refused at construction.
    """

    rank = 2
    min_ndim = 4
    _param_constraints = {"size": [_SizeSpec(2)], "data_format": _FORMAT,
                          "interpolation": [Options(("nearest", "bilinear"))]}

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(size, data_format, interpolation, **kwargs)


class UpSampling3D(_UpSampling):
    """Repeat entries ``size`` times (int or triple) along three spatial axes."""

    rank = 3
    min_ndim = 5
    _param_constraints = {"size": [_SizeSpec(3)], "data_format": _FORMAT}

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(size, data_format, **kwargs)
