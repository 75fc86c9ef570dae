"""The :class:`Sequential` model: a stack of layers with compile/fit/evaluate/predict."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..layers.base import Layer, as_float_array
from ..layers.base import registry as _layer_registry
from .base import BaseModel

__all__ = ["Sequential"]


class Sequential(BaseModel):
    """A linear stack of layers.

    Parameters
    ----------
    layers : list of Layer, optional
    name : str, optional

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

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None):
        self.name = name or "sequential"
        self.layers: list[Layer] = []
        for layer in layers or []:
            self.add(layer)
        self._init_training_state()

    # ------------------------------------------------------------ structure
    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer, got {layer!r}.")
        if any(layer is l for l in self.layers):
            raise ValueError(f"Layer {layer.name!r} is already in the model.")
        self.layers.append(layer)

    @property
    def built(self) -> bool:
        return bool(self.layers) and all(layer.built for layer in self.layers)

    @property
    def input_shape(self):
        return self.layers[0].input_shape if self.layers and self.layers[0].built else None

    def build(self, input_shape: tuple, seed: int | None = None) -> None:
        """Build every layer for inputs of ``input_shape`` (batch axis included, may be None)."""
        rng = np.random.default_rng(seed)
        shape = tuple(input_shape)
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
        rng = rng if rng is not None else np.random.default_rng()
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

    def _program(self) -> tuple[list, int]:
        return [(layer, (k,)) for k, layer in enumerate(self.layers)], len(self.layers)

    def __call__(self, x, training: bool = False) -> np.ndarray:
        """Run the layers on ``x`` (checked), as ``layer(x, training)`` does for one layer."""
        x = as_float_array(x, who=f"Model {self.name!r}")
        self._ensure_built(x)
        for layer in self.layers:
            x = layer(x, training=training)
        return x

    # --------------------------------------------------------------- config
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "layers": [_layer_registry.serialize(l) for l in self.layers],
            "input_shape": list(self.input_shape) if self.built else None,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        model = cls([_layer_registry.deserialize(c) for c in config.get("layers", [])], name=config.get("name"))
        if config.get("input_shape") is not None:
            model.build(tuple(config["input_shape"]))
        return model
