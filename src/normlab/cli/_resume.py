"""The checkpoint ``normlab train`` keeps while it trains, and ``--resume`` reads.

``<model>.resume.npz`` (the model, with its optimizer state) and
``<model>.resume.json`` (the next epoch, the optimizer's step count, the
history so far and a digest of the config), written at epoch ends, each
file atomically and both under one deferred Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

from ..callbacks.base import Callback
from ._common import CommandError, UsageError

__all__ = ["checkpoint_paths"]


def checkpoint_paths(model_path) -> tuple[Path, Path]:
    """The checkpoint kept while training for ``model_path``: ``<stem>.resume.npz`` and ``<stem>.resume.json``."""
    model_path = Path(model_path)
    return (model_path.with_name(model_path.stem + ".resume.npz"),
            model_path.with_name(model_path.stem + ".resume.json"))

def _fingerprint(cfg: dict) -> str:
    """A digest of what makes a run: data, layers, optimizer, training (but its epochs), callbacks."""
    keep = {k: cfg[k] for k in ("data", "layers", "optimizer", "callbacks")}
    # a checkpoint resumes on any number of processes
    keep["training"] = {k: v for k, v in cfg["training"].items() if k not in ("epochs", "distribute")}
    text = json.dumps(keep, sort_keys=True, default=lambda o: getattr(o, "__name__", repr(o)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold off Ctrl-C until the block is done (then raise it): a checkpoint is written whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler installed outside Python: leave it alone
        yield
        return
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


class _Checkpoint(Callback):
    """Keep the model as of the last finished epoch, and the history so far, in the resume files.

    Written at train begin and at epoch ends (after the config's callbacks,
    so that what they change is in it), each file atomically and both under
    one deferred Ctrl-C; ``epoch`` in the JSON is the next epoch to run,
    ``iterations`` the optimizer's step count, which the resumed run checks
    against the model file.

    A write costs a few milliseconds (``model.save`` syncs the file to
    disk), as much as a whole epoch of a small model on digits; so an
    epoch's end writes only when the training since the last write took at
    least ``1 / max_overhead`` times as long as that write: writing costs at
    most ``max_overhead`` of the training time, and Ctrl-C loses at most
    that many write times of training (a fraction of a second) or one epoch.
    """

    #: the most of the training time that writing the checkpoint may take
    max_overhead = 0.05

    def __init__(self, npz: Path, meta: Path, *, fingerprint: str, initial_epoch: int, history: dict, epochs: list,
                 writes: bool = True):
        super().__init__()
        self.writes = writes  # False on the ranks of a data-parallel run but rank 0
        self.npz, self.meta = npz, meta
        self.fingerprint = fingerprint
        self.next_epoch = initial_epoch
        self.history = {k: list(v) for k, v in history.items()}
        self.epochs = list(epochs)
        self.saved = None  # the next epoch of the last checkpoint written
        self._written_at, self._write_seconds = 0.0, 0.0

    def _write(self, stopped: bool = False) -> None:
        start = time.perf_counter()
        meta = {
            "format": "normlab-train-resume",
            "format_version": 1,
            "config_fingerprint": self.fingerprint,
            "epoch": self.next_epoch,
            "iterations": int(self.model.optimizer.iterations),
            "stopped": stopped,
            "history": {"epoch": self.epochs, "history": self.history},
        }
        if not self.writes:
            self.saved = self.next_epoch
            return
        with _interrupts_deferred():
            self.npz.parent.mkdir(parents=True, exist_ok=True)
            self.model.save(self.npz)
            tmp = self.meta.with_name(self.meta.name + ".tmp")
            tmp.write_text(json.dumps(meta, indent=1) + "\n")
            os.replace(tmp, self.meta)
            self.saved = self.next_epoch
        self._written_at = time.perf_counter()
        self._write_seconds = self._written_at - start

    def on_train_begin(self, logs=None):
        self._write()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, [None] * (len(self.epochs) - 1)).append(v)
        self.next_epoch = epoch + 1
        stopped = bool(self.model.stop_training)
        if stopped or time.perf_counter() - self._written_at >= self._write_seconds / self.max_overhead:
            self._write(stopped=stopped)

    def remove(self) -> None:
        if not self.writes:
            return
        for p in (self.npz, self.meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _read_checkpoint(npz: Path, meta: Path, fingerprint: str, source: str) -> tuple:
    from .. import load_model
    from ..models.saving import ModelFileError

    if not meta.is_file() or not npz.is_file():
        missing = meta if not meta.is_file() else npz
        raise UsageError(f"--resume: no checkpoint to resume from ({missing} does not exist); "
                         f"run without --resume to start over.")
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        if info.get("format") != "normlab-train-resume":
            raise ValueError("not a normlab train checkpoint")
        epoch, iterations = int(info["epoch"]), int(info["iterations"])
        past = info["history"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CommandError(f"{meta}: not a readable checkpoint ({e}); delete it and {npz} to start over.") from None
    if info.get("config_fingerprint") != fingerprint:
        raise UsageError(
            f"--resume: {source} has changed since the checkpoint {npz} was written (only [training] epochs "
            "and [output] may change); restore it, or delete the checkpoint to start over."
        )
    try:
        model = load_model(npz)
    except ModelFileError as e:
        raise CommandError(f"{e} Delete it and {meta} to start over.") from None
    if model.optimizer is None or int(model.optimizer.iterations) != iterations:
        raise CommandError(f"{npz}: does not match {meta} (optimizer steps {getattr(model.optimizer, 'iterations', None)}, "
                           f"expected {iterations}); delete both to start over.")
    return model, epoch, bool(info.get("stopped")), past

