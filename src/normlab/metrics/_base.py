"""Metric base classes: :class:`Metric`, Keras's :class:`Mean`, :class:`Sum` and :class:`MeanMetricWrapper`.

A metric is ``update_state(y_true, y_pred, sample_weight=None)``,
``result()`` and ``reset_state()``; ``metric(y_true, y_pred)`` updates and
returns the result, as in Keras. Most metrics are a weighted running mean of
per-sample values, as Keras's ``MeanMetricWrapper``:
``result = sum_i w_i v_i / sum_i w_i`` (``w_i = 1`` without
``sample_weight``); the running sums are kept in float64.
"""

from __future__ import annotations

import numpy as np

from .._registry import Registry
from .._validation import NoneOk, Options, real_array, validate_params

registry = Registry("metric")

try:  # bfloat16 is a NumPy dtype once ml_dtypes (a JAX and TensorFlow dependency) is imported
    import ml_dtypes as _ml_dtypes  # noqa: F401
    _BF16 = ("bfloat16",)
except ImportError:  # pragma: no cover - depends on the environment
    _BF16 = ()

#: the dtypes ``result`` may be rounded to (Keras accepts integer ones too: the result is then truncated)
_DTYPES = ("float16", "float32", "float64", *_BF16, "int8", "int16", "int32", "int64", "uint8")


class MetricVariable(np.ndarray):
    """One part of a metric's state, named as Keras names the variable (``"true_positives"``).

    ``variables`` of normlab's own metrics are copies; :meth:`Metric.add_variable`
    returns a live one, with Keras's ``assign`` / ``assign_add`` / ``assign_sub``.
    """

    def __new__(cls, value, name: str, dtype=np.float64):
        obj = np.array(value, dtype=dtype).view(cls)
        obj.name = name
        return obj

    def __array_finalize__(self, obj):
        self.name = getattr(obj, "name", None)

    @property
    def path(self):
        return self.name

    @property
    def value(self):
        return np.asarray(self)

    def numpy(self):
        return np.array(self)

    def assign(self, value):
        self[...] = value
        return self

    def assign_add(self, value):
        self[...] += value
        return self

    def assign_sub(self, value):
        self[...] -= value
        return self


class Metric:
    """Base: a weighted running mean of per-sample values.

    ``dtype`` (Keras's argument) is the dtype of :meth:`result`: the running
    sums are kept in float64 and the result is rounded to ``dtype`` (a Python
    float either way); ``None`` keeps float64.
    """

    _param_constraints = {"name": [NoneOk(), str], "dtype": [NoneOk(), Options(_DTYPES)]}

    def __init__(self, name: str | None = None, dtype=None):
        validate_params(type(self), Metric._param_constraints, {"name": name, "dtype": dtype})
        self.name = name or self.default_name
        self.dtype = None if dtype is None else np.dtype(dtype).name
        self._variables: list = []
        # A subclass written the Keras way creates its variables after super().__init__ (add_variable), so its
        # own reset_state cannot run yet; normlab's metrics set their state here.
        if type(self).reset_state.__module__.startswith("normlab."):
            self.reset_state()

    default_name = "metric"
    #: the attributes that hold the state (Keras's ``variables``), each reset to 0
    _state: tuple = ("_total", "_count")

    def reset_state(self) -> None:
        for v in getattr(self, "_variables", ()):
            v.assign(0)
        for name in self._state:
            setattr(self, name, 0.0)

    def add_variable(self, shape=(), initializer=None, dtype=None, aggregation="sum", name=None):
        """Keras's ``add_variable``: a live state array (zeros, or ``initializer(shape, dtype)``), in :attr:`variables`.

        For metrics written the Keras way: create the state in ``__init__``,
        update it with ``assign`` / ``assign_add`` in ``update_state``.
        """
        dtype = np.dtype(dtype or "float32").name
        if initializer is None:
            value = np.zeros(shape, dtype=dtype)
        else:
            from .. import initializers
            value = initializers.get(initializer)(tuple(shape), "float64").astype(dtype)
        var = MetricVariable(value, name or f"variable_{len(self._variables)}", dtype=dtype)
        self._variables.append(var)
        return var

    @property
    def variables(self) -> list:
        """The state, as Keras's metric variables (each with Keras's ``name``: ``total``, ``count``, ...).

        Those made by :meth:`add_variable` are the live arrays; normlab's own
        metrics give copies of their state.
        """
        if self._variables:
            return list(self._variables)
        return [MetricVariable(getattr(self, name), name.lstrip("_")) for name in self._state]

    @property
    def _dtype(self) -> str:
        return self.dtype or "float64"

    def __call__(self, *args, **kwargs):
        """Keras's ``metric(y_true, y_pred)``: update the state with the batch, return the result."""
        self.update_state(*args, **kwargs)
        return self.result()

    def _round(self, value):
        """``value`` rounded to ``dtype`` (a Python float, or an array of floats)."""
        if self.dtype is None:
            return value
        out = np.asarray(value, dtype=self.dtype).astype(np.float64)
        return float(out) if out.ndim == 0 else out

    def values(self, y_true, y_pred) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch: the values of ``(y_true, y_pred)``, weighted by ``sample_weight``.

        As Keras's ``reduce_to_samplewise_values``: ``sample_weight`` holds one
        weight per sample (shape (N,)), or per value (the values' shape, or a
        shape that broadcasts to it, e.g. (1, T)); each sample counts with the
        mean of its weights.
        """
        who = f"{type(self).__name__}.update_state"
        y_pred = _numeric(y_pred, who, "y_pred")
        if y_pred.ndim == 0:
            raise ValueError(f"{who}: 'y_pred' must be a batch (samples first), got a scalar.")
        v = np.asarray(self.values(self._check_true(y_true, y_pred, who), y_pred), dtype=np.float64)
        if sample_weight is None:
            v = v.reshape(len(v), -1).mean(axis=1) if v.ndim > 1 else v
            self._total += float(v.sum())
            self._count += v.size
            return
        w = _numeric(sample_weight, who, "sample_weight").astype(np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{who}: 'sample_weight' must hold finite weights >= 0.")
        if w.ndim == 0:
            w = np.full(len(v), float(w))
        # Keras's squeeze_or_expand_to_same_rank: a trailing axis of 1 on either side is dropped
        if v.ndim == w.ndim + 1 and v.shape[-1] == 1:
            v = v[..., 0]
        elif w.ndim == v.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
        try:
            if w.ndim > v.ndim:
                raise ValueError
            if v.ndim > w.ndim:  # per-sample weights: average each sample's values first
                v = v.mean(axis=tuple(range(w.ndim, v.ndim)))
            w = np.broadcast_to(w, v.shape)
        except ValueError:
            raise ValueError(f"{who}: 'sample_weight' of shape {w.shape} must hold one weight per sample "
                             f"({len(v)}) or per value (shape {v.shape}).") from None
        vw = v * w
        if v.ndim > 1:
            vw = vw.reshape(len(v), -1).mean(axis=1)
            w = w.reshape(len(w), -1).mean(axis=1)
        self._total += float(vw.sum())
        self._count += float(w.sum())

    def _check_true(self, y_true, y_pred: np.ndarray, who: str) -> np.ndarray:
        """``y_true`` as an array of the shape of ``y_pred`` (checked; metrics with other targets override)."""
        y = _numeric(y_true, who, "y_true")
        if y.size != y_pred.size:
            raise ValueError(f"{who}: 'y_true' of shape {y.shape} does not match 'y_pred' of shape {y_pred.shape}.")
        return y.reshape(y_pred.shape)

    def result(self) -> float:
        return self._round(self._total / self._count if self._count else 0.0)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _numeric(value, who: str, arg: str) -> np.ndarray:
    return real_array(value, who, f"'{arg}'")


def _values_and_weight(args, kwargs, who):
    """Keras's ``update_state(values, sample_weight=None)`` or normlab's ``(y_true, y_pred, sample_weight)``.

    Two positional arguments are Keras's ``(values, sample_weight)`` unless
    the first is ``None`` (normlab's ignored ``y_true``).
    """
    if "values" in kwargs:
        return kwargs.pop("values"), kwargs.pop("sample_weight", None)
    if "y_pred" in kwargs:
        return kwargs.pop("y_pred"), kwargs.pop("sample_weight", None)
    if len(args) == 3:
        return args[1], args[2]
    if len(args) == 2:
        if args[0] is None:
            return args[1], kwargs.pop("sample_weight", None)
        if "sample_weight" in kwargs:
            return args[1], kwargs.pop("sample_weight")
        return args[0], args[1]
    if len(args) == 1:
        return args[0], kwargs.pop("sample_weight", None)
    raise TypeError(f"{who}: expected the values (and a sample_weight).")


@registry.register
class Mean(Metric):
    """The weighted running mean of the values (Keras's ``Mean``).

    ``update_state(values, sample_weight=None)`` as in Keras; the form every
    normlab metric shares, ``update_state(y_true, y_pred, sample_weight)``,
    also works and averages ``y_pred`` (``y_true`` is ignored). Per-value
    weights reduce to per-sample ones as Keras's ``reduce_to_samplewise_values``.
    """

    default_name = "mean"

    def update_state(self, *args, **kwargs) -> None:
        values, sample_weight = _values_and_weight(args, kwargs, f"{type(self).__name__}.update_state")
        values = np.asarray(values, dtype=np.float64) if not isinstance(values, np.ndarray) else values
        if values.ndim == 0:
            values = values.reshape(1)
        super().update_state(None, values, sample_weight)

    def values(self, y_true, y_pred):
        return y_pred

    def _check_true(self, y_true, y_pred, who):
        return y_true  # ignored

    def update_value(self, value: float, weight: float = 1.0) -> None:
        self._total += float(value) * weight
        self._count += weight


@registry.register
class Sum(Metric):
    """The weighted running sum of the values (Keras's ``Sum``): ``sum_i w_i v_i``."""

    default_name = "sum"
    _state = ("_total",)

    def update_state(self, *args, **kwargs) -> None:
        who = f"{type(self).__name__}.update_state"
        values, sample_weight = _values_and_weight(args, kwargs, who)
        v = _numeric(values, who, "values").astype(np.float64)
        if sample_weight is not None:
            w = _numeric(sample_weight, who, "sample_weight").astype(np.float64)
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"{who}: 'sample_weight' must hold finite weights >= 0.")
            try:
                v = v * w.reshape(w.shape + (1,) * max(v.ndim - w.ndim, 0)) if w.ndim <= v.ndim else v * w
            except ValueError:
                raise ValueError(f"{who}: 'sample_weight' of shape {w.shape} does not fit the values of shape "
                                 f"{v.shape}.") from None
        self._total += float(v.sum())

    def result(self) -> float:
        return self._round(self._total)


#: the functions a MeanMetricWrapper's config may name (no code is ever loaded from a config)
def _known_functions() -> dict:
    from .. import losses
    from . import _functions

    names = {n: getattr(losses, n) for n in losses._function_names}
    names.update({n: getattr(_functions, n) for n in _functions.__all__})
    return names


class MeanMetricWrapper(Mean):
    """The running mean of ``fn(y_true, y_pred, **kwargs)`` (Keras's ``MeanMetricWrapper``).

    ``fn`` returns one value per sample (a loss function of
    :mod:`normlab.losses`, a metric function of :mod:`normlab.metrics`, or
    any callable). Only functions of those two modules go into a config
    (by name), so that building a metric from a config never runs code;
    for the same reason the wrapper is not in the registry (its subclasses,
    ``MeanSquaredError`` and the rest, are).
    """

    default_name = "mean_metric_wrapper"

    def __init__(self, fn, name: str | None = None, dtype=None, **kwargs):
        if not callable(fn):
            raise TypeError(f"MeanMetricWrapper: 'fn' must be a function, got {fn!r}.")
        self._fn = fn
        self._fn_kwargs = kwargs
        super().__init__(name=name or getattr(fn, "__name__", None), dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        values = np.asarray(self._fn(y_true, y_pred, **self._fn_kwargs), dtype=np.float64)
        if values.ndim == 0:
            values = values.reshape(1)
        Metric.update_state(self, None, values, sample_weight)

    def get_config(self):
        config = {**super().get_config(), **self._fn_kwargs}
        if type(self) is MeanMetricWrapper:
            name = getattr(self._fn, "__name__", None)
            if _known_functions().get(name) is not self._fn:
                raise ValueError(f"MeanMetricWrapper: the function {self._fn!r} cannot be saved in a config; only "
                                 "the functions of normlab.losses and normlab.metrics can.")
            config["fn"] = name
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if cls is MeanMetricWrapper:
            name = config.pop("fn")
            known = _known_functions()
            if name not in known:
                raise ValueError(f"MeanMetricWrapper: unknown function {name!r} in the config.")
            return cls(known[name], **config)
        return cls(**config)
