"""Keras's activation layers: :class:`ReLU`, :class:`LeakyReLU`, :class:`PReLU`, :class:`ELU`, :class:`Softmax`.

Keras 3's arguments, defaults and numerics (keras/src/layers/activations/).
Each formula is one line, so its pure forward and backward functions sit at
the top of this module rather than in :mod:`normlab.kernels`:

==========  ===================================================  ==============================
layer       y(x)                                                 dy/dx
==========  ===================================================  ==============================
ReLU        min(x [x > t], m) - s max(t - x, 0)                  [t < x < m] + s [x < t]
LeakyReLU   x if x >= 0 else s x                                 1 or s
PReLU       x if x > 0 else alpha x   (alpha learned)            1 or alpha; dy/dalpha = min(x, 0)
ELU         x if x > 0 else alpha (exp(x) - 1)                   1 or y + alpha
Softmax     exp(x - logsumexp(x, axis))                          y (dy - sum(dy y, axis))
==========  ===================================================  ==============================

(``t`` threshold, ``m`` max_value, ``s`` negative_slope.) ``Softmax`` takes
Keras's ``mask`` call argument: masked entries enter as -1e9 and come out 0.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._validation import Interval, NoneOk, _Constraint, validate_params
from .base import Layer
from .core import _CON, _INIT, _REG

__all__ = ["ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"]

_NONNEG = [Interval(numbers.Real, 0, None, closed="left")]


class _XCache(NamedTuple):
    x: np.ndarray
    y: np.ndarray


class _Elementwise(Layer):
    """A layer ``y = f(x)`` with ``dx = dy * f'(x, y)``; subclasses give ``_f`` and ``_df``."""

    def call(self, x, training):
        y = self._f(x)
        if training:
            self._cache = _XCache(x, y)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return dy * self._df(*self._cache)


class ReLU(_Elementwise):
    """Rectified linear unit with Keras's options::

        y = min(x if x > threshold else 0, max_value) - negative_slope * max(threshold - x, 0)

    Parameters
    ----------
    max_value : float >= 0 or None, default None
        Upper bound of the output (None: unbounded).
    negative_slope : float >= 0, default 0.0
        Slope below the threshold.
    threshold : float >= 0, default 0.0
        Inputs at or below it give 0 (before the negative slope).
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {"max_value": [NoneOk(), *_NONNEG], "negative_slope": _NONNEG, "threshold": _NONNEG}

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        validate_params(type(self).__name__, self._param_constraints,
                        {"max_value": max_value, "negative_slope": negative_slope, "threshold": threshold})
        super().__init__(**kwargs)
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)

    def _f(self, x):
        t, m, s = self.threshold, self.max_value, self.negative_slope
        y = np.where(x > t, x, 0).astype(x.dtype, copy=False)
        if m is not None:
            np.minimum(y, m, out=y)
        if s:
            y -= (s * np.maximum(t - x, 0)).astype(x.dtype, copy=False)
        return y

    def _df(self, x, y):
        t, m, s = self.threshold, self.max_value, self.negative_slope
        d = (x > t) if m is None else (x > t) & (x < m)
        d = d.astype(x.dtype)
        if s:
            d += s * (x < t)
        return d

    def get_config(self):
        return {"max_value": self.max_value, "negative_slope": self.negative_slope, "threshold": self.threshold,
                **super().get_config()}


class LeakyReLU(_Elementwise):
    """``y = x if x >= 0 else negative_slope * x`` (Keras's default slope 0.3).

    Parameters
    ----------
    negative_slope : float >= 0, default 0.3
        (The ``"leaky_relu"`` activation name uses Keras's function default, 0.2.)
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {"negative_slope": _NONNEG}

    def __init__(self, negative_slope=0.3, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"negative_slope": negative_slope})
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)

    def _f(self, x):
        return np.where(x >= 0, x, self.negative_slope * x).astype(x.dtype, copy=False)

    def _df(self, x, y):
        return np.where(x >= 0, 1.0, self.negative_slope).astype(x.dtype, copy=False)

    def get_config(self):
        return {"negative_slope": self.negative_slope, **super().get_config()}


class ELU(_Elementwise):
    """``y = x if x > 0 else alpha * (exp(x) - 1)``.

    Parameters
    ----------
    alpha : float, default 1.0
        Scale of the negative part.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {"alpha": [Interval(numbers.Real, None, None)]}

    def __init__(self, alpha=1.0, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"alpha": alpha})
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def _f(self, x):
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)

    def _df(self, x, y):
        return np.where(x > 0, 1.0, y + self.alpha).astype(x.dtype, copy=False)

    def get_config(self):
        return {"alpha": self.alpha, **super().get_config()}


class _SharedAxes(_Constraint):
    """None, an int >= 1 or a list/tuple of ints >= 1 (axes of the input, the batch axis being 0)."""

    def is_satisfied_by(self, value):
        if value is None:
            return True
        items = value if isinstance(value, (list, tuple)) else [value]
        return all(isinstance(a, numbers.Integral) and not isinstance(a, bool) and a >= 1 for a in items)

    def describe(self):
        return "None, an int >= 1 or a list of ints >= 1"

    def invalid_examples(self):
        return [0, -1, 1.5, "1", [1, 0]]


class PReLU(Layer):
    """Parametric ReLU (He et al. 2015): ``y = x if x > 0 else alpha * x`` with ``alpha`` learned.

    Parameters
    ----------
    alpha_initializer : default "zeros" (Keras)
    alpha_regularizer, alpha_constraint : default None
    shared_axes : int, list of int or None
        Axes along which ``alpha`` is shared (size 1 in its shape); e.g.
        ``shared_axes=[1, 2]`` on images ``(batch, h, w, c)`` learns one
        slope per channel.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    Backward: ``dx = dy`` where ``x > 0`` and ``alpha * dy`` elsewhere;
    ``dalpha = sum(dy * min(x, 0))`` over the batch and the shared axes.
    """

    min_ndim = 2
    _param_constraints = {"alpha_initializer": _INIT, "alpha_regularizer": _REG, "alpha_constraint": _CON,
                          "shared_axes": [_SharedAxes()]}

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None,
                 shared_axes=None, **kwargs):
        validate_params(type(self).__name__, self._param_constraints,
                        {"alpha_initializer": alpha_initializer, "alpha_regularizer": alpha_regularizer,
                         "alpha_constraint": alpha_constraint, "shared_axes": shared_axes})
        super().__init__(**kwargs)
        self.alpha_initializer = _initializers.get(alpha_initializer)
        self.alpha_regularizer = _regularizers.get(alpha_regularizer)
        self.alpha_constraint = _constraints.get(alpha_constraint)
        if shared_axes is None:
            self.shared_axes = None
        else:
            self.shared_axes = [int(a) for a in (shared_axes if isinstance(shared_axes, (list, tuple))
                                                 else [shared_axes])]

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for a in self.shared_axes or ():
            if a >= len(input_shape):
                raise ValueError(f"Layer {self.name!r} (PReLU): shared axis {a} is out of range for inputs of "
                                 f"shape {tuple(input_shape)}.")
            shape[a - 1] = 1
        self.add_weight("alpha", tuple(shape), self.alpha_initializer, self.alpha_regularizer)
        self._set_constraint("alpha", self.alpha_constraint)

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        alpha = self.params["alpha"].shape
        if any(a != 1 and a != s for a, s in zip(alpha, shape[1:])):
            raise ValueError(f"Layer {self.name!r} (PReLU) was built for inputs of shape {self.input_shape} "
                             f"(alpha {alpha}), got {tuple(shape)}.")

    def call(self, x, training):
        alpha = self.params["alpha"]
        y = np.where(x > 0, x, alpha * x).astype(x.dtype, copy=False)
        if training:
            self._cache = _XCache(x, y)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        x = self._cache.x
        alpha = self.params["alpha"]
        if self._trainable:
            g = dy * np.minimum(x, 0)
            axes = (0, *(i + 1 for i, n in enumerate(alpha.shape) if n == 1 and x.shape[i + 1] != 1))
            self._accumulate_grad("alpha", g.sum(axis=axes, keepdims=True)[0])
        return np.where(x > 0, dy, alpha * dy).astype(dy.dtype, copy=False)

    def get_config(self):
        return {
            "alpha_initializer": _initializers.serialize(self.alpha_initializer),
            "alpha_regularizer": _regularizers.serialize(self.alpha_regularizer),
            "alpha_constraint": _constraints.serialize(self.alpha_constraint),
            "shared_axes": self.shared_axes,
            **super().get_config(),
        }


class _Axes(_Constraint):
    def is_satisfied_by(self, value):
        items = value if isinstance(value, (list, tuple)) else [value]
        return len(items) > 0 and all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in items)

    def describe(self):
        return "an int or a non-empty list of ints"

    def invalid_examples(self):
        return [1.5, "x", []]


class _SoftmaxCache(NamedTuple):
    y: np.ndarray
    mask: np.ndarray | None


class Softmax(Layer):
    """``y = exp(x - logsumexp(x, axis))`` (Keras's ``Softmax`` layer).

    Parameters
    ----------
    axis : int or list of int, default -1
        The axes normalized over jointly.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Call arguments: ``layer(x, training=False, mask=None)``; ``mask``
    (booleans, or numbers read as ``> 0.5``) must broadcast to ``x`` with no
    more dimensions and each of its sizes 1 or ``x``'s. As in Keras, masked
    entries enter the softmax as -1e9 and their outputs are set to 0 (a fully
    masked row gives zeros).
    """

    _param_constraints = {"axis": [_Axes()]}

    def __init__(self, axis=-1, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"axis": axis})
        super().__init__(**kwargs)
        self.axis = int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis]
        self._mask = None

    def __call__(self, x, training: bool = False, mask=None):
        if mask is None:
            return super().__call__(x, training)
        mask = np.asarray(mask)
        xs = np.shape(x)
        if mask.ndim > len(xs):
            raise ValueError(f"Layer {self.name!r} (Softmax): the mask must be broadcastable to the inputs and "
                             f"must not have more dimensions; got inputs of shape {xs}, mask {mask.shape}.")
        if any(m != 1 and m != i for m, i in zip(mask.shape[::-1], xs[::-1])):
            raise ValueError(f"Layer {self.name!r} (Softmax): the mask must be broadcastable to the inputs (each "
                             f"size 1 or the input's); got inputs of shape {xs}, mask {mask.shape}.")
        self._mask = mask if mask.dtype == bool else mask > 0.5
        try:
            return super().__call__(x, training)
        finally:
            self._mask = None

    def _axes(self, ndim):
        return tuple(a % ndim for a in ([self.axis] if isinstance(self.axis, int) else self.axis))

    def call(self, x, training):
        axes, mask = self._axes(x.ndim), self._mask
        if mask is not None:
            x = np.where(mask, x, x.dtype.type(-1e9))
        z = x - np.max(x, axis=axes, keepdims=True)
        y = np.exp(z)
        y /= np.sum(y, axis=axes, keepdims=True)
        if mask is not None:
            y = np.where(mask, y, 0).astype(x.dtype, copy=False)
        if training:
            self._cache = _SoftmaxCache(y, mask)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        y, mask = self._cache
        axes = self._axes(y.ndim)
        # masked outputs are constant 0 and masked inputs constant -1e9: neither passes a gradient
        dx = y * (dy - np.sum(dy * y, axis=axes, keepdims=True))
        return dx if mask is None else np.where(mask, dx, 0).astype(dx.dtype, copy=False)

    def get_config(self):
        return {"axis": self.axis, **super().get_config()}
