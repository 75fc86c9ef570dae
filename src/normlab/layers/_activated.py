"""The shared back half of "linear map then activation" layers (Dense, Conv, NoisyDense, ...).

A subclass computes ``z = linear(x)`` and ``a = activation(z)``, keeps a cache
with fields ``z`` and ``a`` when training, and implements
``_linear_backward(dz, need_dx) -> dx or None``, which accumulates the
parameter gradients. This mixin supplies the rest:

* ``dz = da * activation'(z)`` (skipped for a linear activation);
* ``backward_from_logits(dz)``: the entry point of fused losses
  (softmax or sigmoid with cross-entropy differentiate through ``z``);
* ``_backward_params_only``: the model's first layer skips ``dx``.
"""

from __future__ import annotations

import numpy as np


class ActivatedLinear:
    """Mixin for :class:`~normlab.layers.Layer` subclasses with ``activation`` and ``_act``."""

    @property
    def logits(self) -> np.ndarray:
        """The pre-activation ``z`` of the last training forward call."""
        if self._cache is None:
            raise RuntimeError(f"Layer {self.name!r}: no training forward call to take logits from.")
        return self._cache.z

    def _act_backward(self, dy):
        if self.activation in (None, "linear"):
            return dy
        return self._act.backward(dy, self._cache.z, self._cache.a)

    def _backward(self, dy):
        return self._linear_backward(self._act_backward(dy), need_dx=True)

    def _backward_params_only(self, dy):
        try:
            self._linear_backward(self._act_backward(dy), need_dx=False)
        finally:
            self._grads_zero = False

    def backward_from_logits(self, dz, need_dx: bool = True) -> np.ndarray | None:
        """Back-propagate a gradient taken with respect to the pre-activation ``z``.

        Used by fused losses (softmax or sigmoid with cross-entropy, whose
        gradient with respect to ``z`` is computed directly and stably);
        ``need_dx=False`` skips the input gradient and returns ``None``.
        """
        if self._cache is None:
            raise RuntimeError(
                f"Layer {self.name!r}: backward() needs a preceding forward call with training=True."
            )
        try:
            return self._linear_backward(dz, need_dx=need_dx)
        finally:
            self._grads_zero = False

    def _linear_backward(self, dz, need_dx: bool):  # pragma: no cover - interface
        raise NotImplementedError
