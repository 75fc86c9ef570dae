"""Losses with Keras 3's names, arguments, defaults and numerics.

``loss(y_true, y_pred, sample_weight=None)`` returns the reduced value and
``loss.gradient(y_true, y_pred, sample_weight=None)`` its gradient with
respect to ``y_pred``; the function forms (``mean_squared_error``,
``categorical_crossentropy``, ... and Keras's aliases ``mse``, ``mae``)
return the per-sample values. See :mod:`normlab.losses._base` for the
reductions and sample weights, :mod:`._crossentropy` and :mod:`._regression`
for the formulas.
"""

from __future__ import annotations

from ._base import DTYPES, REDUCTIONS, FunctionLoss, Loss, registry, squeeze_or_expand_to_same_rank
from ._circle import Circle, circle
from ._crossentropy import (
    BinaryCrossentropy,
    BinaryFocalCrossentropy,
    CategoricalCrossentropy,
    CategoricalFocalCrossentropy,
    CategoricalGeneralizedCrossEntropy,
    SparseCategoricalCrossentropy,
)
from ._functions import *  # noqa: F401,F403 - Keras's loss functions and their aliases
from ._functions import __all__ as _function_names
from ._regression import (
    CategoricalHinge,
    CosineSimilarity,
    Dice,
    Hinge,
    Huber,
    KLDivergence,
    LogCosh,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    Poisson,
    SquaredHinge,
    Tversky,
)

__all__ = [
    "Loss", "FunctionLoss", "REDUCTIONS", "DTYPES", "squeeze_or_expand_to_same_rank",
    "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
    "CosineSimilarity", "Huber", "LogCosh", "Hinge", "SquaredHinge", "CategoricalHinge", "KLDivergence", "Poisson",
    "BinaryCrossentropy", "BinaryFocalCrossentropy", "CategoricalCrossentropy", "CategoricalFocalCrossentropy",
    "SparseCategoricalCrossentropy", "CategoricalGeneralizedCrossEntropy", "Dice", "Tversky", "Circle", "circle",
    *_function_names,
    "get", "serialize", "deserialize",
]


def get(identifier) -> Loss:
    """Resolve a loss name (``"mse"``, ``"categorical_crossentropy"``, ...), config, instance or Keras function.

    A loss function of this module (``normlab.losses.huber``) gives its
    class with the default arguments, as ``compile(loss=keras.losses.huber)``
    trains with them in Keras.
    """
    cls = getattr(identifier, "_loss_class", None)
    if cls is not None and callable(identifier):
        return cls()
    loss = registry.get(identifier, base=Loss)
    if loss is None:
        raise ValueError("A loss is required.")
    return loss


def serialize(loss: Loss) -> dict:
    return registry.serialize(loss)


def deserialize(config: dict) -> Loss:
    return registry.deserialize(config)
