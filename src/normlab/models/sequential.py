"""The :class:`Sequential` model: a stack of layers with compile/fit/evaluate/predict."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._validation import InvalidParameterError
from ..layers._symbolic import SymbolicTensor, is_symbolic, symbolic_call
from ..layers.base import Layer
from ..utils import _random
from .base import BaseModel
from .model_config import deserialize_layer, serialize_layer
from .nested import ModelAsLayer, expand_program

__all__ = ["Sequential"]


def check_input_shape(input_shape, owner: str) -> tuple:
    """``input_shape`` (batch axis first, None or an int; then ints >= 1) as a tuple, or a clear error."""
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) >= 2
    if ok:
        batch, *sizes = input_shape
        ok = (batch is None or (isinstance(batch, (int, np.integer)) and not isinstance(batch, bool) and batch >= 1)) \
            and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in sizes)
    if not ok:
        raise ValueError(f"{owner}: 'input_shape' must be a tuple (batch, d1, ...) with the batch size None or "
                         f"an int >= 1 and sizes that are ints >= 1, got {input_shape!r}.")
    return tuple(None if d is None else int(d) for d in input_shape)


class Sequential(ModelAsLayer, BaseModel):
    """A linear stack of layers.

    Parameters
    ----------
    layers : list of Layer, optional
        Layers, or models used as layers (``Sequential([base_model,
        Dense(10)])``: trained, saved and frozen with ``base_model.trainable
        = False`` as in Keras). May start with ``normlab.Input(shape)`` (or
        an ``InputLayer``), as in Keras: the model is
        then built at once (in float32 unless the first layer is given a
        ``dtype``), so it can be summarized, saved or given weights before
        it sees data.
    name : str, optional
    seed : int, optional
        Seeds the initial weights of a model built at construction (layers
        whose initializers have no seed of their own).

    Training follows Keras: ``compile(optimizer, loss, metrics)``, then
    ``fit(x, y, ...)``. One training step is: forward in training mode; the
    loss (plus the layers' weight penalties); backward through every layer
    (a softmax/sigmoid output with cross-entropy is differentiated through
    its logits in one fused, stable step); regularizer gradients added; one
    optimizer update over all trainable parameters.

    If any part of a step raises (bad labels, NaN statistics, non-finite
    gradients), the parameters and the batch-norm moving statistics are left
    as they were before the step.
    """

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None, seed: int | None = None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise TypeError(f"Sequential: 'seed' must be an int >= 0 or None, got {seed!r}.")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Sequential: 'name' must be a str or None, got {name!r}.")
        self.name = name or "sequential"
        self._layers: list[Layer] = []
        self._input_spec: tuple | None = None  # the shape of an Input given first (batch axis included)
        self._init_training_state()
        for layer in layers or []:
            self.add(layer, _build=False)
        if self.layers and self._input_spec is not None and all(d is not None for d in self._input_spec[1:]):
            self.build(self._input_spec, seed=seed)

    # ------------------------------------------------------------ structure
    @property
    def layers(self) -> list:
        """The model's layers, in order (read-only: Keras's ``Model.layers`` is reserved)."""
        return self._layers

    @layers.setter
    def layers(self, value) -> None:
        raise AttributeError("`Model.layers` attribute is reserved and should not be set. Use `add()` and `pop()` "
                             "on a Sequential model, or build a new model.")

    def add(self, layer: Layer, _build: bool = True) -> None:
        """Append ``layer`` (a layer, a model, or first a ``normlab.Input``); a model built from an Input builds it at once."""
        from .functional import InputLayer

        if isinstance(layer, InputLayer):
            layer = layer.output
        if isinstance(layer, BaseModel):
            if layer is self:
                raise ValueError(f"Sequential.add: model {self.name!r} cannot be a layer of itself.")
            nested = layer._as_layer()
            if not self.layers and self._input_spec is None and layer.built:
                # Keras: a built model given first fixes the input shape, as an Input would
                self._input_spec = tuple(layer.input_shape)
            layer = nested
        if isinstance(layer, SymbolicTensor):
            if layer.layer is not None:
                raise TypeError("Sequential.add: a symbolic tensor must be the Input itself (normlab.Input(shape)), "
                                "not the output of a layer.")
            if self.layers or self._input_spec is not None:
                raise ValueError("Sequential.add: an Input can only be the first entry of a Sequential model.")
            self._input_spec = tuple(layer.shape)
            return
        if not isinstance(layer, Layer):
            # both a TypeError (normlab's) and a ValueError (Keras's)
            raise InvalidParameterError(f"Sequential.add: Only instances of normlab.layers.Layer (or a "
                                        f"normlab.Input, first) can be added to a Sequential model; got {layer!r}.")
        if any(layer is l for l in self.layers):
            raise ValueError(f"Layer {layer.name!r} is already in the model.")
        if any(layer.name == l.name for l in self.layers):
            raise ValueError(f"Sequential.add: the model already has a layer named {layer.name!r}; layer names "
                             f"must be unique (a saved model finds each layer's weights by its name).")
        self.layers.append(layer)
        # Keras's legacy form: a first layer given input_shape= / input_dim= stands for a leading Input
        declared = getattr(layer, "_declared_input_shape", None) if len(self.layers) == 1 else None
        if declared is not None and self._input_spec is None:
            self._input_spec = tuple(declared)
        else:
            declared = None
        if _build and self._input_spec is not None and all(d is not None for d in self._input_spec[1:]):
            try:
                self.build(self._input_spec)
            except BaseException:
                self.layers.pop()  # all or nothing: a layer that does not fit is not added
                if declared is not None:
                    self._input_spec = None
                raise

    def pop(self) -> Layer:
        """Remove the last layer and return it (Keras's ``pop``); the model must be compiled again.

        The optimizer's slots belonged to the removed layer's weights too, so
        a compiled model is left uncompiled.
        """
        if not self.layers:
            raise TypeError(f"Sequential.pop: model {self.name!r} has no layers to remove.")
        layer = self.layers.pop()
        if self.compiled:
            self._init_training_state()
        return layer

    @property
    def built(self) -> bool:
        return bool(self.layers) and all(layer.built for layer in self.layers)

    def _declared_input_shape(self):
        return self._input_spec

    @property
    def input_shape(self):
        return self.layers[0].input_shape if self.layers and self.layers[0].built else None

    def build(self, input_shape: tuple, seed: int | None = None) -> None:
        """Build every layer for inputs of ``input_shape`` (batch axis included, may be None)."""
        shape = check_input_shape(input_shape, "Sequential.build")
        if not self.layers:
            raise ValueError(f"Sequential.build: model {self.name!r} has no layers.")
        if self.built:
            if len(shape) != len(self.input_shape) or any(
                a is not None and b is not None and a != b for a, b in zip(shape[1:], self.input_shape[1:])
            ):
                raise ValueError(f"Sequential.build: 'input_shape' {shape} does not match the shape model "
                                 f"{self.name!r} is built for, {self.input_shape}.")
            return
        rng = np.random.default_rng(seed) if seed is not None else _random.default_rng()
        for layer in self.layers:
            if not layer.built:
                layer.build_from_shape(shape, rng)
            shape = layer.compute_output_shape((1,) + tuple(shape[1:]))
            shape = (None,) + tuple(shape[1:])

    def _ensure_built(self, x: np.ndarray, rng: np.random.Generator | None = None) -> None:
        if not self.layers:
            raise ValueError(f"Model {self.name!r} has no layers.")
        if self.built:
            return
        rng = rng if rng is not None else _random.default_rng()
        h = x[:2] if len(x) >= 2 else x
        # a tiny inference pass builds each layer on the shape it will see
        for layer in self.layers:
            if not layer.built:
                layer._ensure_built(h.astype(layer.dtype or h.dtype, copy=False), rng)
            h = layer(h, training=False)

    def output_shape_for(self, input_shape: tuple) -> tuple:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Keras's name of :meth:`output_shape_for` (works before the model is built)."""
        return self.output_shape_for(input_shape)

    @property
    def output_shape(self):
        """``(None, ...)``: the output shape of the built model (Keras), None before it is built."""
        return self.output_shape_for(self.input_shape) if self.built else None

    def _program(self) -> tuple[list, int]:
        # nested models' layers are inlined: one executor runs every leaf layer
        return expand_program([(layer, (k,)) for k, layer in enumerate(self.layers)], len(self.layers))

    def _last_layer(self):
        return self.layers[-1]

    def __call__(self, x, training: bool = False) -> np.ndarray:
        """Run the layers on ``x`` (checked), as ``layer(x, training)`` does for one layer."""
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"Sequential.__call__: 'training' must be a bool, got {training!r}.")
        if is_symbolic(x) and not isinstance(x, (list, tuple)):
            # Keras's symbolic call: the output's shape, batch axis as given (builds an unbuilt model)
            if not self.layers:
                raise ValueError(f"Model {self.name!r} has no layers.")
            if not self.built:
                self.build((None,) + tuple(x.shape[1:]))
            # recorded as a call of this model's layer: the tensor can feed a functional Model
            return symbolic_call(self._as_layer(), x)
        with self._building():
            x = self._inference_input(x, "__call__")
        for layer in self.layers:
            x = layer(x, training=training)
        return x

    # --------------------------------------------------------------- config
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "layers": [serialize_layer(l) for l in self.layers],
            "input_shape": list(self.input_shape) if self.built else None,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        model = cls([deserialize_layer(c) for c in config.get("layers", [])], name=config.get("name"))
        if config.get("input_shape") is not None:
            model.build(tuple(config["input_shape"]))
        return model
