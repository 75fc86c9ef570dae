"""Pooling layers (channels-last kernels; channels_first inputs are transposed around them) (state only; the math is in ``kernels.pooling``)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validation import Boolean, NoneOk, Options, validate_params
from ..kernels import pooling as K
from .base import Layer
from .conv import AXIS_NAMES, SpatialSize, default_name

__all__ = [
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "MaxPooling1D",
    "MaxPooling2D",
]

_DATA_FORMAT = [NoneOk(), Options(("channels_last", "channels_first"))]


def _last(shape, fmt):
    """A shape in channels-last order (the kernels' layout)."""
    shape = tuple(shape)
    return shape if fmt != "channels_first" else (shape[0],) + shape[2:] + (shape[1],)


def _first(shape, fmt):
    shape = tuple(shape)
    return shape if fmt != "channels_first" else (shape[0], shape[-1]) + shape[1:-1]


def _to_last(x, fmt):
    # channels_first is served by transposing around the channels-last kernels
    return x if fmt != "channels_first" else np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _to_first(y, fmt):
    return y if fmt != "channels_first" else np.ascontiguousarray(np.moveaxis(y, -1, 1))


def _check_rank(layer, shape) -> None:
    if len(shape) != layer.rank + 2:
        axes = ", ".join(("batch",) + AXIS_NAMES[layer.rank] + ("channels",))
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) expects inputs of rank {layer.rank + 2} "
            f"({axes}), got rank {len(shape)} {tuple(shape)}."
        )


class _PoolCache(NamedTuple):
    pool: K.PoolCache


class _Pooling(Layer):
    """Shared state handling of the windowed pooling layers."""

    rank: int = 2
    #: (forward, backward) kernel functions of the layer's rank
    _kernels: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.min_ndim = cls.rank + 2
        cls._param_constraints = {
            "pool_size": [SpatialSize(cls.rank)],
            "strides": [NoneOk(), SpatialSize(cls.rank)],
            "padding": [Options(("valid", "same"))],
            "data_format": _DATA_FORMAT,
        }

    def _setup(self, pool_size, strides, padding, data_format, kwargs):
        validate_params(
            type(self).__name__,
            self._param_constraints,
            {"pool_size": pool_size, "strides": strides, "padding": padding, "data_format": data_format},
        )
        if kwargs.get("name") is None:
            kwargs["name"] = default_name(type(self))
        super().__init__(**kwargs)
        size = SpatialSize(self.rank)
        self.pool_size = size.normalize(pool_size)
        self.strides = self.pool_size if strides is None else size.normalize(strides)
        self.padding = padding
        self.data_format = data_format

    def _geometry(self, shape):
        spatial, pool, strides = tuple(shape[1:-1]), self.pool_size, self.strides
        names = AXIS_NAMES[self.rank]
        if self.rank == 1:
            spatial, pool, strides, names = (1,) + spatial, (1,) + pool, (1,) + strides, ("",) + names
        try:
            return K.pool_geometry(spatial, pool, strides, self.padding, axis_names=names)
        except ValueError as exc:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) with padding={self.padding!r} cannot take "
                f"an input of shape {tuple(shape)}: {exc}"
            ) from None

    def build(self, input_shape):
        _check_rank(self, input_shape)  # spatial sizes: per call (they may differ between calls)

    def check_input_shape(self, shape):
        _check_rank(self, shape)
        self._geometry(_last(shape, self.data_format))

    def compute_output_shape(self, input_shape):
        _check_rank(self, input_shape)
        return _first(self._output_shape_last(_last(input_shape, self.data_format)), self.data_format)

    def _output_shape_last(self, input_shape):
        spatial = tuple(input_shape[1:-1])
        if any(n is None for n in spatial):
            from ..kernels.conv import axis_padding, conv_output_length

            out = tuple(
                None if n is None else conv_output_length(n, k, s, 1, axis_padding(n, k, s, 1, self.padding))
                for n, k, s in zip(spatial, self.pool_size, self.strides)
            )
        else:
            out = self._geometry(input_shape).out_size[2 - self.rank :]
        return (input_shape[0],) + tuple(out) + (input_shape[-1],)

    def call(self, x, training):
        if self.rank == 1:
            sizes = {"pool_size": self.pool_size[0], "strides": self.strides[0]}
        else:
            sizes = {"pool_size": self.pool_size, "strides": self.strides}
        y, cache = self._kernels[0](_to_last(x, self.data_format), padding=self.padding, **sizes)
        y = _to_first(y, self.data_format)
        if training:
            self._cache = _PoolCache(cache)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        dx = self._kernels[1](_to_last(dy, self.data_format), self._cache.pool)
        return _to_first(dx, self.data_format)

    def get_config(self):
        return {
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            **super().get_config(),
        }


_POOL_DOC = """{kind} pooling over {axes} windows (channels last unless data_format="channels_first"; Keras ``{name}``).

    Parameters
    ----------
    pool_size : int or tuple of {rank} ints, default {default}
    strides : int, tuple of {rank} ints or None, default None
        ``None``: the pool size (non-overlapping windows).
    padding : {{"valid", "same"}}, default "valid"
        "same" pads as TF/Keras (the extra element at the end); {padding_note}
    data_format : None, "channels_last" or "channels_first"
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Equations and backward pass: :mod:`normlab.kernels.pooling`.
"""

_MAX_NOTE = "padded positions are never the maximum. On ties the gradient goes to the first maximal element (row-major), as in TF and PyTorch."
_AVG_NOTE = "padded positions are not counted in the average (TF/Keras; PyTorch's ``count_include_pad=False``)."


class MaxPooling2D(_Pooling):
    __doc__ = _POOL_DOC.format(kind="Max", axes="(height, width)", name="MaxPooling2D", rank=2,
                               default="(2, 2)", padding_note=_MAX_NOTE)
    rank = 2
    _kernels = (K.max_pool2d_forward, K.max_pool2d_backward)

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", data_format=None, **kwargs):
        self._setup(pool_size, strides, padding, data_format, kwargs)


class MaxPooling1D(_Pooling):
    __doc__ = _POOL_DOC.format(kind="Max", axes="steps", name="MaxPooling1D", rank=1, default="2",
                               padding_note=_MAX_NOTE)
    rank = 1
    _kernels = (K.max_pool1d_forward, K.max_pool1d_backward)

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", data_format=None, **kwargs):
        self._setup(pool_size, strides, padding, data_format, kwargs)


class AveragePooling2D(_Pooling):
    __doc__ = _POOL_DOC.format(kind="Average", axes="(height, width)", name="AveragePooling2D", rank=2,
                               default="(2, 2)", padding_note=_AVG_NOTE)
    rank = 2
    _kernels = (K.avg_pool2d_forward, K.avg_pool2d_backward)

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", data_format=None, **kwargs):
        self._setup(pool_size, strides, padding, data_format, kwargs)


class AveragePooling1D(_Pooling):
    __doc__ = _POOL_DOC.format(kind="Average", axes="steps", name="AveragePooling1D", rank=1, default="2",
                               padding_note=_AVG_NOTE)
    rank = 1
    _kernels = (K.avg_pool1d_forward, K.avg_pool1d_backward)

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", data_format=None, **kwargs):
        self._setup(pool_size, strides, padding, data_format, kwargs)


# --------------------------------------------------------------------- global
class _GlobalCache(NamedTuple):
    x_shape: tuple
    index: np.ndarray | None


class _GlobalPooling(Layer):
    """Shared state handling of the global pooling layers."""

    rank: int = 2
    kind: str = "avg"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.min_ndim = cls.rank + 2
        cls._param_constraints = {"data_format": _DATA_FORMAT, "keepdims": [Boolean()]}

    def __init__(self, data_format=None, keepdims: bool = False, **kwargs):
        validate_params(
            type(self).__name__, self._param_constraints, {"data_format": data_format, "keepdims": keepdims}
        )
        if kwargs.get("name") is None:
            kwargs["name"] = default_name(type(self))
        super().__init__(**kwargs)
        self.data_format = data_format
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        _check_rank(self, input_shape)
        if any(n is not None and n < 1 for n in _last(input_shape, self.data_format)[1:-1]):
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) cannot pool an input with an empty spatial "
                f"axis: {tuple(input_shape)}."
            )

    def check_input_shape(self, shape):
        self.build(shape)

    def compute_output_shape(self, input_shape):
        _check_rank(self, input_shape)
        input_shape = _last(input_shape, self.data_format)
        if self.keepdims:
            return _first((input_shape[0],) + (1,) * self.rank + (input_shape[-1],), self.data_format)
        return (input_shape[0], input_shape[-1])

    def call(self, x, training):
        x = _to_last(x, self.data_format)
        if self.kind == "max":
            y, index = K.global_max_pool_forward(x)
        else:
            y, index = K.global_avg_pool_forward(x), None
        if self.keepdims:
            y = y.reshape(_first((x.shape[0],) + (1,) * self.rank + (x.shape[-1],), self.data_format))
        if training:
            self._cache = _GlobalCache(x.shape, index)
            self._out_shape = y.shape
        return y

    def _backward(self, dy):
        x_shape, index = self._cache
        dy = dy.reshape(x_shape[0], x_shape[-1])
        if self.kind == "max":
            return _to_first(K.global_max_pool_backward(dy, index, x_shape), self.data_format)
        return _to_first(K.global_avg_pool_backward(dy, x_shape), self.data_format)

    def get_config(self):
        return {"data_format": self.data_format, "keepdims": self.keepdims, **super().get_config()}


_GLOBAL_DOC = """Global {kind} pooling over the {axes} axes (Keras ``{name}``).

    ``(batch, {dims}, channels) -> (batch, channels)``, or with
    ``keepdims=True`` ``(batch, {ones}, channels)``.{note}

    Parameters
    ----------
    data_format : None, "channels_last" or "channels_first"
    keepdims : bool, default False
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
"""


class GlobalAveragePooling2D(_GlobalPooling):
    __doc__ = _GLOBAL_DOC.format(kind="average", axes="height and width", name="GlobalAveragePooling2D",
                                 dims="height, width", ones="1, 1", note="")
    rank, kind = 2, "avg"


class GlobalAveragePooling1D(_GlobalPooling):
    __doc__ = _GLOBAL_DOC.format(kind="average", axes="steps", name="GlobalAveragePooling1D",
                                 dims="steps", ones="1", note="")
    rank, kind = 1, "avg"


_GMAX_NOTE = " The gradient goes to the first maximal position (row-major) of each channel."


class GlobalMaxPooling2D(_GlobalPooling):
    __doc__ = _GLOBAL_DOC.format(kind="max", axes="height and width", name="GlobalMaxPooling2D",
                                 dims="height, width", ones="1, 1", note=_GMAX_NOTE)
    rank, kind = 2, "max"


class GlobalMaxPooling1D(_GlobalPooling):
    __doc__ = _GLOBAL_DOC.format(kind="max", axes="steps", name="GlobalMaxPooling1D",
                                 dims="steps", ones="1", note=_GMAX_NOTE)
    rank, kind = 1, "max"
