"""Dense and Activation layers (state only; the math is in ``kernels``)."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._validation import Boolean, Instance, Interval, NoneOk, Options, validate_params
from ..kernels.dense import dense_forward
from ._activated import ActivatedLinear
from .base import Layer

__all__ = ["Dense", "Activation"]

_ACT = [NoneOk(), Options(tuple(_activations.names()))]
_INIT = [str, dict, Instance(_initializers.Initializer)]
_REG = [NoneOk(), str, dict, Instance(_regularizers.Regularizer)]


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

    def backward_from_logits(self, dz) -> np.ndarray:
        """Back-propagate a gradient already taken with respect to the input ``z``."""
        return dz

    def get_config(self):
        return {"activation": self.activation, **super().get_config()}


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
        self._act = _activations.get(activation)

    def build(self, input_shape):
        n_in = input_shape[-1]
        if n_in < 1:
            raise ValueError(f"Layer {self.name!r} (Dense): the last input axis is empty.")
        self.add_weight("kernel", (n_in, self.units), self.kernel_initializer, self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer, self.bias_regularizer)

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
            self._cache = _DenseCache(x, z, a)
            self._out_shape = a.shape
        return a

    def _linear_backward(self, dz, need_dx: bool):
        if not self._trainable:
            return dz @ self.params["kernel"].T if need_dx else None
        x = self._cache.x
        x2 = x.reshape(-1, x.shape[-1])
        dz2 = dz.reshape(-1, dz.shape[-1])
        if self._grads_zero:
            # fresh gradients: let BLAS write them in place
            np.matmul(x2.T, dz2, out=self.grads["kernel"])
            if self.use_bias:
                np.add.reduce(dz2, axis=0, out=self.grads["bias"])
        else:
            self.grads["kernel"] += x2.T @ dz2
            if self.use_bias:
                self.grads["bias"] += dz2.sum(axis=0)
        return dz @ self.params["kernel"].T if need_dx else None

    def get_config(self):
        return {
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _initializers.serialize(self.kernel_initializer),
            "bias_initializer": _initializers.serialize(self.bias_initializer),
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
            **super().get_config(),
        }
