"""Models used as layers: ``Sequential([base_model, Dense(10)])``, ``Model(inp, base_model(inp))``.

A model placed in another one is represented there by a :class:`_NestedModel`
layer (one per model, ``model._as_layer()``). It owns nothing: its
``params``, ``grads`` and ``buffers`` are live views of the inner layers'
dicts under the keys ``layer<i>_<key>`` (``i`` the inner layer's position),
so everything a model does with a layer's arrays (binding them to the
optimizer, saving, ``set_weights``) reaches the inner layers' own arrays.

In a training step the outer model does not call the nested one as a unit:
:func:`expand_program` inlines the nested model's program into the outer
one, so one executor runs every leaf layer (fusions, undo records and the
backward pass work across the boundary as in a flat model). The nested
model's ``trainable`` flag freezes all its layers, as in Keras.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

from ..layers.base import Layer

__all__ = ["expand_program", "is_nested"]


def is_nested(layer) -> bool:
    return isinstance(layer, _NestedModel)


def _key(i: int, key: str) -> str:
    return f"layer{i}_{key}"


class _LeafView(MutableMapping):
    """The ``params``/``grads``/``buffers`` of a model's layers as one dict (keys ``layer<i>_<key>``).

    Assigning an existing key replaces the inner layer's array (what binding
    to an optimizer does); adding or deleting keys is refused.
    """

    __slots__ = ("_model", "_kind")

    def __init__(self, model, kind: str):
        self._model = model
        self._kind = kind

    def _table(self) -> dict:
        return {_key(i, k): (getattr(layer, self._kind), k)
                for i, layer in enumerate(self._model.layers) for k in getattr(layer, self._kind)}

    def __getitem__(self, key):
        d, k = self._table()[key]
        return d[k]

    def __setitem__(self, key, value):
        table = self._table()
        if key not in table:
            raise KeyError(f"nested model {self._model.name!r} has no weight {key!r}")
        d, k = table[key]
        d[k] = value

    def __delitem__(self, key):
        raise TypeError(f"the weights of nested model {self._model.name!r} cannot be deleted")

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return sum(len(getattr(layer, self._kind)) for layer in self._model.layers)


class _NestedModel(Layer):
    """A model as a layer of another model (made by ``model._as_layer()``; not a registered layer).

    Attributes it does not define (``layers``, ``summary``, ``get_layer``,
    ...) are the model's.
    """

    def __init__(self, model):
        self.__dict__["model"] = model
        super().__init__(name=model.name)
        # the inner layers, for the model's all-or-nothing guard (it restores the layers it finds) and
        # the model file's loader (it bounds what the layers it finds may allocate): both look at attributes
        self._members = model.layers
        for i, layer in enumerate(model.layers):
            self.__dict__[f"_member_{i}"] = layer

    # ----------------------------------------------------- delegated state
    # Layer.__init__ and a failed build assign these; the model's layers hold them
    params = property(lambda self: _LeafView(self.model, "params"), lambda self, v: None)
    grads = property(lambda self: _LeafView(self.model, "grads"), lambda self, v: None)
    buffers = property(lambda self: _LeafView(self.model, "buffers"), lambda self, v: None)
    built = property(lambda self: self.model.built, lambda self, v: None)
    input_shape = property(lambda self: self.model.input_shape if self.model.built else None, lambda self, v: None)
    dtype = property(lambda self: self.model.dtype, lambda self, v: None)

    @property
    def name(self) -> str:
        return self.model.name

    @name.setter
    def name(self, value) -> None:
        self.model.name = value

    @property
    def _trainable(self) -> bool:
        return self.model.trainable

    @_trainable.setter
    def _trainable(self, value) -> None:
        if value is not self.model.trainable:
            self.model.trainable = bool(value)

    @property
    def trainable_params(self) -> dict:
        if not self.model.trainable:
            return {}
        return {_key(i, k): v for i, layer in enumerate(self.model.layers) for k, v in layer.trainable_params.items()}

    def _inner(self, attr: str) -> dict:
        if not self.model.trainable:
            return {}
        return {_key(i, k): v for i, layer in enumerate(self.model.layers) for k, v in getattr(layer, attr).items()}

    _regularizers = property(lambda self: self._inner("_regularizers"), lambda self, v: None)
    _constraints = property(lambda self: self._inner("_constraints"), lambda self, v: None)

    @property
    def _grads_zero(self) -> bool:
        return False

    @_grads_zero.setter
    def _grads_zero(self, value) -> None:
        for layer in self.model.layers:
            layer._grads_zero = value

    @property
    def _writes_fresh_grads(self) -> bool:
        return all(layer._writes_fresh_grads for layer in self.model.layers if layer.trainable_params)

    # Keras's order: layer by layer (each layer's parameters, then its buffers)
    @property
    def weights(self) -> list:
        return [w for layer in self.model.layers for w in layer.weights]

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self.model.layers for w in layer.trainable_weights] if self.model.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        if not self.model.trainable:
            return self.weights
        return [w for layer in self.model.layers for w in layer.non_trainable_weights]

    # the generators of the nested model's random layers (Dropout, noise), for the model file
    def get_rng_state(self) -> dict | None:
        states = {str(i): layer.get_rng_state() for i, layer in enumerate(self.model.layers)
                  if hasattr(layer, "get_rng_state")}
        states = {k: v for k, v in states.items() if v is not None}
        return {"layers": states} if states else None

    def set_rng_state(self, state: dict) -> None:
        layers = self.model.layers
        entries = state.get("layers") if isinstance(state, dict) else None
        if not isinstance(entries, dict):
            raise ValueError(f"Nested model {self.name!r}: set_rng_state expects {{'layers': {{index: state}}}} "
                             f"from get_rng_state(), got {state!r}.")
        for k, sub in entries.items():
            if not (isinstance(k, str) and k.isdigit() and int(k) < len(layers)
                    and hasattr(layers[int(k)], "set_rng_state")):
                raise ValueError(f"Nested model {self.name!r}: set_rng_state got a state for layer {k!r}, which "
                                 f"is not one of its random layers.")
        for k, sub in entries.items():
            if sub is not None:
                layers[int(k)].set_rng_state(sub)

    def zero_grads(self) -> None:
        for layer in self.model.layers:
            layer.zero_grads()

    def regularization_loss(self) -> float:
        return float(sum(layer.regularization_loss() for layer in self.model.layers)) if self.model.trainable else 0.0

    def add_regularization_grads(self) -> None:
        if self.model.trainable:
            for layer in self.model.layers:
                if layer._regularizers:
                    layer.add_regularization_grads()

    def apply_constraints(self) -> None:
        for layer in self.model.layers:
            if layer._constraints:
                layer.apply_constraints()

    def __getattr__(self, name: str):
        model = self.__dict__.get("model")
        if model is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(model, name)

    # ------------------------------------------------------------- calling
    @property
    def activation(self):
        """The output layer's activation (lets an outer model fuse softmax with cross-entropy)."""
        return getattr(self.model._output_layer, "activation", None)

    def _ensure_built(self, x: np.ndarray, rng: np.random.Generator | None = None) -> None:
        if not self.model.built:
            self.model._ensure_built(x, rng)

    def build_from_shape(self, input_shape: tuple, rng: np.random.Generator | None = None) -> None:
        if not self.model.built:
            sample = np.zeros((2,) + tuple(64 if d is None else d for d in input_shape[1:]),
                              dtype=self.model.dtype or np.float32)
            self.model._ensure_built(sample, rng)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(self.model.output_shape_for(tuple(input_shape)))

    def call(self, x, training: bool):
        program, output = self.model._program()
        values = [x]
        for layer, inputs in program:
            arg = [values[i] for i in inputs] if layer.multi_input else values[inputs[0]]
            values.append(layer(arg, training=training))
        return values[output]

    def _backward(self, dy):
        # a nested model on its own (layer.backward): its layers' passes in reverse, gradients
        # reaching a value from several consumers summed (models run the inlined program instead)
        program, output = self.model._program()
        grads: list = [None] * (len(program) + 1)
        grads[output] = dy
        for k in range(len(program) - 1, -1, -1):
            layer, inputs = program[k]
            g = grads[k + 1]
            if g is None:
                continue
            dx = layer.backward(g)
            for i, d in zip(inputs, dx if layer.multi_input else (dx,)):
                grads[i] = d if grads[i] is None else grads[i] + d
        return grads[0]

    def _output_shape_of_cache(self):
        return None

    def get_config(self) -> dict:
        return self.model.get_config()

    @property
    def _summary_type(self) -> str:
        """The type Keras's summary shows for a nested model: "Sequential" or "Functional"."""
        from .sequential import Sequential

        return "Sequential" if isinstance(self.model, Sequential) else "Functional"

    def __repr__(self) -> str:
        return f"<nested {type(self.model).__name__} name={self.name!r} built={self.built}>"


def expand_program(program: list, output: int) -> tuple[list, int]:
    """``program`` with each nested model's own program inlined (recursively), and the output's new index."""
    if not any(isinstance(layer, _NestedModel) for layer, _ in program):
        return program, output
    flat: list = []
    where = {0: 0}
    for k, (layer, inputs) in enumerate(program):
        ins = tuple(where[i] for i in inputs)
        if isinstance(layer, _NestedModel):
            sub, sub_output = layer.model._program()  # already expanded
            inner = {0: ins[0]}
            for j, (leaf, leaf_inputs) in enumerate(sub):
                flat.append((leaf, tuple(inner[i] for i in leaf_inputs)))
                inner[j + 1] = len(flat)
            where[k + 1] = inner[sub_output]
        else:
            flat.append((layer, ins))
            where[k + 1] = len(flat)
    return flat, where[output]


def leaf_output_layer(layer):
    """The layer that computes the output of ``layer`` (itself, or a nested model's own output layer)."""
    while isinstance(layer, _NestedModel):
        layer = layer.model._output_layer
    return layer


class ModelAsLayer:
    """What Sequential and Model share as parts of other models: ``trainable``, ``_as_layer``, ``to_json``."""

    @property
    def trainable(self) -> bool:
        """Keras's ``model.trainable``: setting it sets every layer's flag (False freezes the model)."""
        return self.__dict__.get("_model_trainable", True)

    @trainable.setter
    def trainable(self, value) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}.trainable must be a bool, got {value!r}.")
        self._model_trainable = bool(value)
        for layer in self.layers:
            layer.trainable = bool(value)

    @property
    def output_names(self) -> list:
        """Keras's ``model.output_names``: the name of the layer computing the output (one output)."""
        last = self._last_layer() if self.layers else None
        return [last.name] if last is not None else []

    def _trainable_flags(self) -> tuple:
        flags = []
        for layer in self.layers:
            flags.append(layer.trainable)
            if isinstance(layer, _NestedModel):
                flags.append(layer.model._trainable_flags())
        return tuple(flags)

    def _weight_targets(self) -> list:
        out = []
        for layer in self.layers:
            if isinstance(layer, _NestedModel):
                out.extend(layer.model._weight_targets())
            else:
                out.extend((layer, k, a) for k, a in list(layer.params.items()) + list(layer.buffers.items()))
        return out

    def _as_layer(self) -> _NestedModel:
        """The layer that stands for this model inside another model (always the same one)."""
        wrapper = self.__dict__.get("_layer_wrapper")
        if wrapper is None:
            wrapper = self._layer_wrapper = _NestedModel(self)
        return wrapper

    @property
    def _output_layer(self):
        return leaf_output_layer(self._last_layer())

    def to_json(self, **kwargs) -> str:
        """The model's architecture as JSON (Keras's ``to_json``; ``kwargs`` go to ``json.dumps``).

        No weights; :func:`normlab.models.model_from_json` rebuilds the model.
        """
        from .model_config import model_to_json

        return model_to_json(self, **kwargs)
