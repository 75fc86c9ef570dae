"""What ``fit`` is made of: a data iterator and a trainer loop.

The data side of training (sources of batches: arrays, PyDatasets,
generators; epochs of ``steps_per_epoch`` steps; shuffling) is
:mod:`normlab.models.data`. :func:`run_epochs` runs the steps, the
validation and the callbacks. :meth:`~normlab.models.base.BaseModel.fit`
checks its arguments and connects the two.

Seed streams are derived from ``(seed, purpose[, epoch])``
(:class:`numpy.random.SeedSequence` with a spawn key): ``(0,)`` initializes
the weights of a model not built yet, ``(1, e)`` shuffles epoch ``e``. Epoch
``e``'s order therefore does not depend on the epochs before it, so
``fit(..., initial_epoch=e)`` after loading a saved model resumes exactly.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from ..errors import NonFiniteError
from ..kernels import _threads
from ._checks import metric_weight
from .data import ArraySource, Epochs

__all__ = ["BatchIterator", "split_validation", "run_epochs"]


def split_validation(x, y, validation_split: float, who: str, w=None):
    """``(x, y, (x_val, y_val))`` with the last ``validation_split`` of the samples held out (Keras: before shuffling).

    With weights ``w``: ``(x, y, w, (x_val, y_val, w_val))``.
    """
    n_val = int(len(x) * validation_split)
    if n_val == 0 or n_val == len(x):
        raise ValueError(
            f"{who}: validation_split={validation_split} leaves {len(x) - n_val} training and {n_val} "
            f"validation samples."
        )
    if w is None:
        return x[:-n_val], y[:-n_val], (x[-n_val:], y[-n_val:])
    return x[:-n_val], y[:-n_val], w[:-n_val], (x[-n_val:], y[-n_val:], w[-n_val:])


class BatchIterator(ArraySource):
    """:class:`~normlab.models.data.ArraySource` without weights, one pass per epoch (kept for its callers)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool, entropy: int):
        super().__init__(x, y, None, batch_size=batch_size, shuffle=shuffle, entropy=entropy)

    @staticmethod
    def stream(entropy: int, *key: int) -> np.random.Generator:
        """The generator of one purpose (and epoch) of a run."""
        return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))

    def epoch(self, epoch: int):
        """Yield ``(step, x_batch, y_batch)`` for epoch ``epoch``."""
        for step, (xb, yb, _) in enumerate(self.passes(epoch)):
            yield step, xb, yb


def _batch_hooks(callbacks):
    """``(begin, end)``: the callbacks of a :class:`~normlab.callbacks.CallbackList` with their own
    ``on_train_batch_begin`` / ``on_train_batch_end`` (or the older ``on_batch_*`` names), in order;
    ``(None, None)`` for anything else (its hooks are called as they are).

    Decided once per ``fit``: a step then calls only the hooks that do something. Callback's own
    train-batch hooks only call the older names, themselves empty: a batch of scikit-learn's MLP
    (``fit``'s History and the estimator's epoch recorder) called eight methods per step for
    nothing. An empty ``end`` also means that nobody reads a step's logs: the loop then makes
    them once, when the epoch ends, from the same running sums (the same numbers).
    """
    from ..callbacks.base import CallbackList, own_hooks

    if type(callbacks) is not CallbackList:
        return None, None
    cbs = list(callbacks.callbacks)
    return ([cb for cb in cbs if own_hooks(cb, "on_train_batch_begin", "on_batch_begin")],
            [cb for cb in cbs if own_hooks(cb, "on_train_batch_end", "on_batch_end")])


def run_epochs(model, data: Epochs, callbacks, *, epochs: int, initial_epoch: int, validate=None,
               validation_freq: int = 1) -> dict:
    """The trainer loop: steps, metrics, validation and callbacks for epochs ``initial_epoch .. epochs - 1``.

    ``fit`` has called ``on_train_begin`` (inside its all-or-nothing setup).
    ``validate(callbacks)`` (if given) returns the validation logs; it runs
    after every ``validation_freq``-th epoch (counted from 1, as Keras does),
    between the callbacks' ``on_test_begin`` and ``on_test_end``.

    Epoch logs hold the mean training loss and metrics over the epoch
    (each batch weighted by its size; metrics by the sample weights),
    ``global_norm`` (the mean over the epoch's steps of the global gradient
    norm before clipping), the ``val_`` entries and ``learning_rate`` (the
    rate of the next step). Returns the last logs.

    Under :class:`normlab.distributed.DataParallel` on several ranks, rank
    0's state is broadcast first (after ``on_train_begin``, so that a
    restored backup reaches every rank), each rank steps on its rows of the
    global batches, and the logs are summed over the ranks before the
    callbacks see them; whether to stop is agreed on by all ranks.
    """
    optimizer = model.optimizer
    metrics = model.metrics
    logs: dict = {}
    dist = getattr(model, "_dist", None)
    if dist is not None:
        data, initial_epoch = dist.begin_fit(model, data, initial_epoch, callbacks)
    # steps of the first epoch already taken before an interruption (BackupAndRestore): their
    # batches are drawn and passed over, so the rest of the epoch sees the batches it would have
    skip = int(getattr(model, "_initial_step", 0) or 0)
    begin_hooks, end_hooks = _batch_hooks(callbacks)
    try:
        for epoch in range(initial_epoch, epochs):
            if dist is not None and epoch != initial_epoch:
                dist.sync_generators(model)  # a run is a function of rank 0's state at every epoch start
            callbacks.on_epoch_begin(epoch)
            for m in metrics:
                m.reset_state()
            loss_sum, seen, norm_sum, norm_count = 0.0, 0, 0.0, 0
            deferred = False  # the step's logs, read by no callback, are made once at the epoch's end
            first = True  # the epoch's first step taken (the same on every rank, whatever its shard)
            batches = data.epoch(epoch)
            # BLAS held on one thread for the epoch's steps rather than for each (kernels._threads.one_pool;
            # a step then finds it held): 2.5 us of a 250 us step of scikit-learn's MLP at batch 200. Only
            # where nothing but normlab's own code runs between two steps (arrays, no batch hook, no metric),
            # so the limit read when the epoch starts is the one each step would have read
            hold = _threads.one_pool() if (dist is None and begin_hooks == [] and end_hooks == [] and not metrics
                                           and type(data.source) is ArraySource) else contextlib.nullcontext()
            with hold:
                for step, xb, yb, wb in batches:
                    if skip:
                        skip -= 1
                        continue
                    if begin_hooks is None:
                        callbacks.on_train_batch_begin(step)
                    else:
                        for cb in begin_hooks:
                            cb.on_train_batch_begin(step, None)  # as CallbackList passes it
                    try:
                        value, out = model._train_step(xb, yb, wb)
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
                        deferred = False
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
                        m.update_state(yb, out, metric_weight(m, wb))
                    if dist is not None:
                        logs = dist.step_logs(loss_sum, seen, metrics)  # summed at the epoch's end if nobody reads them
                    elif end_hooks is None or end_hooks:
                        logs = {"loss": loss_sum / seen}
                        logs.update({m.name: m.result() for m in metrics})
                    else:
                        deferred = True
                    if end_hooks is None:
                        callbacks.on_train_batch_end(step, logs)
                    else:
                        for cb in end_hooks:
                            cb.on_train_batch_end(step, logs)
                    if dist is not None:
                        model.stop_training = dist.agree_stop(model.stop_training, first)
                        first = False
                    if model.stop_training:
                        break
            if hasattr(batches, "close"):
                batches.close()
            if data.stopped and seen == 0:
                break  # the input ran out before this epoch's first step: no epoch to report
            if deferred:  # the numbers the last step's logs would have held
                logs = {"loss": loss_sum / seen}
                logs.update({m.name: m.result() for m in metrics})
            logs = dict(logs) if dist is None else dist.epoch_logs(logs)
            if norm_count:
                logs["global_norm"] = norm_sum / norm_count
            lr = getattr(optimizer, "current_learning_rate", None)
            if validate is not None and (epoch + 1) % validation_freq == 0:
                # the callbacks see the validation as an evaluate call (Keras: on_test_begin, test-batch hooks, on_test_end)
                callbacks.on_test_begin()
                val = validate(callbacks)
                callbacks.on_test_end(val)
                logs.update({f"val_{k}": v for k, v in val.items()})
            if lr is not None:
                logs["learning_rate"] = float(lr)
            callbacks.on_epoch_end(epoch, logs)
            if dist is not None:
                model.stop_training = dist.any(model.stop_training)
            if model.stop_training or data.stopped:
                break
    finally:
        data.close()
        if epochs > 0 and getattr(optimizer, "use_ema", False) and getattr(optimizer, "_binding", None) is not None:
            # Keras's fit ends by writing the parameters' moving averages into them, even after an error
            optimizer.finalize_variable_values([layer.params[k] for layer, k in model._refs])
    callbacks.on_train_end(logs)
    return logs
