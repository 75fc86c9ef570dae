"""normlab's activations as ONNX operators (the formulas: :mod:`normlab.kernels.activations`).

==============  ==================================================================
normlab         ONNX
==============  ==================================================================
linear, None    nothing
sigmoid         Sigmoid
tanh            Tanh
relu            Relu
leaky_relu      LeakyRelu(alpha=0.2)  (normlab's and Keras's slope)
elu             Elu(alpha=1)
selu            Selu with normlab's alpha and lambda
gelu            Gelu (opset 20+), else ``0.5 x (1 + erf(x / sqrt 2))`` (exact, erf form)
softmax         Softmax over normlab's last axis (wherever the layout put it)
==============  ==================================================================

Names normlab may add later map to the Keras 3 definitions below; each is
checked against normlab's own kernel by the export tests once it exists.
"""

from __future__ import annotations

import math

from ..kernels import activations as K
from ._graph import ExportError, GraphBuilder, Tensor

__all__ = ["activation", "NAMES"]


def _unary(op, **attrs):
    def emit(g: GraphBuilder, t: Tensor, base: str) -> Tensor:
        return g.op(op, t, (), base, **attrs)

    return emit


def _gelu(g: GraphBuilder, t: Tensor, base: str) -> Tensor:
    if g.opset >= 20:
        return g.op("Gelu", t, (), base)
    # 0.5 x (1 + erf(x / sqrt 2)), the order of normlab's kernel
    scaled = g.node("Mul", [t.name, g.scalar("inv_sqrt2", 1.0 / math.sqrt(2.0))], f"{base}/scaled")
    erf = g.node("Erf", [scaled], f"{base}/erf")
    one_plus = g.node("Add", [erf, g.scalar("one", 1.0)], f"{base}/one_plus")
    half_x = g.node("Mul", [t.name, g.scalar("half", 0.5)], f"{base}/half_x")
    return t._replace(name=g.node("Mul", [half_x, one_plus], base))


def _last_axis(op):
    def emit(g: GraphBuilder, t: Tensor, base: str) -> Tensor:
        return g.op(op, t, (), base, axis=t.axis(-1))

    return emit


def _swish(g: GraphBuilder, t: Tensor, base: str) -> Tensor:
    sig = g.node("Sigmoid", [t.name], f"{base}/sigmoid")
    return t._replace(name=g.node("Mul", [t.name, sig], base))


def _relu6(g: GraphBuilder, t: Tensor, base: str) -> Tensor:
    return g.op("Clip", t, (g.scalar("zero", 0.0), g.scalar("six", 6.0)), base)


def _hard_silu(g: GraphBuilder, t: Tensor, base: str) -> Tensor:
    hs = g.node("HardSigmoid", [t.name], f"{base}/hard_sigmoid", alpha=1.0 / 6.0, beta=0.5)
    return t._replace(name=g.node("Mul", [t.name, hs], base))


def _mish(g: GraphBuilder, t: Tensor, base: str) -> Tensor:
    if g.opset >= 18:
        return g.op("Mish", t, (), base)
    sp = g.node("Softplus", [t.name], f"{base}/softplus")
    th = g.node("Tanh", [sp], f"{base}/tanh")
    return t._replace(name=g.node("Mul", [t.name, th], base))


_EMITTERS = {
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "relu": _unary("Relu"),
    "leaky_relu": _unary("LeakyRelu", alpha=float(K.LEAKY_RELU_SLOPE)),
    "elu": _unary("Elu", alpha=1.0),
    "selu": _unary("Selu", alpha=float(K.SELU_ALPHA), gamma=float(K.SELU_SCALE)),
    "gelu": _gelu,
    "softmax": _last_axis("Softmax"),
    # Keras 3 definitions, for names normlab does not have (yet)
    "log_softmax": _last_axis("LogSoftmax"),
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "exponential": _unary("Exp"),
    "swish": _swish,
    "silu": _swish,
    "relu6": _relu6,
    "hard_sigmoid": _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
    "mish": _mish,
}

#: the activation names this module can write
NAMES = ("linear",) + tuple(sorted(_EMITTERS))


def activation(g: GraphBuilder, t: Tensor, name: str | None, base: str) -> Tensor:
    """``name`` applied to ``t`` (any layout); an :class:`ExportError` for a name with no ONNX form."""
    if name in (None, "linear"):
        return t
    emit = _EMITTERS.get(name) if isinstance(name, str) else None
    if emit is None:
        raise ExportError(f"activation {name!r} has no ONNX form; exportable activations: "
                          f"{', '.join(NAMES)}.")
    return emit(g, t, base)
