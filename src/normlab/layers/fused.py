"""Fused layers: what a model's compile-time rewrite runs in place of two layers.

They are execution details of :class:`~normlab.models.executor.Executor`,
never in a user's ``model.layers``: each one drives the layers it replaces
(their parameters, gradients, buffers and caches stay theirs), so
``summary``, saving and the diagnostics see the original layers in the state
their own passes would have left.
"""

from __future__ import annotations

import numpy as np

from ..kernels import batchnorm_rows as R

__all__ = ["BatchNormActivation"]


class BatchNormActivation:
    """A :class:`~normlab.layers.BatchNormalization` followed by the :class:`~normlab.layers.Activation` it feeds.

    Training forward: one kernel computes ``z = BN(x)`` and ``a = f(z)``
    (:meth:`_forward`) where it covers the pair
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
        a = self._forward(x, workspace=True)
        if a is None:
            a = self.act._train_forward(self.bn._train_forward(x))
        return a

    def _train_backward(self, da: np.ndarray, need_dx: bool = True):
        dx = self._backward(da, workspace=True)
        if dx is None:
            dx = self.bn._train_backward(self.act._train_backward(da, True), need_dx)
        return dx

    def _forward(self, x, workspace=False):
        """Training forward of the batch norm and its activation in one kernel call; None where that does not apply.

        One kernel (:func:`normlab.kernels.batchnorm_rows.train_forward` with
        the activation) writes the batch norm's output ``z`` and ``act``'s output
        ``a = f(z)``; both layers keep the caches their own forward calls
        would, so the backward pass (fused or not) and the diagnostics see the
        same state. Returns ``None`` (nothing done) where the pair does not
        qualify: an activation the kernels fuse
        (:func:`~normlab.kernels.batchnorm_rows.activation_kind`) after a
        plain, trainable batch norm over the last axis, with at least 2 rows.
        The result equals the two calls bit for bit.
        """
        bn, act = self.bn, self.act
        kind = R.activation_kind(act.activation, x.dtype, forward=True)
        if (
            kind is None
            or not (bn._trainable and bn._features_last)
            or bn.renorm
            or bn.virtual_batch_size is not None
            or not R.takes(x)
        ):
            return None
        c = x.shape[-1]
        if x.size // c < 2:
            return None  # the layer's own call gives the error or the policy
        flat = x.ndim == 2 and x.flags.c_contiguous  # already the (m, C) the kernels take
        x2 = x if flat else np.ascontiguousarray(x).reshape(-1, c)
        if workspace:
            ws = bn._workspace(x2)
            if ws[1] is None:
                ws[1] = np.empty_like(x2)
            z, a, mean, inv_std = ws[0], ws[1], ws[3], ws[4]
        else:
            z, a = np.empty_like(x2), np.empty_like(x2)
            mean, inv_std = np.empty(c, np.float64), np.empty(c, np.float64)
        cache = R.train_forward(
            x2, bn.params.get("gamma"), bn.params.get("beta"), epsilon=bn.epsilon, momentum=bn.momentum,
            var_correction=bn._var_correction(x2.shape[0]), moving_mean=bn.buffers["moving_mean"],
            moving_var=bn.buffers["moving_variance"], out=z, mean=mean, inv_std=inv_std, saved=bn._saved,
            stamp=bn._stamp, act_kind=kind, act_out=a,
        )
        if cache is None:
            bn._raise_non_finite(x.shape)
        bn._cache = cache
        if not flat:
            z, a = z.reshape(x.shape), a.reshape(x.shape)
        bn._out_shape = z.shape
        act._set_training_cache(z, a)
        return a

    def _backward(self, da, workspace=False):
        """dL/dx through the activation and the batch norm in one kernel call; None where that does not apply.

        One kernel call (:func:`normlab.kernels.batchnorm_rows.train_backward`
        with the activation) instead of the activation's backward pass and
        the batch norm's: the gradient at this layer's output is recomputed from
        ``da`` where it is needed rather than stored. Returns ``None``
        (nothing done) unless both layers ran the training forward pass on the
        row kernels (relu, sigmoid or tanh; contiguous arrays of one dtype);
        the result equals the two-call path bit for bit.
        """
        bn, act = self.bn, self.act
        cache, act_cache = bn._cache, act._cache
        if type(cache) is not R.RowsTrainCache or act_cache is None:
            return None
        kind = R.activation_kind(act.activation, da.dtype, forward=False)
        if kind is None:
            return None
        x2 = cache.x
        s = act_cache.z if kind == 0 else act_cache.a
        dt = x2.dtype
        if not (da.dtype == dt and s.dtype == dt and da.shape == s.shape and da.flags.c_contiguous
                and s.flags.c_contiguous and s.size == x2.size):
            return None
        dx = bn._dx_workspace(x2) if workspace else np.empty_like(x2)
        flat = da.shape == x2.shape
        try:
            R.train_backward(
                da if flat else da.reshape(x2.shape), cache, bn.params.get("gamma"), dx=dx,
                dgamma=bn._grad_target("gamma"), dbeta=bn._grad_target("beta"),
                accumulate=not bn._grads_zero, act_kind=kind, act_s=s if flat else s.reshape(x2.shape),
            )
        finally:
            bn._grads_zero = act._grads_zero = False
        return dx if flat else dx.reshape(da.shape)

    def __repr__(self) -> str:
        return f"<BatchNormActivation {self.name!r}>"
