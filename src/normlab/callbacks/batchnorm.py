"""Exact population statistics for batch norm at the end of ``fit`` (opt-in; off by default, as in Keras)."""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Instance, Interval, Options, validate_params
from .base import Callback

__all__ = ["RecomputeBatchNormStatistics"]


class RecomputeBatchNormStatistics(Callback):
    """At the end of training, give every BatchNormalization layer the exact statistics of ``x``.

    Calls :func:`normlab.recompute_batchnorm_statistics` (the paper's
    inference procedure, Algorithm 2, "precise BN"): each layer's moving
    mean and variance are replaced by the mean and unbiased variance of its
    input over all of ``x``, layer after layer. The moving averages that
    ``fit`` keeps (Keras's numerics, the default) are unchanged until then.

    Why. A moving average with ``momentum`` m after ``t`` steps still holds
    ``m^t`` of its initial value (mean 0, variance 1) and averages the last
    ``~1 / (1 - m)`` batches, taken while the weights were still moving. At
    Keras's ``momentum=0.99`` that is 0.99^72 = 48 % of the initial value
    after 72 steps: short runs are evaluated with statistics that never
    described the network. Either choose ``momentum`` so that ``m^t`` is
    small (``m <= 0.01 ** (1 / t)``, about ``1 - 4.6 / t``: 0.94 for 72
    steps, 0.99 only from about 460 steps on), or recompute with this
    callback. docs/experiments.md has the measured figures.

    Parameters
    ----------
    x : array
        The inputs to compute the statistics on, usually the training
        inputs (no labels needed).
    batch_size : int, default 256
        Batch size of the passes over ``x`` (the result does not depend on it
        beyond rounding).
    when : {"train_end"}, default "train_end"
        When to recompute; the end of ``fit`` is the only choice for now.

    Attributes
    ----------
    statistics_ : dict
        ``{layer name: (mean, variance)}`` set at the last recomputation
        (float64), empty before.

    Notes
    -----
    Put it after an ``EarlyStopping(restore_best_weights=True)`` in the
    callback list: callbacks end in list order, so the statistics are then
    those of the restored weights. A model without BatchNormalization layers
    is left alone. Only ``Sequential`` models are supported, as by
    :func:`~normlab.recompute_batchnorm_statistics`.
    """

    _param_constraints = {
        "x": [Instance(np.ndarray, list, tuple, label="an array of inputs")],
        "batch_size": [Interval(numbers.Integral, 1, None)],
        "when": [Options(("train_end",))],
    }

    def __init__(self, x, batch_size: int = 256, when: str = "train_end"):
        validate_params(type(self).__name__, self._param_constraints, {"x": x, "batch_size": batch_size, "when": when})
        super().__init__()
        self.x = x
        self.batch_size = int(batch_size)
        self.when = when
        self.statistics_: dict = {}

    def on_train_end(self, logs=None):
        from ..models.batchnorm_tools import recompute_batchnorm_statistics

        self.statistics_ = recompute_batchnorm_statistics(self.model, np.asarray(self.x), batch_size=self.batch_size)

    def get_config(self):
        # the data are not part of the configuration
        return {"batch_size": self.batch_size, "when": self.when}
