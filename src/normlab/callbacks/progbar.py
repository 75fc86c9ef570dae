"""Progress display for ``fit``: a bar per epoch on a terminal, else one line per epoch.

A progress bar redraws itself with carriage returns, which only a terminal
turns into an animation: in a log file or a pipe it becomes one long line of
every intermediate state. So the bar is drawn only when its stream is an
interactive terminal (or a Jupyter output); everywhere else, and with
``verbose=2``, each epoch gives one line, as Keras does with ``verbose=2``.
Either way the epoch ends with a full line of its loss and metrics: the bar's
own line is cut to the terminal's width, the epoch line never is.
"""

from __future__ import annotations

import sys
import time

from .._validation import InvalidParameterError, NoneOk, Options, _Constraint, validate_params
from ..distributed import is_chief
from .base import Callback

__all__ = ["ProgbarLogger", "format_logs", "interactive", "resolve_verbose"]


def format_logs(logs: dict | None) -> str:
    """``"loss: 0.3412 - accuracy: 0.9021 - ..."``, four significant digits each."""
    return " - ".join(f"{k}: {v:.4g}" for k, v in (logs or {}).items())


def interactive(stream) -> bool:
    """True when ``stream`` shows a live display: a terminal or a Jupyter output."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    # Jupyter's output streams are not terminals but draw tqdm's widgets
    return "ipykernel" in sys.modules and type(stream).__module__.startswith("ipykernel")


def resolve_verbose(verbose, who: str) -> int:
    """Check ``verbose`` and turn ``"auto"`` into 1 or 2.

    ``"auto"`` (Keras's default) is 1, a progress bar, when the output is an
    interactive terminal (both stdout and stderr, where the bar and the lines
    go), else 2, one line per epoch: a log file gets no carriage returns.

    Raises
    ------
    ValueError
        For anything but ``"auto"``, 0, 1 or 2, naming ``who``.
    """
    if isinstance(verbose, str) and verbose == "auto":
        return 1 if interactive(sys.stdout) and interactive(sys.stderr) else 2
    if verbose not in (0, 1, 2):
        raise ValueError(f"{who}: 'verbose' must be 'auto', 0, 1 or 2, got {verbose!r}.")
    return int(verbose)


class _Writable(_Constraint):
    """A text stream: anything with a ``write`` method."""

    def is_satisfied_by(self, value) -> bool:
        return callable(getattr(value, "write", None))

    def describe(self) -> str:
        return "a file-like object with a write() method"

    def invalid_examples(self) -> list:
        return ["out.txt", 3]


class ProgbarLogger(Callback):
    """Progress of ``fit``; ``fit`` adds one when ``verbose`` is not 0.

    Parameters
    ----------
    verbose : {1, 2}, default 1
        1: on an interactive terminal, a tqdm bar per epoch with the running
        loss and metrics, replaced at the epoch's end by the epoch's line; on
        anything else (a file, a pipe) the epoch's line alone. 2: the epoch's
        line alone.
    file : file-like, optional
        Where everything goes. By default the bar and the ``verbose=1`` lines
        go to stderr (with the bar) and the ``verbose=2`` lines to stdout.

    Notes
    -----
    The epoch's line is ``Epoch 3/20 - 0.4 s - loss: 0.3412 - accuracy:
    0.9021 - val_loss: ...``: every entry of the epoch's logs, never cut.
    """

    _param_constraints = {
        "verbose": [Options((1, 2))],
        "file": [NoneOk(), _Writable()],
    }

    def __init__(self, verbose: int = 1, file=None):
        if isinstance(verbose, bool) or verbose not in (1, 2):
            raise InvalidParameterError(f"ProgbarLogger: 'verbose' must be 1 or 2, got {verbose!r}.")
        validate_params(type(self).__name__, self._param_constraints, {"file": file})
        super().__init__()
        self.verbose = verbose
        self.file = file
        self._bar = None
        self._t0 = 0.0

    def _stream(self):
        if self.file is not None:
            return self.file
        return sys.stderr if self.verbose == 1 else sys.stdout

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        stream = self._stream()
        # in a data-parallel run only rank 0 shows progress (every rank sees the same logs)
        if self.verbose == 1 and interactive(stream) and is_chief(self.model):
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.params.get("steps"),
                desc=f"Epoch {epoch + 1}/{self.params.get('epochs')}",
                unit="step",
                leave=False,  # the epoch's full line takes its place
                file=stream,
                dynamic_ncols=True,
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            if batch % 10 == 0 or batch + 1 == self.params.get("steps"):
                self._bar.set_postfix_str(format_logs(logs), refresh=False)

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, epoch, logs=None):
        self._close_bar()
        seconds = time.perf_counter() - self._t0
        stream = self._stream()
        line = f"Epoch {epoch + 1}/{self.params.get('epochs')} - {seconds:.1f} s"
        if logs:
            line += " - " + format_logs(logs)
        if is_chief(self.model):
            print(line, file=stream, flush=True)

    def on_train_end(self, logs=None):
        self._close_bar()
