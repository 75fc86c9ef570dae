"""Batch norm's moving statistics in short runs: which momentum for how many steps, against exact statistics.

At inference a BatchNormalization layer uses its moving averages::

    moving <- momentum * moving + (1 - momentum) * batch statistic

(Keras's convention; the notes' ``alpha`` is ``1 - momentum``). They start
at mean 0 and variance 1, so after ``t`` steps a fraction ``momentum^t`` of
that arbitrary start is still in them, and the rest averages the last
``~1 / (1 - momentum)`` batches, computed while the weights were moving.
At Keras's default 0.99 the start still weighs 0.99^72 = 48 % after 72
steps. :func:`normlab.recompute_batchnorm_statistics` (the paper's
Algorithm 2; the callback :class:`normlab.callbacks.RecomputeBatchNormStatistics`
at the end of ``fit``) replaces them with the exact mean and variance over
the training set for the final weights.

The experiment trains the bn-paper network (3 x 100 sigmoid units, BN
before each sigmoid; SGD at ``learning_rate``, batches of 60) on digits
once per momentum of ``momenta``, from the same seed: the moving
statistics do not enter the training steps, so every run takes the same
steps, bit for bit (checked). At each of ``checkpoints`` (steps) it
measures the test accuracy with the moving statistics, then with the
recomputed ones (the moving ones put back afterwards).

Writes ``moving_stats.json`` and ``moving_stats.png`` into ``out_dir``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..callbacks.base import Callback
from ._common import check_positive_int, out_path, pyplot, write_json

__all__ = ["run", "build_network", "MOMENTA", "CHECKPOINTS", "momentum_for_steps"]

MOMENTA = (0.9, 0.95, 0.99, 0.999)
CHECKPOINTS = (24, 72, 240, 720, 2400)


def momentum_for_steps(steps: int, residue: float = 0.01) -> float:
    """The largest momentum whose moving average keeps at most ``residue`` of its start after ``steps`` steps.

    ``momentum^steps = residue``, i.e. ``momentum = residue ** (1 / steps)``
    (about ``1 - 4.6 / steps`` for 1 %).
    """
    return float(residue ** (1.0 / steps))


def build_network(momentum: float, seed: int = 0):
    """The bn-paper network (3 x 100 sigmoid units, BN before each sigmoid) with BN's ``momentum``."""
    from .. import Sequential, initializers
    from ..layers import Activation, BatchNormalization, Dense

    layers = []
    for i in range(3):
        init = initializers.RandomNormal(stddev=0.1, seed=seed + i)
        layers += [Dense(100, use_bias=False, kernel_initializer=init), BatchNormalization(momentum=momentum),
                   Activation("sigmoid")]
    layers.append(Dense(10, activation="softmax", kernel_initializer=initializers.RandomNormal(stddev=0.1,
                                                                                                seed=seed + 3)))
    return Sequential(layers, name=f"bn_momentum_{momentum:g}")


class _Checkpoints(Callback):
    def __init__(self, checkpoints, x_train, x_test, y_test):
        super().__init__()
        self.checkpoints, self.x_train, self.x_test, self.y_test = set(checkpoints), x_train, x_test, y_test
        self.last = max(checkpoints)
        self.step = 0
        self.rows: dict = {}

    def _accuracy(self):
        pred = self.model.predict(self.x_test, batch_size=512, verbose=0)
        return float(np.mean(pred.argmax(axis=1) == self.y_test))

    def on_train_batch_end(self, batch, logs=None):
        from ..layers import BatchNormalization
        from ..models.batchnorm_tools import recompute_batchnorm_statistics

        self.step += 1
        if self.step in self.checkpoints:
            moving = self._accuracy()
            bns = [l for l in self.model.layers if isinstance(l, BatchNormalization)]
            saved = [{k: v.copy() for k, v in l.buffers.items()} for l in bns]
            recompute_batchnorm_statistics(self.model, self.x_train)
            exact = self._accuracy()
            for layer, buffers in zip(bns, saved):
                for k, v in buffers.items():
                    np.copyto(layer.buffers[k], v)
            weights = [w for l in self.model.layers for w in l.params.values()]
            digest = float(sum(np.sum(w, dtype=np.float64) for w in weights))
            self.rows[self.step] = {"moving": moving, "recomputed": exact, "weights_sum": digest}
        if self.step >= self.last:
            self.model.stop_training = True


def run(
    checkpoints=CHECKPOINTS,
    *,
    momenta=MOMENTA,
    batch_size: int = 60,
    learning_rate: float = 0.05,
    out_dir=None,
    plots: bool = True,
    seed: int = 0,
    print_fn=print,
) -> dict:
    """Train once per momentum; test accuracy with moving vs recomputed statistics at each checkpoint.

    Returns ``{"config", "checkpoints", "moving": {momentum: [...]}, "recomputed": [...],
    "same_training": bool, "suggested_momentum": [...]}``.
    """
    from .. import datasets, optimizers

    who = "moving_stats.run"
    checkpoints = sorted({check_positive_int(c, "checkpoints", who) for c in checkpoints})
    batch_size = check_positive_int(batch_size, "batch_size", who)
    momenta = tuple(float(m) for m in momenta)
    (x, y), (xt, yt) = datasets.load_digits()
    out = out_path(out_dir)
    t0 = time.perf_counter()
    runs = {}
    for m in momenta:
        model = build_network(m, seed)
        model.compile(optimizer=optimizers.SGD(learning_rate), loss="sparse_categorical_crossentropy")
        cb = _Checkpoints(checkpoints, x, xt, yt)
        per_epoch = math.ceil(len(x) / batch_size)
        model.fit(x, y, batch_size=batch_size, epochs=math.ceil(max(checkpoints) / per_epoch), callbacks=[cb],
                  verbose=0, seed=seed)
        runs[m] = cb.rows
    first = runs[momenta[0]]
    same = all(runs[m][c]["weights_sum"] == first[c]["weights_sum"] and
               runs[m][c]["recomputed"] == first[c]["recomputed"] for m in momenta for c in checkpoints)
    data = {
        "config": {"batch_size": batch_size, "learning_rate": learning_rate, "seed": seed, "dataset": "digits",
                   "network": "3 x 100 sigmoid, BN before each sigmoid", "optimizer": "SGD",
                   "momenta": list(momenta), "n_train": len(x)},
        "checkpoints": checkpoints,
        "moving": {str(m): [runs[m][c]["moving"] for c in checkpoints] for m in momenta},
        "recomputed": [first[c]["recomputed"] for c in checkpoints],
        "same_training": bool(same),
        "suggested_momentum": [momentum_for_steps(c) for c in checkpoints],
        "seconds": time.perf_counter() - t0,
    }
    for i, c in enumerate(checkpoints):
        cells = ", ".join(f"{m:g}: {100 * data['moving'][str(m)][i]:.1f} %" for m in momenta)
        print_fn(f"{c} steps: moving averages {cells}; recomputed {100 * data['recomputed'][i]:.1f} %")
    write_json(out / "moving_stats.json", data)
    if plots:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        for m in momenta:
            ax.semilogx(checkpoints, 100 * np.asarray(data["moving"][str(m)]), "o-", ms=3, label=f"moving, {m:g}")
        ax.semilogx(checkpoints, 100 * np.asarray(data["recomputed"]), "k--", lw=1.5, label="recomputed")
        ax.set_xlabel("training steps")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("BN statistics at inference: moving averages vs exact", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "moving_stats.png", dpi=72)
        plt.close(fig)
    return data
