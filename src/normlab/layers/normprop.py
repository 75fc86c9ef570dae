"""Normalization propagation (Arpit et al. 2016) as a layer: state only, math in ``kernels.normprop``."""

from __future__ import annotations

import numbers

import numpy as np

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._validation import Boolean, Instance, Interval, NoneOk, Options, validate_params
from ..kernels import normprop as K
from .base import Layer

__all__ = ["NormPropDense"]

_INIT = [NoneOk(), str, dict, Instance(_initializers.Initializer)]
_REG = [NoneOk(), str, dict, Instance(_regularizers.Regularizer)]


class NormPropDense(Layer):
    """A fully connected layer normalized by propagation, not by batch statistics (NormProp).

    Computes the paper's equation, per unit ``i`` (``W_i`` is column ``i``
    of ``kernel``)::

        relu:    o_i = [ReLU(gamma_i W_i^T x / ||W_i||_2 + beta_i) - sqrt(1/(2 pi))] / sqrt((1/2)(1 - 1/pi))
        linear:  o_i = gamma_i W_i^T x / ||W_i||_2 + beta_i

    If ``x`` has mean 0 and unit variance per feature (normalize the data
    once, e.g. with :class:`~normlab.layers.Normalization` or a
    ``StandardScaler``), so does the output of every ``relu`` layer, by the
    analytic estimates of :mod:`normlab.kernels.normprop`: nothing is
    computed from the batch, training and inference compute the same
    function, and a batch of one trains. Use ``activation="linear"`` for the
    layer before the output (its ``o_i`` are logits), or a plain
    :class:`~normlab.layers.Dense` output layer.

    Parameters
    ----------
    units : int
        Output size; ``kernel`` has shape ``(n_in, units)``.
    activation : {"relu", "linear"}, default "relu"
        The paper derives the post-activation constants for ReLU; "linear"
        (or None) leaves out the ReLU and its normalization.
    use_bias : bool, default True
        Whether the layer has ``beta``.
    kernel_initializer : str, dict or Initializer, default "glorot_uniform"
        Only the direction of each column matters (its norm is divided out).
    gamma_initializer : str, dict, Initializer or None
        Default (None): the constant ``1/1.21`` of the paper for "relu"
        (it brings the singular values of each layer's Jacobian, about
        1.21 at ``gamma = 1``, back to 1; see the kernel module), ``"ones"``
        for "linear".
    beta_initializer : str, dict or Initializer, default "zeros"
    kernel_regularizer, gamma_regularizer, beta_regularizer : optional
        Penalties (:mod:`normlab.regularizers`). A penalty on the kernel
        only shrinks its norm, which the layer divides out.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    Parameters: ``kernel`` ``(n_in, units)``, ``gamma`` ``(units,)`` and, with
    ``use_bias``, ``beta`` ``(units,)``. ``gamma W_i / ||W_i||`` is the
    weight-normalized kernel of :class:`~normlab.layers.WeightNormalization`
    with ``g = gamma``; what NormProp adds is the fixed centring and scaling
    after the ReLU, which keep the next layer's input standardized.
    """

    min_ndim = 2
    _param_constraints = {
        "units": [Interval(numbers.Integral, 1, None)],
        "activation": [NoneOk(), Options(("relu", "linear"))],
        "use_bias": [Boolean()],
        "kernel_initializer": _INIT[1:],
        "gamma_initializer": _INIT,
        "beta_initializer": _INIT[1:],
        "kernel_regularizer": _REG,
        "gamma_regularizer": _REG,
        "beta_regularizer": _REG,
    }

    def __init__(
        self,
        units: int,
        activation: str | None = "relu",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        gamma_initializer=None,
        beta_initializer="zeros",
        kernel_regularizer=None,
        gamma_regularizer=None,
        beta_regularizer=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = "linear" if activation is None else activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self._gamma_default = gamma_initializer is None
        if gamma_initializer is None:
            gamma_initializer = (
                {"class_name": "Constant", "config": {"value": K.GAMMA_INIT}} if self.activation == "relu" else "ones"
            )
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        if n_in < 1:
            raise ValueError(f"Layer {self.name!r} (NormPropDense): the last input axis is empty.")
        self.add_weight("kernel", (n_in, self.units), self.kernel_initializer, self.kernel_regularizer)
        self.add_weight("gamma", (self.units,), self.gamma_initializer, self.gamma_regularizer)
        if self.use_bias:
            self.add_weight("beta", (self.units,), self.beta_initializer, self.beta_regularizer)

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        n_in = self.params["kernel"].shape[0]
        if shape[-1] != n_in:
            raise ValueError(
                f"Layer {self.name!r} (NormPropDense) was built for {n_in} input features "
                f"(last axis), got input of shape {tuple(shape)}."
            )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x, training):
        p = self.params
        o, cache = K.normprop_forward(x, p["kernel"], p["gamma"], p.get("beta"), relu=self.activation == "relu")
        if training:
            self._cache = cache
            self._out_shape = o.shape
        return o

    def _run(self, do, need_dx: bool):
        dx, grads = K.normprop_backward(do, self._cache, need_dx=need_dx, need_param_grads=self._trainable)
        for key, g in grads.items():
            if key in self.grads:
                self._accumulate_grad(key, g)
        return dx

    def _backward(self, dy):
        return self._run(dy, True)

    def _backward_params_only(self, dy):
        try:
            self._run(dy, False)
        finally:
            self._grads_zero = False

    def get_config(self):
        gamma = None if self._gamma_default else _initializers.serialize(self.gamma_initializer)
        return {
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _initializers.serialize(self.kernel_initializer),
            "gamma_initializer": gamma,
            "beta_initializer": _initializers.serialize(self.beta_initializer),
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
            "beta_regularizer": _regularizers.serialize(self.beta_regularizer),
            **super().get_config(),
        }
