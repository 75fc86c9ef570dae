"""Functional models: layers called on symbolic tensors, run as a directed acyclic graph.

::

    inputs = normlab.Input((32,))
    h = Dense(32, use_bias=False)(inputs)
    h = BatchNormalization()(h)
    h = Activation("relu")(h)
    outputs = Dense(10, activation="softmax")(Add()([h, inputs]))
    model = normlab.Model(inputs, outputs)

Execution follows a topological order of the layers. The backward pass walks
it in reverse and **sums** the gradients arriving at a tensor that feeds
several layers (the multivariate chain rule): ``dL/dh = sum_k dL/dh via
consumer k``. One input and one output; a layer object may appear once.
A model may be called like a layer (``base_model(inputs)``): it becomes one
node of the graph, whose layers the training step runs in line
(:mod:`normlab.models.nested`).
"""

from __future__ import annotations

import numpy as np

from .._validation import InvalidParameterError
from ..layers.base import Layer
from ..layers._symbolic import SymbolicTensor, symbolic_call
from ..utils import _random
from .base import BaseModel
from .model_config import deserialize_layer, serialize_layer
from .nested import ModelAsLayer, expand_program

__all__ = ["Input", "InputLayer", "Model"]


def Input(shape=None, name: str | None = None, *, batch_size: int | None = None, batch_shape=None,
          dtype=None) -> SymbolicTensor:
    """A symbolic input of per-sample ``shape`` (the batch axis is added).

    As in Keras, ``batch_shape`` gives the batch axis too (``shape`` is then
    omitted) and ``batch_size`` fixes it; a fixed batch size is recorded in
    the symbolic shapes (``(1, None, 7)``) and checked by nothing else: the
    model takes batches of any size. ``dtype`` may be None, "float32" or
    "float64" (the layers' own dtype decides the computation).
    """
    who = "Input"
    if batch_shape is not None:
        if shape is not None:
            raise ValueError(f"{who}: you cannot pass both `shape` and `batch_shape`; give one of them.")
        if batch_size is not None:
            raise ValueError(f"{who}: you cannot pass both `batch_size` and `batch_shape`; give one of them.")
        if not isinstance(batch_shape, (tuple, list)) or len(batch_shape) < 1:
            raise TypeError(f"{who}: 'batch_shape' must be a tuple (batch axis first), got {batch_shape!r}.")
        batch_size, shape = batch_shape[0], tuple(batch_shape[1:])
    if shape is None:
        # both a TypeError (a missing argument) and Keras's ValueError
        raise InvalidParameterError(f"{who}: you must pass a `shape` argument (per sample, no batch axis) or "
                                    f"`batch_shape`.")
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(
        d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool)) for d in shape
    ):
        raise TypeError(f"Input: 'shape' must be a tuple of ints or None (per sample, no batch axis), got {shape!r}.")
    shape = tuple(None if d is None else int(d) for d in shape)
    if any(d is not None and d < 1 for d in shape):
        raise ValueError(f"Input: sizes in 'shape' must be >= 1, got {shape}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"Input: 'batch_size' must be an int >= 1 or None, got {batch_size!r}.")
    if dtype is not None and str(np.dtype(dtype)) not in ("float32", "float64"):
        raise ValueError(f"Input: 'dtype' must be None, 'float32' or 'float64', got {dtype!r}.")
    batch = None if batch_size is None else int(batch_size)
    return SymbolicTensor((batch,) + shape, None, (), name=name or "input",
                          dtype=str(np.dtype(dtype)) if dtype is not None else "float32")


class InputLayer:
    """Keras's ``keras.layers.InputLayer``: what :func:`Input` makes, as an object.

    ``InputLayer(shape=(32,))`` may be the first entry of a
    :class:`~normlab.Sequential` model (as ``Input(shape=(32,))``);
    ``.output`` is the symbolic tensor :func:`Input` returns, for a
    functional :class:`Model`. Arguments as :func:`Input`'s, plus Keras's
    ``input_tensor`` (an existing ``Input``, whose shape and dtype the other
    arguments must agree with) and ``input_shape`` (deprecated, Keras's
    warning). It holds no weights and is not a layer of the model
    (``model.layers`` lists none, as normlab lists no Input).
    """

    def __init__(self, shape=None, batch_size: int | None = None, dtype=None, sparse=None, batch_shape=None,
                 input_tensor=None, optional: bool = False, name: str | None = None, **kwargs):
        import warnings

        who = "InputLayer"
        if "input_shape" in kwargs and kwargs["input_shape"] is not None:
            warnings.warn("Argument `input_shape` is deprecated. Use `shape` instead.", UserWarning, stacklevel=2)
            shape = kwargs.pop("input_shape")
        kwargs.pop("input_shape", None)
        if kwargs:
            raise TypeError(f"{who}: unexpected keyword argument(s) {sorted(kwargs)}.")
        if sparse not in (None, False):
            if input_tensor is not None:
                raise ValueError(f"{who}: you cannot provide an incompatible `sparse` ({sparse!r}) with "
                                 f"`input_tensor` (a dense tensor).")
            raise ValueError(f"{who}: 'sparse' must be None or False (normlab has no sparse tensors), got {sparse!r}.")
        if optional:
            raise ValueError(f"{who}: 'optional=True' is not supported (normlab's models take one input).")
        if input_tensor is not None:
            if not isinstance(input_tensor, SymbolicTensor) or input_tensor.layer is not None:
                raise ValueError(f"{who}: 'input_tensor' must be the tensor returned by normlab.Input, got "
                                 f"{input_tensor!r}.")
            t = input_tensor
            if shape is not None and tuple(shape) != tuple(t.shape[1:]):
                raise ValueError(f"{who}: you cannot provide an incompatible `shape` {tuple(shape)} with "
                                 f"`input_tensor` of shape {t.shape}.")
            if batch_shape is not None and tuple(batch_shape) != tuple(t.shape):
                raise ValueError(f"{who}: you cannot provide an incompatible `batch_shape` {tuple(batch_shape)} "
                                 f"with `input_tensor` of shape {t.shape}.")
            if batch_size is not None and batch_size != t.shape[0]:
                raise ValueError(f"{who}: you cannot provide an incompatible `batch_size` {batch_size!r} with "
                                 f"`input_tensor` of shape {t.shape}.")
            if dtype is not None and t.dtype is not None and str(np.dtype(dtype)) != t.dtype:
                raise ValueError(f"{who}: you cannot provide an incompatible `dtype` {dtype!r} with "
                                 f"`input_tensor` of dtype {t.dtype}.")
            self.output = t
        else:
            self.output = Input(shape, name=name, batch_size=batch_size, batch_shape=batch_shape, dtype=dtype)
        self.name = name or self.output.name
        self.sparse = False
        self.optional = False
        self.trainable = True

    @property
    def batch_shape(self) -> tuple:
        return tuple(self.output.shape)

    @property
    def dtype(self) -> str:
        return self.output.dtype or "float32"

    def call(self):
        """Keras's ``InputLayer.call``: nothing to compute (returns None)."""
        return None

    def get_config(self) -> dict:
        return {"batch_shape": list(self.batch_shape), "dtype": self.dtype, "sparse": False, "name": self.name}

    def __repr__(self) -> str:
        return f"<InputLayer name={self.name!r} batch_shape={self.batch_shape}>"


class Model(ModelAsLayer, BaseModel):
    """A model over a graph of layers, from one ``Input`` to one output tensor.

    Parameters
    ----------
    inputs : SymbolicTensor
        From :func:`Input`.
    outputs : SymbolicTensor
        The result of calling layers on ``inputs``.
    name : str, optional
    seed : int, optional
        Seeds the initial weights of layers whose initializers have no seed
        of their own.

    As in Keras, the model is built when it is constructed if the ``Input``
    shape is fully known (no ``None`` sizes): its weights exist at once, in
    float32 unless the first layer is given a ``dtype``, so it can be saved,
    summarized or given weights before it sees any data. Since it is built,
    ``fit(..., seed=s)`` only seeds the shuffling; pass ``seed`` here for
    reproducible initial weights. With ``None`` sizes it is built on its
    first batch.

    Same ``compile`` / ``fit`` / ``evaluate`` / ``predict`` / ``save`` as
    :class:`~normlab.Sequential`; ``normlab.load_model`` reads either.
    """

    def __init__(
        self, inputs: SymbolicTensor, outputs: SymbolicTensor, name: str | None = None, seed: int | None = None
    ):
        if isinstance(inputs, (list, tuple)) or isinstance(outputs, (list, tuple)):
            raise NotImplementedError("Model: one input and one output tensor are supported.")
        if not isinstance(inputs, SymbolicTensor) or inputs.layer is not None:
            raise TypeError("Model: 'inputs' must be the tensor returned by normlab.Input(shape).")
        if not isinstance(outputs, SymbolicTensor):
            raise TypeError("Model: 'outputs' must be a symbolic tensor (layers called on normlab.Input).")
        self.name = name or "model"
        self._input = inputs
        self._output = outputs
        self._nodes = self._toposort(inputs, outputs)
        self._layers: list[Layer] = [t.layer for t in self._nodes]
        if outputs.layer is None:
            raise ValueError("Model: the output is the input itself; add at least one layer.")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Model: 'name' must be a str or None, got {name!r}.")
        names = [layer.name for layer in self.layers]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"Model: two layers are named {duplicate!r}; layer names must be unique (a saved "
                             f"model finds each layer's weights by its name).")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise TypeError(f"Model: 'seed' must be an int >= 0 or None, got {seed!r}.")
        self._init_training_state()
        if all(d is not None for d in inputs.shape[1:]) and not self.__dict__.pop("_defer_build", False):
            self.build(seed=seed)

    @staticmethod
    def _toposort(inputs, outputs) -> list[SymbolicTensor]:
        order: list[SymbolicTensor] = []
        state: dict[int, int] = {}  # 1 = visiting, 2 = done

        stack = [(outputs, False)]
        while stack:
            t, expanded = stack.pop()
            key = id(t)
            if t.layer is None:
                if t is not inputs:
                    raise ValueError(
                        "Model: the output depends on an Input that is not the model's 'inputs'."
                    )
                continue
            if expanded:
                state[key] = 2
                order.append(t)
                continue
            if state.get(key) == 2:
                continue
            state[key] = 1
            stack.append((t, True))
            for parent in reversed(t.inputs):
                if state.get(id(parent)) != 2:
                    stack.append((parent, False))
        seen: dict[int, Layer] = {}
        for t in order:
            if id(t.layer) in seen:
                raise ValueError(
                    f"Model: layer {t.layer.name!r} is called more than once; shared layers are not supported."
                )
            seen[id(t.layer)] = t.layer
        return order

    # ------------------------------------------------------------ structure
    @property
    def layers(self) -> list:
        """The model's layers, in order (read-only: Keras's ``Model.layers`` is reserved)."""
        return self._layers

    @layers.setter
    def layers(self, value) -> None:
        raise AttributeError("`Model.layers` attribute is reserved and should not be set. Use `add()` and `pop()` "
                             "on a Sequential model, or build a new model.")

    def _last_layer(self) -> Layer:
        return self._output.layer

    @property
    def built(self) -> bool:
        return all(layer.built for layer in self.layers)

    @property
    def input_shape(self):
        return self._input.shape

    def output_shape_for(self, input_shape: tuple) -> tuple:
        return (input_shape[0],) + tuple(self._output.shape[1:])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Keras's name of :meth:`output_shape_for`."""
        return self.output_shape_for(input_shape)

    @property
    def input(self) -> SymbolicTensor:
        """The model's ``Input`` tensor (Keras's ``model.input``)."""
        return self._input

    @property
    def output(self) -> SymbolicTensor:
        """The model's output tensor (Keras's ``model.output``)."""
        return self._output

    @property
    def output_shape(self) -> tuple:
        """``(None, ...)``, Keras's ``model.output_shape``."""
        return (self._input.shape[0],) + tuple(self._output.shape[1:])

    def _layer_output_shapes(self) -> list:
        return [t.shape for t in self._nodes]

    def _declared_input_shape(self):
        return self._input.shape

    def build(self, input_shape: tuple | None = None, seed: int | None = None) -> None:
        """Build every layer (``input_shape`` defaults to the Input's shape)."""
        from .sequential import check_input_shape

        shape = check_input_shape(input_shape, "Model.build") if input_shape is not None else self._input.shape
        known = self.input_shape if self.built else self._input.shape
        if len(shape) != len(known) or any(a is not None and b is not None and a != b
                                           for a, b in zip(shape[1:], known[1:])):
            raise ValueError(f"Model.build: 'input_shape' {shape} does not match the shape model {self.name!r} "
                             f"takes, {tuple(known)}.")
        if self.built:
            return
        # unknown (None) sizes get a placeholder large enough for "valid" convolutions and pooling
        sample = np.zeros((2,) + tuple(64 if d is None else d for d in shape[1:]), dtype=self.layers[0].dtype or np.float32)
        self._ensure_built(sample, np.random.default_rng(seed) if seed is not None else _random.default_rng())

    def _ensure_built(self, x: np.ndarray, rng: np.random.Generator | None = None) -> None:
        if self.built:
            return
        rng = rng if rng is not None else _random.default_rng()
        h = x[:2] if len(x) >= 2 else x
        values = {id(self._input): h}
        for t in self._nodes:
            layer = t.layer
            args = [values[id(p)] for p in t.inputs]
            if not layer.built:
                if getattr(layer, "multi_input", False):
                    layer._ensure_built(args, rng)
                else:
                    layer._ensure_built(args[0].astype(layer.dtype or args[0].dtype, copy=False), rng)
            values[id(t)] = layer(args if getattr(layer, "multi_input", False) else args[0], training=False)

    def _program(self) -> tuple[list, int]:
        index = {id(self._input): 0}
        program = []
        for k, t in enumerate(self._nodes):
            index[id(t)] = k + 1
            program.append((t.layer, tuple(index[id(p)] for p in t.inputs)))
        # nested models' layers are inlined: one executor runs every leaf layer
        return expand_program(program, index[id(self._output)])

    def __call__(self, x, training: bool = False) -> np.ndarray:
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"Model.__call__: 'training' must be a bool, got {training!r}.")
        if isinstance(x, SymbolicTensor):
            # Keras's symbolic call, recorded as a call of this model's layer (a nested model)
            return symbolic_call(self._as_layer(), x)
        with self._building():
            x = self._inference_input(x, "__call__")
        values = {id(self._input): x}
        for t in self._nodes:
            args = [values[id(p)] for p in t.inputs]
            values[id(t)] = t.layer(args if t.layer.multi_input else args[0], training=training)
        return values[id(self._output)]

    # --------------------------------------------------------------- config
    def get_config(self) -> dict:
        ids = {id(self._input): 0}
        for i, t in enumerate(self._nodes):
            ids[id(t)] = i + 1
        return {
            "name": self.name,
            "input_shape": list(self._input.shape),
            "layers": [
                {**serialize_layer(t.layer), "inbound": [ids[id(p)] for p in t.inputs]}
                for t in self._nodes
            ],
            "output": ids[id(self._output)],
        }

    @classmethod
    def from_config(cls, config: dict, _build: bool = True) -> "Model":
        inp = Input(tuple(config["input_shape"][1:]))
        tensors = {0: inp}
        for i, entry in enumerate(config["layers"]):
            layer = deserialize_layer({"class_name": entry["class_name"], "config": entry["config"]})
            args = [tensors[j] for j in entry["inbound"]]
            tensors[i + 1] = layer(args if getattr(layer, "multi_input", False) else args[0])
        model = cls.__new__(cls)
        if not _build:  # a nested model: the outer model builds it
            model._defer_build = True
        cls.__init__(model, inp, tensors[config["output"]], name=config.get("name"))
        return model
