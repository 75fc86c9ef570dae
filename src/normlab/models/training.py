"""What ``fit`` is made of: a data iterator and a trainer loop.

:class:`BatchIterator` owns the data side of training: the validation
split, epochs, shuffling, batching and the seed streams. :func:`run_epochs`
runs the steps and the callbacks. :meth:`~normlab.models.base.BaseModel.fit`
checks its arguments and connects the two.

Seed streams are derived from ``(seed, purpose[, epoch])``
(:class:`numpy.random.SeedSequence` with a spawn key): ``(0,)`` initializes
the weights of a model not built yet, ``(1, e)`` shuffles epoch ``e``. Epoch
``e``'s order therefore does not depend on the epochs before it, so
``fit(..., initial_epoch=e)`` after loading a saved model resumes exactly.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import NonFiniteError

__all__ = ["BatchIterator", "split_validation", "run_epochs"]

_WEIGHTS, _SHUFFLE = 0, 1


def split_validation(x, y, validation_split: float, who: str):
    """``(x, y, (x_val, y_val))`` with the last ``validation_split`` of the samples held out (Keras: before shuffling)."""
    n_val = int(len(x) * validation_split)
    if n_val == 0 or n_val == len(x):
        raise ValueError(
            f"{who}: validation_split={validation_split} leaves {len(x) - n_val} training and {n_val} "
            f"validation samples."
        )
    return x[:-n_val], y[:-n_val], (x[-n_val:], y[-n_val:])


class BatchIterator:
    """Batches of ``(x, y)`` for each epoch, shuffled from the epoch's own seed stream.

    Parameters
    ----------
    x, y : ndarray
        Validated training data (the same number of samples).
    batch_size : int
    shuffle : bool
        Reshuffle the samples every epoch.
    entropy : int
        The run's root entropy (``SeedSequence(seed).entropy``).

    Shuffled batches are gathered into one reused buffer rather than a
    shuffled copy of the whole set per epoch: no second copy of the data,
    and the batch is still in cache when the first layer reads it. A batch
    is valid until the next one is drawn (the layers keep what they cached
    of a batch only until their next step anyway).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool, entropy: int):
        self.x, self.y = x, y
        self.n = len(x)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.entropy = entropy
        self.steps = -(-self.n // batch_size)
        self._buffer = np.empty((min(batch_size, self.n),) + x.shape[1:], x.dtype) if shuffle else None

    @staticmethod
    def stream(entropy: int, *key: int) -> np.random.Generator:
        """The generator of one purpose (and epoch) of a run."""
        return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))

    def epoch(self, epoch: int):
        """Yield ``(step, x_batch, y_batch)`` for epoch ``epoch``."""
        x, y, bs, n = self.x, self.y, self.batch_size, self.n
        perm = self.stream(self.entropy, _SHUFFLE, epoch).permutation(n) if self.shuffle else None
        for step in range(self.steps):
            lo, hi = step * bs, min(n, (step + 1) * bs)
            if perm is None:
                yield step, x[lo:hi], y[lo:hi]
            else:
                idx = perm[lo:hi]
                xb = self._buffer[: hi - lo]
                np.take(x, idx, axis=0, out=xb)
                yield step, xb, y[idx]


def run_epochs(model, data: BatchIterator, callbacks, *, epochs: int, initial_epoch: int, validation_data) -> dict:
    """The trainer loop: steps, metrics, validation and callbacks for epochs ``initial_epoch .. epochs - 1``.

    ``fit`` has called ``on_train_begin`` (inside its all-or-nothing setup).

    Epoch logs hold the mean training loss and metrics over the epoch,
    ``global_norm`` (the mean over the epoch's steps of the global gradient
    norm before clipping), the ``val_`` entries and ``learning_rate`` (the
    rate of the next step). Returns the last logs.
    """
    optimizer = model.optimizer
    metrics = model.metrics
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        callbacks.on_epoch_begin(epoch)
        for m in metrics:
            m.reset_state()
        loss_sum, seen, norm_sum, norm_count = 0.0, 0, 0.0, 0
        for step, xb, yb in data.epoch(epoch):
            callbacks.on_train_batch_begin(step)
            try:
                value, out = model._train_step(xb, yb)
            except FloatingPointError as exc:
                # a step refused for non-finite values (the optimizer's or a layer's); nothing changed.
                # The callbacks see the batch with its loss (NaN if the forward pass did not reach
                # it), and if one stops training on it (as TerminateOnNaN does), training ends
                # cleanly; else the error stands.
                loss = model._step_loss
                if loss is None and isinstance(exc, NonFiniteError):
                    loss = math.nan
                if loss is None or math.isfinite(loss):
                    raise
                logs = {"loss": loss}
                callbacks.on_train_batch_end(step, logs)
                if not model.stop_training:
                    raise
                break
            k = len(xb)
            loss_sum += value * k
            seen += k
            norm = getattr(optimizer, "last_global_norm", None)
            if norm is not None:
                norm_sum += norm
                norm_count += 1
            for m in metrics:
                m.update_state(yb, out)
            logs = {"loss": loss_sum / seen}
            logs.update({m.name: m.result() for m in metrics})
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        logs = dict(logs)
        if norm_count:
            logs["global_norm"] = norm_sum / norm_count
        lr = getattr(optimizer, "current_learning_rate", None)
        if validation_data is not None:
            val = model._evaluate_arrays(validation_data[0], validation_data[1], data.batch_size)
            logs.update({f"val_{k}": v for k, v in val.items()})
        if lr is not None:
            logs["learning_rate"] = float(lr)
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return logs
