"""Merge layers for graph models: Add, Multiply, Concatenate, Average, Subtract, Maximum, Minimum, Dot.

Each takes a list of inputs ``[x_1, ..., x_n]``:

===========  =======================  ======================================
layer        y                        dL/dx_i
===========  =======================  ======================================
Add          sum_i x_i                dy
Subtract     x_1 - x_2                dy, -dy
Average      (1/n) sum_i x_i          dy / n
Multiply     prod_i x_i               dy * prod_{j != i} x_j
Concatenate  [x_1, ..., x_n] (axis)   the slice of dy that x_i occupies
Maximum      max_i x_i (elementwise)  dy where x_i is the (first) maximum
Minimum      min_i x_i (elementwise)  dy where x_i is the (first) minimum
Dot          sum_k a[.., k] b[.., k]  dy contracted with the other input
===========  =======================  ======================================

Add, Subtract, Average, Multiply, Maximum and Minimum need inputs of one
shape; Concatenate needs equal shapes except along ``axis``; Dot takes two
inputs whose ``axes`` have one size (Keras's ``batch_dot``: per sample, the
remaining axes of ``a`` then those of ``b``; a result with no axis left
besides the batch becomes ``(batch, 1)``).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval, _Constraint, validate_params
from .base import Layer, as_float_array

__all__ = ["Add", "Subtract", "Average", "Multiply", "Concatenate", "Maximum", "Minimum", "Dot"]


class _Merge(Layer):
    """Base of layers with several inputs: ``layer([x1, x2, ...], training)``."""

    multi_input = True
    min_inputs = 2
    max_inputs: int | None = None

    def __call__(self, xs, training: bool = False):
        from ._symbolic import is_symbolic, symbolic_call

        if is_symbolic(xs):
            return symbolic_call(self, xs)
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"Layer {self.name!r}: 'training' must be a bool, got {training!r}.")
        if not isinstance(xs, (list, tuple)):
            raise TypeError(f"Layer {self.name!r} ({type(self).__name__}) takes a list of inputs.")
        xs = [as_float_array(x, who=f"Layer {self.name!r} ({type(self).__name__})") for x in xs]
        self._ensure_built(xs)
        self.check_input_shape([x.shape for x in xs])
        self._check_built_ranks([x.shape for x in xs])
        xs = [x if x.dtype == self.dtype else x.astype(self.dtype) for x in xs]
        self._cache = None
        return self.call(xs, bool(training))

    def _ensure_built(self, xs, rng=None):
        if self.built:
            return
        self.check_input_shape([x.shape for x in xs])  # before the dtype is fixed: a failed call changes nothing
        if self.dtype is None:
            self.dtype = np.dtype("float64") if all(x.dtype == np.float64 for x in xs) else np.dtype("float32")
        self.input_shape = [(None,) + tuple(x.shape[1:]) for x in xs]
        self.built = True

    def build_from_shape(self, input_shape, rng=None):
        self._ensure_built([np.empty(tuple(1 if d is None else d for d in s), dtype=self.dtype or np.float32) for s in input_shape])

    def check_input_shape(self, shapes):
        n = len(shapes)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = self.min_inputs if self.max_inputs == self.min_inputs else f"at least {self.min_inputs}"
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) takes {want} inputs, got {n}.")
        first = tuple(shapes[0])
        for i, s in enumerate(shapes[1:], 1):
            if not self._compatible(first, tuple(s)):
                raise ValueError(
                    f"Layer {self.name!r} ({type(self).__name__}): input {i} has shape {tuple(s)}, "
                    f"incompatible with input 0 of shape {first}."
                )

    def _check_built_ranks(self, shapes) -> None:
        # as for every layer (Layer.check_input_shape): the rank it was built for, input by input
        built = self.input_shape
        if built is None:
            return
        if len(shapes) != len(built) or any(len(s) != len(b) for s, b in zip(shapes, built)):
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) was built for inputs of shapes "
                f"{[tuple(b) for b in built]}, got {[tuple(s) for s in shapes]}."
            )

    def _compatible(self, a, b) -> bool:
        return len(a) == len(b) and all(x == y or x is None or y is None for x, y in zip(a, b))

    def compute_output_shape(self, input_shape):
        self.check_input_shape(input_shape)
        return tuple(input_shape[0])

    def _backward_params_only(self, dy):
        self._run_backward(dy)


class Add(_Merge):
    """``y = x_1 + ... + x_n``; every input receives ``dy`` (see the module table)."""

    def call(self, xs, training):
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        if training:
            self._cache = len(xs)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return [dy] * self._cache


class Subtract(_Merge):
    """``y = x_1 - x_2``."""

    max_inputs = 2

    def call(self, xs, training):
        y = xs[0] - xs[1]
        if training:
            self._cache = True
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return [dy, -dy]


class Average(_Merge):
    """``y = (x_1 + ... + x_n) / n``."""

    def call(self, xs, training):
        y = np.add.reduce(np.stack(xs), axis=0) / len(xs)
        if training:
            self._cache = len(xs)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        g = dy / self._cache
        return [g] * self._cache


class Multiply(_Merge):
    """``y = x_1 * ... * x_n`` elementwise; ``dx_i = dy * prod_{j != i} x_j``."""

    def call(self, xs, training):
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y *= x
        if training:
            self._cache = xs
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        xs = self._cache
        out = []
        for i in range(len(xs)):
            g = dy.copy()
            for j, x in enumerate(xs):
                if j != i:
                    g *= x
            out.append(g)
        return out


class Concatenate(_Merge):
    """Join inputs along ``axis`` (default -1, the channels); ``dx_i`` is the matching slice of ``dy``."""

    _param_constraints = {"axis": [Interval(numbers.Integral, None, None)]}

    def __init__(self, axis: int = -1, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"axis": axis})
        super().__init__(**kwargs)
        self.axis = int(axis)

    def _norm_axis(self, ndim):
        a = self.axis % ndim if -ndim <= self.axis < ndim else None
        if a is None or a == 0:
            raise ValueError(
                f"Layer {self.name!r} (Concatenate): axis={self.axis} is not a non-batch axis of inputs of rank {ndim}."
            )
        return a

    def _compatible(self, a, b):
        if len(a) != len(b):
            return False
        ax = self._norm_axis(len(a))
        return all(x == y or x is None or y is None for i, (x, y) in enumerate(zip(a, b)) if i != ax)

    def compute_output_shape(self, input_shape):
        self.check_input_shape(input_shape)
        shapes = [tuple(s) for s in input_shape]
        ax = self._norm_axis(len(shapes[0]))
        out = list(shapes[0])
        sizes = [s[ax] for s in shapes]
        out[ax] = None if any(v is None for v in sizes) else int(sum(sizes))
        return tuple(out)

    def call(self, xs, training):
        ax = self._norm_axis(xs[0].ndim)
        y = np.concatenate(xs, axis=ax)
        if training:
            self._cache = (ax, np.cumsum([x.shape[ax] for x in xs])[:-1])
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        ax, splits = self._cache
        return np.split(dy, splits, axis=ax)

    def get_config(self):
        return {"axis": self.axis, **super().get_config()}


class _Extremum(_Merge):
    """Elementwise max or min of the inputs; the gradient goes to the first input that attains it."""

    def call(self, xs, training):
        stacked = np.stack(xs)
        pick = self._pick(stacked, axis=0)
        y = np.take_along_axis(stacked, pick[None], axis=0)[0]
        if training:
            self._cache = (pick, len(xs))
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        pick, n = self._cache
        return [np.where(pick == i, dy, 0).astype(dy.dtype, copy=False) for i in range(n)]


class Maximum(_Extremum):
    """``y = max(x_1, ..., x_n)`` elementwise (ties: the gradient goes to the first)."""

    _pick = staticmethod(np.argmax)


class Minimum(_Extremum):
    """``y = min(x_1, ..., x_n)`` elementwise (ties: the gradient goes to the first)."""

    _pick = staticmethod(np.argmin)


class _DotAxes(_Constraint):
    def is_satisfied_by(self, value):
        ok = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # noqa: E731
        return ok(value) or (isinstance(value, (tuple, list)) and len(value) == 2 and all(map(ok, value)))

    def describe(self):
        return "an int or a pair of ints"

    def invalid_examples(self):
        return [1.5, "1", (1, 2, 3), (1.0, 2)]


_LETTERS = "abcdefghijklmnopqrstuvwxy"


class Dot(_Merge):
    """Dot product of two inputs along ``axes``, per sample (Keras ``Dot``).

    Parameters
    ----------
    axes : int or pair of int
        The axis of each input that is contracted (negative counts from the
        end; never the batch axis 0).
    normalize : bool, default False
        L2-normalize each input along its axis first, so that the result is
        the cosine similarity: ``x / sqrt(max(sum(x^2), 1e-12))`` (Keras).
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    min_inputs = max_inputs = 2
    _param_constraints = {"axes": [_DotAxes()], "normalize": [Boolean()]}

    def __init__(self, axes, normalize: bool = False, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"axes": axes, "normalize": normalize})
        super().__init__(**kwargs)
        self.axes = int(axes) if isinstance(axes, numbers.Integral) else tuple(int(a) for a in axes)
        self.normalize = bool(normalize)

    def _resolved(self, shapes):
        pair = (self.axes, self.axes) if isinstance(self.axes, int) else self.axes
        out = []
        for a, s in zip(pair, shapes):
            n = len(s)
            if not -n <= a < n or a % n == 0:
                raise ValueError(f"Layer {self.name!r} (Dot): axes={self.axes} is not a non-batch axis of an "
                                 f"input of shape {tuple(s)}.")
            out.append(a % n)
        return out

    def check_input_shape(self, shapes):
        if len(shapes) != 2:
            raise ValueError(f"Layer {self.name!r} (Dot) takes 2 inputs, got {len(shapes)}.")
        (a, b), (sa, sb) = self._resolved(shapes), shapes
        if sa[a] is not None and sb[b] is not None and sa[a] != sb[b]:
            raise ValueError(f"Layer {self.name!r} (Dot): axis {a} of the first input (shape {tuple(sa)}) and axis "
                             f"{b} of the second (shape {tuple(sb)}) must have one size.")

    def compute_output_shape(self, input_shape):
        self.check_input_shape(input_shape)
        (a, b), (sa, sb) = self._resolved(input_shape), input_shape
        rest = [d for i, d in enumerate(sa) if i not in (0, a)] + [d for i, d in enumerate(sb) if i not in (0, b)]
        return (sa[0], *rest) if rest else (sa[0], 1)

    def _subscripts(self, na, nb, a, b):
        sa = ["z"] + list(_LETTERS[1:na])
        sb = ["z"] + list(_LETTERS[na:na + nb - 1])
        sb[b] = sa[a] = "a"
        out = "".join(["z"] + [c for i, c in enumerate(sa) if i not in (0, a)] +
                      [c for i, c in enumerate(sb) if i not in (0, b)])
        return "".join(sa), "".join(sb), out

    @staticmethod
    def _unit(x, axis):
        sq = np.sum(x * x, axis=axis, keepdims=True)
        norm = np.sqrt(np.maximum(sq, 1e-12))
        return x / norm, norm, sq > 1e-12

    def call(self, xs, training):
        x1, x2 = xs
        a, b = self._resolved([x1.shape, x2.shape])
        cache_norm = None
        if self.normalize:
            (u1, n1, k1), (u2, n2, k2) = self._unit(x1, a), self._unit(x2, b)
            cache_norm = (u1, n1, k1, u2, n2, k2)
            x1, x2 = u1, u2
        s1, s2, so = self._subscripts(x1.ndim, x2.ndim, a, b)
        y = np.einsum(f"{s1},{s2}->{so}", x1, x2)
        if y.ndim == 1:
            y = y[:, None]
        if training:
            self._cache = (x1, x2, a, b, cache_norm)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        x1, x2, a, b, norm = self._cache
        s1, s2, so = self._subscripts(x1.ndim, x2.ndim, a, b)
        dy = dy.reshape(dy.shape[:1]) if len(so) == 1 else dy
        d1 = np.einsum(f"{so},{s2}->{s1}", dy, x2)
        d2 = np.einsum(f"{so},{s1}->{s2}", dy, x1)
        if norm is not None:
            u1, n1, k1, u2, n2, k2 = norm
            # d(x / |x|) = (d - u <u, d>) / |x| where |x|^2 > 1e-12; below, the norm is the constant 1e-6
            d1 = np.where(k1, (d1 - u1 * np.sum(u1 * d1, axis=a, keepdims=True)), d1) / n1
            d2 = np.where(k2, (d2 - u2 * np.sum(u2 * d2, axis=b, keepdims=True)), d2) / n2
        return [d1, d2]

    def get_config(self):
        return {"axes": self.axes, "normalize": self.normalize, **super().get_config()}
