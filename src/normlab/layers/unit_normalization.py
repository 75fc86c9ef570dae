"""UnitNormalization: each sample scaled to unit L2 norm (Keras 3 ``UnitNormalization``).

State and checks only; the formula, its backward pass and the numba-or-NumPy
choice are in :mod:`normlab.kernels.unitnorm`.
"""

from __future__ import annotations

import numbers

from .._validation import validate_params
from ..kernels import unitnorm as K
from .normalization import _AxisSpec
from .normalization_extra import _KernelLayer, _resolve_axes

__all__ = ["UnitNormalization"]


class UnitNormalization(_KernelLayer):
    """Scale each sample to unit L2 norm over ``axis`` (Keras 3 numerics)::

        y = x / sqrt(max(sum(x^2 over axis), 1e-12))

    The floor ``1e-12`` on the squared norm is Keras's, fixed (not an
    argument). No weights; training and inference compute the same function.

    Parameters
    ----------
    axis : int or list of int, default -1
        The axes the norm is taken over (not the batch axis 0). A tuple is
        accepted and stored as a list, as in Keras. Other non-batch axes may
        change size between calls.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    PyTorch: ``torch.nn.functional.normalize(x, p=2, dim=axis, eps=1e-6)``
    is the same function: it clamps the norm, not its square, so its
    ``eps`` is the square root of Keras's ``1e-12``.

    Unlike Keras, the batch axis is refused (``ValueError`` at build): a
    sample's output would then depend on the rest of its batch.

    Gradient (:mod:`normlab.kernels.unitnorm`):
    ``dx = (dy - y sum(dy y)) / ||x||`` where ``||x||^2 >= 1e-12``, and
    ``dx = 1e6 dy`` below the floor.
    """

    min_ndim = 2
    _param_constraints = {"axis": [_AxisSpec()]}

    def __init__(self, axis=-1, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"axis": axis})
        super().__init__(**kwargs)
        self.axis = int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis]
        self._axes: tuple = ()

    def build(self, input_shape):
        self._axes = _resolve_axes(self, self.axis, input_shape)

    def _forward(self, x, out):
        return K.unit_norm_forward(x, axes=self._axes, out=out)

    def _kernel_backward(self, dy, cache, out):
        return K.unit_norm_backward(dy, cache, out=out)

    def get_config(self):
        return {"axis": self.axis, **super().get_config()}
