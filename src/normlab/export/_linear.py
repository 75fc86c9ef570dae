"""Linear layers: Dense, NoisyDense, Conv1D/Conv2D and WeightNormalization, with an optional folded batch norm.

Each becomes ``activation(linear(x) + bias)``:

* Dense on ``(N, n_in)``: one ``Gemm``; on higher ranks ``MatMul`` then ``Add``
  (over normlab's last axis, so the input is put back in normlab's layout);
* NoisyDense: the Dense of its mean weights ``mu`` (inference draws no noise);
* NormPropDense: ``x @ (W / ||W||)`` times ``gamma`` plus ``beta``, then (relu) the
  fixed centring and scaling ``(relu(z) - sqrt(1/(2 pi))) / sqrt((1 - 1/pi) / 2)``, in normlab's order;
* WeightNormalization: the wrapped layer with its effective kernel
  ``g * v / ||v||``, computed here as normlab's forward pass computes it;
* a convolution: ONNX ``Conv`` on the channels-first layout, the kernel
  ``(k..., c_in / groups, filters)`` transposed to ``(filters, c_in / groups, k...)``,
  normlab's ``"same"`` (TF's: the odd pad at the end), ``"causal"`` or
  ``"valid"`` padding written out as explicit pads (``auto_pad="SAME_UPPER"``
  where a spatial size is unknown). ``groups`` and ``data_format`` are read
  where the layer has them (channels last otherwise). The output stays
  channels first (see :mod:`normlab.export._graph`).

With ``fold_batchnorm=True`` a batch norm that is the only reader of such a
layer's output, with no activation in between and over its output
channels, is folded into it (:func:`normlab.kernels.conv.fold_conv_bn_params`,
in float64)::

    BN(x W + b) = x (W s) + ((b - mean) s + beta),   s = gamma / sqrt(var + eps)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels import normprop as KN
from ..kernels import weightnorm as KW
from ..kernels.conv import axis_padding, fold_conv_bn_params
from ..layers.conv import Conv1D, Conv2D
from ..layers.core import Dense
from ..layers.normprop import NormPropDense
from ..layers.regularization import NoisyDense
from ..layers.wrappers import WeightNormalization
from ._activations import activation
from ._convert import register_converter
from ._graph import ExportError, GraphBuilder, Tensor, channels_first_perm

__all__ = ["LINEAR_LAYERS", "LinearSpec", "linear_spec", "output_channel_axis"]

#: the layers a batch norm may be folded into
LINEAR_LAYERS = (Dense, NoisyDense, Conv1D, Conv2D, WeightNormalization)


class LinearSpec(NamedTuple):
    """What an affine layer computes at inference."""

    kernel: np.ndarray  # normlab's layout: (n_in, units) or (k..., c_in / groups, filters)
    bias: np.ndarray | None
    activation: str | None
    conv: object | None  # the convolution layer whose geometry applies (None: dense)


def _is_conv(layer) -> bool:
    return isinstance(layer, (Conv1D, Conv2D))


def linear_spec(layer) -> LinearSpec:
    """The kernel, bias and activation of a built Dense, NoisyDense, convolution or WeightNormalization."""
    if isinstance(layer, WeightNormalization):
        inner = layer.layer
        kernel = KW.weight_norm_forward(layer.params["v"], layer.params["g"])[0]  # as layer.call computes it
        return LinearSpec(kernel, layer.params.get("bias"), inner.activation, inner if _is_conv(inner) else None)
    if isinstance(layer, NoisyDense):
        return LinearSpec(layer.params["mu_kernel"], layer.params.get("mu_bias"), layer.activation, None)
    return LinearSpec(layer.params["kernel"], layer.params.get("bias"), layer.activation,
                      layer if _is_conv(layer) else None)


def _data_format(conv) -> str:
    return getattr(conv, "data_format", None) or "channels_last"


def output_channel_axis(layer, ndim: int) -> int:
    """The logical axis of a linear layer's output that indexes its units or filters."""
    spec_conv = layer.layer if isinstance(layer, WeightNormalization) else layer
    if _is_conv(spec_conv) and _data_format(spec_conv) == "channels_first":
        return 1
    return ndim - 1


def _folded(g: GraphBuilder, layer, spec: LinearSpec) -> LinearSpec:
    bn = g.folds.get(id(layer))
    if bn is None:
        return spec
    p, b = bn.params, bn.buffers
    kernel, bias = fold_conv_bn_params(spec.kernel, spec.bias, p.get("gamma"), p.get("beta"),
                                       b["moving_mean"], b["moving_variance"], bn.epsilon)
    return spec._replace(kernel=kernel, bias=bias)


def _dense(g: GraphBuilder, name: str, x: Tensor, spec: LinearSpec, out_shape) -> Tensor:
    x = g.logical(x)
    w = g.const(f"{name}/kernel", spec.kernel)
    if x.ndim == 2:
        inputs = [x.name, w] + ([g.const(f"{name}/bias", spec.bias)] if spec.bias is not None else [])
        return Tensor(g.node("Gemm", inputs, f"{name}/linear"), tuple(out_shape), x.perm)
    z = g.node("MatMul", [x.name, w], f"{name}/matmul")
    if spec.bias is not None:
        z = g.node("Add", [z, g.const(f"{name}/bias", spec.bias)], f"{name}/linear")
    return Tensor(z, tuple(out_shape), x.perm)


def _conv_pads(conv, spatial):
    """ONNX ``pads`` (all begins, then all ends), or None for ``auto_pad="SAME_UPPER"``."""
    padding = conv.padding
    k, s, d = conv.kernel_size, conv.strides, conv.dilation_rate
    if isinstance(padding, str):
        if padding == "same" and any(n is None for n in spatial):
            return None  # TF's "same": the extra pad at the end, as SAME_UPPER puts it
        pairs = [axis_padding(n if n is not None else 1, *a, padding) for n, a in zip(spatial, zip(k, s, d))]
    else:
        try:
            pairs = [(int(a), int(b)) for a, b in padding]
        except (TypeError, ValueError):
            raise ExportError(f"padding {padding!r} has no ONNX form.") from None
    return [p[0] for p in pairs] + [p[1] for p in pairs]


def _conv(g: GraphBuilder, name: str, x: Tensor, spec: LinearSpec, out_shape) -> Tensor:
    conv = spec.conv
    rank = conv.rank
    first = _data_format(conv) == "channels_first"
    if _data_format(conv) not in ("channels_last", "channels_first"):
        raise ExportError(f"data_format {conv.data_format!r} has no ONNX form.")
    perm = channels_first_perm(x.ndim, 1 if first else -1)
    x = g.as_perm(x, perm)
    spatial = tuple(x.shape[2:]) if first else tuple(x.shape[1:-1])
    kernel = np.transpose(spec.kernel, (rank + 1, rank) + tuple(range(rank)))  # (F, C / groups, k...)
    attrs = {
        "kernel_shape": list(conv.kernel_size),
        "strides": list(conv.strides),
        "dilations": list(conv.dilation_rate),
        "group": int(getattr(conv, "groups", 1) or 1),
    }
    pads = _conv_pads(conv, spatial)
    if pads is None:
        attrs["auto_pad"] = "SAME_UPPER"
    else:
        attrs["pads"] = pads
    inputs = [x.name, g.const(f"{name}/kernel", kernel)]
    if spec.bias is not None:
        inputs.append(g.const(f"{name}/bias", spec.bias))
    return Tensor(g.node("Conv", inputs, f"{name}/conv", **attrs), tuple(out_shape), perm)


@register_converter(*LINEAR_LAYERS)
def convert_linear(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    (x,) = inputs
    spec = _folded(g, layer, linear_spec(layer))
    emit = _conv if spec.conv is not None else _dense
    z = emit(g, layer.name, x, spec, out_shape)
    return activation(g, z, spec.activation, f"{layer.name}/{spec.activation}")


@register_converter(NormPropDense)
def convert_normprop(g: GraphBuilder, layer, inputs, out_shape) -> Tensor:
    x = g.logical(inputs[0])
    p, name = layer.params, layer.name
    kernel = p["kernel"]
    # w_hat as normlab.kernels.normprop.normprop_forward computes it
    acc = np.float64 if kernel.dtype.itemsize < 8 else None
    inv_norm = (1.0 / np.sqrt(np.sum(np.square(kernel), axis=0, keepdims=True, dtype=acc))).astype(kernel.dtype)
    u = g.node("MatMul", [x.name, g.const(f"{name}/w_hat", kernel * inv_norm)], f"{name}/matmul")
    z = g.node("Mul", [u, g.const(f"{name}/gamma", p["gamma"])], f"{name}/scaled")
    if "beta" in p:
        z = g.node("Add", [z, g.const(f"{name}/beta", p["beta"])], f"{name}/shifted")
    if layer.activation == "relu":
        z = g.node("Relu", [z], f"{name}/relu")
        z = g.node("Sub", [z, g.scalar("relu_mean", KN.RELU_MEAN)], f"{name}/centered")
        z = g.node("Mul", [z, g.scalar("inv_relu_std", 1.0 / KN.RELU_STD)], name)
    return Tensor(z, tuple(out_shape), x.perm)
