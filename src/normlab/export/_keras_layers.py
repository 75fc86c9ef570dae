"""Keras's activation, merging and reshaping layers beyond the core set.

=====================================  ================================================================
normlab                                ONNX
=====================================  ================================================================
ReLU(max_value, negative_slope,        ``Relu`` / ``Clip``; with a threshold or a negative slope
threshold)                             ``where(x > t, x, 0)``, ``Min`` with max_value, ``- s relu(t - x)``
LeakyReLU, ELU                         ``LeakyRelu``, ``Elu``
PReLU                                  ``PRelu`` with the learned slopes (laid out as the tensor is)
Softmax(axis)                          ``Softmax`` over one axis; over several ``exp(x - max) / sum``
Identity                               nothing
Maximum, Minimum                       ``Max``, ``Min``
Dot(axes, normalize)                   ``Einsum`` with normlab's subscripts (inputs L2-normalized first
                                       as ``x / sqrt(max(sum(x^2), 1e-12))`` when ``normalize``)
Permute                                nothing: the new axis order is recorded in the layout
RepeatVector                           ``Unsqueeze`` then ``Expand``
Cropping1D/2D/3D                       ``Slice`` of the spatial axes
ZeroPadding1D/2D/3D                    ``Pad`` with zeros
UpSampling1D/2D/3D                     ``Resize``: nearest (``asymmetric``, ``floor``: each entry
                                       repeated) or, in 2-D, bilinear at half-pixel centres
=====================================  ================================================================

Layers another part of normlab adds are looked up by name, so that this
module imports whatever of them exists.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..kernels.unitnorm import EPSILON as _UNIT_EPSILON
from ._convert import register_converter
from ._graph import ExportError, GraphBuilder, Tensor

__all__: list = []


def _classes(module: str, *names: str) -> list:
    try:
        mod = importlib.import_module(f"normlab.layers.{module}")
    except ImportError:
        return []
    return [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]


def _register(module: str, *names: str):
    classes = _classes(module, *names)

    def decorate(fn):
        return register_converter(*classes)(fn) if classes else fn

    return decorate


# ------------------------------------------------------------------ activations
@_register("activation_layers", "ReLU")
def _relu(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    name, t, m, s = layer.name, layer.threshold, layer.max_value, layer.negative_slope
    if t == 0 and s == 0:
        if m is None:
            return g.op("Relu", x, (), name)
        return g.op("Clip", x, (g.scalar("zero", 0.0), g.scalar(f"{name}/max_value", m)), name)
    zero = g.scalar("zero", 0.0)
    above = g.node("Greater", [x.name, g.scalar(f"{name}/threshold", t)], f"{name}/above")
    y = g.node("Where", [above, x.name, zero], f"{name}/thresholded")
    if m is not None:
        y = g.node("Min", [y, g.scalar(f"{name}/max_value", m)], f"{name}/capped")
    if s:
        below = g.node("Relu", [g.node("Sub", [g.scalar(f"{name}/threshold", t), x.name], f"{name}/t_minus_x")],
                       f"{name}/below")
        y = g.node("Sub", [y, g.node("Mul", [below, g.scalar(f"{name}/negative_slope", s)], f"{name}/leak")],
                   f"{name}/leaky")
    return x._replace(name=y)


@_register("activation_layers", "LeakyReLU")
def _leaky_relu(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    return g.op("LeakyRelu", inputs[0], (), layer.name, alpha=float(layer.negative_slope))


@_register("activation_layers", "ELU")
def _elu(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    return g.op("Elu", inputs[0], (), layer.name, alpha=float(layer.alpha))


@_register("activation_layers", "PReLU")
def _prelu(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    slope = g.const(f"{layer.name}/alpha", g.physical_constant(x, layer.params["alpha"]))
    return g.op("PRelu", x, (slope,), layer.name)


@_register("activation_layers", "Softmax")
def _softmax(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    axes = sorted({x.axis(a) for a in ([layer.axis] if isinstance(layer.axis, int) else layer.axis)})
    name = layer.name
    if len(axes) == 1:
        return g.op("Softmax", x, (), name, axis=axes[0])
    # several axes at once: normlab's exp(x - max) / sum
    shifted = g.node("Sub", [x.name, g.reduce("ReduceMax", x.name, axes, f"{name}/max")], f"{name}/shifted")
    e = g.node("Exp", [shifted], f"{name}/exp")
    return x._replace(name=g.node("Div", [e, g.reduce("ReduceSum", e, axes, f"{name}/sum")], name))


@_register("core", "Identity")
def _identity(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    return inputs[0]


# --------------------------------------------------------------------- merging
def _variadic(op):
    def convert(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
        xs = [g.as_perm(x, inputs[0].perm) for x in inputs]
        return Tensor(g.node(op, [x.name for x in xs], layer.name), tuple(out_shape), xs[0].perm)

    return convert


_register("merging", "Maximum")(_variadic("Max"))
_register("merging", "Minimum")(_variadic("Min"))


def _unit(g: GraphBuilder, x: str, axis: int, name: str) -> str:
    s = g.reduce("ReduceSumSquare", x, [axis], f"{name}/sum_square")
    norm = g.node("Sqrt", [g.node("Max", [s, g.scalar("unit_norm_floor", _UNIT_EPSILON)], f"{name}/floored")],
                  f"{name}/norm")
    return g.node("Div", [x, norm], f"{name}/unit")


@_register("merging", "Dot")
def _dot(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    a, b = (g.logical(x) for x in inputs)
    ia, ib = layer._resolved([a.shape, b.shape])
    names = [a.name, b.name]
    if layer.normalize:
        names = [_unit(g, n, i, f"{layer.name}/input{k}") for k, (n, i) in enumerate(zip(names, (ia, ib)))]
    sa, sb, so = layer._subscripts(a.ndim, b.ndim, ia, ib)
    y = g.node("Einsum", names, f"{layer.name}/einsum" if len(so) == 1 else layer.name, equation=f"{sa},{sb}->{so}")
    if len(so) == 1:  # (batch,) -> (batch, 1), as normlab returns it
        y = g.node("Unsqueeze", [y, g.ints("axes_1", [1])], layer.name)
    return Tensor(y, tuple(out_shape), tuple(range(len(out_shape))))


# ------------------------------------------------------------------- reshaping
@_register("reshaping", "Permute")
def _permute(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    q = (0,) + tuple(layer.dims)  # logical out axis j = logical in axis q[j]
    return Tensor(x.name, tuple(out_shape), tuple(q.index(p) for p in x.perm))


@_register("reshaping", "RepeatVector")
def _repeat_vector(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    x = g.logical(inputs[0])
    col = g.node("Unsqueeze", [x.name, g.ints("axes_1", [1])], f"{layer.name}/unsqueezed")
    y = g.node("Expand", [col, g.ints(f"{layer.name}/repeats", [1, layer.n, 1])], layer.name)
    return Tensor(y, tuple(out_shape), (0, 1, 2))


@_register("reshaping_spatial", "Cropping1D", "Cropping2D", "Cropping3D")
def _cropping(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    axes = layer._axes()
    starts = [a for a, _ in layer.cropping]
    ends = [(x.shape[ax] - b) if x.shape[ax] is not None else (-b if b else np.iinfo(np.int64).max)
            for ax, (_, b) in zip(axes, layer.cropping)]
    args = [x.name, g.ints(f"{layer.name}/starts", starts), g.ints(f"{layer.name}/ends", ends),
            g.ints(f"{layer.name}/axes", [x.axis(a) for a in axes])]
    return Tensor(g.node("Slice", args, layer.name), tuple(out_shape), x.perm)


@_register("reshaping_spatial", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def _zero_padding(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    before, after = [0] * x.ndim, [0] * x.ndim
    for ax, (a, b) in zip(layer._axes(), layer.padding):
        before[x.axis(ax)], after[x.axis(ax)] = a, b
    pads = g.ints(f"{layer.name}/pads", before + after)
    return Tensor(g.node("Pad", [x.name, pads], layer.name, mode="constant"), tuple(out_shape), x.perm)


@_register("reshaping_spatial", "UpSampling1D", "UpSampling2D", "UpSampling3D")
def _upsampling(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    scales = [1.0] * x.ndim
    for ax, s in zip(layer._axes(), layer.size):
        scales[x.axis(ax)] = float(s)
    interpolation = getattr(layer, "interpolation", "nearest")
    if interpolation == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    elif interpolation == "bilinear":
        attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    else:
        raise ExportError(f"interpolation {interpolation!r} has no ONNX form here.")
    args = [x.name, "", g.const(f"{layer.name}/scales", np.asarray(scales, np.float32), np.float32)]
    return Tensor(g.node("Resize", args, layer.name, **attrs), tuple(out_shape), x.perm)
