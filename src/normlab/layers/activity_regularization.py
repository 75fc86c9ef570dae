"""Keras's :class:`ActivityRegularization`: ``y = x``, and a penalty on ``x`` added to the model's loss.

Keras 3 (``Layer.__call__`` with an ``activity_regularizer``) adds, for an
output of batch size ``B``::

    P = (l1 * sum |x| + l2 * sum x^2) / B,     dP/dx = (l1 sign(x) + 2 l2 x) / B

normlab adds ``P`` of the last call to the loss through the model's penalty
path (:meth:`Layer.regularization_loss`) and ``dP/dx`` to the gradient in
the backward pass.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import regularizers as _regularizers
from .._validation import Interval, validate_params
from .base import Layer

__all__ = ["ActivityRegularization"]


class ActivityRegularization(Layer):
    """Pass the input through; penalize its size in the loss (Keras ``ActivityRegularization``).

    Parameters
    ----------
    l1, l2 : float >= 0, default 0.0
        Coefficients of ``sum |x|`` and ``sum x^2``, divided by the batch size
        (Keras 3.15).
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    ``layer.losses`` is ``[P]`` after a call (Keras's attribute). In
    ``evaluate`` each batch's loss includes that batch's penalty (weighted by
    batch size, as Keras does).
    """

    _param_constraints = {"l1": [Interval(numbers.Real, 0, None, closed="left")],
                          "l2": [Interval(numbers.Real, 0, None, closed="left")]}

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"l1": l1, "l2": l2})
        super().__init__(**kwargs)
        self.l1, self.l2 = float(l1), float(l2)
        self._penalty_of = _regularizers.L1L2(self.l1, self.l2)
        # listed as a regularized layer, so that a model adds regularization_loss() to its loss
        self._regularizers = {"activity": self._penalty_of}
        self._penalty = 0.0

    def _batch(self, x) -> int:
        return x.shape[0] if x.ndim > 0 and x.shape[0] > 0 else 1

    def call(self, x, training):
        self._penalty = self._penalty_of.penalty(x) / self._batch(x)
        if training:
            self._cache = x
            self._out_shape = x.shape
        return x

    def _backward(self, dy):
        x = self._cache
        return dy + (self._penalty_of.gradient(x) / self._batch(x)).astype(dy.dtype, copy=False)

    def regularization_loss(self) -> float:
        return float(self._penalty)

    def add_regularization_grads(self) -> None:
        """Nothing: the penalty's gradient flows through the backward pass."""

    @property
    def losses(self) -> list:
        return [self._penalty]

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2, **super().get_config()}
