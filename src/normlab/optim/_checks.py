"""Checks of the optimizer's arguments and state, kept apart from :mod:`normlab.optim.base`."""

from __future__ import annotations

import inspect

import numpy as np

from . import schedules as _schedules

try:  # NumPy >= 2
    from numpy.lib.array_utils import byte_bounds as _byte_bounds
except ImportError:  # pragma: no cover - NumPy 1.x
    _byte_bounds = np.byte_bounds


def _takes_no_step(fn) -> bool:
    """True for a learning rate given as a callable of no arguments (Keras calls those as ``lr()``)."""
    if isinstance(fn, _schedules.LearningRateSchedule):
        return False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _check_disjoint(params, names, cls: str) -> None:
    """Refuse parameters that share memory (one array twice, overlapping views).

    Each would be stepped on its own and copied back, so the overlap would
    get one of the updates, not their sum. Intervals of addresses sorted by
    start: O(n log n); ``np.shares_memory`` confirms a suspected overlap.
    """
    spans = sorted((*_byte_bounds(p), i) for i, p in enumerate(params) if p.size)
    widest = None  # (end, index) of the span reaching furthest so far
    for start, end, i in spans:
        if widest is not None and start < widest[0] and np.shares_memory(params[widest[1]], params[i]):
            raise ValueError(
                f"{cls}: parameters {_label(names, widest[1])} and {_label(names, i)} share memory (the same "
                f"array twice, or overlapping views); give each parameter its own array."
            )
        if widest is None or end > widest[0]:
            widest = (end, i)


def _label(names, i: int) -> str:
    return repr(names[i]) if names is not None else f"#{i}"


def _check_state(arrays: dict, expected: dict, cls: str) -> None:
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{cls}.set_state: the state does not match this optimizer"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
            + f" (expected {sorted(expected) + ['iterations', 'skipped_steps']})."
        )
    for key, ref in expected.items():
        a = arrays[key]
        if a.shape != ref.shape:
            raise ValueError(f"{cls}.set_state: {key!r} has shape {a.shape}, expected {ref.shape}.")
        if a.dtype.kind != "f":
            raise ValueError(f"{cls}.set_state: {key!r} must hold floats, got dtype {a.dtype}.")
        if not np.isfinite(a).all():
            raise ValueError(f"{cls}.set_state: {key!r} holds NaN or inf values.")


def _template_shapes(arrays: dict, cls: str, only=None):
    """Parameter shapes and dtypes implied by the per-parameter keys ``"slot/i"`` (of the slots ``only``, if given)."""
    found: dict[int, tuple] = {}
    for key, a in arrays.items():
        slot, sep, idx = key.rpartition("/")
        if not sep or not idx.isdigit() or (only is not None and slot not in only):
            continue
        i = int(idx)
        if i in found and found[i][0] != a.shape:
            raise ValueError(
                f"{cls}.set_state: {key!r} has shape {a.shape}, but another slot of parameter {i} has "
                f"shape {found[i][0]}."
            )
        found.setdefault(i, (a.shape, a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)))
    n = len(found)
    if sorted(found) != list(range(n)):
        raise ValueError(f"{cls}.set_state: the parameter indices {sorted(found)} are not 0..{n - 1}.")
    return [found[i][0] for i in range(n)], [np.dtype(found[i][1]) for i in range(n)]
