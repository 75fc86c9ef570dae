"""Streaming metrics with Keras 3's names, arguments and numerics.

``update_state(y_true, y_pred, sample_weight=None)``, ``result()``,
``reset_state()``; ``metric(y_true, y_pred)`` updates and returns the result.
Most metrics are a weighted running mean of per-sample values (see
:mod:`._base`); the function forms (``binary_accuracy``, ``mse``, ...)
return those per-sample values.

``"accuracy"`` (or ``"acc"``) in ``compile(metrics=...)`` resolves, as in
Keras, from the loss: sparse categorical cross-entropy gives
:class:`SparseCategoricalAccuracy`, categorical cross-entropy
:class:`CategoricalAccuracy`, binary cross-entropy :class:`BinaryAccuracy`,
anything else :class:`Accuracy` (exact equality).
"""

from __future__ import annotations

from ..losses._functions import (  # noqa: F401 - Keras's metric functions that are loss functions
    MAE, MAPE, MSE, MSLE, binary_crossentropy, binary_focal_crossentropy, categorical_crossentropy,
    categorical_focal_crossentropy, categorical_hinge, hinge, huber, kl_divergence, kld, log_cosh, logcosh, mae,
    mape, mean_absolute_error, mean_absolute_percentage_error, mean_squared_error, mean_squared_logarithmic_error,
    mse, msle, poisson, sparse_categorical_crossentropy, squared_hinge,
)
from ._accuracy import (
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy,
)
from ._base import Mean, MeanMetricWrapper, Metric, Sum, registry
from ._confusion import (
    AUC,
    AUCCurve,
    AUCSummationMethod,
    FalseNegatives,
    FalsePositives,
    Precision,
    PrecisionAtRecall,
    Recall,
    RecallAtPrecision,
    SensitivityAtSpecificity,
    SpecificityAtSensitivity,
    TrueNegatives,
    TruePositives,
)
from ._fscore import (
    ConcordanceCorrelation,
    F1Score,
    FBetaScore,
    PearsonCorrelation,
    concordance_correlation,
    pearson_correlation,
)
from ._iou import IoU, BinaryIoU, MeanIoU, OneHotIoU, OneHotMeanIoU
from ._functions import (
    accuracy,
    binary_accuracy,
    categorical_accuracy,
    cosine_similarity,
    sparse_categorical_accuracy,
    sparse_top_k_categorical_accuracy,
    top_k_categorical_accuracy,
)
from ._regression import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    CategoricalHinge,
    CosineSimilarity,
    Hinge,
    KLDivergence,
    LogCoshError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    Poisson,
    R2Score,
    RootMeanSquaredError,
    SparseCategoricalCrossentropy,
    SquaredHinge,
)

__all__ = [
    "Metric", "Mean", "Sum", "MeanMetricWrapper",
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy", "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
    "RootMeanSquaredError", "CosineSimilarity", "LogCoshError", "R2Score",
    "KLDivergence", "Poisson", "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
    "Hinge", "SquaredHinge", "CategoricalHinge",
    "TruePositives", "FalsePositives", "TrueNegatives", "FalseNegatives", "Precision", "Recall", "AUC",
    "SensitivityAtSpecificity", "SpecificityAtSensitivity", "PrecisionAtRecall", "RecallAtPrecision",
    "FBetaScore", "F1Score", "PearsonCorrelation", "ConcordanceCorrelation",
    "IoU", "BinaryIoU", "MeanIoU", "OneHotIoU", "OneHotMeanIoU",
    "get",
]

for _alias, _cls in (("mse", MeanSquaredError), ("MSE", MeanSquaredError), ("mae", MeanAbsoluteError),
                    ("MAE", MeanAbsoluteError), ("mape", MeanAbsolutePercentageError),
                    ("MAPE", MeanAbsolutePercentageError), ("msle", MeanSquaredLogarithmicError),
                    ("MSLE", MeanSquaredLogarithmicError), ("kld", KLDivergence), ("KLD", KLDivergence),
                    ("logcosh", LogCoshError), ("log_cosh", LogCoshError)):
    registry._aliases[_alias] = _cls.__name__

_ACCURACY_FOR_LOSS = {
    "SparseCategoricalCrossentropy": SparseCategoricalAccuracy,
    "CategoricalCrossentropy": CategoricalAccuracy,
    "BinaryCrossentropy": BinaryAccuracy,
}


def get(identifier, loss=None) -> Metric:
    """Resolve a metric name, config, instance or function; ``"accuracy"`` depends on ``loss``.

    A function (``normlab.metrics.binary_accuracy``, ``normlab.losses.mae``,
    or your own ``fn(y_true, y_pred)``) becomes a :class:`MeanMetricWrapper`.
    """
    if isinstance(identifier, str) and identifier in ("accuracy", "acc"):
        cls = _ACCURACY_FOR_LOSS.get(type(loss).__name__, Accuracy)
        return cls(name=identifier)
    if callable(identifier) and not isinstance(identifier, (Metric, type)):
        return MeanMetricWrapper(identifier)
    if isinstance(identifier, str) and identifier not in registry._classes:
        # Keras names a metric given by a function's name (or alias) after that string: "mse" logs as "mse"
        return registry.lookup(identifier)(name=identifier)
    metric = registry.get(identifier, base=Metric)
    if metric is None:
        raise ValueError("metrics entries cannot be None.")
    return metric
