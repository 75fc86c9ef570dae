"""Where the gradient allreduce of a synchronized step is cut into parts (:class:`~normlab.distributed._comm.GradientBuckets`).

A part can start summing once every gradient in it is final: at a
synchronized batch norm's backward meeting, the gradients of every layer
above it are.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bucket_plan", "all_layers"]


def bucket_plan(model, flat: np.ndarray, min_size: int):
    """``(points, last)`` of :class:`GradientBuckets` for ``model``, or None where parts cannot start early.

    The gradients of the layers above a synchronized batch norm's node are
    final at its backward sums: at each such node (from the output down)
    the part of the buffer from the first gradient above it to where the
    previous part began, started if it holds at least ``min_size`` values
    (else summed with the next part); ``last``: the rest of the buffer.
    """
    from ..layers.base import Layer
    from ..layers.normalization import BatchNormalization

    ex = model._executor
    if ex is None or not getattr(ex, "_chain", False):
        return None
    node_of = {}
    for k, node in enumerate(ex.nodes):
        # the executor's fused nodes (a batch norm + activation pair, a Dense feeding such a pair) are not
        # layers: the layers they run are their members, each at the node's place in the chain
        pending, seen = [node.layer], set()
        while pending:
            member = pending.pop()
            if id(member) in seen:
                continue
            if id(member) in node_of:
                # a layer run by two nodes (models refuse shared layers today) adds to its gradients twice
                return None
            seen.add(id(member))
            node_of[id(member)] = k
            if not isinstance(member, Layer):
                pending += [v for v in vars(member).values() if isinstance(v, Layer) or hasattr(v, "_train_backward")]
    synced = [layer for layer in all_layers(model) if isinstance(layer, BatchNormalization)
              and layer._sync is not None]
    # a synchronized batch norm inside another node (a nested model) would meet the others at a point
    # this plan does not know of: no parts then
    if not synced or any(id(layer) not in node_of for layer in synced):
        return None
    base, item = flat.__array_interface__["data"][0], flat.itemsize
    spans = []
    for layer, key in model._refs:
        g = layer.grads[key]
        k = node_of.get(id(layer))
        off = g.__array_interface__["data"][0] - base
        if k is None or g.dtype != flat.dtype or not g.flags.c_contiguous or off % item \
                or not np.shares_memory(g, flat):
            return None
        spans.append((off // item, off // item + g.size, k))
    spans.sort()
    at, node = 0, -1
    for lo, hi, k in spans:  # the gradients tile the buffer, in the chain's order
        if lo != at or k < node:
            return None
        at, node = hi, k
    if at != flat.size:
        return None
    points, end = [], flat.size
    for k in sorted({node_of[id(layer)] for layer in synced}, reverse=True):
        start = min((lo for lo, _, kk in spans if kk > k), default=end)
        start = min(start, end)
        if end - start >= min_size:
            points.append((start, end))
            end = start
        else:
            points.append(None)
    return points, (0, end)


def all_layers(model):
    """Every layer of ``model``, nested models' layers included."""
    from ..models._checks import _layer_tree

    return _layer_tree(model.layers)
