"""Preprocessing layers: feature scaling and image augmentation (Keras 3 semantics).

``Normalization`` and ``Rescaling`` apply the notes' two feature scalings,
``x' = (x - mu) / sigma`` and ``x' = (x - x_min) / (x_max - x_min)`` (the latter
as ``x * scale + offset``), inside a model; their constants are saved with the
model (``Normalization``'s as buffers, ``Rescaling``'s in its config). :class:`normlab.preprocessing.StandardScaler` and
:class:`~normlab.preprocessing.MinMaxScaler` fit them on training data and
convert to them with ``to_layer()``.

The image augmentation layers live in :mod:`normlab.layers.augmentation`
(re-exported here).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._validation import Boolean, InvalidParameterError, NoneOk, _Constraint, validate_params
from .augmentation import RandomFlip, RandomRotation, RandomTranslation, RandomZoom
from .base import Layer

__all__ = [
    "Normalization",
    "Rescaling",
    "RandomFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
]

#: Keras's ``backend.epsilon()``: the floor of the standard deviation in Normalization
EPSILON = 1e-7


class _RealArray(_Constraint):
    """A finite real number or an array-like of them (optionally >= 0)."""

    def __init__(self, nonnegative: bool = False):
        self.nonnegative = nonnegative

    def is_satisfied_by(self, value):
        if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
            return False
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return False
        if arr.size == 0 or not np.isfinite(arr).all():
            return False
        return not (self.nonnegative and (arr < 0).any())

    def describe(self):
        what = "a non-negative" if self.nonnegative else "a"
        return f"{what} finite float or an array-like of them"

    def invalid_examples(self):
        out = ["a string", float("nan"), [1.0, float("inf")], []]
        if self.nonnegative:
            out.append(-1.0)
        return out


def _to_config(value):
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr.tolist()


class _Axes(_Constraint):
    def is_satisfied_by(self, value):
        def is_int(a):
            return isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_))

        if is_int(value):
            return True
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(is_int(a) for a in value)

    def describe(self):
        return "an int or a non-empty list of ints"

    def invalid_examples(self):
        return [1.5, "channels", []]


class _NormCache(NamedTuple):
    std: np.ndarray  # max(sqrt(variance), EPSILON), broadcast shape
    invert: bool


class Normalization(Layer):
    """Standardize features with fixed statistics: ``y = (x - mean) / sqrt(variance)`` (Keras).

    The statistics come from the constructor or from :meth:`adapt` (one pass
    over training data); they are buffers, saved and loaded with the model,
    and never change in training. Exactly::

        y = (x - mean) / max(sqrt(variance), 1e-7)          (invert=False)
        y = mean + x * max(sqrt(variance), 1e-7)            (invert=True)

    and ``dL/dx = dL/dy / std`` (``* std`` when inverting).

    Parameters
    ----------
    axis : int, list of int or None, default -1
        The axes that keep a separate mean and variance per index (the
        feature axis; ``-1`` is the last). Statistics are taken over all the
        other axes, the batch axis included; ``None`` uses one mean and one
        variance for everything (buffers of shape ``(1,)``). The batch axis
        cannot be kept.
    mean, variance : float or array-like, optional
        Given together (or neither); broadcast to the shape of the kept axes.
        ``variance`` is the *variance* (Keras), not the standard deviation.
    invert : bool, default False
        Apply the inverse map (de-normalize model outputs).

    Notes
    -----
    Before ``adapt`` (and without ``mean``/``variance``) the layer holds mean 0
    and variance 1: the identity. ``adapt`` computes the biased variance
    (divided by the count) with a two-pass float64 algorithm.
    """

    _param_constraints = {
        "axis": [NoneOk(), _Axes()],
        "mean": [NoneOk(), _RealArray()],
        "variance": [NoneOk(), _RealArray(nonnegative=True)],
        "invert": [Boolean()],
    }

    def __init__(self, axis=-1, mean=None, variance=None, invert: bool = False, **kwargs):
        validate_params(
            type(self).__name__,
            self._param_constraints,
            {"axis": axis, "mean": mean, "variance": variance, "invert": invert},
        )
        if (mean is None) != (variance is None):
            missing = "variance" if variance is None else "mean"
            raise InvalidParameterError(
                f"The {missing!r} parameter of Normalization must be given together with "
                f"{'mean' if missing == 'variance' else 'variance'!r}. Got None instead."
            )
        super().__init__(**kwargs)
        self.axis = None if axis is None else (int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis])
        #: the constructor's statistics (Keras's names); the live ones are ``buffers``
        self.input_mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.input_variance = None if variance is None else np.asarray(variance, dtype=np.float64)
        self.invert = bool(invert)
        self._keep: tuple = ()
        self._bshape: tuple = ()

    @property
    def mean(self) -> np.ndarray | None:
        """The mean in use (``buffers["mean"]``, shape of the kept axes); before building, the constructor's."""
        return self.buffers["mean"] if self.built else self.input_mean

    @property
    def variance(self) -> np.ndarray | None:
        """The variance in use (``buffers["variance"]``); before building, the constructor's."""
        return self.buffers["variance"] if self.built else self.input_variance

    def _resolve(self, shape: tuple) -> tuple:
        ndim = len(shape)
        if self.axis is None:
            return ()
        axes = [self.axis] if isinstance(self.axis, int) else self.axis
        out = []
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"Layer {self.name!r} (Normalization): axis={a} is out of range for an input of "
                    f"shape {tuple(shape)}."
                )
            a %= ndim
            if a == 0:
                raise ValueError(
                    f"Layer {self.name!r} (Normalization): axis={self.axis} includes the batch axis of an "
                    f"input of shape {tuple(shape)}; keep feature axes only."
                )
            if a in out:
                raise ValueError(f"Layer {self.name!r} (Normalization): repeated axis in {self.axis}.")
            out.append(a)
        return tuple(sorted(out))

    def build(self, input_shape):
        self._keep = self._resolve(input_shape)
        shape = tuple(int(input_shape[a]) for a in self._keep) or (1,)  # axis=None: one value
        self._bshape = tuple(int(input_shape[d]) if d in self._keep else 1 for d in range(len(input_shape)))
        mean = self.add_weight("mean", shape, "zeros", trainable=False)
        var = self.add_weight("variance", shape, "ones", trainable=False)
        if self.input_mean is not None:
            for name, value, buf in (("mean", self.input_mean, mean), ("variance", self.input_variance, var)):
                try:
                    full = np.broadcast_to(value, shape)
                except ValueError:
                    raise ValueError(
                        f"Layer {self.name!r} (Normalization): {name} of shape {value.shape} does not "
                        f"broadcast to the kept axes' shape {shape} of inputs {tuple(input_shape)}."
                    ) from None
                if np.abs(full).max() > np.finfo(buf.dtype).max:  # inf once stored in the layer's dtype
                    raise ValueError(
                        f"Layer {self.name!r} (Normalization): '{name}' exceeds the largest {buf.dtype} "
                        f"({np.finfo(buf.dtype).max:.2g}); use dtype='float64'."
                    )
                buf[...] = full

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        for a in self._keep:
            if shape[a] != self._bshape[a]:
                raise ValueError(
                    f"Layer {self.name!r} (Normalization) was built for size {self._bshape[a]} on "
                    f"axis {a}, got input of shape {tuple(shape)}."
                )

    def adapt(self, data) -> "Normalization":
        """Set ``mean`` and ``variance`` from ``data``; returns self.

        ``data`` is one batch (an array, the batch axis first) or, as in
        Keras 3, batches: a list or tuple of arrays, a generator or iterator,
        or a :class:`normlab.utils.PyDataset`; a batch given as ``(x, y)`` or
        ``(x, y, sample_weight)`` contributes ``x``. The statistics of the
        batches are merged exactly in float64 (Chan et al.'s pairwise update
        of the mean and of the sum of squared deviations), so they equal
        those of the concatenated data. All or nothing: a failure changes
        nothing.
        """
        from .base import _attributes, _restore

        who = f"Layer {self.name!r} (Normalization).adapt"
        saved = None if self.built else _attributes(self)
        try:  # all or nothing: a layer that adapt built is unbuilt again if it fails
            count, mean, m2 = 0, None, None
            for x in self._adapt_batches(data, who):
                n_b, mean_b, m2_b = self._batch_moments(x, who)
                if mean is None:
                    count, mean, m2 = n_b, mean_b, m2_b
                    continue
                total = count + n_b
                delta = mean_b - mean
                with np.errstate(over="ignore", invalid="ignore"):
                    mean = mean + delta * (n_b / total)
                    m2 = m2 + m2_b + delta * delta * (count * n_b / total)
                count = total
            if mean is None:
                raise ValueError(f"{who}: 'data' is an empty iterable (no batch to take statistics from).")
            var = m2 / count
            # the statistics are stored in the layer's dtype: refuse what would become inf there
            top = np.finfo(self.buffers["mean"].dtype).max
            if not (np.all(np.abs(mean) <= top) and np.all(var <= top)):
                raise ValueError(
                    f"{who}: the mean or variance of 'data' exceeds the largest {self.buffers['mean'].dtype} "
                    f"({top:.2g}); scale the data down or use dtype='float64'."
                )
        except BaseException:
            if saved is not None:
                _restore(saved)
            raise
        self.buffers["mean"][...] = mean.reshape(self.buffers["mean"].shape)
        self.buffers["variance"][...] = var.reshape(self.buffers["variance"].shape)
        return self

    @staticmethod
    def _adapt_batches(data, who):
        """The batches of ``data`` (see :meth:`adapt`), each as given (checked by ``_batch_moments``)."""
        from ..utils import PyDataset

        def first(item):
            return item[0] if isinstance(item, tuple) and len(item) in (2, 3) else item

        if isinstance(data, PyDataset):
            return (first(data[i]) for i in range(len(data)))
        if isinstance(data, (list, tuple)) and len(data) == 0:
            return iter(())
        if isinstance(data, (list, tuple)) and all(isinstance(first(b), np.ndarray) for b in data):
            return (first(b) for b in data)
        if not isinstance(data, (np.ndarray, list, tuple, str, bytes, numbers.Number)) and \
                not hasattr(data, "__array__") and (hasattr(data, "__iter__") or hasattr(data, "__next__")):
            return (first(b) for b in data)
        return iter((data,))

    def _batch_moments(self, data, who):
        """``(count, mean, sum of squared deviations)`` of one batch over the reduced axes, in float64."""
        from .base import as_float_array

        if not hasattr(data, "shape") and not isinstance(data, (list, tuple)):
            raise TypeError(f"{who}: each batch of 'data' must be an array with a `.shape`, got "
                            f"{type(data).__name__}.")
        x = as_float_array(data, who=who, arg="data")
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{who}: 'data' must be a non-empty batch, got shape {x.shape}.")
        if not np.isfinite(x).all():
            raise ValueError(f"{who}: 'data' holds NaN or inf values.")
        self._ensure_built(x)
        try:
            self.check_input_shape(x.shape)
        except ValueError as exc:
            raise ValueError(f"{who}: 'data' has an incompatible shape for the layer: {exc}") from None
        axes = tuple(d for d in range(x.ndim) if d not in self._keep)
        count = int(np.prod([x.shape[d] for d in axes]))
        with np.errstate(over="ignore", invalid="ignore"):
            mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
            m2 = np.sum(np.square(x - mean, dtype=np.float64), axis=axes)
        return count, mean.reshape(m2.shape), m2

    def call(self, x, training):
        mean = self.buffers["mean"].reshape(self._bshape)
        std = np.maximum(np.sqrt(self.buffers["variance"]), np.asarray(EPSILON, dtype=self.dtype)).reshape(self._bshape)
        y = mean + x * std if self.invert else (x - mean) / std
        if training:
            self._cache = _NormCache(std, self.invert)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        std, invert = self._cache
        return dy * std if invert else dy / std

    def _backward_params_only(self, dy):
        return None

    def get_config(self):
        return {
            "axis": self.axis,
            "mean": None if self.input_mean is None else _to_config(self.input_mean),
            "variance": None if self.input_variance is None else _to_config(self.input_variance),
            "invert": self.invert,
            **super().get_config(),
        }


class Rescaling(Layer):
    """``y = x * scale + offset`` (Keras), e.g. ``Rescaling(1 / 255)`` for 8-bit images.

    ``scale`` and ``offset`` may be arrays broadcast against the input (one
    value per feature on the last axis, as :meth:`MinMaxScaler.to_layer
    <normlab.preprocessing.MinMaxScaler.to_layer>` produces); they are part of
    the config and so saved with the model. ``dL/dx = dL/dy * scale``.

    Parameters
    ----------
    scale : float or array-like
    offset : float or array-like, default 0.0
    """

    _param_constraints = {"scale": [_RealArray()], "offset": [_RealArray()]}

    def __init__(self, scale, offset=0.0, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"scale": scale, "offset": offset})
        super().__init__(**kwargs)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.offset = np.asarray(offset, dtype=np.float64)
        self._s = self._o = None

    def build(self, input_shape):
        sample = tuple(input_shape[1:])
        for name, value in (("scale", self.scale), ("offset", self.offset)):
            try:
                ok = np.broadcast_shapes(value.shape, sample) == sample
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"Layer {self.name!r} (Rescaling): {name} of shape {value.shape} does not broadcast "
                    f"to one sample of the inputs, shape {sample} (inputs {tuple(input_shape)})."
                )
        self._s = self.scale.astype(self.dtype)
        self._o = self.offset.astype(self.dtype)

    def call(self, x, training):
        y = x * self._s
        y += self._o
        if training:
            self._cache = True
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return dy * self._s

    def _backward_params_only(self, dy):
        return None

    def get_config(self):
        return {"scale": _to_config(self.scale), "offset": _to_config(self.offset), **super().get_config()}
