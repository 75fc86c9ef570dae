"""ModelCheckpoint, TerminateOnNaN, CSVLogger and LambdaCallback (Keras semantics)."""

from __future__ import annotations

import csv
import math
import numbers
import os
import sys

from .._validation import Boolean, Callable, Interval, NoneOk, Options, validate_params
from .base import Callback
from .early_stopping import monitored_value, resolve_mode

__all__ = ["ModelCheckpoint", "TerminateOnNaN", "CSVLogger", "LambdaCallback"]


class ModelCheckpoint(Callback):
    """Save the model (``model.save``, written atomically) at the end of epochs.

    Parameters
    ----------
    filepath : str
        May contain ``{epoch}`` (1-based) and any log key, e.g.
        ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``.
    monitor : str, default "val_loss"
    verbose : int, default 0
    save_best_only : bool, default False
        Save only when ``monitor`` improves on the best value so far.
    mode : {"auto", "min", "max"}, default "auto"
    initial_value_threshold : float, optional
        With ``save_best_only``, the value to beat before the first save.

    Attributes
    ----------
    best : float
        Best monitored value seen; ``last_saved`` is the last path written.
    """

    _param_constraints = {
        "filepath": [str, os.PathLike],
        "monitor": [str],
        "verbose": [Interval(numbers.Integral, 0, 2)],
        "save_best_only": [Boolean()],
        "mode": [Options(("auto", "min", "max"))],
        "initial_value_threshold": [NoneOk(), Interval(numbers.Real, None, None)],
    }

    def __init__(
        self,
        filepath,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        mode: str = "auto",
        initial_value_threshold: float | None = None,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.mode = mode
        self.initial_value_threshold = initial_value_threshold
        self._sign = -1.0 if resolve_mode(mode, monitor) == "min" else 1.0
        self.best = initial_value_threshold if initial_value_threshold is not None else -self._sign * math.inf
        self.last_saved = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            current = monitored_value(logs, self.monitor, type(self).__name__)
            if not (math.isfinite(current) and self._sign * (current - self.best) > 0):
                return
            self.best = current
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        self.last_saved = path
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved model to {path}", file=sys.stdout)

    def get_config(self):
        return {
            "filepath": self.filepath,
            "monitor": self.monitor,
            "verbose": self.verbose,
            "save_best_only": self.save_best_only,
            "mode": self.mode,
            "initial_value_threshold": self.initial_value_threshold,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class TerminateOnNaN(Callback):
    """Stop training as soon as the running loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training", file=sys.stderr)
            self.model.stop_training = True


class CSVLogger(Callback):
    """Append each epoch's logs to a CSV file (header written once).

    Parameters
    ----------
    filename : str
    separator : str, default ","
    append : bool, default False
        Append to an existing file (no second header) instead of overwriting.
    """

    _param_constraints = {"filename": [str, os.PathLike], "separator": [str], "append": [Boolean()]}

    def __init__(self, filename, separator: str = ",", append: bool = False):
        validate_params(type(self).__name__, self._param_constraints, {"filename": filename, "separator": separator, "append": append})
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._keys = None

    def on_train_begin(self, logs=None):
        self._has_header = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        if self._has_header:
            with open(self.filename, newline="") as fh:
                first = fh.readline().strip()
            self._keys = first.split(self.separator)[1:] if first else None
        else:
            self._keys = None
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
        with open(self.filename, "a", newline="") as fh:
            writer = csv.writer(fh, delimiter=self.separator)
            if not self._has_header:
                writer.writerow(["epoch"] + self._keys)
                self._has_header = True
            writer.writerow([epoch] + [logs.get(k, "NA") for k in self._keys])

    def get_config(self):
        return {"filename": self.filename, "separator": self.separator, "append": self.append}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.

    Accepts ``on_train_begin``, ``on_train_end`` (``logs``), ``on_epoch_begin``,
    ``on_epoch_end``, ``on_train_batch_begin``, ``on_train_batch_end``
    (``index, logs``).
    """

    _HOOKS = (
        "on_train_begin",
        "on_train_end",
        "on_epoch_begin",
        "on_epoch_end",
        "on_train_batch_begin",
        "on_train_batch_end",
    )

    def __init__(self, **hooks):
        unknown = sorted(set(hooks) - set(self._HOOKS))
        if unknown:
            raise ValueError(f"LambdaCallback: unknown hook(s) {unknown}; known: {', '.join(self._HOOKS)}.")
        validate_params(type(self).__name__, {k: [NoneOk(), Callable()] for k in hooks}, hooks)
        super().__init__()
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)
