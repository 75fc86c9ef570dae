"""BatchNormalization on rows: features on the last axis, one fused kernel call per pass.

:class:`_RowsPath` is one of the base classes of
:class:`normlab.layers.BatchNormalization` (methods only; the state is the
layer's). When the only feature axis is the last one and
:func:`normlab.kernels.batchnorm_rows.takes` the input, the layer sees ``x``
as an ``(m, C)`` matrix and runs each pass as one call of
:mod:`normlab.kernels.batchnorm_rows`: statistics, moving-average update and
output in the training forward; ``dx``, ``dgamma`` and ``dbeta`` in the
backward. Inside a model's step the kernels write into arrays the layer keeps
for the current input shape (:meth:`_RowsPath._workspace`).
"""

from __future__ import annotations

import numpy as np

from ..kernels import batchnorm_rows as R


class _RowsPath:
    """The row-kernel passes of :class:`~normlab.layers.BatchNormalization` (features last)."""

    def _workspace(self, x2):
        """``[z, a, dx, mean, inv_std]`` for ``x2`` of shape (m, C), kept from step to step (a, dx made on first use)."""
        ws = self._ws
        if ws is None or ws[0].shape != x2.shape or ws[0].dtype != x2.dtype:
            c = x2.shape[1]
            ws = self._ws = [np.empty_like(x2), None, None, np.empty(c, np.float64), np.empty(c, np.float64)]
        return ws

    def _call_rows(self, x, train, training, workspace=False):
        """Features on the last axis: ``x`` as an (m, C) matrix, one kernel call (:mod:`normlab.kernels.batchnorm_rows`)."""
        c = x.shape[-1]
        x2 = np.ascontiguousarray(x).reshape(-1, c)
        ws = self._workspace(x2) if workspace and train else None
        out = np.empty_like(x2) if ws is None else ws[0]
        gamma, beta = self.params.get("gamma"), self.params.get("beta")
        if train:
            if x2.shape[0] < 2:
                self._raise_too_few(x.shape, x2.shape[0])
            cache = R.train_forward(
                x2, gamma, beta, self.epsilon, self.momentum, self._var_correction(x2.shape[0]),
                self.buffers["moving_mean"], self.buffers["moving_variance"], out,
                np.empty(c, np.float64) if ws is None else ws[3], np.empty(c, np.float64) if ws is None else ws[4],
                self._saved, self._stamp,
            )
            if type(cache) is int:
                self._raise_bad_statistics(x, overflow=cache == R.OVERFLOW)
            self._cache = cache
        else:
            cache = R.inference_forward(x2, gamma, beta, self.buffers["moving_mean"],
                                        self.buffers["moving_variance"], epsilon=self.epsilon, out=out)
            if training:
                self._cache = cache
        y = out.reshape(x.shape)
        if training:
            self._out_shape = y.shape
        return y

    def _backward_rows(self, dy, workspace=False):
        """dL/dx of the training row kernels (which write dgamma / dbeta themselves)."""
        cache = self._cache
        x2 = cache.x
        dy2 = np.ascontiguousarray(dy).reshape(x2.shape)
        dx = self._dx_workspace(x2) if workspace else np.empty_like(x2)
        R.train_backward(dy2, cache, self.params.get("gamma"), dx, self._grad_target("gamma"),
                         self._grad_target("beta"), not self._grads_zero)
        return dx.reshape(dy.shape)

    def _dx_workspace(self, x2):
        ws = self._workspace(x2)
        if ws[2] is None:
            ws[2] = np.empty_like(x2)
        return ws[2]

    def _grad_target(self, key):
        """``grads[key]`` for the kernels to write, None where this layer has no such gradient."""
        if not self._trainable or not (self.scale if key == "gamma" else self.center):
            return None
        return self.grads[key]
