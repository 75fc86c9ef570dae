"""Weight initializers, by name or as seeded objects (Keras 3 conventions).

Fan computation for a kernel of shape ``(..., fan_in, fan_out)``: the product
of the leading (receptive-field) dimensions multiplies both fans, as in Keras,
so a Dense kernel ``(n_in, n_out)`` has ``fan_in = n_in`` and
``fan_out = n_out``.

Variance scaling (``glorot_*``, ``he_*``, ``lecun_*``) draws with variance
``scale / n`` where ``n`` is ``fan_in``, ``fan_out`` or their mean:

=================  =======  =========  ==============================
name               scale    mode       distribution
=================  =======  =========  ==============================
glorot_normal      1        fan_avg    truncated normal
glorot_uniform     1        fan_avg    uniform, limit sqrt(3 * var)
he_normal          2        fan_in     truncated normal
he_uniform         2        fan_in     uniform
lecun_normal       1        fan_in     truncated normal
lecun_uniform      1        fan_in     uniform
=================  =======  =========  ==============================

So ``glorot_normal`` has ``Var = 2 / (n_in + n_out)``, the Xavier formula of the
notes. Truncated normals are cut at two standard deviations and rescaled by
``1 / 0.87962566103423978`` so that the variance is the one asked for.

Randomness: an initializer built with ``seed=None`` draws from the generator
that the layer passes in at build time (derived from the model's seed), so a
seeded ``fit`` is reproducible; one built with an integer seed owns its own
``numpy.random.Generator`` and is reproducible on its own.
"""

from __future__ import annotations

import numbers

import numpy as np
from .utils import _random

from ._registry import Registry
from ._validation import Interval, InvalidParameterError, Options, validate_params

registry = Registry("initializer")

__all__ = [
    "Initializer",
    "Zeros",
    "Ones",
    "Constant",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "get",
    "serialize",
    "deserialize",
    "Orthogonal",
    "Identity",
    "compute_fans",
]

_SEED = [None, Interval(numbers.Integral, 0, None), np.random.Generator]


def compute_fans(shape: tuple, input_axes=None, output_axes=None) -> tuple[float, float]:
    """Return ``(fan_in, fan_out)`` for a weight of ``shape``.

    With ``input_axes`` and ``output_axes`` (Keras 3.15), the fans are the
    products of those axes' sizes (e.g. an attention projection of shape
    ``(d_model, heads, head_dim)`` with ``input_axes=[0]``).
    """
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return (float(np.prod([shape[a] for a in input_axes])),
                float(np.prod([shape[a] for a in output_axes])))
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return shape[-2] * receptive, shape[-1] * receptive


def _check_call(who: str, shape, dtype) -> tuple[tuple, np.dtype]:
    """``shape`` as a tuple of ints >= 0 and ``dtype`` as a float dtype, or a clear error (nothing drawn)."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or isinstance(shape, (str, bytes)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_)) for d in dims):
        raise InvalidParameterError(f"{who}: 'shape' must be a tuple of ints, got {shape!r}.")
    if any(d < 0 for d in dims):
        raise InvalidParameterError(f"{who}: the sizes in 'shape' must be >= 0, got {shape!r}.")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f":
        raise InvalidParameterError(f"{who}: 'dtype' must be a float dtype, got {dtype!r}.")
    return tuple(int(d) for d in dims), dt


class Initializer:
    """Base class: ``init(shape, dtype="float32", rng=None) -> ndarray``."""

    _param_constraints: dict = {}

    def __init__(self, seed: int | None = None):
        # Keras's seed forms: an int gives the same values on every call, a generator (Keras's SeedGenerator)
        # advances with each call; neither goes into the config as a generator (its state is not a setting)
        self._gen = seed if isinstance(seed, np.random.Generator) else None
        self.seed = None if self._gen is not None else seed

    def _rng(self, rng):
        if self._gen is not None:
            return self._gen
        if self.seed is not None:
            return np.random.default_rng(self.seed)
        return rng if rng is not None else _random.default_rng()

    def __call__(self, shape, dtype="float32", rng: np.random.Generator | None = None):
        shape, dtype = _check_call(type(self).__name__, shape, dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.asarray(self._sample(shape, self._rng(rng)), dtype=dtype)
        if not np.isfinite(out).all():  # e.g. Constant(1e300) or RandomNormal(stddev=1e300) in float32
            raise ValueError(
                f"{type(self).__name__}: the initial values are not finite in {dtype} ({self!r}); choose a "
                f"smaller scale or dtype='float64'."
            )
        return out

    def _sample(self, shape, rng):  # pragma: no cover - interface
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"seed": self.seed} if "seed" in self._param_constraints else {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@registry.register
class Zeros(Initializer):
    """All zeros."""

    def __init__(self):
        super().__init__(None)

    def _sample(self, shape, rng):
        return np.zeros(shape)


@registry.register
class Ones(Initializer):
    """All ones."""

    def __init__(self):
        super().__init__(None)

    def _sample(self, shape, rng):
        return np.ones(shape)


@registry.register
class Constant(Initializer):
    """Every entry equal to ``value``."""

    _param_constraints = {"value": [Interval(numbers.Real, None, None), list, np.ndarray]}

    def __init__(self, value: float = 0.0):
        validate_params(type(self), self._param_constraints, {"value": value})
        if isinstance(value, (list, np.ndarray)):
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf" or not np.isfinite(arr).all():
                raise InvalidParameterError(f"The 'value' parameter of {type(self).__name__} must hold finite "
                                            f"numbers. Got {value!r} instead.")
            value = arr
        super().__init__(None)
        self.value = value

    def _sample(self, shape, rng):
        if isinstance(self.value, np.ndarray):  # Keras: an array value broadcasts to the shape asked for
            return np.broadcast_to(self.value, shape).copy()
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value.tolist() if isinstance(self.value, np.ndarray) else self.value}


@registry.register
class RandomNormal(Initializer):
    """Normal with ``mean`` and ``stddev`` (Keras default stddev 0.05)."""

    _param_constraints = {
        "mean": [Interval(numbers.Real, None, None)],
        "stddev": [Interval(numbers.Real, 0, None)],
        "seed": _SEED,
    }

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None):
        validate_params(type(self), self._param_constraints, locals())
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def _sample(self, shape, rng):
        return rng.normal(self.mean, self.stddev, size=shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


@registry.register
class RandomUniform(Initializer):
    """Uniform on ``[minval, maxval)`` (Keras default [-0.05, 0.05))."""

    _param_constraints = {
        "minval": [Interval(numbers.Real, None, None)],
        "maxval": [Interval(numbers.Real, None, None)],
        "seed": _SEED,
    }

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None):
        validate_params(type(self), self._param_constraints, locals())
        if maxval < minval:
            raise ValueError(
                f"The 'maxval' parameter of RandomUniform must be >= minval={minval!r}. "
                f"Got {maxval!r} instead."
            )
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def _sample(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, size=shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def _truncated_normal(rng, shape, stddev):
    """Normal(0, stddev) redrawn outside two standard deviations."""
    out = rng.standard_normal(size=shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * stddev


@registry.register
class TruncatedNormal(Initializer):
    """Normal cut at two standard deviations (values beyond are redrawn)."""

    _param_constraints = RandomNormal._param_constraints

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None):
        validate_params(type(self), self._param_constraints, locals())
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def _sample(self, shape, rng):
        return self.mean + _truncated_normal(rng, shape, self.stddev)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _keras_distribution(value):
    d = value.lower()  # Keras lower-cases first and reads "normal" as its truncated normal
    d = "truncated_normal" if d == "normal" else d
    if d in ("uniform", "truncated_normal", "untruncated_normal"):
        return None
    return (f"Invalid `distribution` argument: {d}. "
            "Please use one of {'uniform', 'truncated_normal', 'untruncated_normal'}")


@registry.register
class VarianceScaling(Initializer):
    """Draw with variance ``scale / n``, ``n`` chosen by ``mode`` (see module doc)."""

    _param_constraints = {
        "scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "mode": [Options(("fan_in", "fan_out", "fan_avg"))],
        "distribution": [Options(("truncated_normal", "untruncated_normal", "uniform", "normal"))],
        "seed": _SEED,
        "input_axes": [None, list, tuple],
        "output_axes": [None, list, tuple],
    }
    #: Keras's sentence after normlab's for a rejected argument (normlab._validation)
    _keras_messages = {
        "scale": lambda v: f"Argument `scale` must be positive float. Received: scale={v}" if v <= 0.0 else None,
        "mode": lambda v: (f"Invalid `mode` argument: {v}. Please use one of {{'fan_in', 'fan_out', 'fan_avg'}}"
                           if v not in ("fan_in", "fan_out", "fan_avg") else None),
        "distribution": _keras_distribution,
    }

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
        input_axes=None,
        output_axes=None,
    ):
        validate_params(type(self), self._param_constraints, locals())
        super().__init__(seed)
        # Keras's "normal" is its truncated normal
        distribution = "truncated_normal" if distribution == "normal" else distribution
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.input_axes = None if input_axes is None else [int(a) for a in input_axes]
        self.output_axes = None if output_axes is None else [int(a) for a in output_axes]

    def _sample(self, shape, rng):
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        var = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * var)
            return rng.uniform(-limit, limit, size=shape)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, np.sqrt(var), size=shape)
        # 0.8796... is the stddev of a unit normal truncated at +-2
        return _truncated_normal(rng, shape, np.sqrt(var) / 0.87962566103423978)

    def get_config(self):
        config = {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }
        if self.input_axes is not None or self.output_axes is not None:  # Keras 3.15's axes, only when given
            config.update(input_axes=self.input_axes, output_axes=self.output_axes)
        return config


def _preset(name: str, scale: float, mode: str, distribution: str, doc: str):
    def __init__(self, seed: int | None = None):
        validate_params(name, {"seed": _SEED}, {"seed": seed})
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    cls = type(
        name,
        (VarianceScaling,),
        {
            "__init__": __init__,
            "get_config": get_config,
            "__doc__": doc,
            "_param_constraints": {"seed": _SEED},
        },
    )
    return registry.register(cls)


GlorotNormal = _preset(
    "GlorotNormal", 1.0, "fan_avg", "truncated_normal",
    "Xavier normal: truncated normal with Var = 2 / (fan_in + fan_out).",
)
GlorotUniform = _preset(
    "GlorotUniform", 1.0, "fan_avg", "uniform",
    "Xavier uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)).",
)
HeNormal = _preset(
    "HeNormal", 2.0, "fan_in", "truncated_normal",
    "He normal: truncated normal with Var = 2 / fan_in (for ReLU).",
)
HeUniform = _preset(
    "HeUniform", 2.0, "fan_in", "uniform", "He uniform: U(-l, l) with l = sqrt(6 / fan_in)."
)
LecunNormal = _preset(
    "LecunNormal", 1.0, "fan_in", "truncated_normal",
    "LeCun normal: truncated normal with Var = 1 / fan_in (for SELU).",
)
LecunUniform = _preset(
    "LecunUniform", 1.0, "fan_in", "uniform", "LeCun uniform: U(-l, l) with l = sqrt(3 / fan_in)."
)


@registry.register(aliases=("orthogonal", "OrthogonalInitializer"))
class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al., 2014), as Keras draws it.

    The weight is seen as a ``(prod(shape[:-1]), shape[-1])`` matrix: the
    QR decomposition of a standard normal matrix of that shape (transposed
    when it is wide) gives ``Q``, its columns' signs fixed by ``diag(R)`` so
    that the distribution is uniform (Haar); rows or columns are orthonormal.
    """

    _param_constraints = {"gain": [Interval(numbers.Real, None, None)], "seed": _SEED}

    def __init__(self, gain: float = 1.0, seed: int | None = None):
        validate_params(type(self), self._param_constraints, {"gain": gain, "seed": seed})
        super().__init__(seed)
        self.gain = gain

    def _sample(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: the shape must have at least two dimensions, got {shape}.")
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


@registry.register(aliases=("identity", "IdentityInitializer"))
class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only; a rectangular one has ones on its diagonal)."""

    _param_constraints = {"gain": [Interval(numbers.Real, None, None)]}

    def __init__(self, gain: float = 1.0):
        validate_params(type(self), self._param_constraints, {"gain": gain})
        super().__init__(None)
        self.gain = gain

    def _sample(self, shape, rng):
        if len(shape) != 2:
            raise ValueError(f"Identity: the shape must be 2-D, got {shape}.")
        return self.gain * np.eye(*shape)

    def get_config(self):
        return {"gain": self.gain}


class _ArrayInitializer:
    """Keras's ``initializers.get(array)``: the array itself, for exactly its shape."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __call__(self, shape, dtype="float32", rng=None):
        if tuple(shape) != self.value.shape:
            raise ValueError(f"Expected `shape` to be {self.value.shape} for direct tensor as initializer. "
                             f"Received shape={tuple(shape)}")
        return self.value.astype(dtype)


def get(identifier) -> Initializer | None:
    """Resolve a name, config dict or instance to an :class:`Initializer`; an array initializes to itself."""
    if isinstance(identifier, (np.ndarray, np.generic)):
        return _ArrayInitializer(identifier)
    return registry.get(identifier, base=Initializer)


def serialize(init: Initializer | None) -> dict | None:
    return registry.serialize(init)


def deserialize(config: dict) -> Initializer:
    return registry.deserialize(config)
