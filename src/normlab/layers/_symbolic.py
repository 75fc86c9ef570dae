"""Symbolic tensors: what ``normlab.Input`` returns and layers return when called on one.

A symbolic tensor only records its shape (batch axis ``None``), the layer
that produced it and that layer's inputs; calling layers on symbolic tensors
describes a graph, which :class:`normlab.Model` turns into a model. Nothing is
built or computed at that point.
"""

from __future__ import annotations


class SymbolicTensor:
    """A placeholder for a batch of arrays of ``shape`` (``shape[0]`` is ``None`` unless the Input fixed it)."""

    __slots__ = ("shape", "layer", "inputs", "name", "dtype")

    def __init__(self, shape: tuple, layer=None, inputs: tuple = (), name: str | None = None,
                 dtype: str | None = None):
        self.shape = tuple(shape)
        self.layer = layer
        self.inputs = tuple(inputs)
        self.name = name
        #: the dtype an Input declared ("float32" unless given); None for layer outputs (the layers decide)
        self.dtype = dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        src = f"from {self.layer.name!r}" if self.layer is not None else "input"
        return f"<SymbolicTensor shape={self.shape} {src}>"


def is_symbolic(x) -> bool:
    if isinstance(x, SymbolicTensor):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, SymbolicTensor) for t in x)


def symbolic_call(layer, x) -> SymbolicTensor:
    """Record ``layer(x)`` for symbolic ``x`` (one tensor, or a list for merge layers)."""
    multi = isinstance(x, (list, tuple))
    if multi and not getattr(layer, "multi_input", False):
        raise TypeError(f"Layer {layer.name!r} ({type(layer).__name__}) takes one input, got a list of {len(x)}.")
    if not multi and getattr(layer, "multi_input", False):
        raise TypeError(f"Layer {layer.name!r} ({type(layer).__name__}) takes a list of inputs.")
    inputs = tuple(x) if multi else (x,)
    in_shape = [t.shape for t in inputs] if multi else inputs[0].shape
    if not multi and len(in_shape) < layer.min_ndim:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) expects inputs of rank >= {layer.min_ndim} "
            f"(batch axis first), got shape {in_shape}."
        )
    out_shape = layer.compute_output_shape(in_shape)
    # the batch axis stays as the Input gave it (None unless a batch size was fixed there)
    batch = inputs[0].shape[0]
    return SymbolicTensor((batch,) + tuple(out_shape[1:]), layer, inputs)
