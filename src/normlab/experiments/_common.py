"""Helpers shared by the experiments: plotting import, output folder, JSON, progress."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ..callbacks.base import Callback

DEFAULT_OUT_DIR = "normlab-results"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or a clear ``ImportError``."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            'The experiments draw their plots with matplotlib, which is not installed: pip install "normlab[plot]"'
        ) from None
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def out_path(out_dir) -> Path:
    path = Path(DEFAULT_OUT_DIR if out_dir is None else out_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return os.fspath(obj)
    return obj


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(_jsonable(data), indent=1) + "\n")


def check_positive_int(value, name: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{who}: '{name}' must be an int >= {low}, got {value!r}.")
    return int(value)


class StepProgress(Callback):
    """A tqdm bar over training steps (for runs counted in steps, not epochs)."""

    def __init__(self, total: int, desc: str, update_every: int = 100):
        super().__init__()
        self.total, self.desc, self.update_every = total, desc, update_every
        self._bar = None
        self._pending = 0

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, desc=self.desc, unit="step", leave=False, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        self._pending += 1
        if self._pending >= self.update_every:
            self._bar.update(self._pending)
            self._pending = 0

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.update(self._pending)
            self._bar.close()
            self._bar = None


class StopAfter(Callback):
    """Stop ``fit`` after exactly ``steps`` training steps."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step >= self.steps:
            self.model.stop_training = True
