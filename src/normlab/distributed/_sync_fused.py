"""The fused batch norm + activation pair for a synchronized batch norm on several ranks.

:class:`~normlab.layers.fused.BatchNormActivation` with the row kernels of
synchronized batch normalization (:func:`normlab.distributed.sync_bn.rows_train_forward`
/ :func:`~normlab.distributed.sync_bn.rows_train_backward`) in place of the
plain ones: the same passes over the data with the global statistics, the
activation fused in as for plain BN, and the same numbers as the two layers'
own passes.
"""

from __future__ import annotations

import numpy as np

from ..kernels.batchnorm_rows import NOT_FINITE
from ..layers.fused import BatchNormActivation
from .sync_bn import TOO_FEW, rows_train_backward, rows_train_forward



class SyncBatchNormActivation(BatchNormActivation):
    """A synchronized :class:`~normlab.layers.BatchNormalization` and the Activation it feeds, fused.

    Where the pair does not qualify (see the parent class; a shard of one
    row included), the two layers run their own passes, the batch norm's
    synchronized ones.
    """

    def _forward(self, x, workspace=False):
        kind = self._forward_kind(x)
        if kind is None:
            return None
        bn = self.bn
        flat = x.ndim == 2 and x.flags.c_contiguous
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
        # no errstate around it (5 us a call): the numba kernels raise no NumPy floating-point warnings and
        # report a non-finite or overflowing input by their status
        status, cache = rows_train_forward(
            x2, p.get("gamma"), p.get("beta"), bn.epsilon, bn.momentum, bn.unbiased_moving_variance,
            b["moving_mean"], b["moving_variance"], z, mean, inv_std, bn._saved, bn._stamp, bn._sync, kind, a,
        )
        if status == TOO_FEW:
            bn._raise_too_few(x.shape, cache)
        if status:
            bn._raise_bad_statistics(x, overflow=status != NOT_FINITE)
        bn._cache = ("sync_rows", cache)
        if not flat:
            z, a = z.reshape(x.shape), a.reshape(x.shape)
        bn._out_shape = z.shape
        self.act._set_training_cache(z, a)
        return a

    def _backward(self, da, workspace=False):
        bn, act = self.bn, self.act
        cache, act_cache = bn._cache, act._cache
        kind = self._backward_kind
        if not (type(cache) is tuple and cache[0] == "sync_rows") or act_cache is None or kind is None:
            return None
        cache = cache[1]
        x2 = cache.x
        s = act_cache.z if kind == 0 else act_cache.a
        dt = x2.dtype
        if not (da.dtype == dt and s.dtype == dt and da.shape == s.shape and da.flags.c_contiguous
                and s.flags.c_contiguous and s.size == x2.size):
            return None
        dx = bn._dx_workspace(x2) if workspace else np.empty_like(x2)
        flat = da.shape == x2.shape
        g = bn.grads
        try:
            rows_train_backward(
                da if flat else da.reshape(x2.shape), cache, bn.params.get("gamma"), dx,
                g["gamma"] if self._dgamma else None, g["beta"] if self._dbeta else None,
                not bn._grads_zero, bn._sync, kind, s if flat else s.reshape(x2.shape),
            )
        finally:
            bn._grads_zero = act._grads_zero = False
        return dx if flat else dx.reshape(da.shape)

    def __repr__(self) -> str:
        return f"<SyncBatchNormActivation {self.name!r}>"
