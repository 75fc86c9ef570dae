"""Learning-rate callbacks: LearningRateScheduler and ReduceLROnPlateau (Keras semantics).

Both read and write ``model.optimizer.learning_rate`` (a float: an
optimizer whose learning rate is a schedule already changes it every step,
and these callbacks refuse it with a clear error) and put the learning rate
of the epoch into the epoch logs as ``"learning_rate"``, so that it lands
in :class:`~normlab.callbacks.History`.
"""

from __future__ import annotations

import inspect
import math
import numbers
import sys

from .._validation import Callable, Interval, InvalidParameterError, Options, validate_params
from .base import Callback
from .early_stopping import monitored_value, resolve_mode

__all__ = ["LearningRateScheduler", "ReduceLROnPlateau"]


def _optimizer(callback: Callback):
    who = type(callback).__name__
    model = callback.model
    opt = getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "learning_rate"):
        raise RuntimeError(f"{who}: the model has no optimizer with a 'learning_rate'; compile it first.")
    return opt


def _float_lr(callback: Callback) -> float:
    """The optimizer's learning rate, which must be a plain float here."""
    opt = _optimizer(callback)
    lr = opt.learning_rate
    if not isinstance(lr, numbers.Real) or isinstance(lr, bool):
        raise TypeError(
            f"{type(callback).__name__}: the optimizer's learning_rate is a schedule ({lr!r}); this "
            f"callback sets the learning rate itself, so give the optimizer a float learning_rate."
        )
    return float(lr)


def _log_lr(callback: Callback, logs) -> None:
    if logs is not None:
        opt = _optimizer(callback)
        lr = getattr(opt, "current_learning_rate", opt.learning_rate)
        logs["learning_rate"] = float(lr)


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch from ``schedule``.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new_lr`` (``epoch`` from 0, ``lr`` the current
        rate) or ``schedule(epoch) -> new_lr``; a
        :class:`~normlab.optimizers.schedules.LearningRateSchedule` works too
        (it is then indexed by epoch, not by step).
    verbose : int, default 0
        1 prints a line whenever the rate is set.

    Notes
    -----
    The new rate must be a finite float >= 0. At the end of every epoch the
    rate is added to the logs as ``"learning_rate"``.
    """

    _param_constraints = {"schedule": [Callable()], "verbose": [Interval(numbers.Integral, 0, 2)]}

    def __init__(self, schedule, verbose: int = 0):
        validate_params(type(self), self._param_constraints, {"schedule": schedule, "verbose": verbose})
        super().__init__()
        self.schedule = schedule
        self.verbose = int(verbose)
        self._two_args = _takes_two_args(schedule)
        if not self._two_args and not _binds(schedule, 0):
            raise InvalidParameterError(
                f"The 'schedule' parameter of {type(self).__name__} must be a callable of (epoch, lr) or "
                f"(epoch). Got {schedule!r} instead."
            )

    def on_epoch_begin(self, epoch, logs=None):
        who = type(self).__name__
        lr = _float_lr(self)
        new = self.schedule(epoch, lr) if self._two_args else self.schedule(epoch)
        if (
            isinstance(new, bool)
            or not isinstance(new, numbers.Real)
            or not math.isfinite(float(new))
            or float(new) < 0
        ):
            raise ValueError(f"{who}: the schedule must return a finite float >= 0; at epoch {epoch} it gave {new!r}.")
        _optimizer(self).learning_rate = float(new)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(new)}.", file=sys.stdout)

    def on_epoch_end(self, epoch, logs=None):
        _log_lr(self, logs)


def _binds(fn, *args) -> bool:
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except ValueError:  # no signature: it may take them
        return True
    return True


def _takes_two_args(fn) -> bool:
    """Whether ``fn`` accepts ``(epoch, lr)`` (else it is called with ``epoch`` alone)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature
        return True
    try:
        sig.bind(0, 0.0)
        return True
    except TypeError:
        return False


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving.

    After ``patience`` epochs without an improvement larger than
    ``min_delta``, ``lr <- max(lr * factor, min_lr)``; then ``cooldown``
    epochs pass before epochs without improvement count again (Keras).

    Parameters
    ----------
    monitor : str, default "val_loss"
    factor : float in [0, 1), default 0.1
    patience : int >= 0, default 10
    verbose : int, default 0
    mode : {"auto", "min", "max"}, default "auto"
        "auto" means "max" for accuracy-like names, "min" otherwise.
    min_delta : float >= 0, default 1e-4
    cooldown : int >= 0, default 0
    min_lr : float >= 0, default 0.0

    Attributes
    ----------
    best : float
        Best monitored value so far.
    wait : int
        Epochs without improvement (outside cooldown).
    cooldown_counter : int

    The rate of each epoch is added to the logs as ``"learning_rate"``
    (before any reduction at the end of that epoch). A monitored quantity
    missing from the logs is an error, as in EarlyStopping.
    """

    _param_constraints = {
        "monitor": [str],
        "factor": [Interval(numbers.Real, 0, 1, closed="left")],
        "patience": [Interval(numbers.Integral, 0, None)],
        "verbose": [Interval(numbers.Integral, 0, 2)],
        "mode": [Options(("auto", "min", "max"))],
        "min_delta": [Interval(numbers.Real, 0, None)],
        "cooldown": [Interval(numbers.Integral, 0, None)],
        "min_lr": [Interval(numbers.Real, 0, None)],
    }

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("__class__", None)
        validate_params(type(self), self._param_constraints, args)
        super().__init__()
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = int(verbose)
        self.mode = mode
        self.min_delta = float(min_delta)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._sign = -1.0 if resolve_mode(mode, monitor) == "min" else 1.0
        self._reset()

    def _reset(self):
        self.best = math.inf if self._sign < 0 else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _improved(self, current: float) -> bool:
        return bool(self._sign * (current - self.best) > self.min_delta)

    def on_train_begin(self, logs=None):
        self._reset()
        _float_lr(self)

    def on_epoch_end(self, epoch, logs=None):
        _log_lr(self, logs)
        current = monitored_value(logs, self.monitor, type(self).__name__)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = _float_lr(self)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    _optimizer(self).learning_rate = new
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.", file=sys.stdout)
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def get_config(self):
        return {
            "monitor": self.monitor,
            "factor": self.factor,
            "patience": self.patience,
            "verbose": self.verbose,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
