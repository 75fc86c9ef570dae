"""Fused layers: what a model's compile-time rewrite runs in place of two layers.

They are execution details of :class:`~normlab.models.executor.Executor`,
never in a user's ``model.layers``: each one drives the layers it replaces
(their parameters, gradients, buffers and caches stay theirs), so
``summary``, saving and the diagnostics see the original layers in the state
their own passes would have left.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BatchNormActivation"]


class BatchNormActivation:
    """A :class:`~normlab.layers.BatchNormalization` followed by the :class:`~normlab.layers.Activation` it feeds.

    Training forward: one kernel computes ``z = BN(x)`` and ``a = f(z)``
    (:meth:`BatchNormalization._fused_act_forward`) where it covers the pair
    (relu; sigmoid in float32; a plain batch norm over the last axis),
    otherwise the two layers' own passes. Backward: one kernel for ``dL/dx``
    from ``dL/da`` where both ran fused (relu, sigmoid, tanh), otherwise the
    two backward passes. Either way the numbers equal the two layers' own
    passes bit for bit.
    """

    multi_input = False

    def __init__(self, bn, act):
        self.bn = bn
        self.act = act
        self.name = f"{bn.name}+{act.name}"

    def _train_forward(self, x: np.ndarray) -> np.ndarray:
        a = self.bn._fused_act_forward(x, self.act, workspace=True)
        if a is None:
            a = self.act._train_forward(self.bn._train_forward(x))
        return a

    def _train_backward(self, da: np.ndarray, need_dx: bool = True):
        dx = self.bn._fused_act_backward(da, self.act, workspace=True)
        if dx is None:
            dx = self.bn._train_backward(self.act._train_backward(da, True), need_dx)
        return dx

    def __repr__(self) -> str:
        return f"<BatchNormActivation {self.name!r}>"
