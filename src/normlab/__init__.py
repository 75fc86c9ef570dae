"""normlab: batch normalization and the toolkit around it, on NumPy."""

__version__ = "0.1.0"

from ._validation import InvalidParameterError
from . import activations, initializers, regularizers, layers

__all__ = ["InvalidParameterError", "activations", "initializers", "regularizers", "layers", "__version__"]
