"""Models: :class:`Sequential` and functional :class:`Model` graphs with compile/fit/evaluate/predict."""

from .batchnorm_tools import fold_batchnorm, recompute_batchnorm_statistics
from .saving import ModelFileError, load_model, save_model
from .functional import Input, InputLayer, Model
from .model_config import model_from_json
from .sequential import Sequential

__all__ = [
    "Sequential",
    "Model",
    "Input",
    "InputLayer",
    "model_from_json",
    "load_model",
    "save_model",
    "ModelFileError",
    "fold_batchnorm",
    "recompute_batchnorm_statistics",
]
