"""Layers: thin state holders over the pure kernels of :mod:`normlab.kernels`."""

from .base import Layer, registry
from .core import Activation, Dense, Identity
from .activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax
from .activity_regularization import ActivityRegularization
from .merging import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from .normalization import BatchNormalization
from .normalization_extra import GroupNormalization, InstanceNormalization, LayerNormalization, RMSNormalization
from .unit_normalization import UnitNormalization
from .wrappers import WeightNormalization
from .regularization import (AlphaDropout, Dropout, GaussianDropout, GaussianNoise, NoisyDense, SpatialDropout1D,
                             SpatialDropout2D, SpatialDropout3D)
from .augmentation import RandomFlip, RandomRotation, RandomTranslation, RandomZoom
from .preprocessing import Normalization, Rescaling
from .conv import Conv1D, Conv2D
from .pooling import (AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
                      GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D)
from .reshaping import Flatten, Permute, RepeatVector, Reshape
from .reshaping_spatial import (Cropping1D, Cropping2D, Cropping3D, UpSampling1D, UpSampling2D, UpSampling3D,
                                ZeroPadding1D, ZeroPadding2D, ZeroPadding3D)

__all__ = [
    "Add",
    "Average",
    "Concatenate",
    "Multiply",
    "Subtract",
    "Layer", "Dense", "Activation", "BatchNormalization", "LayerNormalization",
           "GroupNormalization", "InstanceNormalization", "RMSNormalization", "UnitNormalization", "WeightNormalization", "get", "serialize", "deserialize"]
__all__ += ["Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout", "GaussianNoise", "GaussianDropout", "NoisyDense",
            "Normalization", "Rescaling", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom"]


__all__ += ["Conv1D", "Conv2D", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
            "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
            "Flatten", "Reshape"]
__all__ += ["ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"]
__all__ += ["Identity", "Maximum", "Minimum", "Dot", "Permute", "RepeatVector", "Cropping1D", "Cropping2D",
            "Cropping3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "UpSampling1D", "UpSampling2D",
            "UpSampling3D", "ActivityRegularization"]

from .normprop import NormPropDense  # noqa: E402
__all__ += ["NormPropDense"]


def __getattr__(name):
    # Keras also spells it keras.layers.Input; imported late (models import layers)
    if name == "Input":
        from ..models.functional import Input
        return Input
    if name == "InputLayer":
        from ..models.functional import InputLayer
        return InputLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(identifier):
    """Resolve a layer config dict or instance."""
    return registry.get(identifier, base=Layer)


def serialize(layer: Layer) -> dict:
    return registry.serialize(layer)


def deserialize(config: dict) -> Layer:
    return registry.deserialize(config)
