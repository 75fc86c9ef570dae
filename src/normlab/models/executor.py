"""The training pass of every model: one executor over a graph of layers.

A model describes itself as a *program*: a list of ``(layer, inputs)`` in
execution order, where ``inputs`` index a table of values (0 is the model's
input; node ``i`` writes value ``i + 1``). A :class:`~normlab.Sequential`
model is a chain, a functional :class:`~normlab.Model` a directed acyclic
graph; both run here, the same way.

When a model is compiled, :class:`Executor` rewrites the program once
(``compile`` time, never per step): a :class:`~normlab.layers.BatchNormalization`
whose only consumer is an :class:`~normlab.layers.Activation` becomes one
fused node (:class:`~normlab.layers.fused.BatchNormActivation`), and a
softmax output trained with sparse cross-entropy on integer labels takes
one kernel for bias, softmax, loss and gradient (``Dense._train_forward_sparse_ce``).
The user's ``model.layers`` are untouched: the rewrite is an execution
detail that ``summary``, ``get_config``, saving and the diagnostics never see.

Speed comes from the layers themselves: in a training step each layer runs
its ``_train_forward`` / ``_train_backward``, which may write into
workspaces it keeps per input shape (valid until its next training pass),
and inputs are checked once by the model, not by every layer. The output
node runs the layer's ordinary ``call``, so the array a step returns is the
caller's own.

Backward walks the program in reverse and **sums** the gradients that reach
a value feeding several nodes (the multivariate chain rule). The model's
input needs no gradient, so a node reading only it skips its input gradient
(``need_dx=False``).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..layers.base import Layer
from ..layers.core import Activation
from ..layers.fused import BatchNormActivation
from ..layers.normalization import BatchNormalization
from ._dense_bn_node import DenseBatchNormActivation, fusable

__all__ = ["Executor", "next_stamp"]

_stamps = itertools.count(1)


def next_stamp() -> float:
    """A number no earlier training step used (the layers' undo records are tagged with it)."""
    return float(next(_stamps))


class _Node:
    __slots__ = ("layer", "inputs", "out", "need_dx", "multi")

    def __init__(self, layer, inputs: tuple, out: int):
        self.layer = layer
        self.inputs = inputs
        self.out = out
        self.need_dx = any(i != 0 for i in inputs)
        self.multi = bool(getattr(layer, "multi_input", False))


class Executor:
    """A model's training program after the compile-time rewrite.

    Parameters
    ----------
    program : list of (Layer, tuple of int)
        The model's layers in execution order with the value indices they read.
    output : int
        The value index of the model's output.
    fuse : bool, default True
        Apply the rewrite (False runs every layer on its own: the tests compare
        the two, which must agree bit for bit).
    """

    def __init__(self, program, output: int, *, fuse: bool = True):
        consumers: dict[int, int] = {}
        for _, inputs in program:
            for i in inputs:
                consumers[i] = consumers.get(i, 0) + 1
        # position in the order -> node; a fused pair runs where its activation ran
        # (everything the batch norm reads exists by then, and nothing reads the pair earlier)
        placed: dict[int, _Node] = {}
        fused_into: set[int] = set()
        for k, (layer, inputs) in enumerate(program):
            if k in fused_into:
                continue
            j = self._fusable_pair(program, k, consumers, output) if fuse else None
            if j is not None:
                fused_into.add(j)
                placed[j] = _Node(self._fused_pair(layer, program[j][0]), tuple(inputs), j + 1)
            else:
                placed[k] = _Node(layer, tuple(inputs), k + 1)
        order = [placed[k] for k in sorted(placed)]
        if fuse:
            order = self._with_dense_pairs(order, consumers)
        self.nodes: list[_Node] = order
        self.output = output
        self.n_values = len(program) + 1
        self._values: list = [None] * self.n_values
        self._grads: list = [None] * self.n_values
        self.output_node = next(n for n in order if n.out == output)
        # a chain (each node reads the one before it, the last is the output): the passes
        # need no table of values, which saves a few lookups per node in every step
        self._chain = all(not n.multi and n.inputs == ((order[k - 1].out,) if k else (0,))
                          for k, n in enumerate(order)) and order[-1] is self.output_node
        #: the layers whose training pass changes state a failed step must give back
        self.stateful: list[Layer] = []
        seen = set()
        for layer, _ in program:
            if id(layer) not in seen and type(layer)._begin_step is not Layer._begin_step:
                seen.add(id(layer))
                self.stateful.append(layer)

    @staticmethod
    def _with_dense_pairs(order, consumers):
        """``order`` with each bias-free linear Dense and the batch norm + activation pair it alone feeds as one node.

        (:class:`~normlab.models._dense_bn_node.DenseBatchNormActivation`: the same kernels, less Python.)
        """
        out = []
        for node in order:
            prev = out[-1] if out else None
            if prev is not None and not node.multi and not prev.multi and node.inputs == (prev.out,) \
                    and consumers.get(prev.out) == 1 and fusable(prev.layer, node.layer):
                out[-1] = _Node(DenseBatchNormActivation(prev.layer, node.layer), prev.inputs, node.out)
            else:
                out.append(node)
        return out

    @staticmethod
    def _fused_pair(bn, act):
        """The fused node of a batch norm and its activation (synchronized on several ranks: its own pair)."""
        if getattr(bn, "_sync", None) is None:
            return BatchNormActivation(bn, act)
        from ..distributed._sync_fused import SyncBatchNormActivation

        return SyncBatchNormActivation(bn, act)

    @staticmethod
    def _fusable_pair(program, k, consumers, output):
        """Index of the Activation fused with the BatchNormalization at ``k``, or None."""
        layer, _ = program[k]
        out = k + 1
        if type(layer) is not BatchNormalization or consumers.get(out) != 1 or out == output:
            return None
        for j in range(k + 1, len(program)):
            cand, inputs = program[j]
            if out in inputs:
                if type(cand) is Activation and tuple(inputs) == (out,) and j + 1 != output:
                    return j
                return None
        return None

    # ------------------------------------------------------------- forward
    def forward(self, x: np.ndarray) -> np.ndarray:
        """The training forward pass; returns the output (the caller's own array)."""
        arg = self.forward_up_to_output(x)
        out = self.output_node.layer.call(arg, True)
        # a layer that passes its input through (linear, reshapes) hands back a
        # workspace, or a view of one: the caller gets its own copy then
        if out.base is not None or any(out is a for a in (arg if self.output_node.multi else (arg,))):
            out = out.copy()
        return out

    def forward_up_to_output(self, x: np.ndarray):
        """The training forward pass of every node but the output node; returns the output node's input(s)."""
        nodes = self.nodes
        if self._chain:
            for k in range(len(nodes) - 1):
                x = nodes[k].layer._train_forward(x)
            return x
        values = self._values
        values[0] = x
        last = self.output_node
        try:
            for node in nodes:
                ins = node.inputs
                arg = [values[i] for i in ins] if node.multi else values[ins[0]]
                if node is last:
                    return arg
                values[node.out] = node.layer._train_forward(arg)
            raise RuntimeError("the output node was not found")  # pragma: no cover
        finally:
            values[0] = None  # the batch is the caller's: keep no reference to it

    # ------------------------------------------------------------ backward
    def backward(self, grad: np.ndarray, from_logits: bool) -> None:
        """Back-propagate ``grad`` (dL/d output, or dL/d logits of the output layer) into every layer's ``grads``."""
        last = self.output_node
        if self._chain:
            nodes = self.nodes
            g = last.layer._train_backward_from_logits(grad, last.need_dx) if from_logits else \
                last.layer._train_backward(grad, last.need_dx)
            for k in range(len(nodes) - 2, -1, -1):
                node = nodes[k]
                g = node.layer._train_backward(g, node.need_dx)
            return
        grads = self._grads
        grads[self.output] = grad
        try:
            for node in reversed(self.nodes):
                g = grads[node.out]
                if g is None:
                    continue  # a branch that does not reach the output
                grads[node.out] = None
                if from_logits and node is last:
                    dx = node.layer._train_backward_from_logits(g, node.need_dx)
                else:
                    dx = node.layer._train_backward(g, node.need_dx)
                if not node.need_dx:
                    continue
                # summed over consumers, into a new array: d may be a workspace or a cache
                if node.multi:
                    for i, d in zip(node.inputs, dx):
                        if i:
                            prev = grads[i]
                            grads[i] = d if prev is None else prev + d
                else:
                    i = node.inputs[0]
                    prev = grads[i]
                    grads[i] = dx if prev is None else prev + dx
        except BaseException:
            for i in range(self.n_values):
                grads[i] = None
            raise
