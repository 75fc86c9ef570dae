"""A preallocated training pass for Sequential models of Dense, BatchNormalization and Activation layers.

For a batch of 60 samples the layers' Python (argument checks, dictionary
lookups, allocation of every intermediate array) costs as much as their
arithmetic: in the BN paper's network about 80 of 450 us per step went to it.
A :class:`TrainPlan` is built once per input shape. It holds, for each layer,
the arrays the layer's training pass reads and writes (parameters,
gradients, moving statistics) and preallocated workspaces for its outputs
and input gradients, and runs the same kernels the layers call, in the same
order, so its results equal the layer-by-layer pass bit for bit (the tests
check this over several steps and many configurations).

What each layer keeps after a training forward pass (its ``_cache``, which
the backward pass, ``logits`` and :class:`~normlab.callbacks.TrainingDiagnostics`
read) is set exactly as the layer's own ``call`` sets it; the arrays it
points to are workspaces, valid until the next training step.

A plan applies when every layer is a trainable Dense, BatchNormalization
(plain: no renorm, no ghost batches, features on the last axis) or
Activation, the input is a 2-D float array, and numba is enabled (the batch
norm kernels). Anything else runs layer by layer. A plan is dropped when a
parameter, gradient or buffer array is replaced.
"""

from __future__ import annotations

import numpy as np

from ..kernels import _backend
from ..layers.core import Activation, Dense, _DenseCache
from ..layers.normalization import BatchNormalization
from ..losses import SparseCategoricalCrossentropy

try:  # the batch-norm kernels need numba; without it no plan is built
    from ..kernels import _batchnorm_numba as _F
    from ..kernels import _softmax_numba as _SM
    from ..kernels._fused_numba import ACT_KINDS as _ACT_KINDS
except ImportError:  # pragma: no cover - numba absent
    _F = _SM = None
    _ACT_KINDS = {}

_EMPTY = np.empty(0)


class _DenseOp:
    """``z = x W (+ b)``, ``a = f(z)``; backward writes dW (db) and returns dx."""

    def __init__(self, layer: Dense, n: int, dtype, need_dx: bool):
        self.layer = layer
        self.W = layer.params["kernel"]
        self.b = layer.params.get("bias")
        self.gW = layer.grads["kernel"]
        self.gb = layer.grads.get("bias")
        self.act = layer._act
        self.linear = layer.activation in (None, "linear")
        self.z = np.empty((n, self.W.shape[1]), dtype)
        # the model's first layer never passes a gradient on
        self.dx = np.empty((n, self.W.shape[0]), dtype) if need_dx else None

    def arrays(self):
        layer = self.layer
        return [(layer.params, "kernel", self.W), (layer.params, "bias", self.b),
                (layer.grads, "kernel", self.gW), (layer.grads, "bias", self.gb)]

    def forward(self, x):
        z = self.z
        np.matmul(x, self.W, out=z)
        if self.b is not None:
            np.add(z, self.b, out=z)
        return self.forward_biased(x)

    def forward_biased(self, x):
        """The rest of :meth:`forward` once ``self.z`` holds ``x W + b``."""
        z = self.z
        a = z if self.linear else self.act.forward(z)
        layer = self.layer
        layer._cache = _DenseCache(x, z, a)
        layer._out_shape = a.shape
        return a

    def forward_sparse_ce(self, x, labels):
        """The forward pass of a softmax output layer with its sparse cross-entropy.

        Returns ``(loss, dL/dz, output)`` from one kernel
        (:func:`~normlab.kernels._softmax_numba.bias_softmax_sparse_ce`), the
        numbers the layer's forward pass and the loss's
        ``value_and_gradient_from_logits`` give; None when the kernel
        returns NaN (NaN logits), for the caller to take the general path.
        """
        z = self.z
        np.matmul(x, self.W, out=z)
        out = np.empty_like(z)
        value = _SM.bias_softmax_sparse_ce(labels, z, _EMPTY if self.b is None else self.b, out, self.grad)
        if value != value:
            return None
        layer = self.layer
        layer._cache = _DenseCache(x, z, out)
        layer._out_shape = out.shape
        return value, self.grad, out

    def backward(self, g, need_dx: bool, from_logits: bool = False):
        layer = self.layer
        x, z, a = layer._cache
        dz = g if (from_logits or self.linear) else self.act.backward(g, z, a)
        if layer._grads_zero:
            np.matmul(x.T, dz, out=self.gW)
            if self.gb is not None:
                np.add.reduce(dz, axis=0, out=self.gb)
        else:
            self.gW += x.T @ dz
            if self.gb is not None:
                self.gb += dz.sum(axis=0)
        layer._grads_zero = False
        if not need_dx:
            return None
        np.matmul(dz, self.W.T, out=self.dx)
        return self.dx


class _BatchNormOp:
    """Training batch norm, alone or with the Activation after it (then one kernel each way where one exists)."""

    def __init__(self, layer: BatchNormalization, act: Activation | None, n: int, c: int, dtype):
        self.layer, self.act = layer, act
        kind = _ACT_KINDS.get(act.activation) if act is not None else None
        self.kind = kind
        self.fused_forward = BatchNormalization._forward_act_kernel(kind, dtype)
        self.fused_backward = kind is not None
        p, b, g = layer.params, layer.buffers, layer.grads
        self.gamma = p.get("gamma", _EMPTY)
        self.beta = p.get("beta", _EMPTY)
        self.dgamma = g.get("gamma", _EMPTY)
        self.dbeta = g.get("beta", _EMPTY)
        self.moving_mean, self.moving_var = b["moving_mean"], b["moving_variance"]
        self.var_correction = layer._var_correction(n)
        self.z = np.empty((n, c), dtype)
        self.a = np.empty((n, c), dtype) if self.fused_forward else None
        self.dx = np.empty((n, c), dtype)
        self.mean = np.empty(c, np.float64)
        self.inv_std = np.empty(c, np.float64)
        # the moving statistics before this step's update and the step's stamp (written by the kernel)
        self.saved = np.full(2 * c + 1, np.nan)
        self.stamp = 0.0  # the training step's number, set by the plan before the forward pass

    def arrays(self):
        layer = self.layer
        out = [(layer.buffers, "moving_mean", self.moving_mean), (layer.buffers, "moving_variance", self.moving_var)]
        for d, key, arr in ((layer.params, "gamma", self.gamma), (layer.params, "beta", self.beta),
                            (layer.grads, "gamma", self.dgamma), (layer.grads, "beta", self.dbeta)):
            out.append((d, key, arr if key in d else None))
        return out

    def forward(self, x):
        layer, act = self.layer, self.act
        if self.fused_forward:
            ok = _F.train_forward_act_step(
                x, self.gamma, self.beta, layer.epsilon, layer.momentum, self.var_correction,
                self.moving_mean, self.moving_var, self.z, self.mean, self.inv_std, self.kind, self.a,
                self.saved, self.stamp,
            )
        else:
            ok = _F.train_forward_step(
                x, self.gamma, self.beta, layer.epsilon, layer.momentum, self.var_correction,
                self.moving_mean, self.moving_var, self.z, self.mean, self.inv_std, self.saved, self.stamp,
            )
        if not ok:
            layer._raise_non_finite(x.shape)
        layer._cache = ("train_fused", x, self.mean, self.inv_std)
        layer._out_shape = x.shape
        if act is None:
            return self.z
        a = self.a if self.fused_forward else act._kernel.forward(self.z)
        act._set_training_cache(self.z, a)
        return a

    def undo(self, stamp: float) -> None:
        """Give the moving statistics back their values before the step ``stamp``, if that step updated them."""
        saved, c = self.saved, self.moving_mean.size
        if saved[2 * c] == stamp:
            np.copyto(self.moving_mean, saved[:c], casting="unsafe")  # float64 copies of float32 values: exact
            np.copyto(self.moving_var, saved[c : 2 * c], casting="unsafe")

    def backward(self, g, need_dx: bool = True):
        layer, act = self.layer, self.act
        x = layer._cache[1]
        accumulate = not layer._grads_zero
        g = np.ascontiguousarray(g)  # the kernels view it as (n, c) rows
        if act is not None and not self.fused_backward:
            g = act._kernel.backward(g, self.z, act._cache.a)
            act._grads_zero = False
        if self.fused_backward:
            s = self.z if self.kind == 0 else act._cache.a
            _F.train_backward_act_step(
                g, s, self.kind, x, self.mean, self.inv_std, self.gamma, self.dx,
                self.dgamma, self.dbeta, accumulate,
            )
            act._grads_zero = False
        else:
            _F.train_backward_step(g, x, self.mean, self.inv_std, self.gamma, self.dx,
                                   self.dgamma, self.dbeta, accumulate)
        layer._grads_zero = False
        return self.dx


class _ActivationOp:
    def __init__(self, layer: Activation):
        self.layer = layer
        self.kernel = layer._kernel

    def arrays(self):
        return []

    def forward(self, x):
        a = self.kernel.forward(x)
        self.layer._set_training_cache(x, a)
        return a

    def backward(self, g, need_dx: bool = True):
        layer = self.layer
        z, a = layer._cache
        layer._grads_zero = False
        return self.kernel.backward(g, z, a)


class TrainPlan:
    """The training forward and backward passes of a Sequential model for one input shape.

    Build with :meth:`for_model`, which returns ``None`` where no plan applies.
    """

    def __init__(self, ops, shape, dtype, sparse_ce: bool = False):
        self.ops = ops
        self.shape = shape
        self.dtype = dtype
        # what a step changes besides parameters: the moving statistics, which each
        # batch-norm step saves (in its kernel) before updating them
        self._bn_ops = [op for op in ops if type(op) is _BatchNormOp]
        self._steps = 0
        # a softmax output trained with sparse cross-entropy: one kernel for output, loss and gradient
        self.sparse_ce = sparse_ce
        if sparse_ce:
            ops[-1].grad = np.empty_like(ops[-1].z)
        self._identity = [(d, k, a) for op in ops for d, k, a in op.arrays()]
        # what a forward pass may return without copying: no workspace of any step
        self._workspaces = {id(getattr(op, name)) for op in ops for name in ("z", "a")
                            if getattr(op, name, None) is not None}

    @classmethod
    def for_model(cls, model, x: np.ndarray) -> "TrainPlan | None":
        layers = model.layers
        if (
            _F is None
            or not _backend.numba_enabled()
            or x.ndim != 2
            or x.shape[0] < 2
            or not (x.dtype == np.float32 or x.dtype == np.float64)
            or not layers
        ):
            return None
        n = x.shape[0]
        dtype = x.dtype
        ops = []
        width = x.shape[1]
        i = 0
        while i < len(layers):
            layer = layers[i]
            if not layer._trainable or (layer.dtype is not None and np.dtype(layer.dtype) != dtype):
                return None
            kind = type(layer)
            if kind is Dense:
                ops.append(_DenseOp(layer, n, dtype, need_dx=bool(ops)))
                width = layer.units
            elif kind is BatchNormalization:
                if layer.renorm or layer.virtual_batch_size is not None or not layer._features_last:
                    return None
                act = layers[i + 1] if i + 1 < len(layers) and type(layers[i + 1]) is Activation else None
                if act is not None and not act._trainable:
                    return None
                ops.append(_BatchNormOp(layer, act, n, width, dtype))
                i += 1 if act is None else 2
                continue
            elif kind is Activation:
                ops.append(_ActivationOp(layer))
            else:
                return None
            i += 1
        fused = getattr(model, "_fused", False)
        if fused and type(ops[-1]) is not _DenseOp:
            return None  # a loss differentiated through the logits enters at a Dense layer here
        loss = getattr(model, "loss", None)
        sparse_ce = (
            fused
            and type(loss) is SparseCategoricalCrossentropy
            and not loss.label_smoothing
            and layers[-1].activation == "softmax"
            and _SM.takes(n, ops[-1].z.shape[1])  # where the loss itself takes the numba kernel
        )
        return cls(ops, x.shape, dtype, sparse_ce)

    def matches(self, x: np.ndarray) -> bool:
        """True while ``x`` has the plan's shape and dtype and no layer array was replaced."""
        if x.shape != self.shape or x.dtype != self.dtype:
            return False
        for d, key, arr in self._identity:
            if d.get(key) is not arr:
                return False
        return True

    def forward(self, x: np.ndarray) -> np.ndarray:
        for op in self.ops:
            x = op.forward(x)
        if id(x) in self._workspaces:
            x = x.copy()  # a workspace, which the next step overwrites: the caller gets its own array
        return x

    def train_step(self, model, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """``model._train_step`` on this plan: the same arithmetic in fewer Python calls.

        The batch-norm kernels save the moving statistics they update (to
        undo a failed step) instead of a copy of every buffer beforehand, and
        a softmax output trained with sparse cross-entropy on integer labels
        runs :meth:`_DenseOp.forward_sparse_ce`.
        """
        self._steps += 1
        stamp = float(self._steps)
        for op in self._bn_ops:
            op.stamp = stamp
        try:
            if self.sparse_ce and y.dtype == np.intp:
                ops = self.ops
                a = x
                for i in range(len(ops) - 1):
                    a = ops[i].forward(a)
                result = ops[-1].forward_sparse_ce(a, y)
                if result is None:  # NaN logits (a label out of range is caught before): the general path
                    a = ops[-1].forward_biased(a)
                    result = (*model._loss_and_output_grad(y, a)[:2], a)
                value, grad, out = result
                fused = True
            else:
                out = self.forward(x)
                value, grad, fused = model._loss_and_output_grad(y, out)
            value = model._backward_and_update(value, grad, fused, self.backward)
        except BaseException:
            for op in self._bn_ops:
                op.undo(stamp)
            raise
        return value, out

    def backward(self, grad: np.ndarray, fused: bool) -> None:
        ops = self.ops
        last = len(ops) - 1
        i = last
        if fused:
            grad = ops[-1].backward(grad, need_dx=last > 0, from_logits=True)
            i -= 1
        while i >= 0:
            grad = ops[i].backward(grad, need_dx=i > 0)
            i -= 1
