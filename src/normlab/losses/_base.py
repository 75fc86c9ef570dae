"""Loss objects (Keras names and conventions); formulas in :mod:`normlab.kernels.losses`.

``loss(y_true, y_pred, sample_weight=None)`` returns the value and
``loss.gradient(y_true, y_pred, sample_weight=None)`` its gradient with
respect to ``y_pred``.

Reduction (Keras 3). A loss first computes one value per prediction
``v_j`` (per sample, or per pixel: Keras's ``call``; the mean over the last
axis for mean squared error and binary cross-entropy, the sum over the
classes for categorical cross-entropy), weighs it by ``w_j`` (the sample's
weight, 1 without weights) and reduces the ``M`` values:

=============================  =====================================
``reduction``                  value
=============================  =====================================
``"sum_over_batch_size"``      ``sum_j w_j v_j / M`` (the default)
``"mean"``                     the same
``"sum"``                      ``sum_j w_j v_j``
``"mean_with_sample_weight"``  ``sum_j w_j v_j / sum_j w_j``
``"none"`` / ``None``          the array ``w_j v_j`` (in training: as the default)
=============================  =====================================

Without weights and with the default reduction the loss is the mean of
the values, which the kernels compute directly; otherwise the gradient of
that mean is scaled per value by ``w_j M / D`` (``D`` the divisor above),
which is exact because each value depends only on its own prediction.

Fusion. When a model ends in a softmax (sigmoid) layer and is compiled with
categorical (binary) cross-entropy on probabilities, the model computes the
loss and its gradient from the logits of that layer instead, with the stable
``from_logits`` formulas: the gradient with respect to the logits is simply
``(p - y) / N``. Values agree with the probability form except where Keras
would clip a probability at ``1e-7`` (there the fused value is the exact one).
"""

from __future__ import annotations

import numpy as np

from .._registry import Registry
from .._validation import Boolean, NoneOk, Options, real_array, validate_params
from ..kernels.checks import all_finite

registry = Registry("loss")

#: Keras 3's reductions (see the module docstring)
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")

try:  # bfloat16 is a NumPy dtype once ml_dtypes (a JAX and TensorFlow dependency) is imported
    import ml_dtypes as _ml_dtypes  # noqa: F401
    _BF16 = ("bfloat16",)
except ImportError:  # pragma: no cover - depends on the environment
    _BF16 = ()

#: the dtypes a loss computes in (Keras's ``dtype``; bfloat16 where ml_dtypes is installed)
DTYPES = ("float16", "float32", "float64", *_BF16)


def _finite(arr: np.ndarray, who: str, arg: str) -> None:
    if not all_finite(arr):
        raise ValueError(f"{who}: '{arg}' holds NaN or inf values.")


class Loss:
    """Base class.

    Subclasses set ``fused_activation`` (the output activation whose logits
    the loss can take directly) and implement ``_elements`` (one value per
    prediction) and the four kernels (``value``, ``gradient_wrt_output`` and
    their logits forms), or derive from :class:`FunctionLoss`, which builds
    them from a per-prediction value and its gradient.

    ``dtype`` (Keras's argument): the inputs are cast to it and the result
    has it (a NumPy scalar or array); ``None`` (the default) computes in the
    predictions' own precision and returns a Python float.
    """

    fused_activation: str | None = None
    #: Keras's default ``name`` (``None``: the class name)
    default_name: str | None = None
    _param_constraints = {
        "from_logits": [Boolean()],
        "name": [NoneOk(), str],
        "reduction": [NoneOk(), Options(REDUCTIONS)],
        "dtype": [NoneOk(), Options(DTYPES)],
    }
    #: Keras's sentence after normlab's for a rejected argument (normlab._validation)
    _keras_messages = {
        "reduction": lambda v: ("Invalid value for argument `reduction`. Expected one of {'sum_over_batch_size', "
                                f"'sum', None, 'none', 'mean', 'mean_with_sample_weight'}}. Received: reduction={v}"),
    }

    def __init__(self, from_logits: bool = False, name: str | None = None, *,
                 reduction: str | None = "sum_over_batch_size", dtype: str | None = None):
        if dtype is not None and not isinstance(dtype, str):
            dtype = getattr(np.dtype(dtype) if isinstance(dtype, (type, np.dtype)) else dtype, "name", dtype)
        validate_params(type(self), Loss._param_constraints,
                        {"from_logits": from_logits, "name": name, "reduction": reduction, "dtype": dtype})
        self.from_logits = bool(from_logits)
        self.name = name or self.default_name or type(self).__name__
        self.reduction = reduction
        self.dtype = dtype

    @property
    def _plain(self) -> bool:
        """True when, without sample weights, the loss is the mean of its values (the kernels' own form)."""
        return (self.reduction != "sum" and getattr(self, "ignore_class", None) is None
                and self._class_axis_is_last)

    # the class axis ------------------------------------------------------------
    @property
    def _class_axis_is_last(self) -> bool:
        axis = getattr(self, "axis", -1)
        return axis is None or axis == -1

    def _to_last(self, y, out):
        """``(y, out)`` with the class axis (``axis``) moved last: the layout the kernels take."""
        return y, out

    def _from_last(self, grad, out):
        """A gradient computed in the ``_to_last`` layout, in ``out``'s own layout."""
        return grad

    # weighted values -----------------------------------------------------------
    def _elements(self, y, out, logits: bool) -> np.ndarray:
        """One value per prediction (Keras's ``call``): shape ``out.shape[:-1]`` (``out.shape`` if 1-D).

        A loss written the Keras way defines ``call(y_true, y_pred)``
        instead; it gets the values, reductions and sample weights (no
        gradient: define ``gradient_wrt_output`` to train with it).
        """
        call = getattr(self, "call", None)
        if call is None:  # pragma: no cover - interface
            raise NotImplementedError
        y, out = squeeze_or_expand_to_same_rank(np.asarray(y), out)
        return np.asarray(call(y, out))

    def _weights(self, y, values: np.ndarray, sample_weight) -> np.ndarray:
        """Each value's weight: the sample's weight broadcast over the sample's values."""
        if sample_weight is None:
            return np.ones(values.shape)
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == values.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
        try:
            if values.ndim == 0:  # one value for the whole batch (Dice, Tversky with axis=None)
                return np.asarray(float(w.mean()) if w.size else 0.0)
            w = w.reshape(w.shape + (1,) * (values.ndim - w.ndim))
            return np.broadcast_to(w, values.shape)
        except ValueError:
            raise ValueError(f"{type(self).__name__}: 'sample_weight' of shape {np.shape(sample_weight)} does not "
                             f"fit the loss's values of shape {values.shape}.") from None

    def _reduce(self, values, w):
        """``(value, scale)``: the reduced loss and each value's gradient factor ``w_j M / D``."""
        m = values.size
        if self.reduction == "sum":
            d = 1.0
        elif self.reduction == "mean_with_sample_weight":
            d = float(w.sum())
        else:
            d = float(m)
        if d == 0.0:  # no weight at all (every label ignored): 0, as Keras's divide_no_nan
            return 0.0, np.zeros(values.shape)
        return float(np.sum(values * w) / d), w * (m / d)

    def weighted_value(self, y, out, sample_weight=None, *, logits=None) -> float:
        """The reduced value of :meth:`weighted_value_and_gradient`, without the gradient."""
        logits = self.from_logits if logits is None else logits
        y, out = self._to_last(y, out)
        values = self._elements(y, out, logits)
        return self._reduce(values, self._weights(y, values, sample_weight))[0]

    def weighted_value_and_gradient(self, y, out, sample_weight=None, *, logits=None):
        """``(value, gradient)`` with ``sample_weight`` and this loss's reduction, from prepared targets.

        ``out`` are logits when ``logits`` (default: ``from_logits``). The
        gradient is that of the reduced value (``"none"``: of the mean).
        """
        logits = self.from_logits if logits is None else logits
        original = out
        y, out = self._to_last(y, out)
        values = self._elements(y, out, logits)
        value, scale = self._reduce(values, self._weights(y, values, sample_weight))
        grad = self.gradient_from_logits(y, out) if logits else self.gradient_wrt_output(y, out)
        return value, self._from_last(grad * self._expand_scale(scale, grad).astype(grad.dtype), original)

    def _expand_scale(self, scale, grad):
        """Each value's factor on the entries it depends on: the values drop the trailing axis."""
        return scale.reshape(scale.shape + (1,) * (grad.ndim - scale.ndim))

    # targets ---------------------------------------------------------------
    def prepare_targets(self, y_true, y_pred_shape: tuple, *, who: str = "") -> np.ndarray:
        """Check ``y_true`` against the prediction shape and return it as an array."""
        who = who or type(self).__name__
        y = np.asarray(y_true)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{who}: 'y' must be numeric, got dtype {y.dtype}.")
        _finite(y, who, "y")
        if y.shape != tuple(y_pred_shape):
            if y.ndim == 1 and len(y_pred_shape) == 2 and y_pred_shape[1] == 1 and y.shape[0] == y_pred_shape[0]:
                y = y.reshape(-1, 1)
            else:
                raise ValueError(
                    f"{who}: 'y' has shape {y.shape} but the predictions have shape "
                    f"{tuple(y_pred_shape)}; they must have the same shape."
                )
        return y

    # values and gradients --------------------------------------------------
    def _cast(self, y_true, y_pred):
        """Keras's ``convert_to_tensor(x, dtype=self.dtype)`` on both, when the loss has a ``dtype``."""
        y_pred = np.asarray(y_pred)
        if self.dtype is None:
            return y_true, y_pred
        y = np.asarray(y_true)
        # bfloat16: rounded to it, computed in float32 (NumPy's ufuncs have no bfloat16 loops), returned in it
        if self.dtype == "bfloat16":
            def cast(a):
                return a.astype("bfloat16").astype(np.float32)
        else:
            def cast(a):
                return a.astype(self.dtype)
        return (cast(y) if y.dtype.kind == "f" else y), cast(y_pred)

    def _result(self, value):
        return value if self.dtype is None else np.asarray(value).astype(self.dtype)[()]

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The loss of ``y_pred`` against ``y_true`` (a float; with ``reduction="none"`` the weighted values)."""
        y_true, y_pred = self._cast(y_true, y_pred)
        y = self.prepare_targets(y_true, y_pred.shape)
        if sample_weight is not None:
            sample_weight = self.check_sample_weight(sample_weight, len(y_pred) if y_pred.ndim else 1)
        if self.reduction in ("none", None):
            yl, out = self._to_last(y, y_pred)
            values = self._elements(yl, out, self.from_logits)
            return self._result(values * self._weights(yl, values, sample_weight))
        if sample_weight is None and self._plain:
            return self._result(self.value_from_logits(y, y_pred) if self.from_logits else self.value(y, y_pred))
        return self._result(self.weighted_value(y, y_pred, sample_weight))

    def gradient(self, y_true, y_pred, sample_weight=None) -> np.ndarray:
        """The gradient of the loss with respect to ``y_pred``."""
        y_true, y_pred = self._cast(y_true, y_pred)
        y = self.prepare_targets(y_true, y_pred.shape)
        if sample_weight is not None:
            sample_weight = self.check_sample_weight(sample_weight, len(y_pred) if y_pred.ndim else 1)
        if sample_weight is None and self._plain:
            return self.gradient_from_logits(y, y_pred) if self.from_logits else self.gradient_wrt_output(y, y_pred)
        return self.weighted_value_and_gradient(y, y_pred, sample_weight)[1]

    def check_sample_weight(self, sample_weight, n: int, who: str = "", arg: str = "sample_weight") -> np.ndarray:
        """``sample_weight`` as float64 of shape (n,): finite, >= 0 (a clear error naming ``arg`` otherwise)."""
        who = who or type(self).__name__
        w = real_array(sample_weight, who, f"'{arg}'")
        if w.ndim == 0:
            w = np.full(n, w)
        elif w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
        if w.shape[0] != n:
            raise ValueError(f"{who}: '{arg}' must hold one weight per sample (shape ({n},)), or per value "
                             f"(the shape of the loss's values), or be a scalar; got shape {w.shape}.")
        w = w.astype(np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{who}: '{arg}' must hold finite weights >= 0.")
        return w

    def value(self, y, p) -> float:
        if getattr(self, "call", None) is None:  # pragma: no cover - interface
            raise NotImplementedError
        return float(np.mean(self._elements(y, p, False)))

    def gradient_wrt_output(self, y, p) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} defines no gradient: implement gradient_wrt_output(y, p) "
                                  f"(the gradient of the mean of its values with respect to p) to train with it.")

    def value_from_logits(self, y, z) -> float:
        raise ValueError(f"{type(self).__name__} has no logits form.")

    def gradient_from_logits(self, y, z) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} has no logits form.")

    def value_and_gradient_from_logits(self, y, z) -> tuple[float, np.ndarray]:
        """``(value_from_logits(y, z), gradient_from_logits(y, z))``; subclasses may share work."""
        return self.value_from_logits(y, z), self.gradient_from_logits(y, z)

    # config ------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"from_logits": self.from_logits, "name": self.name, "reduction": self.reduction, **self._dtype_config()}

    def _dtype_config(self) -> dict:
        # Keras's configs carry no dtype; normlab's carries one only when it is set
        return {} if self.dtype is None else {"dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1: bool = True):
    """Keras's helper: arrays whose ranks differ by one, with a trailing axis of 1, brought to the same rank.

    The trailing 1 is squeezed, except that a 1-D partner is expanded to
    ``(N, 1)`` instead when ``expand_rank_1``.
    """
    x1, x2 = np.asarray(x1), np.asarray(x2)
    if x1.ndim == x2.ndim + 1 and x1.shape[-1] == 1:
        if x2.ndim == 1 and expand_rank_1:
            x2 = x2[:, None]
        else:
            x1 = x1[..., 0]
    if x2.ndim == x1.ndim + 1 and x2.shape[-1] == 1:
        if x1.ndim == 1 and expand_rank_1:
            x1 = x1[:, None]
        else:
            x2 = x2[..., 0]
    return x1, x2


class FunctionLoss(Loss):
    """A loss given by one value per prediction and its gradient (Keras's ``LossFunctionWrapper``).

    Subclasses implement ``_values(y, p)`` (Keras's loss function: shape
    ``p.shape[:-1]``, or ``p.shape`` for 1-D predictions) and
    ``_values_grad(y, p)``, the gradient of ``sum(_values(y, p))`` with
    respect to ``p``. The loss is their mean (or the reduction asked for).
    Regression-type losses ignore ``from_logits`` (kept for uniformity).
    """

    _param_constraints = {k: v for k, v in Loss._param_constraints.items() if k != "from_logits"}

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: str | None = None, **kwargs):
        validate_params(type(self), self._param_constraints,
                        {k: v for k, v in kwargs.items() if k in self._param_constraints})
        super().__init__(from_logits=kwargs.pop("from_logits", False), name=name, reduction=reduction, dtype=dtype)
        for key, v in kwargs.items():
            setattr(self, key, v)
        self._kwargs = tuple(kwargs)

    def _values(self, y, p):  # pragma: no cover - interface
        raise NotImplementedError

    def _expand_scale(self, scale, grad):
        # the values drop the reduced axes (``axis`` of cosine similarity, Dice, Tversky; else the last)
        axis = getattr(self, "axis", -1)
        if axis is None or scale.ndim == 0 or scale.ndim == grad.ndim:
            return super()._expand_scale(scale, grad)
        axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        return np.expand_dims(scale, tuple(sorted(a % grad.ndim for a in axes)))

    def _values_grad(self, y, p):  # pragma: no cover - interface
        raise NotImplementedError

    def _elements(self, y, out, logits):
        return np.asarray(self._values(y, out))

    def value(self, y, p):
        return float(np.mean(self._values(y, p)))

    def gradient_wrt_output(self, y, p):
        m = max(np.asarray(self._values(y, p)).size, 1)
        return (self._values_grad(y, p) / m).astype(p.dtype if p.dtype.kind == "f" else np.float64, copy=False)

    value_from_logits = value
    gradient_from_logits = gradient_wrt_output

    def get_config(self) -> dict:
        config = {"name": self.name, "reduction": self.reduction, **self._dtype_config()}
        for key in self._kwargs:
            v = getattr(self, key)
            config[key] = list(v) if isinstance(v, tuple) else v
        return config

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._kwargs)
        return f"{type(self).__name__}({args})"


def _mean_last(x):
    """Keras's ``mean(..., axis=-1)``; element-wise for 1-D predictions (one value per sample)."""
    return x.mean(axis=-1) if x.ndim > 1 else x


def _per_last(p):
    """The size of the axis ``_mean_last`` averages over (1 for 1-D predictions)."""
    return p.shape[-1] if p.ndim > 1 else 1
