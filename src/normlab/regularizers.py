"""Weight penalties added to the loss (Keras scales).

=========  ====================================  ===========================
class      penalty                               gradient
=========  ====================================  ===========================
L1(l1)     ``l1 * sum(|w|)``                     ``l1 * sign(w)``
L2(l2)     ``l2 * sum(w ** 2)`` (no one half)    ``2 * l2 * w``
L1L2       sum of the two                        sum of the two
=========  ====================================  ===========================

The notes write the L2 penalty as ``lambda * 1/2 ||w||^2``; Keras (and so
normlab) drops the one half, so ``L2(l2)`` equals the notes' penalty with
``lambda = 2 * l2``. The penalty is added to the reported loss once per batch
(it is not divided by the batch size), and its gradient is added to the
parameter gradient before clipping.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._registry import Registry
from ._validation import Interval, validate_params

registry = Registry("regularizer")

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "serialize", "deserialize"]

_COEF = [Interval(numbers.Real, 0, None)]


class Regularizer:
    """Base class: ``penalty(w) -> float`` and ``gradient(w) -> ndarray``."""

    def __call__(self, w: np.ndarray) -> float:
        return self.penalty(w)

    def penalty(self, w: np.ndarray) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def gradient(self, w: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def get_config(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@registry.register(aliases=("l1_l2",))
class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``."""

    _param_constraints = {"l1": _COEF, "l2": _COEF}

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        validate_params(type(self).__name__, self._param_constraints, locals())
        self.l1, self.l2 = float(l1), float(l2)

    def penalty(self, w):
        p = 0.0
        if self.l1:
            p += self.l1 * float(np.sum(np.abs(w)))
        if self.l2:
            p += self.l2 * float(np.sum(np.square(w)))
        return p

    def gradient(self, w):
        g = np.zeros_like(w)
        if self.l1:
            g += self.l1 * np.sign(w)
        if self.l2:
            g += (2.0 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


@registry.register
class L1(L1L2):
    """``l1 * sum(|w|)``; its gradient at 0 is taken as 0."""

    _param_constraints = {"l1": _COEF}

    def __init__(self, l1: float = 0.01):
        validate_params(type(self).__name__, self._param_constraints, {"l1": l1})
        super().__init__(l1=l1, l2=0.0)

    def get_config(self):
        return {"l1": self.l1}


@registry.register
class L2(L1L2):
    """``l2 * sum(w ** 2)`` (Keras scale: no one half)."""

    _param_constraints = {"l2": _COEF}

    def __init__(self, l2: float = 0.01):
        validate_params(type(self).__name__, self._param_constraints, {"l2": l2})
        super().__init__(l1=0.0, l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def get(identifier) -> Regularizer | None:
    """Resolve ``None``, a name (``"l1"``, ``"l2"``, ``"l1_l2"``), a config or an instance."""
    return registry.get(identifier, base=Regularizer)


def serialize(reg: Regularizer | None) -> dict | None:
    return registry.serialize(reg)


def deserialize(config: dict) -> Regularizer:
    return registry.deserialize(config)
