"""Weight penalties added to the loss (Keras scales).

=========  ====================================  ===========================
class      penalty                               gradient
=========  ====================================  ===========================
L1(l1)     ``l1 * sum(|w|)``                     ``l1 * sign(w)``
L2(l2)     ``l2 * sum(w ** 2)`` (no one half)    ``2 * l2 * w``
L1L2       sum of the two                        sum of the two
=========  ====================================  ===========================

:class:`OrthogonalRegularizer` (Keras 3) penalizes the mean absolute cosine
between the rows (or columns) of a rank-2 weight; its formula and gradient
are in its docstring. Keras's lower-case shortcuts ``l1``, ``l2``, ``l1_l2``
and ``orthogonal_regularizer`` are the classes themselves, and ``get``
accepts the names ``"l1"``, ``"l2"``, ``"l1_l2"``, ``"l1l2"`` (Keras's
snake case of ``L1L2``) and ``"orthogonal_regularizer"``.

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
from ._validation import Interval, Options, validate_params

registry = Registry("regularizer")

__all__ = ["Regularizer", "L1", "L2", "L1L2", "OrthogonalRegularizer", "l1", "l2", "l1_l2",
           "orthogonal_regularizer", "get", "serialize", "deserialize"]

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


@registry.register(aliases=("l1_l2", "l1l2"))
class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``."""

    _param_constraints = {"l1": _COEF, "l2": _COEF}

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        validate_params(type(self), self._param_constraints, locals())
        self.l1, self.l2 = float(l1), float(l2)

    def penalty(self, w):
        p = 0.0
        if self.l1:
            p += self.l1 * float(np.sum(np.abs(w)))
        if self.l2:
            flat = w.reshape(-1)
            p += self.l2 * float(np.dot(flat, flat))  # one BLAS pass, no temporary (every step, every kernel)
        return p

    def gradient(self, w):
        if not self.l1:
            return (2.0 * self.l2) * w
        g = self.l1 * np.sign(w)
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
        validate_params(type(self), self._param_constraints, {"l1": l1})
        super().__init__(l1=l1, l2=0.0)

    def get_config(self):
        return {"l1": self.l1}


@registry.register
class L2(L1L2):
    """``l2 * sum(w ** 2)`` (Keras scale: no one half)."""

    _param_constraints = {"l2": _COEF}

    def __init__(self, l2: float = 0.01):
        validate_params(type(self), self._param_constraints, {"l2": l2})
        super().__init__(l1=0.0, l2=l2)

    def get_config(self):
        return {"l2": self.l2}


#: ``normalize``'s floor on a row norm (Keras's ``backend.epsilon()``)
_EPSILON = 1e-7


@registry.register
class OrthogonalRegularizer(Regularizer):
    """Push the rows (or columns) of a rank-2 weight towards mutual orthogonality (Keras 3).

    With ``u_i = w_i / max(||w_i||, 1e-7)`` the normalized rows (columns when
    ``mode="columns"``), ``G = U U^T`` their Gram matrix of cosines and ``s``
    their number::

        penalty = factor * 0.5 * sum_{i != j} |G_ij| / (s (s - 1) / 2)
                = factor * mean_{i != j} |G_ij|

    Gradient, with ``S_ij = c * sign(G_ij)`` off the diagonal (0 on it) and
    ``c = factor / (s (s - 1))``: ``dP/dU = 2 S U`` (``S`` is symmetric), then
    through the normalization ``dP/dw_i = (g_i - u_i (u_i . g_i)) / ||w_i||``
    for ``g_i = (dP/dU)_i`` (``g_i / 1e-7`` for a row under the floor).

    Parameters
    ----------
    factor : float >= 0, default 0.01
    mode : {"rows", "columns"}, default "rows"
        For a Dense kernel ``(n_in, units)`` "rows" makes the input features'
        weight vectors orthogonal, "columns" the units'.

    Notes
    -----
    A weight with a single row (column) has no pair: the penalty is 0 here,
    where Keras divides 0 by 0.
    """

    _param_constraints = {"factor": _COEF, "mode": [Options(("rows", "columns"))]}
    _keras_messages = {"mode": lambda v: ('Invalid value for argument `mode`. Expected one of {"rows", "columns"}. '
                                          f"Received: mode={v}")}

    def __init__(self, factor: float = 0.01, mode: str = "rows"):
        validate_params(type(self), self._param_constraints, {"factor": factor, "mode": mode})
        self.factor = float(factor)
        self.mode = mode

    def _rows(self, w):
        if np.ndim(w) != 2:
            raise ValueError(
                f"Inputs to OrthogonalRegularizer must have rank 2. Received: inputs.shape={np.shape(w)}"
            )
        return w if self.mode == "rows" else w.T

    def _parts(self, w):
        a = self._rows(w)
        norms = np.sqrt(np.sum(np.square(a), axis=1, keepdims=True))
        r = np.maximum(norms, _EPSILON)
        u = a / r
        g = u @ u.T
        s = a.shape[0]
        return a, norms, r, u, g, s

    def penalty(self, w):
        _, _, _, _, g, s = self._parts(w)
        if s < 2:
            return 0.0
        np.fill_diagonal(g, 0.0)
        return self.factor * 0.5 * float(np.sum(np.abs(g))) / (s * (s - 1.0) / 2.0)

    def gradient(self, w):
        a, norms, r, u, g, s = self._parts(w)
        if s < 2:
            return np.zeros_like(w)
        sg = np.sign(g) * (self.factor / (s * (s - 1.0)))
        np.fill_diagonal(sg, 0.0)
        du = 2.0 * (sg @ u)
        # through u = a / max(||a||, eps): the radial part drops out unless the floor is active
        radial = np.where(norms > _EPSILON, np.sum(u * du, axis=1, keepdims=True), 0.0)
        da = (du - u * radial) / r
        da = da.astype(w.dtype, copy=False)
        return da if self.mode == "rows" else da.T

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


# Keras's lower-case shortcuts (keras.regularizers.l2(0.01) and the like)
l1, l2, l1_l2, orthogonal_regularizer = L1, L2, L1L2, OrthogonalRegularizer


def get(identifier) -> Regularizer | None:
    """Resolve ``None``, a name (``"l1"``, ``"l2"``, ``"l1_l2"``), a config or an instance."""
    return registry.get(identifier, base=Regularizer)


def serialize(reg: Regularizer | None) -> dict | None:
    return registry.serialize(reg)


def deserialize(config: dict) -> Regularizer:
    return registry.deserialize(config)


def validate_float_arg(value, name):
    """Keras's ``validate_float_arg``: ``value`` as a finite float >= 0, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float. Received: "
                         f"{name}={value}")
    return float(value)
