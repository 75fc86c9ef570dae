"""Batch normalization layer: state, modes and checks (math in ``kernels.batchnorm``).

:class:`BatchNormalization` is defined here: its arguments, weights and
configuration, and the choice of the path each pass takes (the NumPy
functions of :mod:`normlab.kernels.batchnorm`, ghost batches, batch
renormalization). Three parts of it, each a base class holding methods only,
are in modules of their own:

* :mod:`normlab.layers._batchnorm_moving`: the moving statistics, updated all
  or nothing, the errors when a batch cannot update them, and the undo of a
  failed training step;
* :mod:`normlab.layers._batchnorm_rows`: features on the last axis, one fused
  kernel call per pass (:mod:`normlab.kernels.batchnorm_rows`);
* :mod:`normlab.layers._batchnorm_sync`: ``synchronized=True`` under
  data-parallel training, statistics over the global batch.

The argument constraints defined here (:class:`_AxisSpec`, ``_INIT``,
``_REG``) are shared with the other normalization layers.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._validation import (
    Boolean,
    Instance,
    Interval,
    InvalidParameterError,
    NoneOk,
    Options,
    _Constraint,
    validate_params,
)
from ..kernels import batchnorm as K
from ..kernels import batchnorm_rows as R
from ._batchnorm_moving import _MovingStatistics
from ._batchnorm_rows import _RowsPath
from ._batchnorm_sync import _SynchronizedPath
from .base import Layer
from .conv import _CON

__all__ = ["BatchNormalization"]

_INIT = [str, dict, Instance(_initializers.Initializer)]
_REG = [NoneOk(), str, dict, Instance(_regularizers.Regularizer)]


def _is_axis_list(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in value)
    )


class _AxisSpec(_Constraint):
    def is_satisfied_by(self, value):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return True
        return _is_axis_list(value)

    def describe(self):
        return "an int or a non-empty list of ints"

    def invalid_examples(self):
        return [1.5, "channels", []]


class BatchNormalization(_SynchronizedPath, _RowsPath, _MovingStatistics, Layer):
    """Normalize each feature with mini-batch statistics (Ioffe and Szegedy 2015).

    In training (``layer(x, training=True)`` on a trainable layer)::

        y = gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta
        moving_mean     = momentum * moving_mean     + (1 - momentum) * mean_B
        moving_variance = momentum * moving_variance + (1 - momentum) * var_B

    where ``mean_B`` and ``var_B`` (biased, divided by ``m``) are taken over
    every axis but ``axis``. In inference the moving statistics replace the
    batch ones. These are Keras's numerics; equations and the hand-derived
    backward pass are in :mod:`normlab.kernels.batchnorm`.

    Parameters
    ----------
    axis : int or list of int, default -1
        The feature axis (kept); statistics are reduced over all the others.
        ``-1`` is the features of a 2-D input or the channels of a
        channels-last 3-D or 4-D input; positive values count the batch axis
        as 0. The batch axis itself cannot be the feature axis.
    momentum : float in [0, 1], default 0.99
        Weight of the *old* moving value (Keras). PyTorch's ``momentum``
        weights the new batch value: ``keras_momentum = 1 - torch_momentum``
        (PyTorch's default 0.1 is Keras's 0.9). With ``momentum=0`` the moving
        statistics are the last batch's.
    epsilon : float >= 0, default 1e-3
        Added to the variance (PyTorch's default is 1e-5). ``0`` is the
        notes' equations; a feature whose variance is then 0 gives ``beta``
        and a zero input gradient (see :mod:`normlab.kernels.batchnorm`).
    center, scale : bool, default True
        Learn ``beta`` and ``gamma``; when off they are fixed at 0 and 1.
        ``scale=False`` suits a following ReLU or linear layer.
    beta_initializer, gamma_initializer, moving_mean_initializer, moving_variance_initializer
        Defaults ``"zeros"``, ``"ones"``, ``"zeros"``, ``"ones"``.
    beta_regularizer, gamma_regularizer : optional
        Penalties on ``beta`` and ``gamma``.
    unbiased_moving_variance : bool, default False
        Feed ``var_B * m / (m - 1)`` (the unbiased estimate, as PyTorch and the
        paper do) to the moving variance instead of Keras's biased ``var_B``.
        Normalization in training always uses the biased ``var_B``.
    virtual_batch_size : int, optional
        Ghost batch normalization: the batch is split into groups of this
        many samples, each normalized with its own statistics; the moving
        statistics receive the mean of the groups'. The batch size must be a
        multiple of it. A virtual batch of the whole batch is plain BN.
    renorm : bool, default False
        Batch renormalization (Ioffe 2017) as Keras 3 computes it, see
        :func:`normlab.kernels.batchnorm.batch_renorm_train_forward`. The
        correction uses moving ``renorm_mean`` / ``renorm_stddev`` buffers
        updated with ``renorm_momentum``. For inference the layer averages
        the standard deviation ``sqrt(var_B + epsilon)`` (with ``momentum``)
        in a ``moving_stddev`` buffer and derives
        ``moving_variance = max(moving_stddev^2 - epsilon, 0)`` from it
        (``unbiased_moving_variance`` corrects ``var_B`` in that average).
        ``renorm_mean`` starts as ``moving_mean``, ``moving_stddev`` and
        ``renorm_stddev`` as ``sqrt(moving_variance)`` (from their
        initializers). Inference is the same with or without ``renorm``.
    renorm_clipping : dict, optional
        ``{"rmax": ..., "rmin": ..., "dmax": ...}``: ``r`` is clipped to
        ``[rmin, rmax]`` and ``d`` to ``[-dmax, dmax]``; a missing key (or
        ``None``) leaves that side unclipped (Keras: ``inf``, ``0``,
        ``inf``). Needs ``rmax > 0``, ``0 <= rmin <= rmax``, ``dmax >= 0``.
        ``rmax = rmin = 1, dmax = 0`` is plain batch normalization.
    renorm_momentum : float in [0, 1], default 0.99
    batch_of_one : {"error", "moving_statistics"}, default "error"
        What training mode does when there is one value per feature (a batch
        of one sample): raise, or normalize with the moving statistics
        (gamma and beta still learn; the moving statistics are not updated).
    synchronized : bool, default False
        Keras 3's argument. Under data-parallel training on several ranks
        (``compile(distribute=normlab.distributed.DataParallel())``), take
        the statistics over the global batch rather than this rank's shard:
        one allgather of each rank's (count, mean, sum of squared deviations)
        per step, combined with Chan's formula, and one allreduce of
        ``(sum dy, sum dy * xhat)`` in the backward pass (see
        :mod:`normlab.distributed.sync_bn`); the moving statistics are then
        the same on every rank. In one process it is plain batch
        normalization, bit for bit. Not combined with ``renorm`` or
        ``virtual_batch_size`` (an error at construction).

    Converting from PyTorch
    -----------------------
    ``torch.nn.BatchNorm1d(C, eps=e, momentum=p)`` is
    ``BatchNormalization(epsilon=e, momentum=1 - p, unbiased_moving_variance=True)``.

    Notes
    -----
    *Freezing.* ``trainable=False`` freezes gamma and beta **and puts the layer
    in inference mode**: it normalizes with the moving statistics and never
    updates them, even when called with ``training=True`` (Keras's rule, the
    one fine-tuning needs).

    *A batch of one.* Training mode needs at least two values per feature to
    estimate a variance; a batch of one sample (of a 2-D input) raises a
    ``ValueError`` naming the layer and the shape (unless
    ``batch_of_one="moving_statistics"``). Inference works on any batch
    size, one included.

    *Non-finite input, overflow.* Input holding NaN or inf raises a
    ``ValueError`` in training before the moving statistics are touched.
    Finite input always gives a finite, correct output (the statistics are
    accumulated in float64 and a constant feature gives exactly ``beta``),
    but a float32 moving variance holds at most 3.4e38: where the batch
    variance (deviations from the mean beyond about 1.8e19), or an updated
    moving statistic, would not fit its buffer's dtype, training raises a
    ``ValueError`` that says "overflow", again with every moving statistic
    left as it was. Both errors are :class:`normlab.errors.NonFiniteError`
    (a ``ValueError``), which a model's training step handles by its
    optimizer's ``on_nonfinite`` policy. Inference and ``trainable=False`` never update them and
    never raise for finite input.
    """

    _writes_fresh_grads = True  # see Layer._writes_fresh_grads
    #: weights set_weights refuses below 0 (a variance, a standard deviation)
    _nonnegative_weights = ("moving_variance", "moving_stddev", "renorm_stddev")

    _param_constraints = {
        "axis": [_AxisSpec()],
        "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="left")],
        "center": [Boolean()],
        "scale": [Boolean()],
        "beta_initializer": _INIT,
        "gamma_initializer": _INIT,
        "moving_mean_initializer": _INIT,
        "moving_variance_initializer": _INIT,
        "beta_regularizer": _REG,
        "gamma_regularizer": _REG,
        "unbiased_moving_variance": [Boolean()],
        "virtual_batch_size": [NoneOk(), Interval(numbers.Integral, 1, None)],
        "renorm": [Boolean()],
        "renorm_clipping": [NoneOk(), Instance(dict, label="a dict with keys among 'rmax', 'rmin', 'dmax'")],
        "renorm_momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "batch_of_one": [Options(("error", "moving_statistics"))],
        "synchronized": [Boolean()],
        "beta_constraint": _CON,
        "gamma_constraint": _CON,
    }

    def __init__(
        self,
        axis=-1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        unbiased_moving_variance: bool = False,
        virtual_batch_size: int | None = None,
        renorm: bool = False,
        renorm_clipping: dict | None = None,
        renorm_momentum: float = 0.99,
        batch_of_one: str = "error",
        synchronized: bool = False,
        *,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        if synchronized and (renorm or virtual_batch_size is not None):
            # ghost batches are groups of one rank's shard, and renorm's correction would need
            # the global statistics of its moving estimates: neither is defined across ranks here
            raise InvalidParameterError(
                "The 'synchronized' parameter of BatchNormalization cannot be True together with "
                f"{'renorm=True' if renorm else f'virtual_batch_size={virtual_batch_size}'}: synchronized "
                "statistics are not defined for batch renormalization or ghost batches. Got synchronized=True "
                "instead.")
        super().__init__(**kwargs)
        self.axis = int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis]
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.moving_mean_initializer = _initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = _initializers.get(moving_variance_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        self.unbiased_moving_variance = bool(unbiased_moving_variance)
        self.virtual_batch_size = None if virtual_batch_size is None else int(virtual_batch_size)
        self.renorm = bool(renorm)
        self.renorm_clipping = self._check_clipping(renorm_clipping)
        self.renorm_momentum = float(renorm_momentum)
        self.batch_of_one = batch_of_one
        self.synchronized = bool(synchronized)
        # Keras's beta_constraint / gamma_constraint: projections after each optimizer update
        self.beta_constraint = _constraints.get(beta_constraint)
        self.gamma_constraint = _constraints.get(gamma_constraint)
        self._sync = None  # the communicator of a data-parallel run on several ranks (synchronized only)
        self._feature_axes: tuple = ()
        self._reduce_axes: tuple = ()
        self._bshape: tuple = ()
        self._features_last = False
        self._ws = None  # the fused path's per-shape workspaces in a model's step
        # undo records of a model's training step (see _begin_step): the kernels save the
        # moving statistics into _saved with the step's stamp in the call that updates them
        self._stamp = 0.0
        self._saved: np.ndarray | None = None
        self._np_saved: tuple | None = None

    @staticmethod
    def _check_clipping(clipping):
        if clipping is None:
            return None
        unknown = sorted(set(clipping) - {"rmax", "rmin", "dmax"})
        if unknown:
            raise InvalidParameterError(
                "The 'renorm_clipping' parameter of BatchNormalization must be a dict with keys "
                f"among 'rmax', 'rmin', 'dmax'. Got {clipping!r} instead."
            )
        bounds = {}
        for key, value in clipping.items():
            if value is None:  # Keras: a missing bound
                continue
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or np.isnan(value):
                raise InvalidParameterError(
                    "The 'renorm_clipping' parameter of BatchNormalization must map 'rmax', 'rmin' "
                    f"and 'dmax' to numbers. Got {clipping!r} instead."
                )
            bounds[key] = float(value)
        rmax, rmin, dmax = bounds.get("rmax"), bounds.get("rmin"), bounds.get("dmax")
        # rmax = 0 would zero every output (r is a ratio of standard deviations, > 0)
        if (rmax is not None and rmax <= 0.0) or (rmin is not None and rmin < 0.0) or (
            rmax is not None and rmin is not None and rmin > rmax
        ) or (dmax is not None and dmax < 0.0):
            raise InvalidParameterError(
                "The 'renorm_clipping' parameter of BatchNormalization must have rmax > 0, "
                f"0 <= rmin <= rmax and dmax >= 0. Got {clipping!r} instead."
            )
        return dict(clipping)

    def _clip_bounds(self):
        """``(rmax, rmin, dmax)``, None where not given (that side is not clipped)."""
        c = self.renorm_clipping or {}
        return tuple(None if c.get(k) is None else float(c[k]) for k in ("rmax", "rmin", "dmax"))

    # ------------------------------------------------------------------ build
    def _resolve_axes(self, ndim: int, shape: tuple) -> tuple:
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        out = []
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"Layer {self.name!r} (BatchNormalization): axis={a} is out of range for "
                    f"an input of rank {ndim} and shape {shape}."
                )
            a = a % ndim
            if a == 0:
                raise ValueError(
                    f"Layer {self.name!r} (BatchNormalization): axis={self.axis} is the batch "
                    f"axis of an input of shape {shape}; choose a feature or channel axis."
                )
            out.append(a)
        if len(set(out)) != len(out):
            raise ValueError(f"Layer {self.name!r} (BatchNormalization): repeated axis in {self.axis}.")
        return tuple(sorted(out))

    def build(self, input_shape):
        ndim = len(input_shape)
        self._feature_axes = self._resolve_axes(ndim, input_shape)
        self._reduce_axes = tuple(a for a in range(ndim) if a not in self._feature_axes)
        pshape = tuple(input_shape[a] for a in self._feature_axes)
        self._bshape = tuple(input_shape[a] if a in self._feature_axes else 1 for a in range(ndim))
        # one feature axis, the last: x is a (m, C) matrix and the fused kernels apply
        self._features_last = self._feature_axes == (ndim - 1,)
        if self.scale:
            self.add_weight("gamma", pshape, self.gamma_initializer, self.gamma_regularizer)
            self._set_constraint("gamma", self.gamma_constraint)
        if self.center:
            self.add_weight("beta", pshape, self.beta_initializer, self.beta_regularizer)
            self._set_constraint("beta", self.beta_constraint)
        self.add_weight("moving_mean", pshape, self.moving_mean_initializer, trainable=False)
        self.add_weight("moving_variance", pshape, self.moving_variance_initializer, trainable=False)
        c = int(np.prod(pshape))
        self._saved = np.full(2 * c + 1, np.nan)
        if self.renorm:
            # Keras 3's weights, in its order; they start from the moving statistics' initial values
            b = self.buffers
            stddev = np.sqrt(np.maximum(b["moving_variance"], 0))
            np.copyto(self.add_weight("moving_stddev", pshape, "zeros", trainable=False), stddev)
            np.copyto(self.add_weight("renorm_mean", pshape, "zeros", trainable=False), b["moving_mean"])
            np.copyto(self.add_weight("renorm_stddev", pshape, "zeros", trainable=False), stddev)

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        for a in self._feature_axes:
            built = self._bshape[a]
            if shape[a] != built:
                raise ValueError(
                    f"Layer {self.name!r} (BatchNormalization) was built for size {built} along "
                    f"axis {a}, got size {shape[a]} (input shape {tuple(shape)})."
                )

    # ---------------------------------------------------------------- forward
    def _b(self, arr: np.ndarray | None) -> np.ndarray | None:
        return None if arr is None else arr.reshape(self._bshape)

    def call(self, x, training):
        return self._call(x, training, False)

    def _train_forward(self, x):
        return self._call(x, True, True)

    def _train_backward(self, dy, need_dx: bool = True):
        cache = self._cache
        if type(cache) is R.RowsTrainCache:
            backward = self._backward_rows
        elif type(cache) is tuple and cache[0] == "sync_rows":
            backward = self._sync_backward_rows
        else:
            return super()._train_backward(dy, need_dx)
        try:
            return backward(dy, workspace=True)
        finally:
            self._grads_zero = False

    def _call(self, x, training, workspace):
        train = training and self._trainable
        if train and self._sync is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                return self._sync_train_call(x, workspace)
        if train:
            count = self._per_feature_count(x.shape)
            if count < 2:
                if self.batch_of_one == "error":
                    self._raise_too_few(x.shape, count)
                train = False  # policy: normalize with the moving statistics
        plain = not self.renorm and self.virtual_batch_size is None
        if plain and self._features_last and R.takes(x):
            return self._call_rows(x, train, training, workspace)
        gamma = self._b(self.params.get("gamma"))
        beta = self._b(self.params.get("beta"))
        if train:
            # NaN or inf input: _commit_moving raises a clear error, NumPy need not warn first
            with np.errstate(invalid="ignore", over="ignore"):
                return self._train_call(x, gamma, beta)
        y, cache = K.batchnorm_inference_forward(
            x,
            gamma,
            beta,
            self._b(self.buffers["moving_mean"]),
            self._b(self.buffers["moving_variance"]),
            axes=self._reduce_axes,
            epsilon=self.epsilon,
        )
        if training:
            self._cache = ("inference", cache)
            self._out_shape = y.shape
        return y

    def _train_call(self, x, gamma, beta):
        """Training-mode forward on the NumPy path: plain, ghost batches or renormalization."""
        if self._np_saved is None or self._np_saved[0] != self._stamp:
            # what this step's update overwrites, for _rollback
            self._np_saved = (self._stamp, {k: b.copy() for k, b in self.buffers.items()})
        if self.virtual_batch_size is not None:
            y, cache = self._ghost_forward(x, gamma, beta)
        elif self.renorm:
            rmax, rmin, dmax = self._clip_bounds()
            y, cache, mean, var, r, d = K.batch_renorm_train_forward(
                x, gamma, beta,
                self._b(self.buffers["renorm_mean"]), self._b(self.buffers["renorm_stddev"]),
                axes=self._reduce_axes, epsilon=self.epsilon, rmax=rmax, rmin=rmin, dmax=dmax,
            )
            self._commit_moving(x, mean, var, cache.base.count, renorm=True)
            cache = ("renorm", cache)
        else:
            y, kcache, mean, var = K.batchnorm_train_forward(
                x, gamma, beta, axes=self._reduce_axes, epsilon=self.epsilon
            )
            self._commit_moving(x, mean, var, kcache.count)
            cache = ("train", kcache)
        self._cache = cache
        self._out_shape = y.shape
        return y

    def _per_feature_count(self, shape) -> int:
        count = K.reduced_count(shape, self._reduce_axes)
        if self.virtual_batch_size is not None:
            count = count // shape[0] * min(shape[0], self.virtual_batch_size)
        return count

    def _ghost_forward(self, x, gamma, beta):
        """Ghost batch normalization: each group of ``virtual_batch_size`` samples
        is normalized with its own statistics; the moving statistics receive the
        mean of the groups' statistics."""
        v = self.virtual_batch_size
        n = x.shape[0]
        if n % v:
            raise ValueError(
                f"Layer {self.name!r} (BatchNormalization): the batch size {n} is not a multiple "
                f"of virtual_batch_size={v} (input shape {tuple(x.shape)})."
            )
        xg = x.reshape((n // v, v) + x.shape[1:])
        axes = tuple(a + 1 for a in self._reduce_axes)
        gb = None if gamma is None else gamma[None]
        bb = None if beta is None else beta[None]
        y, kcache, mean, var = K.batchnorm_train_forward(xg, gb, bb, axes=axes, epsilon=self.epsilon)
        self._commit_moving(x, mean, var, kcache.count, groups=True)
        return y.reshape(x.shape), ("ghost", kcache)

    # --------------------------------------------------------------- backward
    def _backward(self, dy):
        if type(self._cache) is R.RowsTrainCache:
            return self._backward_rows(dy)
        if type(self._cache) is tuple and self._cache[0] == "sync_rows":
            return self._sync_backward_rows(dy)
        dx, dgamma, dbeta = self._backward_parts(dy)
        if self._trainable:
            if self.scale:
                self._accumulate_grad("gamma", dgamma)
            if self.center:
                self._accumulate_grad("beta", dbeta)
        return dx

    def _backward_parts(self, dy):
        """``(dx, dgamma, dbeta)`` of the last forward pass (all but the training row kernels)."""
        cache = self._cache
        if type(cache) is R.RowsInferenceCache:
            dx, dgamma, dbeta = R.inference_backward(np.ascontiguousarray(dy).reshape(cache.x.shape), cache)
            return dx.reshape(dy.shape), dgamma, dbeta
        mode, cache = cache
        if mode == "train":
            return K.batchnorm_train_backward(dy, cache)
        if mode == "sync":
            from ..distributed.sync_bn import sync_train_backward

            return sync_train_backward(dy, cache, comm=self._sync)
        if mode == "ghost":
            dx, dgamma, dbeta = K.batchnorm_train_backward(dy.reshape(cache.xhat.shape), cache)
            return dx.reshape(dy.shape), dgamma.sum(axis=0), dbeta.sum(axis=0)
        if mode == "renorm":
            return K.batch_renorm_train_backward(dy, cache)
        return K.batchnorm_inference_backward(dy, cache)

    def get_config(self):
        ser_i, ser_r = _initializers.serialize, _regularizers.serialize
        return {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": ser_i(self.beta_initializer),
            "gamma_initializer": ser_i(self.gamma_initializer),
            "moving_mean_initializer": ser_i(self.moving_mean_initializer),
            "moving_variance_initializer": ser_i(self.moving_variance_initializer),
            "beta_regularizer": ser_r(self.beta_regularizer),
            "gamma_regularizer": ser_r(self.gamma_regularizer),
            "unbiased_moving_variance": self.unbiased_moving_variance,
            "virtual_batch_size": self.virtual_batch_size,
            "renorm": self.renorm,
            "renorm_clipping": self.renorm_clipping,
            "renorm_momentum": self.renorm_momentum,
            "batch_of_one": self.batch_of_one,
            "synchronized": self.synchronized,
            **_constraints.config_entries(beta_constraint=self.beta_constraint,
                                          gamma_constraint=self.gamma_constraint),
            **super().get_config(),
        }
