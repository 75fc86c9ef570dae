"""The graph under construction: tensors with a layout, constants, nodes, and the opset-dependent forms.

A :class:`Tensor` is a value of the normlab model as ONNX holds it. normlab's
tensors are channels-last (``(N, H, W, C)``, Keras's layout); ONNX's
convolution and pooling operators take channels first (``(N, C, H, W)``).
Rather than transposing in and out around every convolution, each tensor
records its physical layout as a permutation of normlab's (logical) axes::

    physical = numpy.transpose(logical, perm)        perm == identity: normlab's own layout

A convolution leaves its output channels-first (``perm = (0, 3, 1, 2)``);
elementwise layers, batch normalization (channels on physical axis 1, as
ONNX's ``BatchNormalization`` wants them) and the next convolution take it
as it is, and a ``Transpose`` is inserted only where a layer needs another
layout (``Flatten`` flattens in normlab's order, ``Dense`` multiplies the
last axis). A Conv-BN-ReLU-Pool stack therefore has two transposes in all,
one at the input and one before ``Flatten``.

Per-feature constants (biases, batch-norm statistics, ``Rescaling``'s
arrays) are given in the logical layout and permuted with the tensor they
meet (:meth:`GraphBuilder.physical_constant`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["ExportError", "GraphBuilder", "Tensor", "MIN_OPSET", "channels_first_perm", "identity"]

#: Softmax over one axis (not the flattened trailing block), ReduceSum/Squeeze/Unsqueeze with axes as inputs
MIN_OPSET = 13


class ExportError(ValueError):
    """A model, or one of its layers, that cannot be exported (the message names the layer and why)."""


class Tensor(NamedTuple):
    """One value of the model: its ONNX name, normlab's shape for it and its physical layout."""

    name: str
    shape: tuple  # logical (normlab) shape; None for unknown sizes (the batch axis)
    perm: tuple  # physical = transpose(logical, perm)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def axis(self, logical: int) -> int:
        """The physical position of a logical axis (negative values count from the end)."""
        return self.perm.index(logical % self.ndim)


def identity(ndim: int) -> tuple:
    return tuple(range(ndim))


def channels_first_perm(ndim: int, channel_axis: int) -> tuple:
    """Batch, then ``channel_axis``, then the other axes in their order: the layout ONNX's conv operators take."""
    channel_axis %= ndim
    return (0, channel_axis) + tuple(a for a in range(1, ndim) if a != channel_axis)


class GraphBuilder:
    """Collects nodes and initializers for one ONNX graph (see the module docstring).

    Parameters
    ----------
    opset : int
        The default domain's opset the graph is written for.
    dtype : numpy dtype
        float32 or float64: the element type of the input, the output and every float constant.
    reserved : names already taken (the graph's input and output).
    """

    def __init__(self, opset: int, dtype, reserved: Sequence[str] = ()):
        self.opset = int(opset)
        self.dtype = np.dtype(dtype)
        self.nodes: list = []
        self.initializers: list = []
        self._taken = set(reserved)
        self._consts: dict = {}  # (dtype, shape, bytes) -> name: one initializer per distinct value
        self._transposed: dict = {}  # (name, perm) -> name: one Transpose per tensor and layout
        #: id(linear layer) -> the BatchNormalization folded into it (set by the exporter)
        self.folds: dict = {}

    @property
    def epsilon_attributes(self) -> bool:
        """True when an operator's ``epsilon`` attribute (a float32) is exact enough for the graph's dtype.

        In a float64 graph the normalization operators would add float32's
        ``1e-3`` (``1.00000005e-3``), off by 1e-10 of the output; there the
        converters write their decompositions, with float64 constants.
        """
        return self.dtype.itemsize <= 4

    @property
    def stash_type(self) -> int:
        """The statistics' type for the fused normalization operators: the graph's (float32 is their default)."""
        from onnx import helper

        return int(helper.np_dtype_to_tensor_dtype(self.dtype))

    # ---------------------------------------------------------------- names
    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name

    # ------------------------------------------------------------ constants
    def const(self, base: str, value, dtype=None) -> str:
        """An initializer holding ``value`` (in the graph's float dtype unless ``dtype`` is given).

        Raises :class:`ExportError` for a float constant that is NaN or inf in
        the graph's type: a weight beyond float32's range exported with
        ``dtype="float32"``, or a folded value that overflowed (the exporter
        refuses non-finite weights before any conversion).
        """
        from onnx import numpy_helper

        source = np.asarray(value)
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, by name
            arr = np.ascontiguousarray(np.asarray(source, dtype=dtype or self.dtype))
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            finite_before = source.dtype.kind in "biuf" and bool(np.isfinite(source).all())
            why = (f"finite values beyond the range of {arr.dtype} (largest magnitude "
                   f"{float(np.abs(source).max()):.3g})" if finite_before else "NaN or inf")
            raise ExportError(f"the constant {base!r} holds {why}; the graph would compute inf or NaN.")
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            name = self._consts[key] = self.unique(base)
            self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, base: str, values) -> str:
        return self.const(base, np.asarray(values, dtype=np.int64).reshape(-1), np.int64)

    def physical_constant(self, t: Tensor, value) -> np.ndarray:
        """``value``, broadcastable to ``t``'s logical shape, laid out as ``t`` is (full rank)."""
        arr = np.asarray(value)
        arr = arr.reshape((1,) * (t.ndim - arr.ndim) + arr.shape)
        return np.transpose(arr, t.perm)

    # ---------------------------------------------------------------- nodes
    def node(self, op: str, inputs: Sequence[str], base: str, *, outputs: int = 1, domain: str = "", **attrs):
        """Append one node; return its output name (a list of names when ``outputs > 1``)."""
        from onnx import helper

        names = [self.unique(base if outputs == 1 else f"{base}_{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=self.unique(f"{base}/{op}"),
                                           domain=domain or None, **attrs))
        return names[0] if outputs == 1 else names

    def op(self, op: str, t: Tensor, extra: Sequence[str], base: str, **attrs) -> Tensor:
        """An operator that keeps ``t``'s shape and layout (elementwise, per-channel)."""
        return t._replace(name=self.node(op, [t.name, *extra], base, **attrs))

    # --------------------------------------------------------------- layout
    def as_perm(self, t: Tensor, perm: tuple) -> Tensor:
        """``t`` in the physical layout ``perm`` (a ``Transpose`` when it is in another, made once)."""
        perm = tuple(int(p) for p in perm)
        if t.perm == perm:
            return t
        key = (t.name, perm)
        name = self._transposed.get(key)
        if name is None:
            rel = [t.perm.index(a) for a in perm]  # output axis i = current physical axis rel[i]
            name = self._transposed[key] = self.node("Transpose", [t.name], f"{t.name}/transposed", perm=rel)
        return Tensor(name, t.shape, perm)

    def logical(self, t: Tensor) -> Tensor:
        """``t`` in normlab's own layout."""
        return self.as_perm(t, identity(t.ndim))

    def channel_at_1(self, t: Tensor, channel_axis: int) -> Tensor:
        """``t`` with the logical ``channel_axis`` on physical axis 1, keeping its layout if it already is."""
        channel_axis %= t.ndim
        if t.perm[1] == channel_axis:
            return t
        perm = [a for a in t.perm if a != channel_axis]
        perm.insert(1, channel_axis)
        return self.as_perm(t, tuple(perm))

    # ---------------------------------------------- opset-dependent forms
    def reduce(self, op: str, x: str, axes: Sequence[int], base: str, keepdims: bool = True) -> str:
        """``Reduce*`` over physical ``axes``: the axes are an attribute before opset 18 (13 for ReduceSum)."""
        axes = sorted(int(a) for a in axes)
        as_input = self.opset >= (13 if op == "ReduceSum" else 18)
        if as_input:
            return self.node(op, [x, self.ints("axes", axes)], base, keepdims=int(keepdims))
        return self.node(op, [x], base, axes=axes, keepdims=int(keepdims))

    def scalar(self, base: str, value) -> str:
        return self.const(base, np.asarray(value, dtype=self.dtype).reshape(()))
