"""Progress display for ``fit`` (tqdm bar per epoch, or one line per epoch)."""

from __future__ import annotations

import sys

from .base import Callback


def format_logs(logs: dict | None) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in (logs or {}).items())


class ProgbarLogger(Callback):
    """``verbose=1``: a tqdm bar per epoch with the running loss and metrics;
    ``verbose=2``: one line per epoch. ``fit`` adds it when ``verbose > 0``.
    """

    def __init__(self, verbose: int = 1, file=None):
        super().__init__()
        self.verbose = verbose
        self.file = file
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.params.get("steps"),
                desc=f"Epoch {epoch + 1}/{self.params.get('epochs')}",
                unit="step",
                leave=True,
                file=self.file or sys.stderr,
                dynamic_ncols=True,
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            if batch % 10 == 0 or batch + 1 == self.params.get("steps"):
                self._bar.set_postfix_str(format_logs(logs), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.set_postfix_str(format_logs(logs))
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            print(
                f"Epoch {epoch + 1}/{self.params.get('epochs')} - {format_logs(logs)}",
                file=self.file or sys.stdout,
            )

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
