"""Layer wrappers: :class:`WeightNormalization` (math in ``kernels.weightnorm``)."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .. import activations as _activations
from .._validation import Boolean, Instance, validate_params
from ..kernels import weightnorm as KW
from ..kernels.dense import dense_backward, dense_forward
from ._activated import ActivatedLinear
from .base import Layer, registry
from .conv import Conv1D, Conv2D, conv_linear_ops
from .core import Dense

__all__ = ["WeightNormalization"]


class _LinearOps(NamedTuple):
    """The linear map of a wrappable layer, as pure functions of an explicit kernel.

    ``forward(x, kernel, bias) -> z``;
    ``backward(dz, x, kernel, need_param_grads=...) -> (dx, dkernel, dbias)``.
    The kernel's last axis must index the output units.
    """

    forward: Callable
    backward: Callable


def _conv_ops(layer) -> _LinearOps:
    # convolutions carry strides, padding and dilation: bind them to the layer
    return _LinearOps(*conv_linear_ops(layer))


# Wrappable layer types: an entry is the ops or a factory taking the layer.
# Convolution kernels are (kh, kw, c_in, c_out): the norm is per filter.
_LINEAR_OPS: dict[type, _LinearOps | Callable] = {
    Dense: _LinearOps(dense_forward, dense_backward),
    Conv1D: _conv_ops,
    Conv2D: _conv_ops,
}


def _ops_for(layer: Layer) -> _LinearOps:
    for cls in type(layer).__mro__:
        if cls in _LINEAR_OPS:
            ops = _LINEAR_OPS[cls]
            return ops if isinstance(ops, _LinearOps) else ops(layer)
    raise TypeError(f"WeightNormalization cannot wrap a {type(layer).__name__}.")  # pragma: no cover


class _WNCache(NamedTuple):
    x: np.ndarray
    z: np.ndarray
    a: np.ndarray
    w: np.ndarray
    wn: KW.WeightNormCache


class WeightNormalization(ActivatedLinear, Layer):
    """Weight normalization of a wrapped layer's kernel (Salimans and Kingma 2016).

    The wrapped layer's kernel is reparameterized per output unit as::

        w = g * v / ||v||          (norm over every kernel axis but the last)

    and the wrapper computes ``activation(x @ w + bias)`` with the wrapped
    layer's activation. The trainable parameters are ``"v"`` (the kernel's
    shape), ``"g"`` (one per output unit) and, if the wrapped layer has one,
    ``"bias"``. Equations and backward pass: :mod:`normlab.kernels.weightnorm`.

    Parameters
    ----------
    layer : Dense, Conv1D or Conv2D
        The layer to wrap (other linear layers plug in through
        ``_LINEAR_OPS``); for a convolution the norm is taken per filter over
        ``(kh, kw, c_in)``. It supplies the configuration (units,
        activation, bias, initializers, regularizers) and is built with the
        wrapper; its initial kernel becomes ``v`` and ``g`` starts at
        ``||v||`` (so ``w`` is the initial kernel). If it is already built,
        its current weights are taken over.
    data_init : bool, default True
        Data-dependent initialization: on the first training call, with
        ``t = x . v/||v||`` the pre-activations of that batch, set
        ``g = 1/std(t)`` and ``bias = -mean(t)/std(t)`` per unit, so the
        pre-activations of that batch have zero mean and unit variance (the
        notes' "requires good init"). Without a bias only ``g`` is set. Done
        once (the ``"initialized"`` buffer remembers it, so a saved and
        reloaded layer does not redo it); not done while frozen.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    While wrapped, the wrapped layer's own ``params`` are not used or updated
    (the wrapper's ``trainable`` flag rules); :meth:`remove` writes the
    effective ``w`` and bias back and returns it. The wrapped layer's
    ``kernel_regularizer`` penalizes ``v`` (as in TensorFlow Addons) and its
    ``bias_regularizer`` the bias.

    PyTorch: ``torch.nn.utils.parametrizations.weight_norm(nn.Linear, dim=0)``
    with ``original0 = g[:, None]`` and ``original1 = v.T`` (torch's weight is
    ``(units, n_in)``).
    """

    _param_constraints = {
        "layer": [Instance(*_LINEAR_OPS, label="a Dense, Conv1D or Conv2D layer")],
        "data_init": [Boolean()],
    }

    def __init__(self, layer, data_init: bool = True, **kwargs):
        validate_params(
            type(self).__name__, self._param_constraints, {"layer": layer, "data_init": data_init}
        )
        super().__init__(**kwargs)
        self.layer = layer
        self.data_init = bool(data_init)
        self.min_ndim = layer.min_ndim
        self._ops = _ops_for(layer)

    # ----------------------------------------------------------------- state
    @property
    def activation(self):
        """The wrapped layer's activation (lets a model fuse softmax with cross-entropy)."""
        return self.layer.activation

    @property
    def kernel(self) -> np.ndarray:
        """The effective kernel ``w = g * v / ||v||``."""
        if not self.built:
            raise RuntimeError(f"Layer {self.name!r}: not built yet.")
        return KW.weight_norm_forward(self.params["v"], self.params["g"])[0]

    def build(self, input_shape):
        inner = self.layer
        if not inner.built:
            if inner.dtype is None:
                inner.dtype = self.dtype
            inner.build_from_shape(input_shape, rng=self._build_rng)
        else:
            self._check_inner(input_shape)
        kernel = inner.params["kernel"]
        v = self.add_weight("v", kernel.shape, "zeros", getattr(inner, "kernel_regularizer", None))
        np.copyto(v, kernel, casting="unsafe")
        g = self.add_weight("g", kernel.shape[-1:], "ones")
        np.copyto(g, np.sqrt(np.sum(np.square(v, dtype=np.float64), axis=tuple(range(v.ndim - 1)))),
                  casting="unsafe")
        if "bias" in inner.params:
            b = self.add_weight("bias", inner.params["bias"].shape, "zeros",
                                getattr(inner, "bias_regularizer", None))
            np.copyto(b, inner.params["bias"], casting="unsafe")
        if self.data_init:
            self.add_weight("initialized", (1,), "zeros", trainable=False)
        self._act = _activations.get(inner.activation)

    def _check_inner(self, shape):
        try:
            self.layer.check_input_shape(tuple(shape))
        except ValueError as exc:
            raise ValueError(f"Layer {self.name!r} (WeightNormalization): {exc}") from None

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        self._check_inner(shape)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # --------------------------------------------------------------- forward
    def _data_dependent_init(self, x: np.ndarray) -> None:
        n = int(np.prod(x.shape[:-1]))
        if n < 2:
            raise ValueError(
                f"Layer {self.name!r} (WeightNormalization): data-dependent initialization needs "
                f"at least 2 samples per unit, got an input of shape {tuple(x.shape)}. Use a "
                f"larger first batch or data_init=False."
            )
        w_hat, _ = KW.weight_norm_forward(self.params["v"], np.ones_like(self.params["g"]))
        g, bias = KW.data_dependent_init(self._ops.forward(x, w_hat, None))
        if not (np.isfinite(g).all() and np.isfinite(bias).all()):
            raise ValueError(
                f"Layer {self.name!r} (WeightNormalization): data-dependent initialization found "
                f"pre-activations with zero variance (or NaN/inf) on the first training batch of "
                f"shape {tuple(x.shape)}. Use a more varied first batch or data_init=False."
            )
        np.copyto(self.params["g"], g, casting="unsafe")
        if "bias" in self.params:
            np.copyto(self.params["bias"], bias, casting="unsafe")
        self.buffers["initialized"][...] = 1

    def call(self, x, training):
        if training and self.data_init and self._trainable and not self.buffers["initialized"][0]:
            self._data_dependent_init(x)
        w, wn = KW.weight_norm_forward(self.params["v"], self.params["g"])
        z = self._ops.forward(x, w, self.params.get("bias"))
        a = self._act.forward(z)
        if training:
            self._cache = _WNCache(x, z, a, w, wn)
            self._out_shape = a.shape
        return a

    # -------------------------------------------------------------- backward
    def _linear_backward(self, dz, need_dx: bool):
        c = self._cache
        need = self._trainable
        dx, dw, db = self._ops.backward(dz, c.x, c.w, need_param_grads=need)
        if need:
            dv, dg = KW.weight_norm_backward(dw, c.wn)
            self._accumulate_grad("v", dv)
            self._accumulate_grad("g", dg)
            if "bias" in self.grads:
                self._accumulate_grad("bias", db)
        return dx if need_dx else None

    def remove(self) -> Layer:
        """Return the wrapped layer with the effective kernel ``w`` and the bias written into it."""
        if self.built:
            np.copyto(self.layer.params["kernel"], self.kernel, casting="unsafe")
            if "bias" in self.params:
                np.copyto(self.layer.params["bias"], self.params["bias"], casting="unsafe")
        return self.layer

    # ---------------------------------------------------------- serialization
    def get_config(self):
        return {
            "layer": registry.serialize(self.layer),
            "data_init": self.data_init,
            **super().get_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = registry.deserialize(config.pop("layer"))
        return cls(layer, **config)
