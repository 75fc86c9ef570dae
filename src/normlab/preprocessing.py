"""Feature scaling fitted on training data: the notes' two formulas, scikit-learn style.

==============  ===============================================  ====================
scaler          transform (per feature)                          inverse
==============  ===============================================  ====================
StandardScaler  x' = (x - mu) / sigma                            x = x' sigma + mu
MinMaxScaler    x' = (x - x_min) / (x_max - x_min) (b - a) + a   x = (x' - m) / s
==============  ===============================================  ====================

``mu`` and ``sigma`` are the mean and the population standard deviation
(``ddof=0``) of the training data; ``(a, b)`` is ``feature_range``, and the
min-max map is stored as ``x' = x s + m`` with ``s = (b - a) / (x_max - x_min)``,
``m = a - x_min s`` (scikit-learn's ``scale_`` and ``min_``). A constant
feature (zero spread) gets ``sigma = 1`` or ``x_max - x_min = 1``, as in
scikit-learn, so it maps to 0 (or ``a``) instead of dividing by zero.

Fit on the training split only and reuse the fitted scaler for validation
and test data, or statistics of the test set leak into training. Fitted
attributes end in ``_`` (scikit-learn's names, results equal to scikit-learn's
to rounding). Inputs are ``(n_samples, n_features)`` or, more generally,
``(n_samples, ..., n_features)`` with statistics per feature (the last axis)
over all other axes. ``to_layer()`` returns the equivalent preprocessing
layer (:class:`~normlab.layers.Normalization` or
:class:`~normlab.layers.Rescaling`), which a model saves with its weights.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._validation import Boolean, _Constraint, validate_params

__all__ = ["StandardScaler", "MinMaxScaler", "NotFittedError"]

_EPS = np.finfo(np.float64).eps


class NotFittedError(ValueError, AttributeError):
    """A scaler was used before ``fit`` (scikit-learn's exception of the same name and bases)."""


class _Range(_Constraint):
    def is_satisfied_by(self, value):
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            return False
        ok = all(
            isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and np.isfinite(float(v)) for v in value
        )
        return ok and value[0] < value[1]

    def describe(self):
        return "a pair (min, max) of finite floats with min < max"

    def invalid_examples(self):
        return [(1, 0), (0, 0), (0,), "a string", (0, float("inf"))]


class _Scaler:
    _param_constraints: dict = {}
    _fitted_attr = ""

    def get_config(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    # ----------------------------------------------------------- checking
    def _check_array(self, X, who: str, *, fitting: bool) -> np.ndarray:
        name = type(self).__name__
        if not fitting and not hasattr(self, "n_features_in_"):
            raise NotFittedError(
                f"This {name} instance is not fitted yet. Call 'fit' with appropriate arguments "
                f"before using '{who}'."
            )
        try:
            X = np.asarray(X)
        except Exception as exc:
            raise TypeError(f"{name}.{who}: 'X' must be array-like of numbers ({exc}).") from None
        if X.dtype.kind in "biu":
            X = X.astype(np.float64)
        elif X.dtype.kind != "f":
            raise TypeError(f"{name}.{who}: 'X' must hold real numbers; got an array of dtype {X.dtype}.")
        if X.ndim < 2:
            raise ValueError(
                f"{name}.{who}: expected a 2-D array (n_samples, n_features), got shape {X.shape}. "
                f"Reshape with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample."
            )
        if X.shape[0] == 0 or X.shape[-1] == 0:
            raise ValueError(f"{name}.{who}: 'X' is empty (shape {X.shape}).")
        if not np.isfinite(X).all():
            raise ValueError(f"{name}.{who}: 'X' holds NaN or inf values.")
        if not fitting and X.shape[-1] != self.n_features_in_:
            raise ValueError(
                f"{name}.{who}: X has {X.shape[-1]} features (last axis), but {name} was fitted "
                f"with {self.n_features_in_} features."
            )
        return X

    @staticmethod
    def _axes(X) -> tuple:
        return tuple(range(X.ndim - 1))

    def fit_transform(self, X, y=None) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)


class StandardScaler(_Scaler):
    """Standardize each feature to mean 0 and unit variance: ``x' = (x - mu) / sigma``.

    Parameters
    ----------
    with_mean : bool, default True
        Subtract the mean (``mu = 0`` otherwise).
    with_std : bool, default True
        Divide by the standard deviation (``sigma = 1`` otherwise).

    Attributes
    ----------
    mean_ : ndarray (n_features,) or None
        ``None`` when neither centering nor scaling.
    var_ : ndarray (n_features,) or None
        Population variance (``ddof=0``, two-pass, in float64); ``None`` when
        ``with_std=False``.
    scale_ : ndarray (n_features,) or None
        ``sqrt(var_)``, with 1 for constant features; ``None`` when ``with_std=False``.
    n_features_in_, n_samples_seen_ : int

    Examples
    --------
    >>> s = StandardScaler().fit(X_train)
    >>> model.add(s.to_layer())          # or: X_train = s.transform(X_train)
    """

    _param_constraints = {"with_mean": [Boolean()], "with_std": [Boolean()]}

    def __init__(self, with_mean: bool = True, with_std: bool = True):
        validate_params(type(self).__name__, self._param_constraints, {"with_mean": with_mean, "with_std": with_std})
        self.with_mean = bool(with_mean)
        self.with_std = bool(with_std)

    def fit(self, X, y=None) -> "StandardScaler":
        """Compute ``mean_``, ``var_`` and ``scale_`` from ``X``; returns self."""
        X = self._check_array(X, "fit", fitting=True)
        axes = self._axes(X)
        n = int(np.prod([X.shape[a] for a in axes]))
        mean = X.mean(axis=axes, dtype=np.float64)
        self.n_features_in_ = int(X.shape[-1])
        self.n_samples_seen_ = n
        self.mean_ = self.var_ = self.scale_ = None
        if self.with_mean or self.with_std:
            self.mean_ = mean
        if self.with_std:
            var = np.mean(np.square(X - mean), axis=axes, dtype=np.float64)
            # scikit-learn's test for a constant feature: var within rounding of 0
            constant = var <= n * _EPS * var + (n * mean * _EPS) ** 2
            self.var_ = var
            self.scale_ = np.where(constant, 1.0, np.sqrt(var))
        return self

    def _mu_sigma(self):
        mu = self.mean_ if self.with_mean else np.zeros(self.n_features_in_)
        sigma = self.scale_ if self.with_std else np.ones(self.n_features_in_)
        return mu, sigma

    def transform(self, X) -> np.ndarray:
        """``(X - mu) / sigma``, in ``X``'s float dtype (float64 for integers)."""
        X = self._check_array(X, "transform", fitting=False)
        mu, sigma = self._mu_sigma()
        return ((X - mu) / sigma).astype(X.dtype, copy=False)

    def inverse_transform(self, X) -> np.ndarray:
        """``X sigma + mu``."""
        X = self._check_array(X, "inverse_transform", fitting=False)
        mu, sigma = self._mu_sigma()
        return (X * sigma + mu).astype(X.dtype, copy=False)

    def to_layer(self, **kwargs):
        """An equivalent :class:`~normlab.layers.Normalization` (``axis=-1``).

        ``mean = mu`` and ``variance = sigma^2``, so the layer computes
        ``(x - mu) / sigma`` (exactly this scaler's transform, constant
        features included, provided ``sigma >= 1e-7``, Keras's floor).
        ``kwargs`` (``name``, ``dtype``, ``invert``) go to the layer.
        """
        from .layers.preprocessing import Normalization

        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call 'fit' before 'to_layer'.")
        mu, sigma = self._mu_sigma()
        return Normalization(axis=-1, mean=mu, variance=np.square(sigma), **kwargs)

    def get_config(self):
        return {"with_mean": self.with_mean, "with_std": self.with_std}


class MinMaxScaler(_Scaler):
    """Scale each feature to ``feature_range``: ``x' = (x - x_min) / (x_max - x_min) (b - a) + a``.

    Stored as ``x' = x * scale_ + min_`` with ``scale_ = (b - a) / (x_max - x_min)``
    and ``min_ = a - x_min * scale_`` (scikit-learn). The default range
    ``(0, 1)`` is the notes' ``(x - x_min) / (x_max - x_min)``. Values outside
    the training range map outside ``feature_range`` (no clipping).

    Parameters
    ----------
    feature_range : (a, b), default (0, 1)
        With ``a < b``.

    Attributes
    ----------
    data_min_, data_max_, data_range_ : ndarray (n_features,)
    scale_, min_ : ndarray (n_features,)
        A constant feature gets ``data_range`` 1 in ``scale_`` (it maps to ``a``).
    n_features_in_, n_samples_seen_ : int
    """

    _param_constraints = {"feature_range": [_Range()]}

    def __init__(self, feature_range=(0, 1)):
        validate_params(type(self).__name__, self._param_constraints, {"feature_range": feature_range})
        self.feature_range = (feature_range[0], feature_range[1])

    def fit(self, X, y=None) -> "MinMaxScaler":
        """Compute ``data_min_``, ``data_max_``, ``scale_`` and ``min_`` from ``X``; returns self."""
        X = self._check_array(X, "fit", fitting=True)
        axes = self._axes(X)
        lo, hi = (float(v) for v in self.feature_range)
        dmin = X.min(axis=axes).astype(np.float64)
        dmax = X.max(axis=axes).astype(np.float64)
        drange = dmax - dmin
        self.n_features_in_ = int(X.shape[-1])
        self.n_samples_seen_ = int(np.prod([X.shape[a] for a in axes]))
        self.data_min_, self.data_max_, self.data_range_ = dmin, dmax, drange
        self.scale_ = (hi - lo) / np.where(drange < 10 * _EPS, 1.0, drange)
        self.min_ = lo - dmin * self.scale_
        return self

    def transform(self, X) -> np.ndarray:
        """``X * scale_ + min_``, in ``X``'s float dtype (float64 for integers)."""
        X = self._check_array(X, "transform", fitting=False)
        return (X * self.scale_ + self.min_).astype(X.dtype, copy=False)

    def inverse_transform(self, X) -> np.ndarray:
        """``(X - min_) / scale_``."""
        X = self._check_array(X, "inverse_transform", fitting=False)
        return ((X - self.min_) / self.scale_).astype(X.dtype, copy=False)

    def to_layer(self, **kwargs):
        """An equivalent :class:`~normlab.layers.Rescaling`: ``scale=scale_``, ``offset=min_``.

        For ``feature_range=(0, 1)``: ``scale = 1 / (x_max - x_min)``,
        ``offset = -x_min / (x_max - x_min)``. ``kwargs`` (``name``, ``dtype``)
        go to the layer.
        """
        from .layers.preprocessing import Rescaling

        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call 'fit' before 'to_layer'.")
        return Rescaling(scale=self.scale_, offset=self.min_, **kwargs)

    def get_config(self):
        return {"feature_range": list(self.feature_range)}
