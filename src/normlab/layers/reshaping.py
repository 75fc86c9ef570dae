"""Reshaping layers: :class:`Flatten`, :class:`Reshape`, :class:`Permute`, :class:`RepeatVector`.

The batch axis is kept. Flatten and Reshape only re-index the values of
each sample (C order, so channels-last data flattens as in Keras with
``data_format="channels_last"``); the backward pass reshapes ``dy`` back to
the input's shape. Permute transposes the non-batch axes (backward: the
inverse permutation); RepeatVector turns ``(batch, features)`` into
``(batch, n, features)`` (backward: the sum over the ``n`` copies). Outputs
are views of the inputs where NumPy allows.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .._validation import Interval, NoneOk, Options, _Constraint, validate_params
from .base import Layer

__all__ = ["Flatten", "Reshape", "Permute", "RepeatVector"]


class _ShapeCache(NamedTuple):
    x_shape: tuple


class _Reshaping(Layer):
    def call(self, x, training):
        y = x.reshape(self._target(x.shape))
        if training:
            self._cache = _ShapeCache(x.shape)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return dy.reshape(self._cache.x_shape)

    def compute_output_shape(self, input_shape):
        return self._target(tuple(input_shape))


class Flatten(_Reshaping):
    """Flatten each sample: ``(batch, d1, ..., dk) -> (batch, d1 * ... * dk)`` (Keras ``Flatten``).

    A 1-D input ``(batch,)`` becomes ``(batch, 1)``.

    Parameters
    ----------
    data_format : None, "channels_last" or "channels_first"
        None/"channels_last": C-order flattening. "channels_first": the
        channels axis (axis 1) is first moved last, so that the features come
        out in the channels-last order (Keras; for inputs of rank 3 or more).
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {"data_format": [NoneOk(), Options(("channels_last", "channels_first"))]}

    def __init__(self, data_format=None, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"data_format": data_format})
        super().__init__(**kwargs)
        self.data_format = data_format

    def _target(self, shape):
        rest = shape[1:]
        size = None if any(d is None for d in rest) else math.prod(rest)
        return (shape[0], size)

    def _moves(self, ndim) -> bool:
        return self.data_format == "channels_first" and ndim >= 3

    def call(self, x, training):
        if self._moves(x.ndim):
            x = np.moveaxis(x, 1, -1)
        return super().call(x, training)

    def _backward(self, dy):
        dx = super()._backward(dy)
        return np.moveaxis(dx, -1, 1) if self._moves(dx.ndim) else dx

    def get_config(self):
        return {"data_format": self.data_format, **super().get_config()}


class _TargetShape(_Constraint):
    """A tuple (or list) of ints >= 1, at most one of them -1."""

    def is_satisfied_by(self, value) -> bool:
        if not isinstance(value, (tuple, list)) or len(value) == 0:
            return False
        ok = all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and (v >= 1 or v == -1) for v in value
        )
        return ok and sum(1 for v in value if v == -1) <= 1

    def describe(self) -> str:
        return "a non-empty tuple of ints >= 1 with at most one -1"

    def invalid_examples(self) -> list:
        return [5, "a string", (), (2, 0), (-1, -1), (2.0, 3), (True, 2), (-2, 3)]


class Reshape(_Reshaping):
    """Reshape each sample to ``target_shape`` (Keras ``Reshape``).

    ``(batch, ...) -> (batch, *target_shape)``; one entry may be -1 (inferred
    from the number of values per sample).

    Parameters
    ----------
    target_shape : tuple of ints
        Without the batch axis.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {"target_shape": [_TargetShape()]}

    def __init__(self, target_shape, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"target_shape": target_shape})
        super().__init__(**kwargs)
        self.target_shape = tuple(int(v) for v in target_shape)

    def _target(self, shape):
        rest = shape[1:]
        if any(d is None for d in rest):  # symbolic shape with open sizes
            return (shape[0],) + tuple(None if v == -1 else v for v in self.target_shape)
        size = math.prod(rest)
        known = math.prod(v for v in self.target_shape if v != -1)
        if -1 in self.target_shape:
            ok = size % known == 0
            out = tuple(size // known if v == -1 else v for v in self.target_shape)
        else:
            ok, out = size == known, self.target_shape
        if not ok:
            raise ValueError(
                f"Layer {self.name!r} (Reshape) cannot reshape an input of shape {tuple(shape)} "
                f"({size} values per sample) to target_shape {self.target_shape}."
            )
        return (shape[0],) + out

    def build(self, input_shape):
        self._target(tuple(input_shape))

    def check_input_shape(self, shape):
        self._target(tuple(shape))

    def get_config(self):
        return {"target_shape": self.target_shape, **super().get_config()}


class _Dims(_Constraint):
    """A permutation of 1..n (the non-batch axes), as a tuple or list."""

    def is_satisfied_by(self, value) -> bool:
        if not isinstance(value, (tuple, list)) or len(value) == 0:
            return False
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            return False
        return sorted(value) == list(range(1, len(value) + 1))

    def describe(self) -> str:
        return "a permutation of 1, ..., n (Invalid permutation otherwise: the batch axis 0 stays first)"

    def invalid_examples(self) -> list:
        return [(0, 1, 2), (1, 4, 2), (), 2, (1.0, 2)]


class Permute(Layer):
    """Permute the non-batch axes: ``y = transpose(x, (0, *dims))`` (Keras ``Permute``).

    Parameters
    ----------
    dims : tuple of int
        A permutation of ``1, ..., n`` (axis 0 is the batch axis and stays).
        ``Permute((2, 1))`` swaps the two axes of ``(batch, a, b)``.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {"dims": [_Dims()]}

    def __init__(self, dims, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"dims": dims})
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)

    def _check_rank(self, shape):
        if len(shape) != len(self.dims) + 1:
            raise ValueError(f"Layer {self.name!r} (Permute): dims={self.dims} needs inputs of rank "
                             f"{len(self.dims) + 1}, got shape {tuple(shape)}.")

    def build(self, input_shape):
        self._check_rank(input_shape)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def call(self, x, training):
        y = np.transpose(x, (0, *self.dims))
        if training:
            self._cache = True
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return np.transpose(dy, np.argsort((0, *self.dims)))

    def get_config(self):
        return {"dims": self.dims, **super().get_config()}


class RepeatVector(Layer):
    """Repeat the input ``n`` times: ``(batch, features) -> (batch, n, features)`` (Keras ``RepeatVector``).

    Parameters
    ----------
    n : int >= 1
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    min_ndim = 2
    _param_constraints = {"n": [Interval(numbers.Integral, 1, None)]}

    def __init__(self, n, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"n": n})
        super().__init__(**kwargs)
        self.n = int(n)

    def _check_rank(self, shape):
        if len(shape) != 2:
            raise ValueError(f"Layer {self.name!r} (RepeatVector) expects inputs of rank 2 (batch, features), "
                             f"got shape {tuple(shape)}.")

    def build(self, input_shape):
        self._check_rank(input_shape)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        return (input_shape[0], self.n, input_shape[1])

    def call(self, x, training):
        y = np.repeat(x[:, None, :], self.n, axis=1)
        if training:
            self._cache = True
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return dy.sum(axis=1)

    def get_config(self):
        return {"n": self.n, **super().get_config()}
