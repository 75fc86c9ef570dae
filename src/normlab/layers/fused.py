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

_EMPTY = np.empty(0)  # "no gamma / beta / gradient" for the kernels

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
        # _forward_kind's answer and what it was for
        self._shape = self._dtype = self._on = self._kind = None
        # a row-kernel cache in the backward pass says the kernels ran forward: their code for the activation
        self._backward_kind = R.KINDS.get(act.activation)
        # which parameter gradients the kernels write (fixed while the model stays compiled:
        # a change of 'trainable' asks for a new compile)
        self._dgamma = bn._trainable and bn.scale
        self._dbeta = bn._trainable and bn.center

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

    def _forward_kind(self, x):
        """The kernels' code for the activation when they take ``x``, else None (kept per shape, dtype and backend)."""
        on = R.enabled()
        if x.shape != self._shape or x.dtype != self._dtype or on is not self._on:
            bn = self.bn
            kind = R.activation_kind(self.act.activation, x.dtype, forward=True)
            if not (bn._trainable and bn._features_last and not bn.renorm and bn.virtual_batch_size is None
                    and R.takes(x) and x.size // x.shape[-1] >= 2):
                kind = None  # (a batch of one: the layer's own call gives the error or the policy)
            self._shape, self._dtype, self._on, self._kind = x.shape, x.dtype, on, kind
        return self._kind

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
        kind = self._forward_kind(x)
        if kind is None:
            return None
        bn = self.bn
        flat = x.ndim == 2 and x.flags.c_contiguous  # already the (m, C) the kernels take
        x2 = x if flat else np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        if workspace:
            ws = bn._ws
            if ws is None or ws[0].shape != x2.shape or ws[0].dtype != x2.dtype:
                ws = bn._workspace(x2)
            if ws[1] is None:
                ws[1] = np.empty_like(x2)
            z, a, mean, inv_std = ws[0], ws[1], ws[3], ws[4]
        else:
            c = x2.shape[1]
            z, a = np.empty_like(x2), np.empty_like(x2)
            mean, inv_std = np.empty(c, np.float64), np.empty(c, np.float64)
        p, b = bn.params, bn.buffers
        m = x2.shape[0]
        cache = R.train_forward(
            x2, p.get("gamma", _EMPTY), p.get("beta", _EMPTY), bn.epsilon, bn.momentum,
            m / (m - 1) if bn.unbiased_moving_variance else 1.0,  # bn._var_correction(m)
            b["moving_mean"], b["moving_variance"], z, mean, inv_std, bn._saved, bn._stamp, kind, a,
        )
        if type(cache) is int:
            bn._raise_bad_statistics(x, overflow=cache == R.OVERFLOW)
        bn._cache = cache
        if not flat:
            z, a = z.reshape(x.shape), a.reshape(x.shape)
        bn._out_shape = z.shape
        self.act._set_training_cache(z, a)
        return a

    def _backward(self, da, workspace=False):
        """dL/dx through the activation and the batch norm in one kernel call; None where that does not apply.

        One kernel call (:func:`normlab.kernels.batchnorm_rows.train_backward`
        with the activation) instead of the activation's backward pass and
        the batch norm's: the gradient at the batch norm's output is
        recomputed from ``da`` where it is needed rather than stored. Returns
        ``None`` (nothing done) unless both layers ran the training forward
        pass on the row kernels (relu, sigmoid or tanh; contiguous arrays of
        one dtype); the result equals the two-call path bit for bit.
        """
        bn, act = self.bn, self.act
        cache, act_cache = bn._cache, act._cache
        if type(cache) is not R.RowsTrainCache or act_cache is None:
            return None
        kind = self._backward_kind
        if kind is None:
            return None
        x2 = cache.x
        s = act_cache.z if kind == 0 else act_cache.a
        dt = x2.dtype
        if not (da.dtype == dt and s.dtype == dt and da.shape == s.shape and da.flags.c_contiguous
                and s.flags.c_contiguous and s.size == x2.size):
            return None
        if workspace:
            ws = bn._ws
            dx = ws[2] if ws is not None and ws[2] is not None and ws[2].shape == x2.shape else bn._dx_workspace(x2)
        else:
            dx = np.empty_like(x2)
        flat = da.shape == x2.shape
        g = bn.grads
        try:
            R.train_backward(
                da if flat else da.reshape(x2.shape), cache, bn.params.get("gamma", _EMPTY), dx,
                g["gamma"] if self._dgamma else _EMPTY, g["beta"] if self._dbeta else _EMPTY,
                not bn._grads_zero, kind, s if flat else s.reshape(x2.shape),
            )
        finally:
            bn._grads_zero = act._grads_zero = False
        return dx if flat else dx.reshape(da.shape)

    def __repr__(self) -> str:
        return f"<BatchNormActivation {self.name!r}>"
