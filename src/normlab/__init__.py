"""normlab: batch normalization and the toolkit around it, on NumPy.

Math lives in :mod:`normlab.kernels` (pure functions with hand-derived
backward passes); :mod:`normlab.layers` hold state; :class:`Sequential`
trains them with a Keras-style API.
"""

__version__ = "0.2.0.dev0"

from ._validation import InvalidParameterError
from . import activations, constraints, initializers, regularizers, losses, metrics, layers, callbacks, testing, datasets, preprocessing, optimizers, errors, utils, export, distributed
from .errors import NonFiniteError
from .kernels._threads import get_num_threads, set_num_threads
from .models import Input, Model, ModelFileError, Sequential, fold_batchnorm, load_model, recompute_batchnorm_statistics

__all__ = [
    "InvalidParameterError",
    "NonFiniteError",
    "Sequential",
    "Model",
    "Input",
    "load_model",
    "ModelFileError",
    "fold_batchnorm",
    "recompute_batchnorm_statistics",
    "activations",
    "callbacks",
    "constraints",
    "datasets",
    "preprocessing",
    "optimizers",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "regularizers",
    "testing",
    "errors",
    "utils",
    "export",
    "distributed",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
