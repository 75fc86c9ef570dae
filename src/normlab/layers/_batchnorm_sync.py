"""Synchronized BatchNormalization: the statistics of the global batch of a data-parallel run.

:class:`_SynchronizedPath` is one of the base classes of
:class:`normlab.layers.BatchNormalization` (methods only; the state is the
layer's). A data-parallel run on several ranks gives a layer with
``synchronized=True`` its communicator (``_sync``); the training passes then
combine every rank's statistics in the forward pass and allreduce the
gradient sums in the backward pass (:mod:`normlab.distributed.sync_bn`), on
the row kernels where the features are on the last axis.
"""

from __future__ import annotations

import numpy as np

from ..kernels import batchnorm_rows as R


class _SynchronizedPath:
    """The training passes of :class:`~normlab.layers.BatchNormalization` synchronized across ranks."""

    def _sync_train_call(self, x, workspace=False):
        """Training forward with the global batch's statistics (:mod:`normlab.distributed.sync_bn`)."""
        from ..distributed.sync_bn import sync_train_forward
        from ..kernels.batchnorm_sync import rows_take

        if self._features_last and rows_take(x):
            return self._sync_call_rows(x, workspace)
        if self._np_saved is None or self._np_saved[0] != self._stamp:
            self._np_saved = (self._stamp, {k: b.copy() for k, b in self.buffers.items()})
        y, cache, mean, var, count = sync_train_forward(
            x, self._b(self.params.get("gamma")), self._b(self.params.get("beta")),
            axes=self._reduce_axes, epsilon=self.epsilon, comm=self._sync,
        )
        if count < 2:
            self._raise_too_few(x.shape, count)
        self._commit_moving(x, mean, var, count)
        self._cache = ("sync", cache)
        self._out_shape = y.shape
        return y

    def _sync_call_rows(self, x, workspace=False):
        """:meth:`_sync_train_call` with features on the last axis, on the row kernels."""
        from ..distributed.sync_bn import TOO_FEW, rows_train_forward

        c = x.shape[-1]
        x2 = np.ascontiguousarray(x).reshape(-1, c)
        ws = self._workspace(x2) if workspace else None
        out = np.empty_like(x2) if ws is None else ws[0]
        status, cache = rows_train_forward(
            x2, self.params.get("gamma"), self.params.get("beta"), self.epsilon, self.momentum,
            self.unbiased_moving_variance, self.buffers["moving_mean"], self.buffers["moving_variance"], out,
            np.empty(c, np.float64) if ws is None else ws[3], np.empty(c, np.float64) if ws is None else ws[4],
            self._saved, self._stamp, self._sync,
        )
        if status == TOO_FEW:
            self._raise_too_few(x.shape, cache)
        if status:
            self._raise_bad_statistics(x, overflow=status == R.OVERFLOW)
        self._cache = ("sync_rows", cache)
        y = out.reshape(x.shape)
        self._out_shape = y.shape
        return y

    def _sync_backward_rows(self, dy, workspace=False):
        """dL/dx of :meth:`_sync_call_rows` (the kernels write this shard's dgamma / dbeta themselves)."""
        from ..distributed.sync_bn import rows_train_backward

        cache = self._cache[1]
        x2 = cache.x
        dy2 = np.ascontiguousarray(dy).reshape(x2.shape)
        dx = self._dx_workspace(x2) if workspace else np.empty_like(x2)
        rows_train_backward(dy2, cache, self.params.get("gamma"), dx, self._grad_target("gamma"),
                            self._grad_target("beta"), not self._grads_zero, self._sync)
        return dx.reshape(dy.shape)
