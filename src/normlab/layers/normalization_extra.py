"""Per-sample normalization layers: layer, group, instance and RMS normalization.

State and checks only; the math (one kernel for "normalize over some axes of
each sample", its hand-derived backward pass, group norm as a reshape of the
channels) is in :mod:`normlab.kernels.layernorm`. None of these layers keeps
running statistics: training and inference compute the same function.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._validation import Boolean, Interval, Options, validate_params
from ..kernels import _backend
from ..kernels import layernorm as K
from .base import Layer
from .normalization import _EMPTY, _INIT, _REG, _AxisSpec

__all__ = [
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "RMSNormalization",
]


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _resolve_axes(layer: Layer, axis, shape: tuple) -> tuple:
    """Non-negative, sorted, distinct axes; never the batch axis."""
    ndim = len(shape)
    out = []
    for a in [axis] if isinstance(axis, int) else list(axis):
        if not -ndim <= a < ndim:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}): axis={a} is out of range for an "
                f"input of rank {ndim} and shape {tuple(shape)}."
            )
        a %= ndim
        if a == 0:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}): axis={axis} is the batch axis of "
                f"an input of shape {tuple(shape)}; statistics are per sample, so choose feature "
                f"or channel axes."
            )
        out.append(a)
    if len(set(out)) != len(out):
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}): repeated axis in {axis}.")
    return tuple(sorted(out))


class _SampleNormalization(Layer):
    """Shared state handling: affine parameters over some axes, shape checks, backward."""

    _centered = True

    def _init_common(self, axis, epsilon, center, scale, beta_initializer, gamma_initializer,
                     beta_regularizer, gamma_regularizer):
        self.axis = int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis]
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        self._checked_axes: tuple = ()  # axes whose size is fixed at build
        self._built_shape: tuple = ()

    def _add_affine(self, pshape: tuple) -> None:
        if self.scale:
            self.add_weight("gamma", pshape, self.gamma_initializer, self.gamma_regularizer)
        if self.center:
            self.add_weight("beta", pshape, self.beta_initializer, self.beta_regularizer)

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        for a in self._checked_axes:
            if shape[a] != self._built_shape[a]:
                raise ValueError(
                    f"Layer {self.name!r} ({type(self).__name__}) was built for size "
                    f"{self._built_shape[a]} along axis {a}, got size {shape[a]} "
                    f"(input shape {tuple(shape)})."
                )

    def _store(self, y, cache, training):
        if training:
            self._cache = cache
            self._out_shape = y.shape
        return y

    def _accumulate(self, dgamma, dbeta) -> None:
        if dgamma is not None and self.scale:
            self.grads["gamma"] += dgamma.reshape(self.grads["gamma"].shape)
        if dbeta is not None and self.center:
            self.grads["beta"] += dbeta.reshape(self.grads["beta"].shape)

    def _flat(self, key):
        p = self.params.get(key)
        return _EMPTY if p is None else p.reshape(-1)

    def _backward(self, dy):
        cache = self._cache
        if type(cache) is not tuple:  # a NamedTuple of the NumPy kernels
            dx, dgamma, dbeta = self._numpy_backward(dy, cache)
            self._accumulate(dgamma, dbeta)
            return dx
        # the numba forward's ("fused", x_view, mean, inv_std): _fused_kernel(dy_view,
        # x_view, mean, inv_std, dx, dgamma, dbeta) writes dx and adds the parameter
        # gradients (per last-axis entry of the view) into dgamma/dbeta (size 0: not wanted)
        _, xv, mean, inv_std = cache
        dyv = np.ascontiguousarray(dy, dtype=xv.dtype).reshape(xv.shape)
        dx = np.empty_like(xv)
        n = xv.shape[-1]
        # summed into zeros, then added to the gradients by _accumulate (which
        # reshapes to their shape, views into the model's flat buffer or not)
        dgamma = np.zeros(n, xv.dtype) if self._trainable and "gamma" in self.params else _EMPTY
        dbeta = np.zeros(n, xv.dtype) if self._trainable and "beta" in self.params else _EMPTY
        self._fused_kernel(dyv, xv, mean, inv_std, dx, dgamma, dbeta)
        self._accumulate(dgamma if dgamma.size else None, dbeta if dbeta.size else None)
        return dx.reshape(dy.shape)

    def _common_config(self) -> dict:
        ser_i, ser_r = _initializers.serialize, _regularizers.serialize
        return {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": ser_i(self.beta_initializer),
            "gamma_initializer": ser_i(self.gamma_initializer),
            "beta_regularizer": ser_r(self.beta_regularizer),
            "gamma_regularizer": ser_r(self.gamma_regularizer),
        }


class _AxesNormalization(_SampleNormalization):
    """Normalize over ``axis`` of each sample; parameters have the shape of those axes."""

    def build(self, input_shape):
        ndim = len(input_shape)
        self._checked_axes = _resolve_axes(self, self.axis, input_shape)
        self._built_shape = tuple(input_shape)
        self._bshape = tuple(input_shape[a] if a in self._checked_axes else 1 for a in range(ndim))
        self._add_affine(tuple(input_shape[a] for a in self._checked_axes))

    def _b(self, key):
        p = self.params.get(key)
        return None if p is None else p.reshape(self._bshape)

    def _rows(self, x):
        """``x`` viewed as ``(R, M)``, one row per statistic, when the numba kernels apply; else None.

        They apply to float32/float64 inputs normalized over their trailing
        axes (``axis=-1`` and the like), whose values per statistic are then
        contiguous.
        """
        axes, nd = self._checked_axes, x.ndim
        if not (_backend.numba_enabled() and x.size and x.dtype in _FUSED_DTYPES
                and axes == tuple(range(nd - len(axes), nd))):
            return None
        return np.ascontiguousarray(x).reshape(-1, math.prod(x.shape[nd - len(axes):]))

    def call(self, x, training):
        x2 = self._rows(x)
        if x2 is not None:
            from ..kernels import _layernorm_numba as F

            out = np.empty_like(x2)
            mean = np.empty(x2.shape[0], np.float64)
            inv_std = np.empty(x2.shape[0], np.float64)
            F.forward(x2, self._flat("gamma"), self._flat("beta"), self.epsilon, self._centered,
                      out, mean, inv_std)
            return self._store(out.reshape(x.shape), ("fused", x2, mean, inv_std), training)
        y, cache = K.normalize_forward(
            x, self._b("gamma"), self._b("beta"),
            axes=self._checked_axes, epsilon=self.epsilon, centered=self._centered,
        )
        return self._store(y, cache, training)

    def _numpy_backward(self, dy, cache):
        return K.normalize_backward(dy, cache, need_param_grads=self._trainable)

    def _fused_kernel(self, dyv, xv, mean, inv_std, dx, dgamma, dbeta):
        from ..kernels import _layernorm_numba as F

        F.backward(dyv, xv, self._flat("gamma"), mean, inv_std, self._centered, dx, dgamma, dbeta)


class LayerNormalization(_AxesNormalization):
    """Normalize each sample over ``axis`` (Ba, Kiros and Hinton 2016)::

        y = gamma * (x - mean) / sqrt(var + epsilon) + beta

    with ``mean`` and the biased ``var`` of each sample taken over ``axis``
    (Keras 3 numerics). Training and inference compute the same function.

    Parameters
    ----------
    axis : int or list of int, default -1
        The axes normalized over (not the batch axis 0). ``gamma`` and
        ``beta`` have the shape of these axes (in increasing axis order);
        other non-batch axes may change size between calls.
    epsilon : float > 0, default 1e-3
        Added to the variance. PyTorch's ``nn.LayerNorm`` default is 1e-5.
    center, scale : bool, default True
        Learn ``beta`` and ``gamma``; when off they are fixed at 0 and 1.
    beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer
        Defaults ``"zeros"``, ``"ones"``, ``None``, ``None``.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    PyTorch: ``torch.nn.functional.layer_norm(x, normalized_shape, w, b, eps)``
    normalizes over the *last* ``len(normalized_shape)`` axes, so
    ``LayerNormalization(axis=[1, 2, 3])`` on ``(N, H, W, C)`` is
    ``layer_norm(x, (H, W, C), eps=epsilon)``; other axes need a transpose.

    With numba installed, statistics over trailing axes (the common case)
    run in fused kernels (:mod:`normlab.kernels._layernorm_numba`: one pass
    per row each way, no temporaries); other axes take the NumPy kernels of
    :mod:`normlab.kernels.layernorm`. Both give the same numbers to within
    the order of their sums.
    """

    min_ndim = 2
    _param_constraints = {
        "axis": [_AxisSpec()],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "center": [Boolean()],
        "scale": [Boolean()],
        "beta_initializer": _INIT,
        "gamma_initializer": _INIT,
        "beta_regularizer": _REG,
        "gamma_regularizer": _REG,
    }

    def __init__(
        self,
        axis=-1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self._init_common(axis, epsilon, center, scale, beta_initializer, gamma_initializer,
                          beta_regularizer, gamma_regularizer)

    def get_config(self):
        return {**self._common_config(), **super().get_config()}


class RMSNormalization(_AxesNormalization):
    """Root-mean-square normalization (Zhang and Sennrich 2019; Keras 3 ``RMSNormalization``)::

        y = x / sqrt(mean(x^2 over axis) + epsilon) * gamma

    No mean is subtracted and there is no offset.

    Parameters
    ----------
    axis : int or list of int, default -1
        The axes the mean square is taken over (not the batch axis).
    epsilon : float > 0, default 1e-6
        Added to the mean square (Keras's default; PyTorch's ``rms_norm``
        defaults to the dtype's machine epsilon, so pass ``eps`` explicitly).
    gamma_initializer, gamma_regularizer
        The learnable per-feature scale, initialized to ones (extra to Keras,
        whose scale is always ones at init).
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    The learnable scale, Keras's ``scale`` variable, is stored under the key
    ``"gamma"`` (``params["gamma"]``), as in the other normalization layers.
    PyTorch: ``torch.nn.functional.rms_norm(x, normalized_shape, weight, eps)``
    over the last axes, as for layer norm. Over trailing axes it runs in the
    layer-norm numba kernels when numba is installed (see
    :class:`LayerNormalization`).
    """

    min_ndim = 2
    _centered = False
    _param_constraints = {
        "axis": [_AxisSpec()],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "gamma_initializer": _INIT,
        "gamma_regularizer": _REG,
    }

    def __init__(self, axis=-1, epsilon: float = 1e-6, gamma_initializer="ones",
                 gamma_regularizer=None, **kwargs):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self._init_common(axis, epsilon, False, True, "zeros", gamma_initializer,
                          None, gamma_regularizer)

    def get_config(self):
        return {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "gamma_initializer": _initializers.serialize(self.gamma_initializer),
            "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
            **super().get_config(),
        }


class GroupNormalization(_SampleNormalization):
    """Group normalization (Wu and He 2018; Keras 3 numerics).

    The ``C`` channels along ``axis`` are split into ``groups`` contiguous
    groups of ``C // groups``; each sample is normalized per group over the
    group's channels and every other non-batch axis (the spatial ones)::

        y = gamma_c * (x - mean_g) / sqrt(var_g + epsilon) + beta_c

    with one ``gamma``/``beta`` per channel. ``groups=1`` is layer norm over
    all non-batch axes with per-channel affine; ``groups=C`` is instance norm.

    Parameters
    ----------
    groups : int >= 1 or -1, default 32
        Must divide the channel count (checked at build). ``-1`` means one
        group per channel (Keras).
    axis : int, default -1
        The channel axis (not the batch axis).
    epsilon : float > 0, default 1e-3
        Added to the variance. PyTorch's ``group_norm`` default is 1e-5.
    center, scale : bool, default True
        Learn ``beta`` and ``gamma``.
    beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer
        Defaults ``"zeros"``, ``"ones"``, ``None``, ``None``.
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    PyTorch is channels-first: for a channels-last ``x`` of shape
    ``(N, H, W, C)``, ``torch.nn.functional.group_norm(x.permute(0, 3, 1, 2),
    groups, w, b, eps)`` permuted back equals this layer with ``axis=-1``
    (or use ``axis=1`` on channels-first data). Channel grouping is the same
    (contiguous) in both.

    With no spatial axes and one channel per group (``(N, C)`` input,
    ``groups=C``) each statistic is over a single value: ``xhat = 0`` and
    ``y = beta``, as in Keras.

    With numba installed, channels on the last axis run in fused kernels
    (:mod:`normlab.kernels._groupnorm_numba`); channels elsewhere take the
    NumPy kernels of :mod:`normlab.kernels.layernorm`.
    """

    min_ndim = 2
    _param_constraints = {
        "groups": [Interval(numbers.Integral, 1, None), Options((-1,))],
        "axis": [Interval(numbers.Integral, None, None)],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "center": [Boolean()],
        "scale": [Boolean()],
        "beta_initializer": _INIT,
        "gamma_initializer": _INIT,
        "beta_regularizer": _REG,
        "gamma_regularizer": _REG,
    }

    def __init__(
        self,
        groups: int = 32,
        axis: int = -1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self._init_common(axis, epsilon, center, scale, beta_initializer, gamma_initializer,
                          beta_regularizer, gamma_regularizer)
        self.groups = int(groups)
        self._groups = self.groups  # resolved at build (-1 -> channels)

    def build(self, input_shape):
        (a,) = _resolve_axes(self, self.axis, input_shape)
        channels = input_shape[a]
        groups = channels if self.groups == -1 else self.groups
        if groups > channels or channels % groups:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}): the {channels} channels along "
                f"axis {a} (input shape {tuple(input_shape)}) cannot be split into "
                f"groups={groups} equal groups; 'groups' must divide the channel count."
            )
        self._groups = groups
        self._checked_axes = (a,)
        self._built_shape = tuple(input_shape)
        self._add_affine((channels,))

    def call(self, x, training):
        if (_backend.numba_enabled() and x.size and x.dtype in _FUSED_DTYPES
                and self._checked_axes[0] == x.ndim - 1):
            # channels last: the numba kernels on x viewed as (N, positions, C)
            from ..kernels import _groupnorm_numba as F

            x3 = np.ascontiguousarray(x).reshape(x.shape[0], -1, x.shape[-1])
            out = np.empty_like(x3)
            mean = np.empty((x.shape[0], self._groups), np.float64)
            inv_std = np.empty((x.shape[0], self._groups), np.float64)
            F.forward(x3, self._groups, self._flat("gamma"), self._flat("beta"), self.epsilon, out, mean, inv_std)
            return self._store(out.reshape(x.shape), ("fused", x3, mean, inv_std), training)
        y, cache = K.group_norm_forward(
            x, self.params.get("gamma"), self.params.get("beta"),
            groups=self._groups, axis=self._checked_axes[0], epsilon=self.epsilon,
        )
        return self._store(y, cache, training)

    def _numpy_backward(self, dy, cache):
        return K.group_norm_backward(dy, cache, need_param_grads=self._trainable)

    def _fused_kernel(self, dyv, xv, mean, inv_std, dx, dgamma, dbeta):
        from ..kernels import _groupnorm_numba as F

        F.backward(dyv, xv, self._groups, self._flat("gamma"), mean, inv_std, dx, dgamma, dbeta)

    def get_config(self):
        return {"groups": self.groups, **self._common_config(), **super().get_config()}


class InstanceNormalization(GroupNormalization):
    """Instance normalization (Ulyanov et al. 2016): group norm with one group per channel.

    Each sample and channel is normalized over the remaining non-batch axes
    (the spatial ones), with per-channel ``gamma``/``beta`` (Keras-contrib
    and TensorFlow Addons semantics with ``axis=-1``)::

        y = gamma_c * (x - mean_{n,c}) / sqrt(var_{n,c} + epsilon) + beta_c

    Parameters are those of :class:`GroupNormalization` without ``groups``.
    PyTorch: ``torch.nn.functional.instance_norm(x_channels_first, weight=w,
    bias=b, eps=epsilon)`` (statistics from the input, no running buffers).
    """

    _param_constraints = {k: v for k, v in GroupNormalization._param_constraints.items() if k != "groups"}

    def __init__(
        self,
        axis: int = -1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            -1, axis, epsilon, center, scale, beta_initializer, gamma_initializer,
            beta_regularizer, gamma_regularizer, **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("groups")
        return config
