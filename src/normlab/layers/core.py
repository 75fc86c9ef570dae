"""Dense, Activation and Identity layers (state only; the math is in ``kernels``)."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .. import activations as _activations
from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._validation import Boolean, Instance, Interval, NoneOk, Options, validate_params
from ..kernels import _threads
from ..kernels import losses as K_losses
from ..kernels import dense as K_dense
from ..kernels.dense import dense_forward
from ._activated import ActivatedLinear
from .base import Layer

__all__ = ["Dense", "Activation", "Identity"]

_new = tuple.__new__  # a named tuple without its Python-level constructor (every step)
_INTP = np.dtype(np.intp)

_ACT = [NoneOk(), Options(tuple(_activations.names()))]
_INIT = [str, dict, Instance(_initializers.Initializer)]
_REG = [NoneOk(), str, dict, Instance(_regularizers.Regularizer)]
_CON = [NoneOk(), str, dict, Instance(_constraints.Constraint)]



def _linear(a, b, out=None):
    """``a @ b``: 2-D products may be split by rows over normlab's threads (same bits), others one call."""
    return _threads.matmul(a, b, out=out) if a.ndim == 2 else np.matmul(a, b, out=out)


class _ActCache(NamedTuple):
    z: np.ndarray
    a: np.ndarray


class Activation(Layer):
    """Apply an activation elementwise: ``y = f(x)``.

    Parameters
    ----------
    activation : str or None
        One of linear, sigmoid, tanh, relu, leaky_relu, elu, selu, gelu,
        softmax (over the last axis). Formulas: :mod:`normlab.kernels.activations`.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {"activation": _ACT}

    def __init__(self, activation: str | None = "linear", **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"activation": activation})
        super().__init__(**kwargs)
        self.activation = activation
        self._kernel = _activations.get(activation)

    def call(self, x, training):
        a = self._kernel.forward(x)
        if training:
            self._set_training_cache(x, a)
        return a

    def _set_training_cache(self, z, a):
        """What a training forward call keeps (also set by a fused batch norm + activation pass)."""
        self._cache = _ActCache(z, a)
        self._out_shape = a.shape

    def _backward(self, dy):
        z, a = self._cache
        return self._kernel.backward(dy, z, a)

    @property
    def logits(self) -> np.ndarray:
        """The input ``z`` of the last training forward call (pre-activation)."""
        if self._cache is None:
            raise RuntimeError(f"Layer {self.name!r}: no training forward call to take logits from.")
        return self._cache.z

    def backward_from_logits(self, dz, need_dx: bool = True) -> np.ndarray | None:
        """Back-propagate a gradient already taken with respect to the input ``z`` (it is dL/dx)."""
        return dz if need_dx else None

    def get_config(self):
        return {"activation": self.activation, **super().get_config()}


class Identity(Layer):
    """``y = x`` (Keras's ``Identity``: a placeholder layer); ``dx = dy``."""

    def call(self, x, training):
        if training:
            self._cache = True
            self._out_shape = x.shape
        return x


class _DenseCache(NamedTuple):
    x: np.ndarray
    z: np.ndarray
    a: np.ndarray


class Dense(ActivatedLinear, Layer):
    """Fully connected layer: ``y = activation(x @ kernel + bias)``.

    Parameters
    ----------
    units : int
        Output size; ``kernel`` has shape ``(n_in, units)``.
    activation : str or None, default None
        Applied after the affine map (see :class:`Activation`).
    use_bias : bool, default True
        A bias is redundant right before batch normalization (its mean
        subtraction cancels it), so ``Dense(..., use_bias=False)`` is usual there.
    kernel_initializer, bias_initializer : str, dict or Initializer
        Defaults ``"glorot_uniform"`` and ``"zeros"`` (Keras).
    kernel_regularizer, bias_regularizer : str, dict, Regularizer or None
        Penalties added to the loss (:mod:`normlab.regularizers`).
    kernel_constraint, bias_constraint : str, dict, Constraint or None
        Projections applied after each optimizer update
        (:mod:`normlab.constraints`, e.g. ``MaxNorm(3)`` with dropout).

    Notes
    -----
    Inputs of rank > 2 are transformed along their last axis.
    Backward, with ``dz = dy * activation'(z)``: ``dx = dz W^T``,
    ``dW = x^T dz``, ``db = sum_batch dz``.
    """

    _writes_fresh_grads = True  # see Layer._writes_fresh_grads

    min_ndim = 2
    _param_constraints = {
        "units": [Interval(numbers.Integral, 1, None)],
        "activation": _ACT,
        "use_bias": [Boolean()],
        "kernel_initializer": _INIT,
        "bias_initializer": _INIT,
        "kernel_regularizer": _REG,
        "bias_regularizer": _REG,
        "kernel_constraint": _CON,
        "bias_constraint": _CON,
    }

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        *,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activation
        self.use_bias = bool(use_bias)
        # resolve now so that an unknown name fails at construction
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.bias_constraint = _constraints.get(bias_constraint)
        self._act = _activations.get(activation)
        self._ws = None  # per-batch-shape workspaces of the training step
        self._ce_grad = None

    def build(self, input_shape):
        n_in = input_shape[-1]
        if n_in < 1:
            raise ValueError(f"Layer {self.name!r} (Dense): the last input axis is empty.")
        self.add_weight("kernel", (n_in, self.units), self.kernel_initializer, self.kernel_regularizer)
        self._set_constraint("kernel", self.kernel_constraint)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer, self.bias_regularizer)
            self._set_constraint("bias", self.bias_constraint)

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        n_in = self.params["kernel"].shape[0]
        if shape[-1] != n_in:
            raise ValueError(
                f"Layer {self.name!r} (Dense) was built for {n_in} input features "
                f"(last axis), got input of shape {tuple(shape)}."
            )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x, training):
        z = dense_forward(x, self.params["kernel"], self.params.get("bias"))
        a = self._act.forward(z)
        if training:
            self._cache = _new(_DenseCache, (x, z, a))
            self._out_shape = a.shape
        return a

    # ------------------------------------------------- inside a model's step
    def _workspace(self, n: int, dtype):
        """``[z, dx, a, dz, fused, softmax]`` for a batch of ``n`` rows, kept from step to step (dx, a, dz made on first use).

        ``a`` and ``dz`` serve the fused ReLU passes, which apply as ``fused``
        (:func:`normlab.kernels.dense.fused_size`) says; the arrays are valid
        until the layer's next training pass. ``softmax``: whether the one-pass
        softmax and cross-entropy kernel takes ``z`` (decided on first use).
        """
        ws = self._ws
        if ws is None or ws[0].shape[0] != n or (ws[0].dtype is not dtype and ws[0].dtype != dtype):
            shape = (n, self.units)
            fused = K_dense.fused_size(shape, dtype) if self.activation == "relu" else 0
            ws = self._ws = [np.empty(shape, dtype), None, None, None, fused, None]
        return ws

    def _train_forward(self, x):
        if x.ndim != 2:
            return self.call(x, True)
        ws = self._workspace(x.shape[0], x.dtype)
        z = ws[0]
        _linear(x, self.params["kernel"], out=z)  # the same product as dense_forward's x @ W
        bias = self.params.get("bias")
        if ws[4] and K_dense.fused_now(ws[4]) and (bias is None or bias.dtype == z.dtype):
            # bias and ReLU in one pass into a kept array (the same bits as the two NumPy calls;
            # 13 us of a 250 us step of scikit-learn's MLP at batch 200 went to them and a new array)
            a = ws[2]
            if a is None:
                a = ws[2] = np.empty_like(z)
            K_dense.bias_relu(z, bias, a)
            self._cache = _new(_DenseCache, (x, z, a))
            self._out_shape = a.shape
            return a
        if bias is not None:
            np.add(z, bias, out=z)
        a = z if self.activation in (None, "linear") else self._act.forward(z)
        self._cache = _new(_DenseCache, (x, z, a))
        self._out_shape = a.shape
        return a

    def _train_forward_sparse_ce(self, x, labels):
        """This (softmax) layer's training forward pass and the sparse cross-entropy of ``labels``, in one kernel.

        Returns ``(loss, dL/dz, output)``, the numbers the forward pass and
        :meth:`~normlab.losses.SparseCategoricalCrossentropy.value_and_gradient_from_logits`
        give, or None where the kernel does not apply
        (:func:`normlab.kernels.losses.dense_softmax_sparse_ce`); then the
        layer has kept nothing and the caller runs the general path.
        """
        if x.ndim != 2:
            return None
        ws = self._workspace(x.shape[0], x.dtype)
        z = ws[0]
        _linear(x, self.params["kernel"], out=z)
        grad = self._ce_grad
        if grad is None or grad.shape != z.shape or grad.dtype != z.dtype:
            grad = self._ce_grad = np.empty_like(z)
        bias = self.params.get("bias")
        takes = ws[5]
        if takes is None:  # decided once per workspace (2 us of the kernel's checks every step)
            takes = ws[5] = K_losses.one_pass_shape(z)
        if takes and (labels.dtype is _INTP or labels.dtype == _INTP) and labels.shape == z.shape[:1] \
                and (bias is None or (bias.dtype == z.dtype and bias.flags.c_contiguous)):
            res = K_losses.dense_softmax_sparse_ce_checked(labels, z, bias, grad)
        else:
            res = K_losses.dense_softmax_sparse_ce(labels, z, bias, grad)
        if res is None:  # (a label out of range: nothing written but the bias) the general path
            return None
        value, out = res
        self._cache = _new(_DenseCache, (x, z, out))
        self._out_shape = out.shape
        return value, grad, out

    def _train_backward(self, dy, need_dx: bool = True):
        ws = self._ws
        if ws is not None and ws[4] and self.use_bias and self._trainable and self._grads_zero \
                and ws[0] is self._cache.z and dy.shape == ws[0].shape and dy.dtype == ws[0].dtype \
                and dy.flags.c_contiguous and K_dense.fused_now(ws[4]):
            # ReLU's derivative and the bias gradient (its column sums) in one pass, into a kept dz
            dz = ws[3]
            if dz is None:
                dz = ws[3] = np.empty_like(ws[0])
            K_dense.relu_backward_bias(dy, ws[0], dz, self.grads["bias"])
            return self._train_backward_from_logits(dz, need_dx, bias_done=True)
        return self._train_backward_from_logits(self._act_backward(dy), need_dx)

    def _train_backward_from_logits(self, dz, need_dx: bool = True, bias_done: bool = False):
        """:meth:`backward_from_logits` inside a model's step: dL/dx into a workspace.

        ``bias_done``: the bias gradient is already written (fresh gradients only).
        """
        try:
            ws, dx = self._ws, None
            if need_dx and ws is not None and dz.ndim == 2 and ws[0].shape == dz.shape and ws[0].dtype == dz.dtype:
                dx = ws[1]
                if dx is None:
                    dx = ws[1] = np.empty((dz.shape[0], self.params["kernel"].shape[0]), dz.dtype)
            return self._linear_backward(dz, need_dx, dx, bias_done)
        finally:
            self._grads_zero = False

    #: what :meth:`_small_backward` checked last: ``(key, scratch, arrays)``, scratch None where the kernel
    #: does not apply to that shape, ``arrays`` the arrays of the last call that passed every check
    _small = None

    def _small_backward(self, x, dz, need_dx: bool, dx_out, bias_done: bool):
        """dW, db and dx of a layer of few units in one kernel call (fresh gradients, 2-D arrays); None where it does not apply.

        :func:`normlab.kernels.dense.small_backward`: BLAS spends more on the thin
        products of an output layer (``x.T @ dz``, ``dz @ W.T`` with one to four
        columns) than on their arithmetic (17 of a 250 us step of scikit-learn's MLP
        at batch 200 on two classes; 7 here). Its sums run in a fixed order of their
        own, so the bits differ from BLAS's (see that kernel's docstring).
        """
        kernel = self.params["kernel"]
        dkernel = self.grads["kernel"]
        bias = self.grads["bias"] if self.use_bias and not bias_done else None
        dx = dx_out if need_dx else None
        small = self._small
        if small is not None:
            # a step of a model's loop passes the same arrays as the last one (workspaces, bound
            # parameters): what was checked for them holds
            seen = small[2]
            if seen is not None and seen[0] is x and seen[1] is dz and seen[2] is kernel and seen[3] is dkernel \
                    and seen[4] is bias and seen[5] is dx and (dx is not None or not need_dx):
                if K_dense.small_backward(x, dz, kernel, dkernel, bias, dx, small[1]):
                    return dx if need_dx else False
                return None
        dt = x.dtype
        key = (x.shape, dz.shape[1], dt)
        if small is None or small[0] != key:
            m, k = x.shape
            n = dz.shape[1]
            ok = kernel.shape == (k, n) and K_dense.small_backward_size(m, k, n, dt)
            small = self._small = (key, np.empty((n, k), dt) if ok else None, None)
        scratch = small[1]
        if scratch is None:
            return None
        if not (dz.dtype == dt and kernel.dtype == dt and dkernel.dtype == dt and x.flags.c_contiguous
                and dz.flags.c_contiguous and kernel.flags.c_contiguous and dkernel.flags.c_contiguous
                and (bias is None or (bias.dtype == dt and bias.flags.c_contiguous))):
            return None
        if need_dx:
            if dx is None:
                dx = np.empty(x.shape, dt)
            elif not (dx.shape == x.shape and dx.dtype == dt and dx.flags.c_contiguous):
                return None
        if not K_dense.small_backward(x, dz, kernel, dkernel, bias, dx, scratch):
            return None
        self._small = (key, scratch, (x, dz, kernel, dkernel, bias, dx))
        return dx if need_dx else False

    def _linear_backward(self, dz, need_dx: bool, dx_out=None, bias_done: bool = False):
        if self._trainable:
            x = self._cache.x
            if self.units <= K_dense.SMALL_UNITS and self._grads_zero and x.ndim == 2 and dz.ndim == 2:
                res = self._small_backward(x, dz, need_dx, dx_out, bias_done)
                if res is not None:
                    return res if need_dx else None
            x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
            dz2 = dz if dz.ndim == 2 else dz.reshape(-1, dz.shape[-1])
            if self._grads_zero:
                # fresh gradients: let BLAS write them in place; dx's product (2-D) goes in the same
                # hand-off to normlab's threads, its blocks beside dW's
                products = [(x2.T, dz2, self.grads["kernel"])]
                with_dx = need_dx and dz.ndim == 2
                if with_dx:
                    kernel = self.params["kernel"]
                    if dx_out is None:
                        dx_out = np.empty((dz.shape[0], kernel.shape[0]), np.result_type(dz, kernel))
                    products.append((dz, kernel.T, dx_out))
                    _threads.matmuls(products)
                else:  # one product: matmul's cut of it, the same bits as matmuls' (and fewer checks)
                    _threads.matmul(x2.T, dz2, out=self.grads["kernel"])
                if self.use_bias and not bias_done:
                    K_dense.bias_gradient(dz2, self.grads["bias"])
                if with_dx:
                    return dx_out
            else:
                self.grads["kernel"] += _threads.matmul(x2.T, dz2)
                if self.use_bias:
                    self.grads["bias"] += dz2.sum(axis=0)
        # (out=None: a new array, the product dz @ W.T)
        return _linear(dz, self.params["kernel"].T, out=dx_out) if need_dx else None

    def get_config(self):
        return {
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _initializers.serialize(self.kernel_initializer),
            "bias_initializer": _initializers.serialize(self.bias_initializer),
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
            # only when set: a config without them is the default (None), and readers of older
            # configs (the .keras mapping) need not know the keys
            **_constraints.config_entries(kernel_constraint=self.kernel_constraint,
                                          bias_constraint=self.bias_constraint),
            **super().get_config(),
        }
