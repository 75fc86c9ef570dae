"""The table of layer converters, and how a user adds one for a layer of their own.

A converter is ``fn(g, layer, inputs, out_shape) -> Tensor``: ``g`` the
:class:`~normlab.export._graph.GraphBuilder`, ``inputs`` the list of
:class:`~normlab.export._graph.Tensor` the layer is called on (one for most
layers), ``out_shape`` normlab's output shape for them (batch axis ``None``).
It appends nodes to ``g`` and returns the output tensor, in any layout it
likes (``Tensor.perm``). A converter may raise
:class:`~normlab.export.ExportError` for a configuration it cannot write;
the exporter adds the layer's name to the message.

Lookup is by exact class: a subclass of a normlab layer may compute
something else, so it needs its own entry (``register_converter``).
"""

from __future__ import annotations

from typing import Callable

__all__ = ["register_converter", "converter_for", "CONVERTERS"]

CONVERTERS: dict[type, Callable] = {}


def register_converter(*classes: type):
    """Decorator: ``fn`` converts layers of exactly these classes (it replaces an earlier entry).

    Example, for a layer computing ``x * 2``::

        @normlab.export.register_converter(Double)
        def _double(g, layer, inputs, out_shape):
            (x,) = inputs
            return g.op("Mul", x, [g.scalar("two", 2.0)], layer.name)
    """
    if not classes or not all(isinstance(c, type) for c in classes):
        raise TypeError(f"register_converter: expected layer classes, got {classes!r}.")

    def decorate(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"register_converter: expected a function, got {fn!r}.")
        for c in classes:
            CONVERTERS[c] = fn
        return fn

    return decorate


def converter_for(layer) -> Callable | None:
    return CONVERTERS.get(type(layer))
