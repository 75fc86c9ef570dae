"""Layers without weights of their own to fold: activations, identities at inference, reshaping, merging, preprocessing, pooling.

=====================================  =================================================================
normlab                                ONNX
=====================================  =================================================================
Activation                             the activation's operator (:mod:`normlab.export._activations`)
Dropout, SpatialDropout1D/2D/3D        nothing (the identity at inference), or ``x * (1 - rate)``
                                       with ``scaling="inference"`` (the notes' dropout)
AlphaDropout, GaussianNoise,           nothing: the identity at inference, as ``layer(x)`` is
GaussianDropout, RandomFlip,
RandomRotation, RandomTranslation,
RandomZoom, ActivityRegularization
Flatten                                ``Flatten(axis=1)`` in normlab's order (channels last; for
                                       ``data_format="channels_first"`` the channels moved last first)
Reshape                                ``Reshape`` to ``[0, *target_shape]`` (0: the batch size)
Add, Subtract, Multiply                ``Add`` (``Sum`` for 3+ inputs), ``Sub``, ``Mul``
Average, Concatenate                   ``Mean``, ``Concat``
Rescaling                              ``x * scale + offset``
Normalization                          ``(x - mean) / max(sqrt(variance), 1e-7)`` (or its inverse), the
                                       constants computed as the layer computes them
MaxPooling1D/2D, AveragePooling1D/2D   ``MaxPool``, ``AveragePool`` on the channels-first layout;
                                       padded positions are never a maximum and are not counted in an
                                       average, as in normlab (and TF)
GlobalAverage/MaxPooling1D/2D          ``ReduceMean`` / ``ReduceMax`` over the spatial axes
=====================================  =================================================================
"""

from __future__ import annotations

import numpy as np

from ..kernels.conv import same_padding
from ..layers import augmentation as _aug
from ..layers.activity_regularization import ActivityRegularization
from ..layers import merging as _merge
from ..layers import pooling as _pool
from ..layers import regularization as _reg
from ..layers.core import Activation
from ..layers.preprocessing import EPSILON as _NORMALIZATION_EPSILON
from ..layers.preprocessing import Normalization, Rescaling
from ..layers.reshaping import Flatten, Reshape
from ._activations import activation
from ._convert import register_converter
from ._graph import GraphBuilder, Tensor, channels_first_perm, identity

__all__: list = []


@register_converter(Activation)
def _activation(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    return activation(g, inputs[0], layer.activation, layer.name)


#: layers that are the identity at inference (``training=False``)
IDENTITY_AT_INFERENCE = (
    _reg.AlphaDropout, _reg.GaussianNoise, _reg.GaussianDropout,
    _aug.RandomFlip, _aug.RandomRotation, _aug.RandomTranslation, _aug.RandomZoom,
    ActivityRegularization,  # only adds a penalty to the training loss
)


@register_converter(*IDENTITY_AT_INFERENCE)
def _identity(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    return inputs[0]


@register_converter(_reg.Dropout, _reg.SpatialDropout1D, _reg.SpatialDropout2D, _reg.SpatialDropout3D)
def _dropout(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    if getattr(layer, "scaling", "inverted") == "inverted":  # the 1/p correction went into training
        return x
    # scaling="inference" (the notes): units were kept unscaled in training, so inference multiplies by p
    return g.op("Mul", x, (g.scalar(f"{layer.name}/keep", 1.0 - layer.rate),), layer.name)


# ----------------------------------------------------------------- reshaping
@register_converter(Flatten)
def _flatten(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    perm = identity(x.ndim)
    if layer.data_format == "channels_first" and x.ndim >= 3:
        perm = (0,) + tuple(range(2, x.ndim)) + (1,)  # the channels last, then C order (Keras)
    x = g.as_perm(x, perm)
    return Tensor(g.node("Flatten", [x.name], layer.name, axis=1), tuple(out_shape), (0, 1))


@register_converter(Reshape)
def _reshape(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    x = g.logical(inputs[0])
    shape = g.ints(f"{layer.name}/shape", (0,) + tuple(layer.target_shape))  # 0: copy the batch size
    return Tensor(g.node("Reshape", [x.name, shape], layer.name), tuple(out_shape), identity(len(out_shape)))


# ------------------------------------------------------------------- merging
def _same_layout(g: GraphBuilder, inputs) -> list:
    perm = inputs[0].perm
    return [g.as_perm(x, perm) for x in inputs]


def _merged(g, layer, xs, op, out_shape, **attrs) -> Tensor:
    return Tensor(g.node(op, [x.name for x in xs], layer.name, **attrs), tuple(out_shape), xs[0].perm)


@register_converter(_merge.Add)
def _add(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    xs = _same_layout(g, inputs)
    return _merged(g, layer, xs, "Add" if len(xs) == 2 else "Sum", out_shape)


@register_converter(_merge.Subtract)
def _subtract(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    return _merged(g, layer, _same_layout(g, inputs), "Sub", out_shape)


@register_converter(_merge.Average)
def _average(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    return _merged(g, layer, _same_layout(g, inputs), "Mean", out_shape)


@register_converter(_merge.Multiply)
def _multiply(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    xs = _same_layout(g, inputs)
    y = xs[0].name
    for i, x in enumerate(xs[1:], 1):  # left to right, as normlab multiplies
        y = g.node("Mul", [y, x.name], layer.name if i == len(xs) - 1 else f"{layer.name}/product{i}")
    return Tensor(y, tuple(out_shape), xs[0].perm)


@register_converter(_merge.Concatenate)
def _concatenate(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    xs = _same_layout(g, inputs)
    return _merged(g, layer, xs, "Concat", out_shape, axis=xs[0].axis(layer._norm_axis(xs[0].ndim)))


# -------------------------------------------------------------- preprocessing
@register_converter(Rescaling)
def _rescaling(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    scale = g.const(f"{layer.name}/scale", g.physical_constant(x, layer._s))
    y = g.node("Mul", [x.name, scale], f"{layer.name}/scaled")
    offset = g.const(f"{layer.name}/offset", g.physical_constant(x, layer._o))
    return x._replace(name=g.node("Add", [y, offset], layer.name))


@register_converter(Normalization)
def _normalization(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    dtype = layer.buffers["mean"].dtype
    # the layer's own constants, in its dtype (Normalization.call)
    mean = layer.buffers["mean"].reshape(layer._bshape)
    std = np.maximum(np.sqrt(layer.buffers["variance"]), np.asarray(_NORMALIZATION_EPSILON, dtype=dtype))
    mean_c = g.const(f"{layer.name}/mean", g.physical_constant(x, mean))
    std_c = g.const(f"{layer.name}/std", g.physical_constant(x, std.reshape(layer._bshape)))
    if layer.invert:  # mean + x * std
        scaled = g.node("Mul", [x.name, std_c], f"{layer.name}/scaled")
        return x._replace(name=g.node("Add", [mean_c, scaled], layer.name))
    centered = g.node("Sub", [x.name, mean_c], f"{layer.name}/centered")
    return x._replace(name=g.node("Div", [centered, std_c], layer.name))


# -------------------------------------------------------------------- pooling
_WINDOWED = {
    _pool.MaxPooling1D: "MaxPool", _pool.MaxPooling2D: "MaxPool",
    _pool.AveragePooling1D: "AveragePool", _pool.AveragePooling2D: "AveragePool",
}
_GLOBAL = {
    _pool.GlobalMaxPooling1D: "ReduceMax", _pool.GlobalMaxPooling2D: "ReduceMax",
    _pool.GlobalAveragePooling1D: "ReduceMean", _pool.GlobalAveragePooling2D: "ReduceMean",
}


def _channels_first(layer) -> bool:
    return getattr(layer, "data_format", None) == "channels_first"


@register_converter(*_WINDOWED)
def _windowed_pooling(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    perm = channels_first_perm(x.ndim, 1 if _channels_first(layer) else -1)
    x = g.as_perm(x, perm)
    spatial = tuple(x.shape[2:]) if _channels_first(layer) else tuple(x.shape[1:-1])
    attrs = {"kernel_shape": list(layer.pool_size), "strides": list(layer.strides)}
    if layer.padding == "same" and any(n is None for n in spatial):
        attrs["auto_pad"] = "SAME_UPPER"  # TF's "same": the extra pad at the end
    else:
        pairs = [same_padding(n, k, s, 1) if layer.padding == "same" else (0, 0)
                 for n, k, s in zip(spatial, layer.pool_size, layer.strides)]
        attrs["pads"] = [p[0] for p in pairs] + [p[1] for p in pairs]
    return Tensor(g.node(_WINDOWED[type(layer)], [x.name], layer.name, **attrs), tuple(out_shape), perm)


@register_converter(*_GLOBAL)
def _global_pooling(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    spatial = range(2, x.ndim) if _channels_first(layer) else range(1, x.ndim - 1)
    y = g.reduce(_GLOBAL[type(layer)], x.name, [x.axis(a) for a in spatial], layer.name, keepdims=layer.keepdims)
    if layer.keepdims:
        return Tensor(y, tuple(out_shape), x.perm)
    kept = [a for a in x.perm if a not in spatial]  # batch and channels, in their physical order
    return Tensor(y, tuple(out_shape), tuple(sorted(kept).index(a) for a in kept))
