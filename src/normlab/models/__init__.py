"""Models: :class:`Sequential` (and, later, functional graphs) with compile/fit/evaluate/predict."""

from .batchnorm_tools import fold_batchnorm, recompute_batchnorm_statistics
from .saving import ModelFileError, load_model, save_model
from .functional import Input, Model
from .sequential import Sequential

__all__ = [
    "Sequential",
    "Model",
    "Input",
    "load_model",
    "save_model",
    "ModelFileError",
    "fold_batchnorm",
    "recompute_batchnorm_statistics",
]
