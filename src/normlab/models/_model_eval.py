"""``evaluate`` and ``predict``, and their one-batch forms: the model in inference mode.

Over arrays, a PyDataset or a generator of batches; the loss (with
penalties) and the metrics are weighed as Keras weighs them. Each call keeps
its own metric state, so that several threads may evaluate one model, also
during another thread's ``fit``. Under a distribution strategy each rank
runs its part (:mod:`normlab.distributed`).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np

from .._validation import NoneOk, validate_params
from ..callbacks.base import CallbackList
from ..callbacks.progbar import resolve_verbose
from ._checks import metric_weight, _SIZE, _check_bool, _check_int
from ._model_guards import _distributed
from .data import is_stream, make_source

__all__ = ["EvaluateMixin"]


class EvaluateMixin:
    """:class:`~normlab.models.base.BaseModel`'s ``evaluate``, ``predict``, ``test_on_batch`` and ``predict_on_batch``."""

    def _evaluate_source(self, source, steps: int | None = None, callbacks=None) -> dict:
        """Loss and metrics over the batches of a stream source (at most ``steps``)."""
        batches = source.passes(0)
        if steps is not None:
            batches = (b for _, b in zip(range(steps), batches))
        return self._evaluate_batches(batches, callbacks)

    def _evaluate_batches(self, batches, callbacks=None) -> dict:
        """Loss (with penalties) and metrics over ``(x, y, w)`` batches, as Keras weighs them.

        The loss is the mean of the batches' losses weighted by their sizes
        (with sample weights, each batch's is ``sum_i w_i l_i / n``); each
        metric is its weighted mean over all samples. ``callbacks`` get the
        test-batch hooks with the running values.
        """
        loss = self.loss
        metrics = [copy.copy(m) for m in self.metrics]
        for m in metrics:
            m.reset_state()
        total, seen = 0.0, 0
        logs: dict = {}
        self.stop_evaluating = False  # Keras: a callback may set it to end the loop after its batch
        for i, (xb, yb, wb) in enumerate(batches):
            if callbacks is not None:
                callbacks.on_test_batch_begin(i)
            out = self._forward(xb, False)
            if wb is not None or not loss._plain:
                value = loss.weighted_value(yb, out, wb)
            else:
                value = loss.value_from_logits(yb, out) if loss.from_logits else loss.value(yb, out)
            # Keras: each batch's loss with the penalties of that batch (an activity penalty is the batch's own)
            total += (value + self._regularization_loss()) * len(xb)
            seen += len(xb)
            for m in metrics:
                m.update_state(yb, out, metric_weight(m, wb))
            if callbacks is not None:
                logs = {"loss": total / seen, **{m.name: m.result() for m in metrics}}
                callbacks.on_test_batch_end(i, logs)
                if self.stop_evaluating:
                    break
        if seen == 0:
            raise ValueError(f"{type(self).__name__}: the evaluation data gave no batch.")
        res = {"loss": total / seen}
        res.update({m.name: m.result() for m in metrics})
        return res

    def _has_activity_penalty(self) -> bool:
        """True if a layer's penalty depends on the batch it saw (ActivityRegularization)."""
        from ..layers.activity_regularization import ActivityRegularization

        return any(isinstance(layer, ActivityRegularization) for layer, _ in self._program()[0])

    def _metric_results(self, y, out, sample_weight=None) -> dict:
        """Each metric on ``(y, out)``, accumulated in a copy: a call's metric state is its own.

        Two threads evaluating one model, or an ``evaluate`` during another
        thread's ``fit``, never see each other's running sums.
        """
        res = {}
        for m in self.metrics:
            m = copy.copy(m)
            m.reset_state()
            m.update_state(y, out, metric_weight(m, sample_weight))
            res[m.name] = m.result()
        return res

    def _predict_arrays(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        if self._dist is not None:  # each rank its part, gathered in order
            return self._dist.predict_arrays(self, x, batch_size)
        return self._predict_local(x, batch_size)

    def _predict_local(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        outs = [self._forward(x[i : i + batch_size], False) for i in range(0, len(x), batch_size)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def _predict_batches(self, batches, callbacks, owner: str) -> np.ndarray:
        """Outputs of each batch, with the predict-batch hooks (Keras's ``{"outputs": ...}`` logs)."""
        outs = []
        self.stop_predicting = False  # Keras: a callback may set it to end the loop after its batch
        for i, xb in enumerate(batches):
            callbacks.on_predict_batch_begin(i)
            outs.append(self._forward(xb, False))
            callbacks.on_predict_batch_end(i, {"outputs": outs[-1]})
            if self.stop_predicting:
                break
        if not outs:
            raise ValueError(f"{owner}: 'x' gave no batch.")
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def _evaluate_arrays(self, x, y, batch_size, sample_weight=None, callbacks=None) -> dict:
        if self._dist is not None:  # each rank its part, the sums over all ranks
            return self._dist.evaluate_arrays(self, x, y, batch_size, sample_weight, callbacks)
        if (callbacks is None or not callbacks.callbacks) and not self._has_activity_penalty():
            # one pass over all outputs: the loss of the whole set at once
            out = self._predict_arrays(x, batch_size)
            loss = self.loss
            if sample_weight is not None or not loss._plain:
                value = loss.weighted_value(y, out, sample_weight)
            else:
                value = loss.value_from_logits(y, out) if loss.from_logits else loss.value(y, out)
            res = {"loss": value + self._regularization_loss()}
            res.update(self._metric_results(y, out, sample_weight))
            return res
        w = sample_weight
        batches = ((x[i:i + batch_size], y[i:i + batch_size], None if w is None else w[i:i + batch_size])
                   for i in range(0, len(x), batch_size))
        return self._evaluate_batches(batches, callbacks)

    @_distributed
    def evaluate(self, x=None, y=None, batch_size: int | None = 32, verbose: Any = "auto", sample_weight=None,
                 steps: int | None = None, callbacks=None, return_dict: bool = False):
        """Loss (with penalties) and metrics on ``(x, y)`` in inference mode (Keras 3's arguments and order).

        ``x`` may be a PyDataset or a generator of ``(x, y)`` /
        ``(x, y, sample_weight)`` batches (then ``steps`` bounds the
        batches read). Safe to call from several threads at once, and
        during another thread's ``fit`` (which then sees its weights change
        between batches): each call keeps its own metric state.
        """
        who = "evaluate"
        owner = f"{type(self).__name__}.{who}"
        self._require_compiled(who)
        batch_size = _check_int(32 if batch_size is None else batch_size, "batch_size", owner, 1)
        validate_params(owner, {"steps": [NoneOk(), *_SIZE]}, {"steps": steps})
        _check_bool(return_dict, "return_dict", owner)
        verbose = resolve_verbose(verbose, owner)
        cb = CallbackList(self._check_callbacks(callbacks, owner), model=self)
        with self._building():
            if is_stream(x):
                source = make_source(x, y, sample_weight, self._stream_check(who), owner=owner)
                cb.on_test_begin()
                res = self._evaluate_source(source, steps, cb)
            else:
                x, y = self._prepare_xy(x, y, who)
                w = None if sample_weight is None else self.loss.check_sample_weight(sample_weight, len(x), owner)
                cb.on_test_begin()
                res = self._evaluate_arrays(x, y, batch_size, w, cb)
            cb.on_test_end(res)
        if verbose and (self._dist is None or self._dist.is_chief):
            print(" - ".join(f"{k}: {v:.4f}" for k, v in res.items()), file=sys.stdout)
        if return_dict:
            return res
        return res["loss"] if len(res) == 1 else list(res.values())

    @_distributed
    def test_on_batch(self, x, y=None, sample_weight=None, return_dict: bool = False):
        """Loss and metrics on one batch in inference mode."""
        who = "test_on_batch"
        owner = f"{type(self).__name__}.{who}"
        self._require_compiled(who)
        _check_bool(return_dict, "return_dict", owner)
        with self._building():
            x, y = self._prepare_xy(x, y, who)
            w = None if sample_weight is None else self.loss.check_sample_weight(sample_weight, len(x), owner)
            res = self._evaluate_arrays(x, y, len(x), w)
        if return_dict:
            return res
        return res["loss"] if len(res) == 1 else list(res.values())

    @_distributed
    def predict(self, x, batch_size: int | None = 32, verbose: Any = "auto", steps: int | None = None,
                callbacks=None) -> np.ndarray:
        """Outputs for ``x`` in inference mode, computed in batches (thread-safe).

        ``x`` may be a PyDataset or a generator of batches ``(x,)``,
        ``(x, y)`` or ``x`` alone (targets are ignored); ``steps`` bounds
        the batches read.
        """
        who = "predict"
        owner = f"{type(self).__name__}.{who}"
        batch_size = _check_int(32 if batch_size is None else batch_size, "batch_size", owner, 1)
        validate_params(owner, {"steps": [NoneOk(), *_SIZE]}, {"steps": steps})
        resolve_verbose(verbose, owner)  # checked; predict shows no progress
        cb = CallbackList(self._check_callbacks(callbacks, owner), model=self)
        with self._building():
            if is_stream(x):
                source = make_source(x, None, None, self._stream_check(who, targets=False), owner=owner)
                cb.on_predict_begin()
                out = self._predict_batches((xb for _, (xb, _, _) in zip(range(steps or 2**62), source.passes(0))),
                                            cb, owner)
            else:
                x = self._inference_input(x, who)
                cb.on_predict_begin()
                if cb.callbacks:
                    out = self._predict_batches((x[i:i + batch_size] for i in range(0, len(x), batch_size)), cb, owner)
                else:
                    out = self._predict_arrays(x, batch_size)
            cb.on_predict_end()
        return out

    def predict_on_batch(self, x) -> np.ndarray:
        with self._building():
            return self._forward(self._inference_input(x, "predict_on_batch"), False)
