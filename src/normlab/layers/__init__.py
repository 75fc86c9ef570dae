"""Layers: thin state holders over the pure kernels of :mod:`normlab.kernels`."""

from .base import Layer, registry
from .core import Activation, Dense
from .normalization import BatchNormalization
from .normalization_extra import GroupNormalization, InstanceNormalization, LayerNormalization, RMSNormalization
from .wrappers import WeightNormalization

__all__ = ["Layer", "Dense", "Activation", "BatchNormalization", "LayerNormalization",
           "GroupNormalization", "InstanceNormalization", "RMSNormalization", "WeightNormalization", "get", "serialize", "deserialize"]


def get(identifier):
    """Resolve a layer config dict or instance."""
    return registry.get(identifier, base=Layer)


def serialize(layer: Layer) -> dict:
    return registry.serialize(layer)


def deserialize(config: dict) -> Layer:
    return registry.deserialize(config)
