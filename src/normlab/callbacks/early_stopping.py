"""Early stopping (the notes' meta-algorithm) and what to do with the held-out data after it.

The meta-algorithm of the notes, with ``n`` steps = one epoch, ``P`` =
``patience`` and "validation error" = the ``monitor`` quantity::

    theta* <- theta;  i* <- 0;  j <- 0;  v <- inf
    while j < P:
        train one epoch;  i <- i + n;  j <- j + 1
        v' <- monitor
        if v' < v:  j <- 0;  theta* <- theta;  i* <- i;  v <- v'

Keras's refinements are kept: ``min_delta`` (an improvement must exceed it),
``baseline`` (stop unless the quantity beats it within ``patience`` epochs),
``start_from_epoch`` (warm-up epochs that are not monitored) and ``mode``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validation import Boolean, Interval, NoneOk, Options, validate_params
from .base import Callback

__all__ = ["EarlyStopping", "train_on_all_data", "resolve_mode"]


def resolve_mode(mode: str, monitor: str) -> str:
    """``"auto"`` -> ``"max"`` for accuracy-like quantities, else ``"min"``.

    The quantities Keras 3 maximizes in ``"auto"`` mode (its metrics with
    direction "up") are recognized by name: accuracies, AUC, precision,
    recall, F-scores, IoU and R².
    """
    if mode != "auto":
        return mode
    name = monitor.lower()
    up = ("acc" in name or "auc" in name
          or name.endswith(("precision", "recall", "f1_score", "fbeta_score", "iou", "r2_score")))
    return "max" if up else "min"


def monitored_value(logs: dict | None, monitor: str, who: str) -> float:
    """The monitored value from ``logs``, or a clear error listing what is there."""
    logs = logs or {}
    if monitor not in logs:
        raise ValueError(
            f"{who}: the monitored quantity {monitor!r} is not in the logs; available: "
            f"{', '.join(sorted(logs)) or 'none'}. (Validation quantities need validation_data "
            f"or validation_split in fit.)"
        )
    value = logs[monitor]
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        value = value.reshape(())  # a metric with one value per output unit (F1Score of one unit), as Keras
    if isinstance(value, (bool, np.bool_)) or not (
            isinstance(value, numbers.Real) or (isinstance(value, np.ndarray) and value.ndim == 0
                                                and value.dtype.kind in "iuf")):
        raise TypeError(
            f"{who}: the monitored quantity {monitor!r} must be a number in the logs, got {value!r}."
        )
    return float(value)


class EarlyStopping(Callback):
    """Stop training when ``monitor`` stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
    min_delta : float >= 0, default 0
        An improvement must exceed ``min_delta`` (absolute change).
    patience : int >= 0, default 0
        Epochs without improvement before stopping (the notes' ``P``).
    mode : {"auto", "min", "max"}, default "auto"
        "auto" means "max" for accuracy-like names, "min" otherwise.
    baseline : float, optional
        Training stops if the quantity has not beaten ``baseline`` (by more
        than ``min_delta``) within ``patience`` epochs. As in Keras, an epoch
        that improves on the best so far never stops training, but it
        restarts the wait only if it also beats the baseline: with
        ``patience=2`` and ``baseline=0.5``, losses 0.9, 0.8, 0.7, 0.71 run
        four epochs and stop at the fourth (the first that does not
        improve), since three epochs have passed without beating the
        baseline.
    restore_best_weights : bool, default False
        At the end of training, restore the weights (and batch-norm
        statistics) of the best epoch — whether or not training stopped
        early (the notes' ``theta*``).
    start_from_epoch : int >= 0, default 0
        Epochs to train before monitoring starts.

    Attributes
    ----------
    best : float
        Best monitored value (the notes' ``v``).
    best_epoch : int
        0-based epoch of ``best`` (so the notes' ``i*`` is ``(best_epoch + 1) * steps``).
    best_step : int
        Optimizer steps taken up to the end of ``best_epoch``.
    stopped_epoch : int
        The epoch at which training stopped early (0 if it did not).

    A monitored quantity that never appears in the logs is an error, not a
    warning.
    """

    _param_constraints = {
        "monitor": [str],
        "min_delta": [Interval(numbers.Real, 0, None)],
        "patience": [Interval(numbers.Integral, 0, None)],
        "mode": [Options(("auto", "min", "max"))],
        "baseline": [NoneOk(), Interval(numbers.Real, None, None)],
        "restore_best_weights": [Boolean()],
        "start_from_epoch": [Interval(numbers.Integral, 0, None)],
    }

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("__class__", None)
        validate_params(type(self), self._param_constraints, args)
        super().__init__()
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.patience = int(patience)
        self.mode = mode
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self._sign = -1.0 if resolve_mode(mode, monitor) == "min" else 1.0
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self._sign < 0 else -math.inf
        self.best_epoch = -1
        self.best_step = 0
        self.best_weights = None
        self._steps_done = 0

    @property
    def monitor_op(self):
        """Keras's comparison of the monitored value: ``np.less`` (mode ``"min"``) or ``np.greater``."""
        return np.less if self._sign < 0 else np.greater

    def _improved(self, current: float, reference: float) -> bool:
        return bool(self._sign * (current - reference) > self.min_delta)

    def on_train_begin(self, logs=None):
        self._reset()

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done += 1

    def on_epoch_end(self, epoch, logs=None):
        freq = self.params.get("validation_freq")
        if freq and self.monitor.startswith("val_") and (epoch + 1) % freq:
            return  # fit's validation_freq skipped this epoch: not an evaluation, patience not counted (Keras)
        current = monitored_value(logs, self.monitor, type(self).__name__)
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if np.isfinite(current) and (self.best_epoch < 0 or self._improved(current, self.best)):
            self.best = current
            self.best_epoch = epoch
            self.best_step = self._steps_done
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # Keras: the wait restarts only when the baseline is beaten too (by more than min_delta),
            # but an epoch that improves on the best never stops training
            if self.baseline is None or self._improved(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def get_config(self):
        return {
            "monitor": self.monitor,
            "min_delta": self.min_delta,
            "patience": self.patience,
            "mode": self.mode,
            "baseline": self.baseline,
            "restore_best_weights": self.restore_best_weights,
            "start_from_epoch": self.start_from_epoch,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def train_on_all_data(
    strategy: str,
    *,
    x_train,
    y_train,
    x_val,
    y_val,
    early_stopping: EarlyStopping,
    model=None,
    build_fn=None,
    batch_size: int = 32,
    max_epochs: int = 1000,
    seed: int | None = None,
    verbose=0,
):
    """Use the held-out data after early stopping, in one of the notes' two ways.

    Parameters
    ----------
    strategy : {"retrain", "continue"}
        ``"retrain"``: build a fresh model with ``build_fn()`` (compiled) and
        train it from scratch on train + validation data for the number of
        optimizer steps early stopping found best (``early_stopping.best_step``).
        ``"continue"``: keep ``model`` (with its best parameters restored),
        note its training loss ``eps`` on ``(x_train, y_train)`` at the
        stopping point, then train on train + validation data, one epoch at a
        time, until the loss on ``(x_val, y_val)`` drops below ``eps`` (or
        ``max_epochs`` epochs have run).
    early_stopping : EarlyStopping
        The callback of the first run (it knows ``best_step``).

    Returns
    -------
    model, info : (Sequential, dict)
        ``info`` holds ``"steps"`` (retrain) or ``"epochs"``, ``"target_loss"``
        and ``"val_loss"`` (continue).
    """
    validate_params(
        "train_on_all_data",
        {"strategy": [Options(("retrain", "continue"))], "max_epochs": [Interval(numbers.Integral, 1, None)]},
        {"strategy": strategy, "max_epochs": max_epochs},
    )
    if early_stopping.best_epoch < 0:
        raise ValueError("train_on_all_data: the EarlyStopping callback has not recorded a best epoch; run fit with it first.")
    x_all = np.concatenate([np.asarray(x_train), np.asarray(x_val)])
    y_all = np.concatenate([np.asarray(y_train), np.asarray(y_val)])
    if strategy == "retrain":
        if build_fn is None:
            raise ValueError("train_on_all_data: strategy='retrain' needs build_fn (returning a compiled model).")
        fresh = build_fn()
        steps = int(early_stopping.best_step)
        per_epoch = -(-len(x_all) // batch_size)
        epochs = -(-steps // per_epoch)

        class _StopAtStep(Callback):
            def __init__(self):
                super().__init__()
                self.count = 0

            def on_train_batch_end(self, batch, logs=None):
                self.count += 1
                if self.count >= steps:
                    self.model.stop_training = True

        fresh.fit(x_all, y_all, batch_size=batch_size, epochs=epochs, callbacks=[_StopAtStep()], seed=seed, verbose=verbose)
        return fresh, {"steps": steps}
    if model is None:
        raise ValueError("train_on_all_data: strategy='continue' needs the early-stopped model.")
    target = float(model.evaluate(x_train, y_train, batch_size=batch_size, return_dict=True)["loss"])
    val = float(model.evaluate(x_val, y_val, batch_size=batch_size, return_dict=True)["loss"])
    epochs = 0
    while val > target and epochs < max_epochs:
        model.fit(x_all, y_all, batch_size=batch_size, epochs=epochs + 1, initial_epoch=epochs, seed=seed, verbose=verbose)
        epochs += 1
        val = float(model.evaluate(x_val, y_val, batch_size=batch_size, return_dict=True)["loss"])
    return model, {"epochs": epochs, "target_loss": target, "val_loss": val}
