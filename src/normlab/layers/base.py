"""The :class:`Layer` base: state handling, building, checking, serializing.

A layer owns three dicts of arrays and no algebra:

``params``
    trainable weights (``"kernel"``, ``"bias"``, ``"gamma"``, ``"beta"``);
``grads``
    same keys as ``params``; :meth:`Layer.backward` *accumulates* into them and
    :meth:`Layer.zero_grads` resets them;
``buffers``
    non-trainable state (``"moving_mean"``, ``"moving_variance"``).

Life cycle: ``__init__`` stores and validates hyperparameters (invalid values
raise :class:`~normlab.InvalidParameterError` at construction); the first call
``y = layer(x, training=...)`` builds the weights from ``x.shape``, or
``layer.build(input_shape)`` does so without data (as in Keras, it marks the
layer built: the next call keeps those weights); later calls check the input
against the built shape. ``backward(dy)`` needs a forward call
with ``training=True`` (which keeps what the backward pass needs) and raises a
``RuntimeError`` otherwise.

dtype: a layer computes in ``float32`` unless it is given ``dtype`` or first
called on ``float64`` input, in which case it computes in ``float64``
(gradient checks run so). Inputs of another dtype are cast.

The checks of what a layer is handed (input arrays, build shapes,
constructor arguments) are in :mod:`normlab.layers._layer_checks`, and
importable from here under the same names.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from typing import Any

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .._registry import Registry, snake_case
from .._validation import Boolean, NoneOk, Options, validate_params
from ._layer_checks import (  # noqa: F401 - _LOOKUP_KINDS, _check_lookup, _INPUT_SHAPE_WARNING re-exported
    _INPUT_SHAPE_WARNING,
    _LOOKUP_KINDS,
    _check_lookup,
    _checked_shape,
    _checking_lookups,
    _declared_input_shape,
    _resolve,
    as_float_array,
)
from ._symbolic import is_symbolic, symbolic_call

registry = Registry("layer")

_name_counters: dict[str, itertools.count] = defaultdict(itertools.count)

_FLOAT_DTYPES = ("float32", "float64")


def unique_name(base: str) -> str:
    n = next(_name_counters[base])
    return base if n == 0 else f"{base}_{n}"


def _attributes(layer) -> list:
    """The attributes of ``layer`` and of the layers it holds (a wrapper's), dicts and lists copied."""
    out = [(layer, {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                    for k, v in vars(layer).items()})]
    for v in vars(layer).values():
        if isinstance(v, Layer):
            out.extend(_attributes(v))
    return out


def _restore(saved: list) -> None:
    for obj, attrs in saved:
        state = vars(obj)
        state.clear()
        state.update(attrs)


def _marking_build(raw):
    """Wrap a subclass's ``build`` so that calling it directly builds the layer, as Keras's build wrapper does.

    Called by the layer's own machinery (``_ensure_built``) or by a subclass's
    ``super().build(...)``, the wrapped function runs as written. Called from
    outside on an unbuilt layer, it goes through :meth:`Layer.build_from_shape`:
    dtype chosen, all-or-nothing on failure, ``built`` set. On a built layer it
    runs as written (layers that only check shapes there, such as pooling, keep
    doing so) but may not add weights, as Keras refuses new state after build;
    a refused or failed call leaves the layer as it was.
    """
    if getattr(raw, "_marks_built", False):
        return raw

    @functools.wraps(raw)
    def build(self, input_shape, *args, **kwargs):
        state = self.__dict__
        if state.get("_in_build"):
            return raw(self, input_shape, *args, **kwargs)
        if not state.get("built", False):
            return self.build_from_shape(input_shape)
        saved = _attributes(self)
        state["_in_build"] = state["_build_locked"] = True
        try:
            return raw(self, input_shape, *args, **kwargs)
        except BaseException:
            _restore(saved)
            raise
        finally:
            state.pop("_in_build", None)
            state.pop("_build_locked", None)

    build._marks_built = True
    return build


class Layer:
    """Base class of all layers.

    Parameters
    ----------
    name : str, optional
        Unique by default (``"dense"``, ``"dense_1"``, ...).
    trainable : bool, default True
        ``False`` freezes the layer: its parameters receive no gradient and the
        optimizer leaves them alone.
    dtype : {"float32", "float64"}, optional
        Computation dtype; by default float64 if first called on float64 data,
        float32 otherwise.

    Subclasses implement ``build(input_shape)`` (allocate with
    :meth:`add_weight`), ``call(x, training) -> y`` (keeping what the backward
    pass needs in ``self._cache`` when ``training`` is true),
    ``_backward(dy) -> dx`` and ``compute_output_shape``; they list the
    constructor arguments in ``get_config``.
    """

    _param_constraints: dict = {}
    #: minimum input rank (batch axis included)
    min_ndim: int = 1
    #: merge layers take a list of inputs
    multi_input: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            registry.register(cls)
        if "build" in cls.__dict__:
            cls.build = _marking_build(cls.__dict__["build"])
        if "__init__" in cls.__dict__:
            cls.__init__ = _checking_lookups(cls.__dict__["__init__"])

    def __init__(self, *, name: str | None = None, trainable: bool = True, dtype=None, **kwargs):
        declared = _declared_input_shape(type(self).__name__, kwargs)
        validate_params(
            type(self).__name__,
            {
                "name": [NoneOk(), str],
                "trainable": [Boolean()],
                "dtype": [NoneOk(), Options(_FLOAT_DTYPES)],
            },
            {"name": name, "trainable": trainable, "dtype": dtype},
        )
        self.name = name if name is not None else unique_name(snake_case(type(self).__name__))
        self._trainable = bool(trainable)
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.built = False
        self.input_shape: tuple | None = None
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._regularizers: dict[str, _regularizers.Regularizer] = {}
        self._constraints: dict[str, _constraints.Constraint] = {}
        #: ``(None,) + input_shape`` of a first layer given ``input_shape=``/``input_dim=`` (Keras's
        #: deprecated form of a leading ``Input``); a Sequential model reads it as its Input
        self._declared_input_shape: tuple | None = declared
        self._cache: Any = None
        self._build_rng: np.random.Generator | None = None
        # True right after zero_grads(): the next gradient of each key may be
        # copied instead of added (saves a pass); cleared after backward
        self._grads_zero = False

    # ------------------------------------------------------------------ state
    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        validate_params(type(self).__name__, {"trainable": [Boolean()]}, {"trainable": value})
        self._trainable = bool(value)

    @property
    def trainable_params(self) -> dict[str, np.ndarray]:
        """The parameters an optimizer updates (none when frozen)."""
        return self.params if self._trainable else {}

    def add_weight(
        self,
        key: str,
        shape: tuple,
        initializer="zeros",
        regularizer=None,
        trainable: bool = True,
        constraint=None,
    ) -> np.ndarray:
        """Allocate ``params[key]`` (and ``grads[key]``) or ``buffers[key]``.

        ``constraint`` (trainable weights only) is applied after each optimizer
        update (:meth:`apply_constraints`).
        """
        if self.__dict__.get("_build_locked"):
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) is already built: build() cannot add the weight "
                f"{key!r} again (as in Keras, all weights are created by the first build)."
            )
        # every lookup before any allocation: a bad name leaves the layer as it was
        init = _resolve(self, "initializer", initializer, _initializers, _initializers.Initializer)
        reg = con = None
        if trainable:
            reg = _resolve(self, "regularizer", regularizer, _regularizers, _regularizers.Regularizer)
            con = _resolve(self, "constraint", constraint, _constraints, _constraints.Constraint)
        try:
            value = np.ascontiguousarray(init(shape, dtype=self.dtype, rng=self._build_rng))
        except ValueError as exc:  # the initializer's own message, with the layer and the weight it was for
            raise type(exc)(f"Layer {self.name!r} ({type(self).__name__}), weight {key!r}: {exc}") from None
        if trainable:
            self.params[key] = value
            self.grads[key] = np.zeros_like(value)
            if reg is not None:
                self._regularizers[key] = reg
            self._set_constraint(key, con)
        else:
            self.buffers[key] = value
        return value

    #: True for layers whose backward pass writes every entry of ``grads`` when
    #: ``_grads_zero`` is set (instead of adding to zeroed arrays), so that a
    #: model made only of such layers may skip zeroing its gradient buffer
    _writes_fresh_grads = False

    def zero_grads(self) -> None:
        for g in self.grads.values():
            g.fill(0)
        self._grads_zero = True

    def _accumulate_grad(self, key: str, value: np.ndarray) -> None:
        """``grads[key] += value`` (a plain copy when the gradients were just zeroed)."""
        g = self.grads[key]
        value = value.reshape(g.shape)
        if self._grads_zero:
            np.copyto(g, value, casting="same_kind")
        else:
            g += value

    def regularization_loss(self) -> float:
        """Sum of the weight penalties of this layer's regularized parameters."""
        if not self._trainable:
            return 0.0
        return float(sum(r.penalty(self.params[k]) for k, r in self._regularizers.items()))

    @property
    def losses(self) -> list:
        """Keras's ``layer.losses``: the penalty of each regularized weight (floats)."""
        if not self._trainable:
            return []
        return [float(r.penalty(self.params[k])) for k, r in self._regularizers.items()]

    def add_regularization_grads(self) -> None:
        """Add each penalty's gradient to ``grads`` (before clipping)."""
        if not self._trainable:
            return
        for k, r in self._regularizers.items():
            self.grads[k] += r.gradient(self.params[k])

    def _set_constraint(self, key: str, constraint) -> None:
        """Attach ``constraint`` (a name, config, instance or None) to the trainable weight ``key``."""
        con = _resolve(self, "constraint", constraint, _constraints, _constraints.Constraint)
        if con is not None:
            self._constraints[key] = con

    def apply_constraints(self) -> None:
        """Project each constrained parameter in place (a model calls this after each optimizer update).

        In place because a compiled model's parameters are views into one flat
        buffer. A frozen layer is left alone, as the optimizer leaves it.
        """
        if not self._trainable:
            return
        for k, c in self._constraints.items():
            p = self.params[k]
            np.copyto(p, c(p), casting="same_kind")

    def count_params(self) -> int:
        return int(sum(p.size for p in self.params.values()) + sum(b.size for b in self.buffers.values()))

    # ------------------------------------------------- Keras's weight access
    @property
    def weights(self) -> list[np.ndarray]:
        """Keras's ``layer.weights``: the parameters then the buffers (the arrays themselves, not copies)."""
        return [*self.params.values(), *self.buffers.values()]

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        """Keras's ``trainable_weights``: the parameters, none when the layer is frozen."""
        return list(self.trainable_params.values())

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        """Keras's ``non_trainable_weights``: the buffers, then the parameters of a frozen layer."""
        frozen = [] if self._trainable else list(self.params.values())
        return [*frozen, *self.buffers.values()]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of :attr:`weights` (Keras's ``get_weights``)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights) -> None:
        """Write ``weights`` (as :meth:`get_weights` returns them) into the layer: all of them, or none.

        Each array must have its target's shape; it is cast to the layer's
        dtype. Written in place, so a compiled model's views stay valid.
        """
        owner = f"Layer {self.name!r} ({type(self).__name__}).set_weights"
        targets = self.weights
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
            raise TypeError(f"{owner}: 'weights' must be a list of arrays, got {type(weights).__name__}.")
        if len(weights) != len(targets):
            raise ValueError(f"{owner}: 'weights' must hold {len(targets)} arrays (the layer's weights), "
                             f"got {len(weights)}.")
        converted = []
        for i, (t, w) in enumerate(zip(targets, weights)):
            w = as_float_array(w, who=owner, arg=f"weights[{i}]")
            if w.shape != t.shape:
                raise ValueError(f"{owner}: 'weights[{i}]' must have shape {t.shape}, got {w.shape}.")
            converted.append(w)
        for t, w in zip(targets, converted):
            np.copyto(t, w, casting="unsafe")

    def __getattr__(self, name: str):
        # Keras reaches weights as attributes (layer.kernel, layer.moving_mean): a name not found the
        # ordinary way is looked up among the parameters, then the buffers
        if not name.startswith("__"):
            state = self.__dict__
            for store in ("params", "buffers"):
                arrays = state.get(store)
                if arrays is not None and name in arrays:
                    return arrays[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --------------------------------------------------------------- building
    def build(self, input_shape: tuple) -> None:
        """Allocate weights for inputs of ``input_shape`` (batch axis included; ``None`` sizes allowed).

        Subclasses override this to allocate with :meth:`add_weight`. Called
        directly, it builds the layer as its first call would (the override is
        wrapped, see :func:`_marking_build`): ``built`` is set and later calls
        keep the weights.
        """

    def _ensure_built(self, x: np.ndarray, rng: np.random.Generator | None = None) -> None:
        if self.built:
            return
        dtype = self.dtype
        if self.dtype is None:
            self.dtype = np.dtype("float64") if x.dtype == np.float64 else np.dtype("float32")
        self._build_rng = rng
        self._in_build = True
        try:
            self.build(tuple(x.shape))
        except BaseException:
            # unbuilt as before: a later call with float64 data still computes in float64
            self.params, self.grads, self.buffers = {}, {}, {}
            self._regularizers = {}
            self._constraints = {}
            self.dtype = dtype
            raise
        finally:
            self._build_rng = None
            self._in_build = False
        self.input_shape = (None,) + tuple(x.shape[1:])
        self.built = True

    def build_from_shape(self, input_shape: tuple, rng: np.random.Generator | None = None) -> None:
        """Build without data (``input_shape`` includes the batch axis; it may be None)."""
        shape = _checked_shape(input_shape, f"Layer {self.name!r} ({type(self).__name__}).build_from_shape")
        self._ensure_built(np.empty(shape, dtype=self.dtype or np.float32), rng)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def check_input_shape(self, shape: tuple) -> None:
        """Raise ``ValueError`` if ``shape`` does not fit the built layer."""
        if self.input_shape is None:
            return
        if len(shape) != len(self.input_shape):
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) was built for inputs of rank "
                f"{len(self.input_shape)} {self.input_shape}, got rank {len(shape)} {shape}."
            )

    # ---------------------------------------------------------------- calling
    def __call__(self, x, training: bool = False) -> np.ndarray:
        if is_symbolic(x):
            return symbolic_call(self, x)
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"Layer {self.name!r}: 'training' must be a bool, got {training!r}.")
        x = as_float_array(x, who=f"Layer {self.name!r} ({type(self).__name__})")
        if x.ndim < self.min_ndim:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) expects inputs of rank >= "
                f"{self.min_ndim} (batch axis first), got shape {x.shape}."
            )
        if self.built:
            self.check_input_shape(x.shape)
            return self._checked_call(x, training)
        # the first call builds: if anything in it fails (the build, the sizes only a call checks such as
        # a convolution's spatial axes, a data-dependent initialization), the layer is left unbuilt as it
        # was; every array it holds then is new, so restoring the attributes restores its state
        saved = _attributes(self)
        try:
            self._ensure_built(x)
            self.check_input_shape(x.shape)
            return self._checked_call(x, training)
        except BaseException:
            _restore(saved)
            raise

    def _checked_call(self, x: np.ndarray, training) -> np.ndarray:
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        self._cache = None
        return self.call(x, bool(training))

    def call(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x

    def backward(self, dy) -> np.ndarray:
        """Back-propagate ``dy`` (dL/dy); accumulate into ``grads``; return dL/dx."""
        if self._cache is None:
            raise RuntimeError(
                f"Layer {self.name!r}: backward() needs a preceding forward call with "
                f"training=True."
            )
        dy = as_float_array(dy, who=f"Layer {self.name!r} ({type(self).__name__})", arg="dy")
        expected = self._output_shape_of_cache()
        if expected is not None and tuple(dy.shape) != tuple(expected):
            raise ValueError(
                f"Layer {self.name!r}: 'dy' must have the shape of the last output "
                f"{tuple(expected)}, got {tuple(dy.shape)}."
            )
        if dy.dtype != self.dtype:
            dy = dy.astype(self.dtype)
        return self._run_backward(dy)

    def _run_backward(self, dy: np.ndarray) -> np.ndarray:
        try:
            return self._backward(dy)
        finally:
            self._grads_zero = False

    def _backward_params_only(self, dy: np.ndarray) -> None:
        """Backward for the first layer of a model, whose input needs no gradient.

        Layers whose input gradient is expensive (Dense, convolutions) override
        this to skip it; the default computes and discards it.
        """
        self._run_backward(dy)

    # ------------------------------------------------- inside a model's step
    def _train_forward(self, x):
        """The training forward pass as a model's step runs it (:mod:`normlab.models.executor`).

        ``x`` is already checked and of the layer's dtype. Unlike ``call``,
        the result may be a workspace the layer reuses at its next training
        pass (layers with per-shape workspaces override this).
        """
        return self.call(x, True)

    def _train_backward(self, dy, need_dx: bool = True):
        """Backward inside a model's step; returns dL/dx (None when ``need_dx`` is False).

        Like ``_train_forward``, the result may be a workspace.
        """
        if need_dx:
            return self._run_backward(dy)
        self._backward_params_only(dy)
        return None

    def _train_backward_from_logits(self, dz, need_dx: bool = True):
        """``backward_from_logits`` inside a model's step (the result may be a workspace)."""
        return self.backward_from_logits(dz, need_dx=need_dx)

    def _begin_step(self, stamp: float) -> None:
        """A model's training step ``stamp`` begins: remember what it may change besides parameters.

        Layers whose training pass changes state (moving statistics, random
        generators) override this and :meth:`_rollback`; a model calls them
        only on such layers. ``stamp`` is unique to the step.
        """

    def _rollback(self, stamp: float) -> None:
        """Give back what training step ``stamp`` changed (it failed before it committed)."""

    def _output_shape_of_cache(self) -> tuple | None:
        return getattr(self, "_out_shape", None)

    def _backward(self, dy: np.ndarray) -> np.ndarray:
        return dy

    # ---------------------------------------------------------- serialization
    def get_config(self) -> dict:
        """Constructor arguments, JSON-serializable."""
        dtype = self.dtype.name if self.dtype is not None else None
        return {"name": self.name, "trainable": self._trainable, "dtype": dtype}

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"


# the base class's own (empty) build marks the layer built too: Activation, Flatten and the like inherit it
Layer.build = _marking_build(Layer.build)
