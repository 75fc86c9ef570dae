"""Keras's per-output forms of ``compile`` arguments, for normlab's models of one output.

Keras takes ``loss=[l]``, ``loss={"out": l}`` or ``{"out": [l]}`` and
``metrics=[[...]]`` / ``{"out": [...]}`` / ``{"out": "mae"}``, keyed by the
output layer's name (``model.output_names``). With one output each form
means the plain one; :func:`for_one_output` turns it into that.
"""

from __future__ import annotations

__all__ = ["for_one_output"]


def for_one_output(value, arg: str, output_names, owner: str):
    """``value`` (a loss, or a list of metrics) in its plain form for a model whose one output is ``output_names[0]``."""
    if isinstance(value, dict):
        names = list(output_names or [])
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{owner}: in the dict argument `{arg}`, key {unknown[0]!r} does not correspond to "
                             f"any model output (the outputs are {names}). Received: {arg}={value!r}")
        if not value:
            return None
        value = value[names[0]]
        if arg == "loss":
            return _single(value, arg, owner)
        return [value] if not isinstance(value, (list, tuple)) else list(value)
    if isinstance(value, (list, tuple)):
        if arg == "loss":
            return _single(value, arg, owner)
        if len(value) == 1 and isinstance(value[0], (list, tuple)):  # Keras's list per output
            return list(value[0])
    return value


def _single(value, arg: str, owner: str):
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{owner}: `{arg}` must hold one entry per model output (the model has 1), "
                             f"got {len(value)}: {value!r}.")
        return value[0]
    return value
