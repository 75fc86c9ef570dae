"""The global seed of :func:`set_random_seed` and the streams drawn from it.

Keras's ``set_random_seed(seed)`` seeds Python's :mod:`random`, NumPy's legacy
global generator and Keras's own global ``SeedGenerator``, which every random
operation without a seed of its own then draws from. normlab keeps the same
contract with NumPy's tools: the seed becomes the root of a
:class:`numpy.random.SeedSequence`, and each consumer that was given no seed
(an initializer called without a generator, a noise layer built outside a
model, a model built or fitted with ``seed=None``) takes the next child of
that root. So, as in Keras,

- after ``set_random_seed(s)``, the same program draws the same numbers;
- two models built one after the other still differ (each takes a new child);
- ``set_random_seed(s)`` again starts the sequence of children over.

Without a global seed, every consumer gets fresh OS entropy, as before.

Children are spawned, never drawn from a shared generator, so a consumer's
numbers depend only on how many consumers asked before it, not on how many
numbers they drew.
"""

from __future__ import annotations

import numbers
import random
import threading

import numpy as np

from .._validation import Interval, validate_params

__all__ = ["set_random_seed", "get_random_seed", "default_rng", "fresh_entropy"]

_lock = threading.Lock()
_seed: int | None = None
_root: np.random.SeedSequence | None = None


def set_random_seed(seed: int) -> None:
    """Set the global random seed (Python, NumPy and normlab), as Keras does.

    Parameters
    ----------
    seed : int
        An int in [0, 2**32 - 1] (NumPy's legacy ``np.random.seed`` takes no
        other; Keras refuses what NumPy refuses in the same way).

    Notes
    -----
    This calls ``random.seed(seed)`` and ``np.random.seed(seed)``, and makes
    ``SeedSequence(seed)`` the root from which every random thing that was
    given no seed of its own derives its generator: initializers, noise
    layers (``Dropout``, ``GaussianNoise``, ...), a model's initial weights
    and ``fit``'s shuffling. An explicit ``seed=`` still wins over the
    global one.

    Examples
    --------
    >>> from normlab.utils import set_random_seed
    >>> from normlab.utils._random import default_rng
    >>> set_random_seed(42); a = default_rng().random()
    >>> set_random_seed(42); b = default_rng().random()
    >>> a == b
    True
    """
    global _seed, _root
    validate_params("set_random_seed", {"seed": [Interval(numbers.Integral, 0, 2**32 - 1)]}, {"seed": seed})
    seed = int(seed)
    with _lock:
        _seed = seed
        _root = np.random.SeedSequence(seed)
    random.seed(seed)
    np.random.seed(seed)


def get_random_seed() -> int | None:
    """The seed last given to :func:`set_random_seed`, or ``None`` if none was."""
    return _seed


def _next_child() -> np.random.SeedSequence | None:
    with _lock:
        return None if _root is None else _root.spawn(1)[0]


def default_rng() -> np.random.Generator:
    """A generator for a consumer that was given no seed.

    The next child of the global seed's stream when :func:`set_random_seed`
    was called, else fresh OS entropy (``np.random.default_rng()``). The
    generator's bit generator carries its ``SeedSequence``, so child streams
    can be spawned from it without drawing.
    """
    return np.random.default_rng(_next_child())


def fresh_entropy() -> int:
    """A 128-bit root entropy for a run given no seed (``fit(seed=None)``).

    Derived from the global seed's stream when one is set, else fresh OS
    entropy (``np.random.SeedSequence().entropy``).
    """
    child = _next_child()
    if child is None:
        return int(np.random.SeedSequence().entropy)
    return int.from_bytes(child.generate_state(4, np.uint32).tobytes(), "little")
