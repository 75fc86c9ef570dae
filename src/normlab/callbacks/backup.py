"""BackupAndRestore: resume an interrupted ``fit`` where it stopped (Keras 3's callback).

What a backup holds and how a resumed run lines up with an uninterrupted one
----------------------------------------------------------------------------
A backup is a normlab model file (:func:`normlab.models.saving.save_model`:
weights, buffers such as moving statistics, the optimizer's slots and step
count, the generators of random layers) plus ``training_state.json``, which
names that file and the position in training it was taken at: the epoch to
start from and the steps already taken in it. ``fit`` shuffles epoch ``e``
from ``(seed, e)`` alone (:mod:`normlab.models.training`), so with the same
data and ``seed`` a run resumed from an epoch-end backup takes exactly the
steps the uninterrupted run would have taken, bit for bit.

Writing is crash-safe: the model goes to a new file (written atomically),
then the JSON (atomically) is switched to it, then the file it replaces is
deleted; whenever the process dies, ``training_state.json`` names a complete
file of the position it records.

Mid-epoch backups (``save_freq`` an int) record the step too, and a restore
leaves it in ``model._initial_step`` beside ``model._initial_epoch``. A
trainer that skips that many batches of the resumed epoch's (seeded) order
resumes exactly there, bit for bit; its first epoch's logs then average the
remaining batches only. A trainer that does not starts the recorded epoch
from its beginning, as Keras 3 does: the batches of that epoch before the
backup are trained again, so the resume is not exact. Epoch-end backups
(the default) resume exactly either way.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import warnings

import numpy as np

from ..distributed import is_chief
from .._validation import Boolean, Interval, InvalidParameterError, Options, validate_params
from .base import Callback

__all__ = ["BackupAndRestore"]

_STATE = "training_state.json"
_FORMAT = "normlab-backup"
_FILE = re.compile(r"backup-[0-9]{6,}-[0-9]{9,}\.npz")


class BackupAndRestore(Callback):
    """Back up the training state during ``fit``; a later ``fit`` resumes from the backup.

    Parameters
    ----------
    backup_dir : str or os.PathLike
        Required. Folder of the backup (created when needed). Give each training run
        its own: the callback reads and deletes its files there.
    save_freq : "epoch" or int >= 1, default "epoch"
        Back up at the end of every epoch, or after every ``save_freq``
        training batches (counted across epochs). Only epoch-end backups
        resume exactly (see the module docstring).
    double_checkpoint : bool, default False
        Keep the previous backup as well: if the latest cannot be read (a
        damaged file), ``fit`` resumes from the previous one.
    delete_checkpoint : bool, default True
        Delete the backup when training ends (normally, or stopped by a
        callback such as ``EarlyStopping``). An exception or an interrupt
        ends ``fit`` without ``on_train_end``, so the backup stays.

    Notes
    -----
    In ``on_train_begin``, if ``backup_dir`` holds a backup, the model is
    updated in place from it: weights and buffers (written into the existing
    arrays, which the optimizer's buffers share), the optimizer's state
    (``set_state``) and the random layers' generators (``set_rng_state``);
    then ``model._initial_epoch`` is set to the epoch to resume at (Keras:
    ``fit`` starts there instead of at its ``initial_epoch``). The model
    must be built, and must be the one that was backed up (same layers,
    weight shapes and optimizer): anything else is a ``ValueError`` before
    anything changes. Pass ``fit`` the same data, ``batch_size``, ``epochs``
    and ``seed`` as the interrupted run.

    The callbacks' own state (``EarlyStopping``'s wait, the ``History``) is
    not backed up, as in Keras: ``fit`` returns the history of the epochs
    it ran. A state holding NaN or inf (a diverged run with
    ``on_nonfinite="proceed"``) is not backed up: a ``RuntimeWarning`` says
    so and the last finite backup stays, the one worth resuming from.

    Examples
    --------
    >>> backup = BackupAndRestore("/tmp/run1")                      # doctest: +SKIP
    >>> model.fit(x, y, epochs=10, seed=0, callbacks=[backup])      # interrupted at epoch 4
    >>> model.fit(x, y, epochs=10, seed=0, callbacks=[backup])      # runs epochs 4 .. 9
    """

    _param_constraints = {
        "save_freq": [Options(("epoch",)), Interval(numbers.Integral, 1, None)],
        "double_checkpoint": [Boolean()],
        "delete_checkpoint": [Boolean()],
        "backup_dir": [str, os.PathLike],  # last: checked after the others (see __init__)
    }

    def __init__(self, backup_dir=None, save_freq="epoch", double_checkpoint: bool = False,
                 delete_checkpoint: bool = True):
        # backup_dir is required (Keras); its None default lets the declared arguments be checked
        # first, so that each mistake is named whatever else is missing
        who = type(self).__name__
        validate_params(who, self._param_constraints, {
            "save_freq": save_freq, "double_checkpoint": double_checkpoint, "delete_checkpoint": delete_checkpoint,
            "backup_dir": backup_dir,
        })
        if not os.fspath(backup_dir):
            raise InvalidParameterError(f"The 'backup_dir' parameter of {who} must be a non-empty path. Got '' instead.")
        super().__init__()
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._epoch = 0  # the epoch running (or next to run)
        self._step = 0  # training steps taken in it
        self._since_backup = 0

    # ------------------------------------------------------------------ files
    @property
    def _state_path(self) -> str:
        return os.path.join(self.backup_dir, _STATE)

    def _read_state(self) -> dict | None:
        try:
            with open(self._state_path, "rb") as fh:
                raw = fh.read(1 << 16)
        except FileNotFoundError:
            return None
        who = type(self).__name__
        try:
            state = json.loads(raw.decode("utf-8"))
            entries = [state["latest"]] + ([state["previous"]] if state.get("previous") else [])
            ok = state.get("format") == _FORMAT and all(
                isinstance(e, dict) and isinstance(e.get("file"), str) and _FILE.fullmatch(e["file"])
                and all(isinstance(e.get(k), int) and not isinstance(e.get(k), bool) and e[k] >= 0
                        for k in ("epoch", "step"))
                for e in entries
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise ValueError(f"{who}: {self._state_path} is not a backup's training state (damaged, or another "
                             f"program's file); remove it, or choose another backup_dir.")
        return state

    def _write_state(self, state: dict) -> None:
        from ..models.saving import _write_atomically

        text = json.dumps(state).encode("utf-8")
        _write_atomically(self._state_path, lambda fh: fh.write(text))

    def _remove(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.backup_dir, name))
        except FileNotFoundError:
            pass

    # ---------------------------------------------------------------- backup
    def _finite_state(self) -> bool:
        from ..models.saving import _all_finite

        arrays = [a for layer in self.model.layers for d in (layer.params, layer.buffers) for a in d.values()]
        if getattr(self.model, "optimizer", None) is not None and hasattr(self.model.optimizer, "get_state"):
            arrays += list(self.model.optimizer.get_state().values())
        return all(a.dtype.kind != "f" or _all_finite(a) for a in map(np.asarray, arrays))

    def _backup(self, epoch: int, step: int) -> None:
        from ..models.saving import save_model

        if not is_chief(self.model):  # a data-parallel run: rank 0 backs up (the ranks' models are the same)
            return
        if not self._finite_state():
            warnings.warn(
                f"{type(self).__name__}: the model holds NaN or inf at epoch {epoch}, step {step}; not backed "
                f"up (the last backup in {self.backup_dir} stays).", RuntimeWarning, stacklevel=3,
            )
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        old = self._read_state()
        entry = {"file": f"backup-{epoch:06d}-{step:09d}.npz", "epoch": epoch, "step": step}
        keep = {entry["file"]}
        previous = None
        if old is not None and self.double_checkpoint:
            previous = old["latest"]
            if previous["file"] == entry["file"]:  # the same position backed up again: keep the older pair
                previous = old.get("previous")
        if previous is not None:
            keep.add(previous["file"])
        save_model(self.model, os.path.join(self.backup_dir, entry["file"]))
        self._write_state({"format": _FORMAT, "format_version": 1, "latest": entry, "previous": previous})
        # only now that the state names the new file: the files it no longer names
        if old is not None:
            for e in (old["latest"], old.get("previous")):
                if e is not None and e["file"] not in keep:
                    self._remove(e["file"])

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self._step = batch + 1
        if self.save_freq == "epoch":
            return
        self._since_backup += 1
        if self._since_backup >= self.save_freq:
            self._since_backup = 0
            self._backup(self._epoch, self._step)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch, self._step = epoch + 1, 0
        if self.save_freq == "epoch":
            self._backup(epoch + 1, 0)

    def on_train_end(self, logs=None):
        if not self.delete_checkpoint or not is_chief(self.model):
            return
        state = self._read_state()
        if state is None:
            return
        for e in (state["latest"], state.get("previous")):
            if e is not None:
                self._remove(e["file"])
        self._remove(_STATE)
        try:
            os.rmdir(self.backup_dir)  # only when nothing else is in it
        except OSError:
            pass

    # --------------------------------------------------------------- restore
    def on_train_begin(self, logs=None):
        self._since_backup = 0
        if not is_chief(self.model):
            return  # a data-parallel run: rank 0 restores, and fit broadcasts its state to every rank
        state = self._read_state()
        if state is None:
            return
        who = type(self).__name__
        model = self.model
        if not model.built:
            raise ValueError(f"{who}: model {model.name!r} must be built before fit() to restore a backup; "
                             f"build it (model.build(input_shape)) or call it on a batch first.")
        from ..models.saving import ModelFileError, load_model

        entries = [state["latest"]] + ([state["previous"]] if state.get("previous") else [])
        first_error = None
        for entry in entries:
            path = os.path.join(self.backup_dir, entry["file"])
            try:
                saved = load_model(path, compile=True)
            except (ModelFileError, OSError) as exc:
                first_error = first_error or exc
                continue
            self._restore_from(saved, path)
            self._epoch, self._step = entry["epoch"], entry["step"]
            model._initial_epoch = entry["epoch"]
            model._initial_step = entry["step"]
            return
        raise ValueError(f"{who}: no backup in {self.backup_dir} can be read: {first_error}") from first_error

    def _restore_from(self, saved, path: str) -> None:
        """Copy the state of ``saved`` into ``self.model`` in place; checks everything first."""
        who = type(self).__name__
        model = self.model
        problem = None
        if len(saved.layers) != len(model.layers):
            problem = f"{len(saved.layers)} layers, the model {len(model.layers)}"
        else:
            for i, (src, dst) in enumerate(zip(saved.layers, model.layers)):
                for kind in ("params", "buffers"):
                    a, b = getattr(src, kind), getattr(dst, kind)
                    if list(a) != list(b):
                        problem = f"layer {i} ({dst.name}) has {kind} {sorted(a)}, the model {sorted(b)}"
                    else:
                        bad = [k for k in a if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype]
                        if bad:
                            k = bad[0]
                            problem = (f"layer {i} ({dst.name}) {kind[:-1]} {k!r} is {a[k].dtype}{a[k].shape}, "
                                       f"the model's {b[k].dtype}{b[k].shape}")
                    if problem:
                        break
                if problem:
                    break
        opt_state = None
        if problem is None and saved.optimizer is not None and model.optimizer is not None:
            if type(saved.optimizer) is not type(model.optimizer):
                problem = (f"the optimizer is {type(saved.optimizer).__name__}, the model's "
                           f"{type(model.optimizer).__name__}")
            else:
                opt_state = saved.optimizer.get_state()
        if problem is not None:
            raise ValueError(f"{who}: the backup {path} is not of this model: it has {problem}. Use the model "
                             f"that was backed up, or another backup_dir.")
        if opt_state is not None:
            model.optimizer.set_state(opt_state)  # checks keys, shapes and dtypes before it changes anything
        for src, dst in zip(saved.layers, model.layers):
            for kind in ("params", "buffers"):
                target = getattr(dst, kind)
                for k, arr in getattr(src, kind).items():
                    # in place: the model's parameters are views into the optimizer's buffers
                    np.copyto(target[k], arr)
            if hasattr(src, "get_rng_state"):
                rng = src.get_rng_state()
                if rng is not None:
                    dst.set_rng_state(rng)

    def get_config(self):
        return {
            "backup_dir": self.backup_dir,
            "save_freq": self.save_freq,
            "double_checkpoint": self.double_checkpoint,
            "delete_checkpoint": self.delete_checkpoint,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
