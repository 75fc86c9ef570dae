"""Normalization layers (equations: :mod:`normlab.layers.normalization` and ``normalization_extra``).

=========================  ===========================================================================
normlab                    ONNX
=========================  ===========================================================================
BatchNormalization         ``BatchNormalization`` (inference form, the moving statistics) with the
                           feature axis on physical axis 1; several feature axes: ``(x - mean) s + beta``
                           with ``s = gamma / sqrt(var + eps)``; or folded into the layer before it
                           (``to_onnx(..., fold_batchnorm=True)``, :mod:`normlab.export._linear`)
LayerNormalization         ``LayerNormalization`` (opset 17+) over trailing axes; otherwise (older
                           opsets, other axes, ``rms_scaling=True``) its decomposition
RMSNormalization           ``RMSNormalization`` (opset 23+) over trailing axes; otherwise
                           ``x / sqrt(mean(x^2) + eps) * gamma``
GroupNormalization         reshaped to ``(N, groups, -1)`` (channels first), normalized over the last
                           axis, reshaped back, then ``* gamma + beta`` per channel; one group per
                           channel on spatial inputs: ``InstanceNormalization``
InstanceNormalization      ``InstanceNormalization`` (spatial inputs; else as GroupNormalization)
UnitNormalization          ``x * 1 / sqrt(max(sum(x^2), 1e-12))``
=========================  ===========================================================================

In a float64 graph every one of them is written as its decomposition: the
operators' ``epsilon`` attribute is a float32 (``GraphBuilder.epsilon_attributes``).

Decompositions compute the biased variance from centered values (two
passes), as normlab does, never ``E[x^2] - E[x]^2``. That is also why ONNX's
own ``GroupNormalization`` (opset 21) is not used: onnxruntime 1.32's CPU
kernel takes the variance as ``E[x^2] - E[x]^2`` in float32, and on inputs
whose mean is 10 times their standard deviation its outputs are off by
1.1e-5 of their range (8.7e-4 at 100 times), against 3.9e-7 (2.6e-6) for
the decomposition (float32, ``GroupNormalization(2)`` on ``(37, 4, 4, 8)``).
"""

from __future__ import annotations

import numpy as np

from ..kernels.unitnorm import EPSILON as _UNIT_EPSILON
from ..layers.normalization import BatchNormalization
from ..layers.normalization_extra import (GroupNormalization, InstanceNormalization, LayerNormalization,
                                          RMSNormalization)
from ..layers.unit_normalization import UnitNormalization
from ._convert import register_converter
from ._graph import GraphBuilder, Tensor

__all__: list = []


# -------------------------------------------------------------------- batch norm
@register_converter(BatchNormalization)
def _batchnorm(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    p, b = layer.params, layer.buffers
    gamma, beta = p.get("gamma"), p.get("beta")
    mean, var = b["moving_mean"], b["moving_variance"]
    name = layer.name
    axes = layer._feature_axes
    # ONNX's BatchNormalization would divide 0 by 0 where epsilon=0 meets a zero moving variance
    if len(axes) == 1 and g.epsilon_attributes and not (layer.epsilon == 0 and not np.all(var > 0)):
        x = g.channel_at_1(x, axes[0])
        c = mean.size
        args = [
            x.name,
            g.const(f"{name}/gamma", np.ones(c) if gamma is None else gamma),
            g.const(f"{name}/beta", np.zeros(c) if beta is None else beta),
            g.const(f"{name}/moving_mean", mean),
            g.const(f"{name}/moving_variance", var),
        ]
        return x._replace(name=g.node("BatchNormalization", args, name, epsilon=float(layer.epsilon)))
    # features on several axes, or float64: the centered affine form of normlab's inference kernel
    den = np.sqrt(var.astype(np.float64) + layer.epsilon)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (1.0 if gamma is None else gamma.astype(np.float64)) / den
    scale = np.where(den == 0, 0.0, scale)  # epsilon=0 and a zero moving variance: beta (kernels.batchnorm)
    shape = layer._bshape
    centered = g.node("Sub", [x.name, g.const(f"{name}/moving_mean", g.physical_constant(x, mean.reshape(shape)))],
                      f"{name}/centered")
    y = g.node("Mul", [centered, g.const(f"{name}/scale", g.physical_constant(x, scale.reshape(shape)))],
               name if beta is None else f"{name}/scaled")
    if beta is not None:
        y = g.node("Add", [y, g.const(f"{name}/beta", g.physical_constant(x, beta.reshape(shape)))], name)
    return x._replace(name=y)


# -------------------------------------------------------- per-sample statistics
def _trailing(x: Tensor, axes) -> bool:
    """True when the logical ``axes`` sit, in their order, on the last physical axes of ``x``."""
    k = len(axes)
    return [x.axis(a) for a in axes] == list(range(x.ndim - k, x.ndim))


def _affine(g: GraphBuilder, layer, x: Tensor, y: str, name: str) -> str:
    """``y * gamma + beta`` with the layer's parameters (broadcast-shaped over its axes)."""
    gamma, beta = layer._b("gamma"), layer._b("beta")
    if gamma is not None:
        y = g.node("Mul", [y, g.const(f"{name}/gamma", g.physical_constant(x, gamma))],
                   name if beta is None else f"{name}/scaled")
    if beta is not None:
        y = g.node("Add", [y, g.const(f"{name}/beta", g.physical_constant(x, beta))], name)
    return y


def _moments(g: GraphBuilder, x: str, axes, eps: float, name: str, centered: bool = True):
    """``(x - mean, sqrt(var + eps))`` over physical ``axes`` (``(x, sqrt(mean(x^2) + eps))`` uncentered)."""
    d = x
    if centered:
        mean = g.reduce("ReduceMean", x, axes, f"{name}/mean")
        d = g.node("Sub", [x, mean], f"{name}/centered")
    square = g.node("Mul", [d, d], f"{name}/square")
    var = g.reduce("ReduceMean", square, axes, f"{name}/variance" if centered else f"{name}/mean_square")
    std = g.node("Sqrt", [g.node("Add", [var, g.scalar("epsilon", eps)], f"{name}/var_eps")], f"{name}/std")
    return d, std


def _trailing_parameter(g: GraphBuilder, x: Tensor, layer, key: str, k: int, name: str):
    """``params[key]`` (ones for gamma if absent) shaped as ``x``'s last ``k`` physical axes; None for no beta."""
    value = layer._b(key)
    if value is None:
        if key == "beta":
            return None
        value = np.ones(layer._bshape)
    arr = g.physical_constant(x, value)
    return g.const(f"{name}/{key}", arr.reshape(arr.shape[x.ndim - k:]))


@register_converter(LayerNormalization)
def _layernorm(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    axes, name, eps = layer._checked_axes, layer.name, float(layer.epsilon)
    k = len(axes)
    op_fits = (not layer.rms_scaling and g.opset >= 17 and g.epsilon_attributes
               and axes == tuple(range(x.ndim - k, x.ndim)))
    if op_fits:
        if not _trailing(x, axes):
            x = g.logical(x)
        args = [x.name, _trailing_parameter(g, x, layer, "gamma", k, name)]
        beta = _trailing_parameter(g, x, layer, "beta", k, name)
        args += [beta] if beta is not None else []
        return x._replace(name=g.node("LayerNormalization", args, name, axis=x.ndim - k, epsilon=eps,
                                      stash_type=g.stash_type))
    paxes = [x.axis(a) for a in axes]
    d, std = _moments(g, x.name, paxes, eps, name)
    # rms_scaling (Keras 3): the uncentered input over the centered standard deviation, no beta
    xhat = g.node("Div", [x.name if layer.rms_scaling else d, std], f"{name}/normalized")
    return x._replace(name=_affine(g, layer, x, xhat, name))


@register_converter(RMSNormalization)
def _rmsnorm(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    axes, name, eps = layer._checked_axes, layer.name, float(layer.epsilon)
    k = len(axes)
    if g.opset >= 23 and g.epsilon_attributes and axes == tuple(range(x.ndim - k, x.ndim)):
        if not _trailing(x, axes):
            x = g.logical(x)
        scale = _trailing_parameter(g, x, layer, "gamma", k, name)
        return x._replace(name=g.node("RMSNormalization", [x.name, scale], name, axis=x.ndim - k, epsilon=eps,
                                      stash_type=g.stash_type))
    _, rms = _moments(g, x.name, [x.axis(a) for a in axes], eps, name, centered=False)
    xhat = g.node("Div", [x.name, rms], f"{name}/normalized")
    return x._replace(name=_affine(g, layer, x, xhat, name))


@register_converter(GroupNormalization, InstanceNormalization)
def _groupnorm(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    (axis,) = layer._checked_axes
    name, eps, groups = layer.name, float(layer.epsilon), int(layer._groups)
    x = g.channel_at_1(x, axis)
    c = x.shape[axis]
    gamma, beta = layer.params.get("gamma"), layer.params.get("beta")
    if x.ndim >= 3 and groups == c and g.epsilon_attributes:
        args = [x.name, g.const(f"{name}/gamma", np.ones(c) if gamma is None else gamma),
                g.const(f"{name}/beta", np.zeros(c) if beta is None else beta)]
        return x._replace(name=g.node("InstanceNormalization", args, name, epsilon=eps))
    # (N, C, ...) -> (N, groups, C / groups * ...): each group's values are contiguous with channels first
    grouped = g.node("Reshape", [x.name, g.ints(f"{name}/grouped_shape", [0, groups, -1])], f"{name}/grouped")
    d, std = _moments(g, grouped, [2], eps, name)
    xhat = g.node("Div", [d, std], f"{name}/normalized_groups")
    shape = g.node("Shape", [x.name], f"{name}/shape")
    y = g.node("Reshape", [xhat, shape], f"{name}/normalized")
    per_channel = (c,) + (1,) * (x.ndim - 2)  # physical (C, 1, ...): the channels are on axis 1
    if gamma is not None:
        y = g.node("Mul", [y, g.const(f"{name}/gamma", gamma.reshape(per_channel))],
                   name if beta is None else f"{name}/scaled")
    if beta is not None:
        y = g.node("Add", [y, g.const(f"{name}/beta", beta.reshape(per_channel))], name)
    return x._replace(name=y)


@register_converter(UnitNormalization)
def _unitnorm(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    name = layer.name
    s = g.reduce("ReduceSumSquare", x.name, [x.axis(a) for a in layer._axes], f"{name}/sum_square")
    floored = g.node("Max", [s, g.scalar("unit_norm_floor", _UNIT_EPSILON)], f"{name}/floored")
    inv = g.node("Reciprocal", [g.node("Sqrt", [floored], f"{name}/norm")], f"{name}/inv_norm")
    return x._replace(name=g.node("Mul", [x.name, inv], name))
