"""ModelCheckpoint, TerminateOnNaN, CSVLogger and LambdaCallback (Keras semantics)."""

from __future__ import annotations

import csv
import errno
import math
import numbers
import os
import re
import string
import sys

from .._validation import Boolean, _Constraint, Callable, Interval, NoneOk, Options, validate_params
from ..distributed import is_chief
from .base import Callback
from .early_stopping import monitored_value, resolve_mode

__all__ = ["ModelCheckpoint", "TerminateOnNaN", "CSVLogger", "LambdaCallback"]


def _template_fields(template: str, who: str) -> list[str]:
    """The field names of a ``str.format`` template (``"{epoch:02d}-{val_loss:.3f}"``: epoch, val_loss).

    Raises ValueError, naming ``who``, for a malformed template (``"{epoch"``)
    or a positional field (``"{}"``, ``"{0}"``), which ``format(**logs)`` can
    never fill.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{who}: 'filepath' {template!r} is not a valid format template ({exc}).") from None
    fields = []
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root == "" or root.isdigit():
            raise ValueError(
                f"{who}: 'filepath' {template!r} has a positional field {{{field}}}; name the value, "
                "e.g. {epoch:02d} or {val_loss:.3f}."
            )
        fields.append(root)
        if spec and "{" in spec:  # nested fields of a format spec: "{loss:.{digits}f}"
            fields += _template_fields(spec, who)
    return fields


def _is_a_folder(who: str, arg: str, path: str) -> IsADirectoryError:
    # an OSError as open() would raise, but raised before training and naming the callback
    return IsADirectoryError(errno.EISDIR, f"{who}: {arg!r} is a folder; it must name a file", path)


def _epoch_log_keys(model) -> set[str]:
    """The keys ``fit`` puts in its epoch logs for ``model`` (validation ones included)."""
    names = ["loss"] + [m.name for m in getattr(model, "metrics", None) or []]
    return set(names) | {f"val_{n}" for n in names} | {"learning_rate", "global_norm"}


class ModelCheckpoint(Callback):
    """Save the model (``model.save``, written atomically) at the end of epochs, or every few batches.

    Parameters
    ----------
    filepath : str
        May contain ``{epoch}`` (1-based) and any key of the epoch logs, with
        a format spec, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``. A
        malformed template (``"{epoch"``) or a positional field (``"{}"``)
        raises ValueError here; a key that ``fit``'s epoch logs will not have
        (they hold ``loss``, the compiled metrics, their ``val_`` versions,
        ``learning_rate`` and ``global_norm``) raises ValueError in
        ``on_train_begin``, before the first step. ``{batch}`` (1-based) is
        refused there too unless ``save_freq`` is an int. (Keras raises
        ``KeyError`` for either at the first save, after an epoch of
        training.) With ``save_freq`` an int the keys are those of the
        batch logs (``loss`` and the metrics: the epoch's running means),
        ``epoch`` and ``batch``.
    monitor : str, default "val_loss"
    verbose : int, default 0
    save_best_only : bool, default False
        Save only when ``monitor`` improves on the best value so far.
    save_weights_only : bool, default False
        Write the weights only (:func:`normlab.models.keras_format.save_weights`:
        Keras's weights file for a path ending in ``.weights.h5``, normlab's
        ``.npz`` of the weights otherwise; read back with ``load_weights``).
        Keras requires the ``.weights.h5`` suffix here.
    mode : {"auto", "min", "max"}, default "auto"
    save_freq : "epoch" or int >= 1, default "epoch"
        ``"epoch"``: save at the end of every epoch. An int ``n``: save after
        every ``n`` batches, counted across epochs (Keras's semantics), with
        the batch logs; ``save_best_only`` then needs a ``monitor`` the
        batch logs have (not a ``val_`` one: ValueError in
        ``on_train_begin``).
    initial_value_threshold : float, optional
        With ``save_best_only``, the value to beat before the first save.

    Notes
    -----
    The folder of ``filepath`` is created in ``on_train_begin`` (Keras creates
    it at the first save), so that a path that cannot be written fails
    before training rather than after its first epoch. When the folder part
    holds a field itself (``"run-{epoch}/model.npz"``), the folders before
    the first field are created then and each epoch's folder at its save.

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
        "save_weights_only": [Boolean()],
        "mode": [Options(("auto", "min", "max"))],
        "save_freq": [Options(("epoch",)), Interval(numbers.Integral, 1, None)],
        "initial_value_threshold": [NoneOk(), Interval(numbers.Real, None, None)],
    }

    def __init__(
        self,
        filepath,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq="epoch",
        initial_value_threshold: float | None = None,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__()
        self.filepath = _check_path(filepath, type(self).__name__, "filepath")
        self._fields = _template_fields(self.filepath, type(self).__name__)
        #: the log keys (and ``epoch``) that ``filepath`` formats, in order
        self.filepath_keys = tuple(dict.fromkeys(self._fields))
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.initial_value_threshold = initial_value_threshold
        self._sign = -1.0 if resolve_mode(mode, monitor) == "min" else 1.0
        self.best = initial_value_threshold if initial_value_threshold is not None else -self._sign * math.inf
        self.last_saved = None
        self._batches_since_save = 0
        self._last_batch = None
        self._epoch = 0

    def fixed_folder(self) -> str:
        """The folder part of ``filepath`` before its first field ("" for the current folder)."""
        prefix = ""
        for literal, field, _, _ in string.Formatter().parse(self.filepath):
            prefix += literal  # escaped braces ("{{") come back single
            if field is not None:
                break
        return os.path.dirname(prefix)

    def on_train_begin(self, logs=None):
        who = type(self).__name__
        by_batch = self.save_freq != "epoch"
        if by_batch:
            known = {"loss"} | {m.name for m in getattr(self.model, "metrics", None) or []} | {"epoch", "batch"}
        else:
            known = _epoch_log_keys(self.model) | {"epoch"}
        unknown = [f for f in self.filepath_keys if f not in known]
        if unknown:
            why = (" (it saves at epoch ends, where there is no batch index; save_freq=<int> saves by batch)"
                   if unknown == ["batch"] else "")
            raise ValueError(
                f"{who}: 'filepath' {self.filepath!r} uses {', '.join('{' + f + '}' for f in unknown)}{why}, "
                f"which the {'batch' if by_batch else 'epoch'} logs will not have; the keys are: "
                f"{', '.join(sorted(known))}."
            )
        if by_batch and self.save_best_only and self.monitor not in known - {"epoch", "batch"}:
            raise ValueError(
                f"{who}: monitor={self.monitor!r} with save_freq={self.save_freq} and save_best_only=True, but "
                f"the batch logs hold only {', '.join(sorted(known - {'epoch', 'batch'}))} (validation runs at "
                f"epoch ends); monitor one of those or use save_freq='epoch'."
            )
        self._batches_since_save, self._last_batch = 0, None
        if not self._fields and os.path.isdir(self.filepath):
            raise _is_a_folder(who, "filepath", self.filepath)
        folder = self.fixed_folder()
        if folder:
            os.makedirs(folder, exist_ok=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # batch indices restart at 0 each epoch (Keras counts the gap since the last batch it saw)
        new_epoch = self._last_batch is None or batch <= self._last_batch
        self._batches_since_save += batch + 1 if new_epoch else batch - self._last_batch
        self._last_batch = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._epoch, batch, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def _save(self, epoch: int, batch: int | None, logs: dict) -> None:
        where = f"epoch {epoch + 1}" if batch is None else f"batch {batch + 1} of epoch {epoch + 1}"
        if self.save_best_only:
            current = monitored_value(logs, self.monitor, type(self).__name__)
            if not (math.isfinite(current) and self._sign * (current - self.best) > 0):
                return
            self.best = current
        missing = [f for f in self._fields if f not in ("epoch", "batch") and f not in logs]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: 'filepath' {self.filepath!r} uses {{{missing[0]}}}, which is not in the "
                f"logs of {where}; available: {', '.join(sorted(logs)) or 'none'}. (Validation "
                "quantities need validation_data or validation_split in fit.)"
            )
        fields = {**logs, "epoch": epoch + 1}
        if batch is not None:
            fields["batch"] = batch + 1
        path = self.filepath.format(**fields)
        if not is_chief(self.model):  # a data-parallel run: rank 0 writes (every rank keeps the same 'best')
            self.last_saved = path
            return
        folder = os.path.dirname(path)
        if folder and self._fields:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            from ..models.keras_format import save_weights

            save_weights(self.model, path)
        else:
            self.model.save(path)
        self.last_saved = path
        if self.verbose:
            what = "weights" if self.save_weights_only else "model"
            print(f"{where[0].upper() + where[1:]}: saved {what} to {path}", file=sys.stdout)

    def get_config(self):
        return {
            "filepath": self.filepath,
            "monitor": self.monitor,
            "verbose": self.verbose,
            "save_best_only": self.save_best_only,
            "save_weights_only": self.save_weights_only,
            "mode": self.mode,
            "save_freq": self.save_freq,
            "initial_value_threshold": self.initial_value_threshold,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_path(path, owner: str, arg: str) -> str:
    """``path`` as a str: a non-empty path (a file is written there during training)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{owner}: '{arg}' must be a path (str or os.PathLike), got {path!r}.") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise ValueError(f"{owner}: '{arg}' must be a non-empty path, got ''.")
    return path


class TerminateOnNaN(Callback):
    """Stop training as soon as the running loss is NaN or infinite.

    Parameters
    ----------
    raise_error : bool, default False
        False: set ``model.stop_training`` (training ends after the batch,
        ``on_train_end`` is called). True: raise RuntimeError at once, so
        that ``fit`` ends without ``on_train_end`` (a BackupAndRestore
        folder is kept for a later run to resume from), as Keras 3 does.
    """

    _param_constraints = {"raise_error": [Boolean()]}

    def __init__(self, raise_error: bool = False):
        validate_params(type(self).__name__, self._param_constraints, {"raise_error": raise_error})
        super().__init__()
        self.raise_error = raise_error

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            if self.raise_error:
                raise RuntimeError(f"TerminateOnNaN: the loss is {loss} at batch {batch}; training stops here "
                                   "(raise_error=True).")
            if is_chief(self.model):
                print(f"Batch {batch}: invalid loss {loss}, terminating training", file=sys.stderr)
            self.model.stop_training = True

    def get_config(self):
        return {"raise_error": self.raise_error}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _OneCharacter(_Constraint):
    """A string of exactly one character (what :mod:`csv` accepts as a delimiter)."""

    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, str) and len(value) == 1

    def describe(self) -> str:
        return "a str of one character"

    def invalid_examples(self) -> list:
        return ["", ";;", 3]


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file.

    Parameters
    ----------
    filename : str
    separator : str, default ","
        One character (the :mod:`csv` module's delimiter).
    append : bool, default False
        Append to an existing file instead of overwriting it.

    Notes
    -----
    The first row is a header: ``epoch``, then the log keys in sorted order
    (Keras's layout). With ``append=True`` and a file that already has a
    header, the file's own layout wins: its separator (the character after
    ``epoch`` in the header, whatever ``separator`` says) and its columns in
    their order, so that the new rows line up with the old ones. A column
    that this run does not log gets ``NA`` (as in Keras). A key that the
    header lacks widens the file: it is rewritten once, the new columns at
    the end of the header and ``NA`` in the earlier rows. (Keras reads
    neither the header nor the separator of the file it appends to: it
    writes its own sorted columns under the old header, misaligned if they
    differ.) A non-empty file whose first field is not ``epoch`` is not a
    CSV log: ``on_train_begin`` raises ValueError rather than append to it.
    """

    _param_constraints = {"filename": [str, os.PathLike], "separator": [_OneCharacter()], "append": [Boolean()]}

    def __init__(self, filename, separator: str = ",", append: bool = False):
        validate_params(type(self).__name__, self._param_constraints, {"filename": filename, "separator": separator, "append": append})
        super().__init__()
        self.filename = _check_path(filename, type(self).__name__, "filename")
        self.separator = separator
        self.append = append
        self._keys = None
        self._sep = separator

    def _read_header(self) -> list[str] | None:
        """The header of the existing file (setting the separator to the file's), or None if there is none."""
        with open(self.filename, newline="", encoding="utf-8") as fh:
            first = fh.readline()
        line = first.rstrip("\r\n")
        if not line:
            return None
        if not line.startswith("epoch"):
            raise ValueError(
                f"{type(self).__name__}: {self.filename} does not start with an 'epoch' column, so it is not a "
                f"CSV log to append to (its first line is {line[:60]!r}); name another file or use append=False."
            )
        if len(line) > len("epoch"):
            self._sep = line[len("epoch")]
        return next(csv.reader([line], delimiter=self._sep))

    def on_train_begin(self, logs=None):
        self._sep = self.separator
        self._keys = None
        self._has_header = False
        if not is_chief(self.model):  # a data-parallel run: rank 0 writes the file
            return
        if os.path.isdir(self.filename):
            raise _is_a_folder(type(self).__name__, "filename", self.filename)
        folder = os.path.dirname(self.filename)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.append and os.path.exists(self.filename):
            header = self._read_header()
            if header is not None:
                self._keys, self._has_header = header[1:], True
                with open(self.filename, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    complete = fh.read(1) == b"\n"
                if not complete:  # a last row without its line end: end it, or the next row joins it
                    with open(self.filename, "a", newline="", encoding="utf-8") as fh:
                        fh.write("\r\n")
                return
        open(self.filename, "w").close()

    def _widen(self, new_keys: list[str]) -> None:
        """Rewrite the file with ``new_keys`` added at the end of the header (``NA`` in the old rows)."""
        with open(self.filename, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter=self._sep))
        rows[0] = rows[0] + new_keys
        rows[1:] = [r + ["NA"] * len(new_keys) if r else r for r in rows[1:]]
        tmp = f"{self.filename}.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, delimiter=self._sep).writerows(rows)
        os.replace(tmp, self.filename)
        self._keys = self._keys + new_keys

    def on_epoch_end(self, epoch, logs=None):
        if not is_chief(self.model):
            return
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
        else:
            new = sorted(k for k in logs if k not in self._keys and k != "epoch")
            if new and self._has_header:
                self._widen(new)
        with open(self.filename, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter=self._sep)
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

    Takes any hook of :class:`Callback` by name, as Keras 3 does:
    ``on_train_begin``, ``on_train_end``, ``on_test_begin``, ``on_test_end``,
    ``on_predict_begin``, ``on_predict_end`` (``logs``); ``on_epoch_begin``,
    ``on_epoch_end`` (``epoch, logs``); ``on_train_batch_begin/end``,
    ``on_test_batch_begin/end``, ``on_predict_batch_begin/end`` and the older
    ``on_batch_begin/end`` (``batch, logs``). A name that is not a hook
    raises ValueError (Keras would store it as an attribute and never call it).
    """

    #: every hook of the callback protocol (``Callback``'s ``on_*`` methods)
    _HOOKS = tuple(sorted(name for name in vars(Callback) if name.startswith("on_")))

    def __init__(self, **hooks):
        unknown = sorted(set(hooks) - set(self._HOOKS))
        if unknown:
            raise ValueError(f"LambdaCallback: unknown hook(s) {unknown}; known: {', '.join(self._HOOKS)}.")
        validate_params(type(self).__name__, {k: [NoneOk(), Callable()] for k in hooks}, hooks)
        super().__init__()
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)
