"""Convolution layers, channels-last or channels-first (state only; the math is in ``kernels.conv``).

Also :class:`SpatialSize`, the constraint of size hyperparameters given as an
int or a tuple (``kernel_size``, ``strides``, ``pool_size`` ...), and
:func:`fold_conv_bn_params` for folding an inference-mode batch norm into a
convolution.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import constraints as _constraints
from .. import regularizers as _regularizers
from .._registry import snake_case
from .._validation import (
    Boolean,
    Instance,
    Interval,
    NoneOk,
    Options,
    _Constraint,
    invalid_parameter,
    validate_params,
)
from ..kernels import conv as K
from ..kernels.conv import fold_conv_bn_params
from ._activated import ActivatedLinear
from .base import Layer, unique_name

__all__ = ["Conv1D", "Conv2D", "SpatialSize", "conv_linear_ops", "default_name", "fold_conv_bn_params"]

_ACT = [NoneOk(), Options(tuple(_activations.names()))]
_INIT = [str, dict, Instance(_initializers.Initializer)]
_REG = [NoneOk(), str, dict, Instance(_regularizers.Regularizer)]
_CON = [NoneOk(), str, dict, Instance(_constraints.Constraint)]
_DATA_FORMAT = [NoneOk(), Options(("channels_last", "channels_first"))]

AXIS_NAMES = {1: ("steps",), 2: ("height", "width")}

#: the largest kernel size, stride or dilation a convolution takes (2**31 - 1)
_MAX_SIZE = (1 << 31) - 1


def default_name(cls: type) -> str:
    """Keras's default layer name: ``"conv2d"``, ``"max_pooling1d_1"`` (not ``"conv2_d"``)."""
    return unique_name(re.sub(r"(\d)_d$", r"\1d", snake_case(cls.__name__)))


class SpatialSize(_Constraint):
    """An int ``>= low``, or a tuple (or list) of ``rank`` such ints."""

    def __init__(self, rank: int, low: int = 1):
        self.rank, self.low = int(rank), int(low)

    @staticmethod
    def _int_ok(v, low) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= low

    def is_satisfied_by(self, value) -> bool:
        if isinstance(value, (tuple, list)):
            return len(value) == self.rank and all(self._int_ok(v, self.low) for v in value)
        return self._int_ok(value, self.low)

    def describe(self) -> str:
        return f"an int >= {self.low} or a tuple of {self.rank} ints >= {self.low}"

    def invalid_examples(self) -> list:
        return [self.low - 1, 1.5, "a string", True, (self.low,) * (self.rank + 1), (self.low - 1,) * self.rank]

    def normalize(self, value) -> tuple:
        """``value`` as a tuple of ``rank`` Python ints."""
        if isinstance(value, (tuple, list)):
            return tuple(int(v) for v in value)
        return (int(value),) * self.rank


class _ConvCache(NamedTuple):
    conv: K.ConvCache
    z: np.ndarray
    a: np.ndarray


def _to_last(x: np.ndarray) -> np.ndarray:
    """``(N, C, *spatial)`` as a contiguous ``(N, *spatial, C)`` array (one copy)."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _to_first(x: np.ndarray) -> np.ndarray:
    """``(N, *spatial, C)`` as a contiguous ``(N, C, *spatial)`` array (one copy)."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def _empty_batch_safe(forward: Callable, backward: Callable, make_cache: Callable, *, rank: int) -> tuple:
    """The kernel functions, answering a batch of 0 examples with empty outputs and zero gradients.

    Dense and the pooling layers return ``(0, ...)`` for an empty batch (as
    Keras does); the kernels split their work over the images and have no
    part to run then. The cache still resolves the geometry, so an input too
    small for the kernel is refused as for any batch.
    """

    def fwd(x, w, b):
        if x.shape[0]:
            return forward(x, w, b)
        cache = make_cache(x, w)
        out = tuple(cache.geom.out_size[2 - rank :])
        return np.zeros((0,) + out + (w.shape[-1],), dtype=np.result_type(x, w)), cache

    def bwd(dz, cache, w, *, need_dx: bool = True, need_param_grads: bool = True):
        if dz.shape[0]:
            return backward(dz, cache, w, need_dx=need_dx, need_param_grads=need_param_grads)
        dtype = np.result_type(dz, w)
        in_size = tuple(cache.geom.in_size[2 - rank :])
        dx = np.zeros((0,) + in_size + (w.shape[-2] * cache.groups,), dtype=dtype) if need_dx else None
        dw = np.zeros(w.shape, dtype=dtype) if need_param_grads else None
        db = np.zeros(w.shape[-1], dtype=dtype) if need_param_grads else None
        return dx, dw, db

    return fwd, bwd, make_cache


class _Conv(ActivatedLinear, Layer):
    """Shared state handling of :class:`Conv1D` and :class:`Conv2D` (see there)."""

    rank: int = 2
    _paddings: tuple = ("valid", "same")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.min_ndim = cls.rank + 2
        cls._param_constraints = {
            "filters": [Interval(numbers.Integral, 1, None)],
            "kernel_size": [SpatialSize(cls.rank)],
            "strides": [SpatialSize(cls.rank)],
            "padding": [Options(cls._paddings)],
            "dilation_rate": [SpatialSize(cls.rank)],
            "activation": _ACT,
            "use_bias": [Boolean()],
            "kernel_initializer": _INIT,
            "bias_initializer": _INIT,
            "kernel_regularizer": _REG,
            "bias_regularizer": _REG,
            "kernel_constraint": _CON,
            "bias_constraint": _CON,
            "data_format": _DATA_FORMAT,
            "groups": [Interval(numbers.Integral, 1, None)],
            # Winograd is 2-D only
            "algorithm": [Options(K.ALGORITHMS if cls.rank == 2 else tuple(a for a in K.ALGORITHMS if a != "winograd"))],
        }

    def _setup(self, args: dict, kwargs: dict) -> None:
        if self.rank != 2 and isinstance(args["algorithm"], str) and args["algorithm"] == "winograd":
            allowed = self._param_constraints["algorithm"][0].describe()
            raise invalid_parameter(type(self).__name__, "algorithm", f"{allowed} (Winograd's F(2x2, 3x3) is "
                                    f"for Conv2D only)", args["algorithm"])
        validate_params(type(self).__name__, self._param_constraints, args)
        for arg in ("kernel_size", "strides", "dilation_rate"):
            # beyond any array; and numba's kernels take sizes as int64 (10**30 failed there with a TypingError)
            if max(SpatialSize(self.rank).normalize(args[arg])) > _MAX_SIZE:
                expected = f"{SpatialSize(self.rank).describe()}, each at most {_MAX_SIZE}"
                raise invalid_parameter(type(self).__name__, arg, expected, args[arg])
        if kwargs.get("name") is None:
            kwargs["name"] = default_name(type(self))
        super().__init__(**kwargs)
        size = SpatialSize(self.rank)
        self.filters = int(args["filters"])
        self.kernel_size = size.normalize(args["kernel_size"])
        self.strides = size.normalize(args["strides"])
        self.padding = args["padding"]
        self.dilation_rate = size.normalize(args["dilation_rate"])
        self.data_format = args["data_format"]
        self.groups = int(args["groups"])
        self.algorithm = args["algorithm"]
        name = type(self).__name__
        if self.filters % self.groups:
            raise ValueError(
                f"{name}: the number of filters must be divisible by groups; got filters={self.filters}, "
                f"groups={self.groups}."
            )
        if self.algorithm == "winograd" and not (
            self.kernel_size == (3, 3) and self.strides == (1, 1) and self.dilation_rate == (1, 1)
        ):
            raise ValueError(
                f"{name}: algorithm='winograd' needs kernel_size=(3, 3), strides=(1, 1) and dilation_rate=(1, 1); "
                f"got kernel_size={self.kernel_size}, strides={self.strides}, dilation_rate={self.dilation_rate}."
            )
        self.activation = args["activation"]
        self.use_bias = bool(args["use_bias"])
        # resolve now so that an unknown name fails at construction
        self.kernel_initializer = _initializers.get(args["kernel_initializer"])
        self.bias_initializer = _initializers.get(args["bias_initializer"])
        self.kernel_regularizer = _regularizers.get(args["kernel_regularizer"])
        self.bias_regularizer = _regularizers.get(args["bias_regularizer"])
        self.kernel_constraint = _constraints.get(args["kernel_constraint"])
        self.bias_constraint = _constraints.get(args["bias_constraint"])
        self._act = _activations.get(self.activation)

    # ------------------------------------------------------------ shapes
    def _who(self) -> str:
        return f"Layer {self.name!r} ({type(self).__name__})"

    @property
    def _channels_first(self) -> bool:
        return self.data_format == "channels_first"

    def _split(self, shape) -> tuple:
        """``(spatial sizes, channels)`` of an input shape in this layer's data format."""
        if self._channels_first:
            return tuple(shape[2:]), shape[1]
        return tuple(shape[1:-1]), shape[-1]

    def _check_rank(self, shape) -> None:
        if len(shape) != self.rank + 2:
            names = AXIS_NAMES[self.rank]
            order = ("channels",) + names if self._channels_first else names + ("channels",)
            axes = ", ".join(("batch",) + order)
            raise ValueError(
                f"{self._who()} expects inputs of rank {self.rank + 2} ({axes}), "
                f"got rank {len(shape)} {tuple(shape)}."
            )

    def _geometry(self, shape) -> K.ConvGeometry:
        """The convolution's sizes for an input of ``shape``; a named error if there is no output."""
        spatial, kernel = self._split(shape)[0], self.kernel_size
        strides, dilation, names = self.strides, self.dilation_rate, AXIS_NAMES[self.rank]
        if self.rank == 1:  # the 1-D kernels are the 2-D ones with one row
            spatial, kernel, strides, dilation = (1,) + spatial, (1,) + kernel, (1,) + strides, (1,) + dilation
            names = ("",) + names
        try:
            return K.conv_geometry(spatial, kernel, strides, dilation, self.padding, axis_names=names)
        except ValueError as exc:
            raise ValueError(
                f"{self._who()} with padding={self.padding!r} cannot take an input of shape "
                f"{tuple(shape)}: {exc}"
            ) from None

    def _channel_axis_name(self) -> str:
        return "axis 1" if self._channels_first else "last"

    def build(self, input_shape):
        self._check_rank(input_shape)
        c_in = self._split(input_shape)[1]
        if c_in is None or c_in < 1:
            raise ValueError(
                f"{self._who()}: the channel axis ({self._channel_axis_name()}) of {tuple(input_shape)} is empty."
            )
        self._check_channels(input_shape)
        # spatial sizes are checked per call (check_input_shape): they may differ between calls
        kshape = self.kernel_size + (c_in // self.groups, self.filters)
        self.add_weight("kernel", kshape, self.kernel_initializer, self.kernel_regularizer)
        self._set_constraint("kernel", self.kernel_constraint)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
            self._set_constraint("bias", self.bias_constraint)

    def _check_channels(self, shape) -> None:
        """The input channels of ``shape`` fit: the built kernel's count, else a multiple of ``groups``
        (an open size, ``None``, fits; symbolic calls check here what a build would)."""
        c_in = self._split(shape)[1]
        if c_in is None:
            return
        if "kernel" in self.params:
            built_for = self.params["kernel"].shape[-2] * self.groups
            if c_in != built_for:
                raise ValueError(
                    f"{self._who()} was built for {built_for} input channels ({self._channel_axis_name()} axis), "
                    f"got {c_in} channels in an input of shape {tuple(shape)}."
                )
        elif c_in % self.groups:
            raise ValueError(
                f"{self._who()}: the number of input channels must be divisible by groups; got {c_in} "
                f"channels and groups={self.groups} (input shape {tuple(shape)})."
            )

    def check_input_shape(self, shape):
        self._check_rank(shape)
        self._check_channels(shape)
        self._geometry(shape)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        self._check_channels(input_shape)
        spatial = self._split(input_shape)[0]
        if any(n is None for n in spatial):  # symbolic shapes may leave spatial sizes open
            out = tuple(
                None if n is None else K.conv_output_length(n, k, s, d, K.axis_padding(n, k, s, d, self.padding))
                for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)
            )
        else:
            out = self._geometry(input_shape).out_size[2 - self.rank :]
        if self._channels_first:
            return (input_shape[0], self.filters) + tuple(out)
        return (input_shape[0],) + tuple(out) + (self.filters,)

    # ----------------------------------------------------------- forward
    def _kernel_fns(self) -> tuple[Callable, Callable, Callable]:
        """``(forward, backward, cache)`` kernel functions bound to this layer's hyperparameters
        (channels-last arrays; :meth:`call` converts channels-first ones)."""
        common = {"padding": self.padding, "groups": self.groups, "algorithm": self.algorithm}
        if self.rank == 1:
            hp = {"strides": self.strides[0], "dilation": self.dilation_rate[0], **common}
            fns = (
                lambda x, w, b: K.conv1d_forward(x, w, b, **hp),
                K.conv1d_backward,
                lambda x, w: K.conv1d_cache(x, w.shape[0], filters=w.shape[-1], **hp),
            )
        else:
            hp = {"strides": self.strides, "dilation": self.dilation_rate, **common}
            fns = (
                lambda x, w, b: K.conv2d_forward(x, w, b, **hp),
                K.conv2d_backward,
                lambda x, w: K.conv2d_cache(x, w.shape[:2], filters=w.shape[-1], **hp),
            )
        return _empty_batch_safe(*fns, rank=self.rank)

    def call(self, x, training):
        if self._channels_first:
            x = _to_last(x)
        z, conv_cache = self._kernel_fns()[0](x, self.params["kernel"], self.params.get("bias"))
        if self._channels_first:
            z = _to_first(z)
        a = self._act.forward(z)
        if training:
            self._cache = _ConvCache(conv_cache, z, a)
            self._out_shape = a.shape
        return a

    # ---------------------------------------------------------- backward
    def _linear_backward(self, dz, need_dx: bool):
        if self._channels_first:
            dz = _to_last(dz)
        dx, dw, db = self._kernel_fns()[1](
            dz, self._cache.conv, self.params["kernel"], need_dx=need_dx, need_param_grads=self._trainable
        )
        if self._trainable:
            self._accumulate_grad("kernel", dw)
            if self.use_bias:
                self._accumulate_grad("bias", db)
        return dx if dx is None or not self._channels_first else _to_first(dx)

    # ----------------------------------------------------- serialization
    def get_config(self):
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _initializers.serialize(self.kernel_initializer),
            "bias_initializer": _initializers.serialize(self.bias_initializer),
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
            # only when set: a config without them is the default (None), and readers of older
            # configs (the .keras mapping) need not know the keys
            **_constraints.config_entries(kernel_constraint=self.kernel_constraint,
                                          bias_constraint=self.bias_constraint),
            "data_format": self.data_format,
            "groups": self.groups,
            "algorithm": self.algorithm,
            **super().get_config(),
        }


class Conv2D(_Conv):
    """2-D convolution over ``(batch, height, width, channels)`` inputs (Keras ``Conv2D``).

    ``y = activation(conv(x, kernel) + bias)``, a cross-correlation as in
    Keras and PyTorch; equations, padding rules and backward pass in
    :mod:`normlab.kernels.conv`.

    Parameters
    ----------
    filters : int
        Output channels; ``kernel`` has shape ``(kh, kw, c_in, filters)`` (Keras layout).
    kernel_size : int or tuple of 2 ints
    strides : int or tuple of 2 ints, default (1, 1)
    padding : {"valid", "same"}, default "valid"
        "same" pads as TF/Keras (with an odd total the extra row/column goes
        at the bottom/right); the output then has ``ceil(in / stride)`` rows.
    dilation_rate : int or tuple of 2 ints, default (1, 1)
        Strides and dilation may both exceed 1 (Keras refuses that; the
        result is the same as PyTorch's).
    activation : str or None, default None
    use_bias : bool, default True
    kernel_initializer, bias_initializer : str, dict or Initializer
        Defaults ``"glorot_uniform"`` (fans include the receptive field) and ``"zeros"``.
    kernel_regularizer, bias_regularizer : str, dict, Regularizer or None
    data_format : None, "channels_last" or "channels_first"
        ``"channels_first"`` takes ``(batch, channels, height, width)`` inputs
        and returns ``(batch, filters, rows, columns)`` (Keras); the kernel
        layout is the same. The data are transposed to channels-last around
        the computation (one copy each way).
    kernel_constraint, bias_constraint : str, dict, Constraint or None
        Applied after each optimizer update (:mod:`normlab.constraints`); for
        a per-filter max-norm use ``MaxNorm(axis=[0, 1, 2])``.
    groups : int, default 1
        Grouped convolution (Keras, PyTorch): input channels and filters are
        split into ``groups`` consecutive blocks, both divisible by ``groups``;
        block ``g`` of filters sees block ``g`` of the inputs only. The kernel
        has shape ``(kh, kw, c_in / groups, filters)``.
    algorithm : {"auto", "gemm", "winograd", "direct"}, default "auto"
        How the convolution is computed (normlab only; all give the same
        function to rounding, and exact gradients of what they compute).
        ``"gemm"``: im2col and BLAS, the exact path (a plain dot product's
        rounding). ``"winograd"``: F(2x2, 3x3), only for 3 x 3 kernels with
        unit strides and dilation; 2.25x fewer multiplications, error bound
        in :mod:`normlab.kernels._conv_winograd` (a few times GEMM's).
        ``"direct"``: loops without a patch matrix (few input channels).
        ``"auto"``: Winograd where it applies and pays (at least 8 input
        channels and 32 filters per group, numba kernels on), else GEMM.
    **kwargs
        ``name``, ``trainable``, ``dtype``, and Keras's deprecated
        ``input_shape``/``input_dim`` (see :class:`Layer`).

    Notes
    -----
    PyTorch: ``F.conv2d(x.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1), bias,
    stride, padding, dilation)``; "same" padding becomes ``F.pad`` with
    ``(left, right, top, bottom)`` when it is asymmetric.

    Inputs are not checked for NaN or inf here, as in ``Dense`` and the
    pooling layers (``Model.fit``, ``predict`` and ``evaluate`` refuse them):
    a non-finite input reaches the outputs whose window holds it, of its own
    example only (an inf may come out as NaN). With "gemm" and "direct" it
    reaches no other output; with "winograd" it may also reach the other
    outputs of the 2 x 2 output tiles whose 4 x 4 input tiles hold it (the
    NumPy kernels' transforms multiply it by zeros; the numba kernels'
    additions keep it to its windows). A batch of 0 examples gives an empty
    output and zero gradients.
    """

    rank = 2

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        dilation_rate=(1, 1),
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        *,
        data_format: str | None = None,
        kernel_constraint=None,
        bias_constraint=None,
        groups: int = 1,
        algorithm: str = "auto",
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        self._setup(args, kwargs)


class Conv1D(_Conv):
    """1-D convolution over ``(batch, steps, channels)`` inputs (Keras ``Conv1D``).

    Parameters as :class:`Conv2D` with ints (or 1-tuples) for sizes; kernel
    shape ``(k, c_in, filters)``. ``padding`` also accepts ``"causal"``:
    ``(k - 1) * dilation`` zeros on the left only, so output step ``t`` sees
    inputs up to ``t`` (WaveNet).
    """

    rank = 1
    _paddings = ("valid", "same", "causal")

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        dilation_rate=1,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        *,
        data_format: str | None = None,
        kernel_constraint=None,
        bias_constraint=None,
        groups: int = 1,
        algorithm: str = "auto",
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        self._setup(args, kwargs)


def conv_linear_ops(layer: _Conv) -> tuple[Callable, Callable]:
    """The linear map of a built convolution layer as pure functions of an explicit kernel.

    Returns ``(forward, backward)`` with the signatures of
    ``layers.wrappers._LinearOps``: ``forward(x, kernel, bias) -> z`` and
    ``backward(dz, x, kernel, need_param_grads=True) -> (dx, dkernel, dbias)``,
    bound to the layer's strides, padding and dilation (for
    ``WeightNormalization``, whose norm is per filter over ``(kh, kw, c_in)``).
    """
    fwd, bwd, make_cache = layer._kernel_fns()
    first = layer._channels_first

    def forward(x, kernel, bias):
        if first:
            return _to_first(fwd(_to_last(x), kernel, bias)[0])
        return fwd(x, kernel, bias)[0]

    def backward(dz, x, kernel, need_param_grads: bool = True):
        if first:
            x, dz = _to_last(x), _to_last(dz)
        dx, dk, db = bwd(dz, make_cache(x, kernel), kernel, need_dx=True, need_param_grads=need_param_grads)
        return (_to_first(dx) if first else dx), dk, db

    return forward, backward
