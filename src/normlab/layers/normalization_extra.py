"""Per-sample normalization layers: layer, group, instance and RMS normalization.

State and checks only; the math (one kernel for "normalize over some axes of
each sample", its hand-derived backward pass, group norm as a reshape of the
channels) and the choice between the numba and NumPy implementations are in
:mod:`normlab.kernels.layernorm`. None of these layers keeps running
statistics: training and inference compute the same function.

Inside a model's training step (``_train_forward`` / ``_train_backward``)
the output and the input gradient are written into arrays the layer keeps
for the current input shape (:class:`Workspaces`); the public ``layer(x)``
and ``backward(dy)`` return new arrays. The input's shape is checked once
per new shape.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._validation import Boolean, Interval, Options, validate_params
from ..kernels import layernorm as K
from .base import Layer
from .core import _CON
from .normalization import _INIT, _REG, _AxisSpec

__all__ = [
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "RMSNormalization",
]


class Workspaces:
    """Arrays a layer writes its results into inside a model's training step, one per role.

    ``get("y", shape, dtype)`` returns the array kept for that role, or a new
    one when the shape or dtype changed (only the latest is kept, so memory
    stays bounded when the last batch of an epoch is smaller). What a
    workspace holds is valid until the layer's next training pass, as the
    model's executor expects (:meth:`normlab.layers.Layer._train_forward`).
    """

    __slots__ = ("_arrays",)

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, role: str, shape: tuple, dtype) -> np.ndarray:
        a = self._arrays.get(role)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[role] = np.empty(shape, dtype)
        return a


def _resolve_axes(layer: Layer, axis, shape: tuple) -> tuple:
    """Non-negative, sorted, distinct axes; never the batch axis."""
    ndim = len(shape)
    out = []
    for a in [axis] if isinstance(axis, numbers.Integral) else list(axis):
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
        out.append(int(a))
    if len(set(out)) != len(out):
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}): repeated axis in {axis}.")
    return tuple(sorted(out))


class _KernelLayer(Layer):
    """A layer over one kernel pair: per-shape workspaces and checks, the two calling paths.

    Subclasses implement ``_forward(x, out) -> (y, cache)`` and
    ``_kernel_backward(dy, cache, out) -> dx`` over their kernel's entry
    points (``out``: an array to write the result into, or None for a new
    one), and accumulate their parameter gradients in ``_kernel_backward``.
    """

    #: the last input shape that passed :meth:`check_input_shape`
    _valid_shape: tuple | None = None
    _ws: Workspaces | None = None

    def check_input_shape(self, shape):
        if shape == self._valid_shape:
            return
        super().check_input_shape(shape)
        self._check_sizes(shape)
        self._valid_shape = tuple(shape)

    def _check_sizes(self, shape) -> None:
        """Raise ``ValueError`` if ``shape`` does not fit the sizes fixed at build (none here)."""

    def _workspace(self, role: str, shape: tuple) -> np.ndarray:
        if self._ws is None:
            self._ws = Workspaces()
        return self._ws.get(role, shape, self.dtype)

    def call(self, x, training):
        y, cache = self._forward(x, None)
        if training:
            self._cache = cache
            self._out_shape = y.shape
        return y

    def _train_forward(self, x):
        self.check_input_shape(x.shape)  # once per new shape
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        y, self._cache = self._forward(x, self._workspace("y", x.shape))
        self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return self._kernel_backward(dy, self._cache, None)

    def _train_backward(self, dy, need_dx: bool = True):
        # the kernels compute dx with the parameter gradients at no extra pass:
        # without need_dx it is written into the workspace and not returned
        if dy.dtype != self.dtype:
            dy = dy.astype(self.dtype)
        try:
            dx = self._kernel_backward(dy, self._cache, self._workspace("dx", dy.shape))
        finally:
            self._grads_zero = False
        return dx if need_dx else None


class _SampleNormalization(_KernelLayer):
    """Shared state handling: affine parameters over some axes and the sizes fixed at build."""

    def _init_common(self, axis, epsilon, center, scale, beta_initializer, gamma_initializer,
                     beta_regularizer, gamma_regularizer, beta_constraint=None, gamma_constraint=None):
        self.axis = int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis]
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        # Keras's beta_constraint / gamma_constraint: projections after each optimizer update
        self.beta_constraint = _constraints.get(beta_constraint)
        self.gamma_constraint = _constraints.get(gamma_constraint)
        self._checked_axes: tuple = ()  # axes whose size is fixed at build
        self._built_shape: tuple = ()

    def _add_affine(self, pshape: tuple) -> None:
        # constraints attached apart, as Dense does (the .keras reader stands in for add_weight)
        if self.scale:
            self.add_weight("gamma", pshape, self.gamma_initializer, self.gamma_regularizer)
            self._set_constraint("gamma", self.gamma_constraint)
        if self.center:
            self.add_weight("beta", pshape, self.beta_initializer, self.beta_regularizer)
            self._set_constraint("beta", self.beta_constraint)

    def _check_sizes(self, shape):
        for a in self._checked_axes:
            if shape[a] != self._built_shape[a]:
                raise ValueError(
                    f"Layer {self.name!r} ({type(self).__name__}) was built for size "
                    f"{self._built_shape[a]} along axis {a}, got size {shape[a]} "
                    f"(input shape {tuple(shape)})."
                )

    def _grad_accumulators(self) -> dict:
        """The arrays the kernels add the parameter gradients into (none when frozen)."""
        if not self._trainable:
            return {"need_param_grads": False}
        g = self.grads
        return {"dgamma_acc": g.get("gamma"), "dbeta_acc": g.get("beta")}

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
            **_constraints.config_entries(beta_constraint=self.beta_constraint,
                                          gamma_constraint=self.gamma_constraint),
        }


class _AxesNormalization(_SampleNormalization):
    """Normalize over ``axis`` of each sample; parameters have the shape of those axes."""

    _centered = True

    def build(self, input_shape):
        ndim = len(input_shape)
        self._checked_axes = _resolve_axes(self, self.axis, input_shape)
        self._built_shape = tuple(input_shape)
        self._bshape = tuple(input_shape[a] if a in self._checked_axes else 1 for a in range(ndim))
        self._add_affine(tuple(input_shape[a] for a in self._checked_axes))

    def _b(self, key):
        p = self.params.get(key)
        return None if p is None else p.reshape(self._bshape)

    def _forward(self, x, out):
        return K.normalize_forward(
            x, self._b("gamma"), self._b("beta"), axes=self._checked_axes,
            epsilon=self.epsilon, centered=self._centered, out=out,
        )

    def _kernel_backward(self, dy, cache, out):
        return K.normalize_backward(dy, cache, out=out, **self._grad_accumulators())[0]


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
    beta_constraint, gamma_constraint : str, dict, Constraint or None (keyword-only)
        Projections applied after each optimizer update (Keras's arguments).
    rms_scaling : bool, default False
        Keras 3's (deprecated) argument, with its numerics: the input is
        not centered but divided by its standard deviation,
        ``y = gamma * x / sqrt(var + epsilon)`` (``var`` the centered,
        biased variance, *not* the mean square); ``gamma`` is learned even
        with ``scale=False`` and there is no ``beta`` whatever ``center``
        says. A ``UserWarning`` says so, as Keras's does; root-mean-square
        normalization proper is :class:`RMSNormalization`. Runs on the NumPy
        kernels (:func:`normlab.kernels.layernorm.variance_scale_forward`).
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).

    Notes
    -----
    PyTorch: ``torch.nn.functional.layer_norm(x, normalized_shape, w, b, eps)``
    normalizes over the *last* ``len(normalized_shape)`` axes, so
    ``LayerNormalization(axis=[1, 2, 3])`` on ``(N, H, W, C)`` is
    ``layer_norm(x, (H, W, C), eps=epsilon)``; other axes need a transpose.

    With numba installed, statistics over trailing axes (the common case)
    run in fused kernels (one pass per row each way, no temporaries); other
    axes take NumPy code. :func:`normlab.kernels.layernorm.normalize_forward`
    chooses; both give the same numbers to within the order of their sums.
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
        "rms_scaling": [Boolean()],
        "beta_constraint": _CON,
        "gamma_constraint": _CON,
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
        rms_scaling: bool = False,
        *,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self._init_common(axis, epsilon, center, scale, beta_initializer, gamma_initializer,
                          beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)
        self.rms_scaling = bool(rms_scaling)
        if self.rms_scaling:
            warnings.warn(
                "LayerNormalization(rms_scaling=True) divides the uncentered input by its standard "
                "deviation, not by its root mean square (Keras 3's deprecated numerics); for RMS "
                "normalization use RMSNormalization.",
                UserWarning,
                stacklevel=2,
            )

    def _add_affine(self, pshape: tuple) -> None:
        if not self.rms_scaling:
            return super()._add_affine(pshape)
        # Keras: gamma whatever `scale` says, never beta
        self.add_weight("gamma", pshape, self.gamma_initializer, self.gamma_regularizer)

    def _forward(self, x, out):
        if not self.rms_scaling:
            return super()._forward(x, out)
        return K.variance_scale_forward(x, self._b("gamma"), axes=self._checked_axes,
                                        epsilon=self.epsilon, out=out)

    def _kernel_backward(self, dy, cache, out):
        if type(cache) is not K.VarianceScaleCache:
            return super()._kernel_backward(dy, cache, out)
        acc = self._grad_accumulators()
        acc.pop("dbeta_acc", None)
        return K.variance_scale_backward(dy, cache, out=out, **acc)[0]

    def get_config(self):
        return {**self._common_config(), "rms_scaling": self.rms_scaling, **super().get_config()}


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
    gamma_constraint : str, dict, Constraint or None (keyword-only)
        A projection applied after each optimizer update.
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
        "gamma_constraint": _CON,
    }

    def __init__(self, axis=-1, epsilon: float = 1e-6, gamma_initializer="ones",
                 gamma_regularizer=None, *, gamma_constraint=None, **kwargs):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self._init_common(axis, epsilon, False, True, "zeros", gamma_initializer,
                          None, gamma_regularizer, None, gamma_constraint)

    def get_config(self):
        return {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "gamma_initializer": _initializers.serialize(self.gamma_initializer),
            "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
            **_constraints.config_entries(gamma_constraint=self.gamma_constraint),
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
    beta_constraint, gamma_constraint : str, dict, Constraint or None (keyword-only)
        Projections applied after each optimizer update (Keras's arguments).
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

    With numba installed, channels on the last axis run in fused kernels;
    channels elsewhere take NumPy code
    (:func:`normlab.kernels.layernorm.group_norm_forward` chooses).
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
        "beta_constraint": _CON,
        "gamma_constraint": _CON,
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
        *,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(**kwargs)
        self._init_common(axis, epsilon, center, scale, beta_initializer, gamma_initializer,
                          beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)
        self.groups = int(groups)
        self._groups = self.groups  # resolved at build (-1 -> channels)

    def build(self, input_shape):
        (a,) = _resolve_axes(self, self.axis, input_shape)
        channels = input_shape[a]
        groups = channels if self.groups == -1 else self.groups
        # the two phrases are Keras's ("cannot be more than ...", "must be a multiple of ...")
        if groups > channels:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}): groups={groups} cannot be more than the number "
                f"of channels: {channels} channels along axis {a} (input shape {tuple(input_shape)})."
            )
        if channels % groups:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}): groups={groups} must divide the {channels} "
                f"channels along axis {a} (input shape {tuple(input_shape)}); Keras words it as: the number of "
                f"groups must be a multiple of the number of channels."
            )
        self._groups = groups
        self._checked_axes = (a,)
        self._built_shape = tuple(input_shape)
        self._add_affine((channels,))

    def compute_output_shape(self, input_shape):
        (a,) = _resolve_axes(self, self.axis, input_shape)
        if input_shape[a] is None:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}): axis {a} of the input tensor should have a "
                f"defined dimension but the layer received an input with shape {tuple(input_shape)}."
            )
        return tuple(input_shape)

    def _forward(self, x, out):
        return K.group_norm_forward(
            x, self.params.get("gamma"), self.params.get("beta"),
            groups=self._groups, axis=self._checked_axes[0], epsilon=self.epsilon, out=out,
        )

    def _kernel_backward(self, dy, cache, out):
        return K.group_norm_backward(dy, cache, out=out, **self._grad_accumulators())[0]

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
