"""Models: :class:`Sequential` (and, later, functional graphs) with compile/fit/evaluate/predict."""

from .saving import ModelFileError, load_model, save_model
from .sequential import Sequential

__all__ = ["Sequential", "load_model", "save_model", "ModelFileError"]
