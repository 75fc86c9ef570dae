"""A training node of the executor: a bias-free linear :class:`~normlab.layers.Dense` and the fused
batch norm + activation pair it feeds (:class:`~normlab.layers.fused.BatchNormActivation`).

The pattern of every hidden layer of :mod:`normlab.sklearn`'s MLPs with batch
norm (``Dense(use_bias=False) -> BatchNormalization -> Activation``). The node
runs the same kernels in the same order as the two nodes it replaces, so the
numbers and what each layer keeps (caches, workspaces, moving statistics, the
undo record) are the same bit for bit; what it saves is the Python between
them. At a batch of 200 rows of scikit-learn's MLP the layers' own passes
spent about 5 us of checks per step around the product and the batch-norm
kernel, checks whose answers do not change from step to step: the node keeps
them for the arrays they were made for (the same objects) and asks again for
anything else, taking the layers' own passes then.
"""

from __future__ import annotations

import numpy as np

from ..kernels import _backend, _threads
from ..kernels import batchnorm_rows as R
from ..kernels import dense as K_dense
from ..layers.core import _DenseCache
from ..layers.fused import BatchNormActivation

_new = tuple.__new__
_EMPTY = np.empty(0)
#: the pair's own passes, which the kept paths repeat: where they are replaced (a subclass, a test's
#: spy), the node calls them instead
_PAIR_FORWARD, _PAIR_BACKWARD = BatchNormActivation._forward, BatchNormActivation._backward

__all__ = ["DenseBatchNormActivation", "fusable"]


def fusable(dense, pair) -> bool:
    """True when ``dense`` (then ``pair``) may run as one :class:`DenseBatchNormActivation` node."""
    from ..layers.core import Dense

    return (type(dense) is Dense and not dense.use_bias and dense.activation in (None, "linear")
            and type(pair) is BatchNormActivation)


class DenseBatchNormActivation:
    """``pair(dense(x))`` in a model's training step, forward and backward (see the module docstring)."""

    multi_input = False

    def __init__(self, dense, pair):
        self.dense = dense
        self.pair = pair
        self.name = f"{dense.name}+{pair.name}"
        # the forward's kept checks: (x's shape, x's dtype, kernel, Dense's workspace list,
        # the batch norm's workspace list, the activation's kernel code)
        self._fwd = None
        self._fwd_fast = False  # the last forward took the kept checks' path (its caches are as it made them)
        # the backward's: (dL/da, the batch norm's dx workspace) of the last fused backward
        self._bwd = None

    # ------------------------------------------------------------- forward
    def _train_forward(self, x):
        dense, pair = self.dense, self.pair
        bn = pair.bn
        kernel = dense.params["kernel"]
        f = self._fwd
        if f is not None and f[2] is kernel and f[3] is dense._ws and f[4] is bn._ws and x.shape == f[0] \
                and x.dtype is f[1] and x.flags.c_contiguous and R.enabled() is pair._on \
                and BatchNormActivation._forward is _PAIR_FORWARD:
            # Dense's pass: the product into its workspace (one BLAS call, as _threads.matmul makes it)
            ws = f[3]
            z = ws[0]
            np.matmul(x, kernel, out=z)
            dense._cache = _new(_DenseCache, (x, z, z))
            dense._out_shape = z.shape
            # the pair's (BatchNormActivation._forward with its checks answered)
            bws = f[4]
            zb, a, mean, inv_std = bws[0], bws[1], bws[3], bws[4]
            p, b = bn.params, bn.buffers
            m = z.shape[0]
            cache = R.train_forward(
                z, p.get("gamma", _EMPTY), p.get("beta", _EMPTY), bn.epsilon, bn.momentum,
                m / (m - 1) if bn.unbiased_moving_variance else 1.0,
                b["moving_mean"], b["moving_variance"], zb, mean, inv_std, bn._saved, bn._stamp, f[5], a,
            )
            if type(cache) is int:
                bn._raise_bad_statistics(z, overflow=cache == R.OVERFLOW)
            bn._cache = cache
            bn._out_shape = zb.shape
            pair.act._set_training_cache(zb, a)
            self._fwd_fast = True
            return a
        self._fwd = None
        self._fwd_fast = False
        z = dense._train_forward(x)
        a = pair._train_forward(z)
        self._keep_forward(x, kernel, z, a)
        return a

    def _keep_forward(self, x, kernel, z, a) -> None:
        """Keep the forward's checks when the two passes took the paths the fast one repeats."""
        dense, pair = self.dense, self.pair
        bn = pair.bn
        ws, bws = dense._ws, bn._ws
        kind = pair._kind
        if not (x.ndim == 2 and x.flags.c_contiguous and ws is not None and z is ws[0] and bws is not None
                and a is bws[1] and kind is not None and pair._shape == z.shape and type(bn._cache) is R.RowsTrainCache
                and bn._cache.x is z and z.flags.c_contiguous and kernel.dtype == x.dtype
                and x.shape[0] * x.shape[1] * kernel.shape[1] < _threads.MIN_PARALLEL_FLOPS
                and z.size < _threads.MIN_PARALLEL_ELEMENTS and _backend.numba_enabled()):
            return
        self._fwd = (x.shape, x.dtype, kernel, ws, bws, kind)

    # ------------------------------------------------------------ backward
    def _train_backward(self, da, need_dx: bool = True):
        dense, pair = self.dense, self.pair
        bn, act = pair.bn, pair.act
        k = self._bwd
        if k is not None and k[0] is da and self._fwd_fast and bn._ws[2] is k[1] \
                and BatchNormActivation._backward is _PAIR_BACKWARD:
            # the pair's fused backward (BatchNormActivation._backward) with its checks answered: the
            # forward made the caches, and da passed them last step
            dz = k[1]
            kind = pair._backward_kind
            cache, act_cache = bn._cache, act._cache
            g = bn.grads
            try:
                R.train_backward(da, cache, bn.params.get("gamma", _EMPTY), dz, g["gamma"] if pair._dgamma else _EMPTY,
                                 g["beta"] if pair._dbeta else _EMPTY, not bn._grads_zero, kind,
                                 act_cache.z if kind == 0 else act_cache.a)
            finally:
                bn._grads_zero = act._grads_zero = False
            if need_dx or not dense._grads_zero or not dense._trainable or dense.units <= K_dense.SMALL_UNITS:
                return dense._train_backward(dz, need_dx)
            # Dense's of a first layer (no dx; fresh gradients: the one product of _linear_backward)
            try:
                _threads.matmul(dense._cache.x.T, dz, out=dense.grads["kernel"])
            finally:
                dense._grads_zero = False
            return None
        self._bwd = None
        dz = pair._backward(da, workspace=True)
        if dz is None:
            dz = bn._train_backward(act._train_backward(da, True), True)
        elif dz is bn._ws[2] and dense._cache.x.ndim == 2:
            self._bwd = (da, dz)
        return dense._train_backward(dz, need_dx)

    def __repr__(self) -> str:
        return f"<DenseBatchNormActivation {self.name!r}>"
