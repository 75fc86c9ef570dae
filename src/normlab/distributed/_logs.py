"""The logs of a data-parallel ``fit`` and the ranks' agreement on stopping.

Each rank keeps running sums of its own samples (the loss, the metrics'
states, which are additive over samples); the logs the callbacks see are
those sums over every rank, taken with one allreduce. :class:`LogsMixin`
(methods of :class:`~normlab.distributed.DataParallel`) decides once per
``fit`` which of these per-step collectives anybody needs: a step's logs
are summed only where a callback reads them, and ``stop_training`` is
agreed after each step only where a callback can change it between steps.
"""

from __future__ import annotations

import copy
import math

import numpy as np

__all__ = ["LogsMixin"]


class LogsMixin:
    """Summed logs and agreed stopping for :class:`~normlab.distributed.DataParallel` (its ``_comm``)."""

    def _sum(self, values) -> np.ndarray:
        return self._comm.allreduce_(np.asarray(values, dtype=np.float64), "the sum of losses and metrics")

    def _reduced(self, loss_sum: float, seen: float, metrics, mean: bool = True) -> dict:
        """Logs from this rank's running sums: the loss (``loss_sum / seen`` over all ranks, or the sum
        of ``loss_sum`` when not ``mean``) and every metric over all ranks' samples.

        A metric's state (its ``_state`` attributes: Keras's variables, a
        weighted total and count) is additive over samples, so the sum of the
        ranks' states is the state of one metric that saw every sample.
        """
        parts = [np.array([loss_sum, seen], np.float64)]
        for m in metrics:
            parts += [np.ravel(np.asarray(getattr(m, n), np.float64)) for n in _state_names(m)]
        buf = self._sum(np.concatenate(parts))
        logs = {"loss": float(buf[0] / buf[1]) if buf[1] else math.nan}
        if not mean:
            logs["loss"] = float(buf[0])
        at = 2
        for m in metrics:
            m = copy.copy(m)
            for n in _state_names(m):
                old = np.asarray(getattr(m, n))
                value = buf[at : at + old.size].reshape(old.shape)
                at += old.size
                setattr(m, n, float(value) if old.ndim == 0 else value.astype(old.dtype))
            logs[m.name] = m.result()
        return logs

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank (stop_training decisions)."""
        return self._comm.any(flag, "the agreement on stopping")

    def _watch_callbacks(self, callbacks) -> None:
        """Decide, alike on every rank, which per-step collectives of ``fit`` anybody needs.

        The logs of a step (summed over the ranks) are read only by a callback
        with its own ``on_train_batch_end`` (or ``on_batch_end``); the flag
        ``stop_training`` changes between two steps of an epoch only in a
        callback's per-batch hooks. Without such a callback (``verbose`` 0 or
        2, History, checkpoints and early stopping on epochs), the step's logs
        are summed once, when the epoch ends, from the same running sums (the
        same numbers), and the ranks agree on stopping once, after the
        epoch's first step (a flag set before it, in ``on_epoch_begin``,
        stops every rank there, as before); the agreement at the epoch's end
        stays. One allreduce here, per ``fit``, makes the choice the same on
        every rank (rank 0 alone shows a progress bar).
        """
        from ..callbacks import BackupAndRestore, EarlyStopping, ModelCheckpoint
        from ..callbacks.base import CallbackList, own_hooks
        from ..callbacks.progbar import ProgbarLogger, interactive

        reads = stops = False
        pending = list(getattr(callbacks, "callbacks", ()))
        while pending:
            cb = pending.pop()
            if isinstance(cb, CallbackList):
                pending += cb.callbacks
                continue
            own = own_hooks(cb, "on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
            if type(cb) is ProgbarLogger and own == ["on_train_batch_end"]:
                # it reads the running logs for its bar (rank 0, verbose=1, on a terminal) and never stops
                reads |= cb.verbose == 1 and self.is_chief and interactive(cb._stream())
                continue
            if own == ["on_train_batch_end"] and (type(cb) is EarlyStopping or (
                    type(cb) in (ModelCheckpoint, BackupAndRestore) and cb.save_freq == "epoch")):
                # their per-batch hook counts steps (and saves nothing per epoch-saving): no logs read, no stop
                continue
            reads |= "on_train_batch_end" in own or "on_batch_end" in own
            stops |= bool(own)
        flags = self._comm.allreduce_(np.array([float(reads), float(stops)]), "the choice of the per-step collectives")
        self._step_logs, self._step_stop = bool(flags[0] > 0), bool(flags[1] > 0)

    def step_logs(self, loss_sum: float, seen: int, metrics):
        """The logs of a step of ``fit`` over all ranks; unless a callback reads them, a stand-in summed at the
        epoch's end (:meth:`epoch_logs`)."""
        if self._step_logs:
            return self._reduced(loss_sum, seen, metrics)
        return _PendingLogs(loss_sum, seen, metrics)

    def epoch_logs(self, logs) -> dict:
        """``logs`` of an epoch's last step, summed over the ranks now if that was put off (a copy)."""
        if isinstance(logs, _PendingLogs):
            return self._reduced(logs.loss_sum, logs.seen, logs.metrics)
        return dict(logs)

    def agree_stop(self, flag: bool, first: bool = False) -> bool:
        """``stop_training`` after a step (the epoch's ``first``), agreed by the ranks when some rank may
        have changed it (see :meth:`_watch_callbacks`)."""
        return self.any(flag) if self._step_stop or first else flag

    def reduce_logs(self, loss_sum: float, seen: int, metrics) -> dict:
        return self._reduced(loss_sum, seen, metrics)


class _PendingLogs(dict):
    """A step's logs nobody reads: empty, holding what :meth:`DataParallel.epoch_logs` sums at the epoch's end.

    The loss sum and the count are this step's; the metrics' states, read
    then, have not changed since (nothing runs between the epoch's last
    step and its end but callbacks without per-batch hooks).
    """

    __slots__ = ("loss_sum", "seen", "metrics")

    def __init__(self, loss_sum, seen, metrics):
        super().__init__()
        self.loss_sum, self.seen, self.metrics = loss_sum, seen, metrics


def _state_names(metric) -> tuple:
    return getattr(metric, "_state", ("_total", "_count"))
