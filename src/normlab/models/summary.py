"""``model.summary()``: Keras 3's table of layers, shapes and parameter counts."""

from __future__ import annotations

import numbers
import textwrap

import numpy as np

from .._validation import Interval, NoneOk, validate_params

__all__ = ["print_summary", "optimizer_param_count"]


def print_summary(model, line_length: int | None = None, positions=None, print_fn=None) -> None:
    """Print ``model``'s layers, output shapes and parameter counts in Keras 3's layout.

    A table with the columns "Layer (type)", "Output Shape" and "Param #"
    (and "Connected to" for a functional model), drawn with the box
    characters Keras's table uses, then the totals with thousands
    separators and their memory: ``Total params: 34,826 (136.04 KB)``,
    ``Trainable params``, ``Non-trainable params`` (moving statistics and
    frozen layers) and, once the optimizer holds state, ``Optimizer
    params`` (its slots and its iteration and learning-rate variables,
    counted as Keras counts them; they are part of the total, as in
    Keras). ``print_fn`` receives the whole summary as one string
    (default: ``print``); ``line_length`` and ``positions`` are Keras's
    (the table's width and the columns' right edges as fractions).
    """
    owner = f"{type(model).__name__}.summary"
    if print_fn is None:
        print_fn = print
    if not callable(print_fn):
        raise TypeError(f"{owner}: 'print_fn' must be callable (like print), got {print_fn!r}.")
    graph = hasattr(model, "_nodes")
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph else [])
    validate_params(owner, {"line_length": [NoneOk(), Interval(numbers.Integral, 40, None)]},
                    {"line_length": line_length})
    length = line_length or (108 if graph else 88)
    positions = list(positions or ([0.3, 0.56, 0.74, 1.0] if graph else [0.45, 0.80, 1.0]))
    if len(positions) != len(header) or any(not 0 < p <= 1 for p in positions) or positions != sorted(positions):
        raise ValueError(f"{owner}: 'positions' must be {len(header)} increasing fractions in (0, 1], "
                         f"got {positions!r}.")
    edges = [int(p * length) for p in positions]
    widths = [b - a for a, b in zip([0] + edges[:-1], edges)]
    if min(widths) < 4:
        raise ValueError(f"{owner}: line_length {length} is too narrow for the summary.")
    rows = []
    inbound = _inbound_names(model) if graph else None
    for layer, shape in zip(model.layers, model._layer_output_shapes()):
        params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
        row = [f"{layer.name} ({getattr(layer, '_summary_type', type(layer).__name__)})", "?" if shape is None else str(tuple(shape)), params]
        if graph:
            row.append(",\n".join(inbound.get(id(layer), [])) or "-")
        rows.append(row)
    out = [f'Model: "{model.name}"', _box_table(header, rows, widths, right=(2,))]
    itemsize = np.dtype(model.dtype or np.float32).itemsize
    trainable = sum(p.size for l in model.layers for p in l.trainable_params.values())
    non_trainable = model.count_params() - trainable
    opt_count = optimizer_param_count(model)
    total = trainable + non_trainable + opt_count
    out.append(f" Total params: {total:,} ({_readable_size(total * itemsize)})")
    out.append(f" Trainable params: {trainable:,} ({_readable_size(trainable * itemsize)})")
    out.append(f" Non-trainable params: {non_trainable:,} ({_readable_size(non_trainable * itemsize)})")
    if opt_count:
        out.append(f" Optimizer params: {opt_count:,} ({_readable_size(opt_count * itemsize)})")
    print_fn("\n".join(out))


def _inbound_names(model) -> dict:
    """For a graph: each layer's inputs as Keras's "Connected to" names them (``dense[0][0]``)."""
    names = {}
    for t in getattr(model, "_nodes", []):
        names[id(t.layer)] = [("input_layer" if p.layer is None else p.layer.name) + "[0][0]" for p in t.inputs]
    return names


def optimizer_param_count(model) -> int:
    """The optimizer's variables as Keras counts them: 0 until it holds state."""
    opt = model.optimizer
    if opt is None or getattr(opt, "_binding", None) is None:
        return 0
    slots = sum(int(np.size(v)) for k, v in opt.get_state().items() if np.ndim(v) > 0)
    return slots + 2  # Keras's optimizer also holds its iteration count and learning rate as variables


def _readable_size(nbytes: float) -> str:
    """Keras's memory size: ``136.04 KB`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


def _box_table(header, rows, widths, right=()) -> str:
    """A table drawn as Keras's (rich's heavy-head box, a line between rows)."""
    inner = [w - 3 for w in widths]  # "│ " before a cell, " " after it; one border char is shared

    def cells(values, left, sep, end):
        # a value longer than its column wraps onto more lines, as rich wraps it; "\n" starts a line
        wrapped = [[part for line in v.split("\n") for part in (textwrap.wrap(line, w, break_on_hyphens=False) or [""])]
                   for v, w in zip(values, inner)]
        out = []
        for j in range(max(len(c) for c in wrapped)):
            parts = []
            for i, (c, w) in enumerate(zip(wrapped, inner)):
                v = c[j] if j < len(c) else ""
                parts.append(" " + (v.rjust(w) if i in right else v.ljust(w)) + " ")
            out.append(left + sep.join(parts) + end)
        return "\n".join(out)

    def rule(left, fill, sep, end):
        return left + sep.join(fill * (w + 2) for w in inner) + end

    lines = [rule("┏", "━", "┳", "┓"), cells(header, "┃", "┃", "┃"), rule("┡", "━", "╇", "┩")]
    for i, row in enumerate(rows):
        if i:
            lines.append(rule("├", "─", "┼", "┤"))
        lines.append(cells(row, "│", "│", "│"))
    lines.append(rule("└", "─", "┴", "┘"))
    return "\n".join(lines)
