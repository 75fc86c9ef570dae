"""``fit`` and ``train_on_batch``: the training calls, from their arguments to the epochs loop.

They check their arguments, prepare the data (arrays, or a PyDataset or a
generator through :mod:`normlab.models.data`), the validation data and the
callbacks, and hand the loop over epochs and batches to
:func:`normlab.models.training.run_epochs`; each step is
:meth:`~normlab.models.base.BaseModel._train_step`.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from .._validation import Boolean, Interval, NoneOk, validate_params
from ..callbacks.base import Callback, CallbackList, History
from ..callbacks.progbar import ProgbarLogger, resolve_verbose
from ..utils import _random
from ._checks import _COUNT, _SIZE, _check_bool, _check_class_weight
from ._model_guards import _distributed
from .data import ArraySource, Epochs, is_stream, make_source
from .training import BatchIterator, run_epochs, split_validation

__all__ = ["FitMixin"]


class FitMixin:
    """:class:`~normlab.models.base.BaseModel`'s ``fit`` and ``train_on_batch``."""

    @_distributed
    def fit(
        self,
        x=None,
        y=None,
        batch_size: int | None = 32,
        epochs: int = 1,
        verbose: Any = "auto",
        callbacks: Sequence[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data=None,
        shuffle: bool = True,
        class_weight: dict | None = None,
        sample_weight=None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int = 1,
        seed: int | None = None,
    ) -> History:
        """Train for ``epochs`` epochs on ``(x, y)`` (Keras 3's arguments, in Keras's order, and ``seed``).

        Parameters
        ----------
        x : array, PyDataset, or generator / iterable of batches
            Arrays with ``y``; or a :class:`normlab.utils.PyDataset`, a
            generator or another iterable whose batches are ``(x, y)`` or
            ``(x, y, sample_weight)`` (then ``y`` and ``sample_weight`` are
            not given here). See :mod:`normlab.models.data`.
        y : array
        batch_size : int, default 32
            For arrays (a dataset or a generator makes its own batches).
        epochs : int, default 1
        verbose : "auto", 0, 1 or 2
            1: a progress bar per epoch on a terminal (elsewhere one line per
            epoch); 2: one line per epoch; 0: silent; "auto": 1 on an
            interactive terminal, else 2.
        callbacks : list of Callback
        validation_split : float in [0, 1)
            Fraction of the arrays, taken from the *end* before shuffling
            (Keras), held out for validation.
        validation_data : (x_val, y_val) or (x_val, y_val, w_val), PyDataset or iterable, optional
            Overrides ``validation_split``.
        shuffle : bool, default True
            Reshuffle the training samples (a PyDataset: its batch order) every epoch.
        class_weight : dict, optional
            ``{class: weight}``: each sample's loss and metrics are weighted
            by its class's weight (1 for a class not listed), times its
            ``sample_weight``. The class is the sparse label, the argmax of a
            one-hot target, or the rounded binary target.
        sample_weight : array of shape (N,), optional
            Per-sample weights of the loss and the metrics, as Keras weighs
            them (see :mod:`normlab.losses`).
        initial_epoch : int, default 0
            Epoch to start counting from (for resuming; a
            ``callbacks.BackupAndRestore`` sets it, and the steps of that
            epoch already taken, from its backup).
        steps_per_epoch : int, optional
            Steps per epoch. With arrays, an epoch of ``n`` steps continues
            through the (shuffled) data where the last one stopped: a
            validation, and an ``EarlyStopping`` check, every ``n`` steps.
            Required to bound an endless generator.
        validation_steps : int, optional
            Batches of a validation dataset or generator to evaluate (all by default).
        validation_batch_size : int, optional
            Batch size of the validation arrays (default ``batch_size``).
        validation_freq : int, default 1
            Validate after every ``validation_freq``-th epoch.
        seed : int, optional
            Seeds the shuffling and, if the model is not built yet, the weight
            initialization: the same seed gives the same run, bit for bit.

        Returns
        -------
        History
            ``history.history`` maps ``"loss"``, each metric, and their
            ``"val_"`` versions to per-epoch lists, plus
            ``"learning_rate"`` (the rate for the next step) and
            ``"global_norm"`` (the epoch's mean global L2 norm of the
            gradients before clipping, regularizer gradients included).
        """
        owner = f"{type(self).__name__}.fit"
        self._require_compiled("fit")
        validate_params(
            owner,
            {
                "batch_size": [NoneOk(), *_SIZE],
                "epochs": _COUNT,
                "initial_epoch": _COUNT,
                "validation_split": [Interval(numbers.Real, 0, 1, closed="left")],
                "shuffle": [Boolean()],
                "seed": [NoneOk(), *_COUNT],
                "steps_per_epoch": [NoneOk(), *_SIZE],
                "validation_steps": [NoneOk(), *_SIZE],
                "validation_batch_size": [NoneOk(), *_SIZE],
                "validation_freq": _SIZE,
                "class_weight": [NoneOk(), dict],
            },
            {"batch_size": batch_size, "epochs": epochs, "initial_epoch": initial_epoch,
             "validation_split": validation_split, "shuffle": shuffle, "seed": seed,
             "steps_per_epoch": steps_per_epoch, "validation_steps": validation_steps,
             "validation_batch_size": validation_batch_size, "validation_freq": validation_freq,
             "class_weight": class_weight},
        )
        batch_size = 32 if batch_size is None else int(batch_size)
        epochs, initial_epoch = int(epochs), int(initial_epoch)
        class_weight = _check_class_weight(class_weight, owner)
        verbose = resolve_verbose(verbose, owner)
        callbacks = self._check_callbacks(callbacks, owner)
        stream = is_stream(x)
        if x is None or (y is None and not stream):
            raise ValueError(f"{owner}: 'x' and 'y' are required (or 'x' a PyDataset or a generator of batches).")
        if stream and validation_split:
            raise ValueError(f"{owner}: 'validation_split' needs arrays; with a PyDataset or a generator, "
                             f"pass 'validation_data'.")
        # fit(seed=None) after normlab.utils.set_random_seed(s) is reproducible too, as in Keras
        entropy = np.random.SeedSequence(seed).entropy if seed is not None else _random.fresh_entropy()
        init_rng = BatchIterator.stream(entropy, 0)
        with self._all_or_nothing():
            if stream:
                source = make_source(x, y, sample_weight, self._stream_check("fit", class_weight, init_rng),
                                     owner=owner, shuffle=bool(shuffle), entropy=entropy)
            else:
                x, y = self._prepare_xy(x, y, "fit", init_rng)
                w = self._sample_weights(y, sample_weight, class_weight, owner, len(x))
                if validation_data is None and validation_split > 0:
                    if w is None:
                        x, y, validation_data = split_validation(x, y, validation_split, owner)
                    else:
                        x, y, w, validation_data = split_validation(x, y, validation_split, owner, w)
                self._prepare_training()
                source = ArraySource(x, y, w, batch_size=batch_size, shuffle=bool(shuffle), entropy=entropy)
            validate = None
            if validation_data is not None:
                validate = self._validation(validation_data, validation_batch_size or batch_size,
                                            validation_steps, owner)
            data = Epochs(source, steps_per_epoch, owner)
            self.history = History()
            # History (and the progress bar) after the user's callbacks, so that
            # what they add to the epoch logs is recorded (and shown), as in Keras
            cbs = callbacks + [self.history] + ([ProgbarLogger(verbose)] if verbose else [])
            cb = CallbackList(cbs, model=self, epochs=epochs, steps=data.steps, verbose=verbose,
                              **({"validation_freq": int(validation_freq)} if validate is not None else {}))
            self.stop_training = False
            self._initial_epoch = None  # a callback (BackupAndRestore) may choose the epoch to resume at
            self._initial_step = 0  # ... and the steps of that epoch already taken
            # a callback that rejects its arguments here (a checkpoint template, a folder) fails the call
            # before any step: the model is as it was
            cb.on_train_begin()
            if self._initial_epoch is not None:
                initial_epoch = int(self._initial_epoch)
            run_epochs(self, data, cb, epochs=epochs, initial_epoch=initial_epoch, validate=validate,
                       validation_freq=int(validation_freq))
        return self.history

    def _validation(self, validation_data, batch_size: int, steps, owner: str):
        """A callable giving the validation logs of ``validation_data`` (arrays, a PyDataset or an iterable)."""
        if is_stream(validation_data):
            source = make_source(validation_data, None, None, self._stream_check("evaluate"),
                                 owner=owner, arg="validation_data")
            return lambda callbacks=None: self._evaluate_source(source, steps, callbacks)
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(f"{owner}: 'validation_data' must be a tuple (x_val, y_val) or (x_val, y_val, "
                             f"sample_weight_val), a PyDataset or a generator.")
        try:
            xv, yv = self._prepare_xy(validation_data[0], validation_data[1], "fit")
            wv = None if len(validation_data) == 2 or validation_data[2] is None else \
                self.loss.check_sample_weight(validation_data[2], len(xv), owner)
        except (ValueError, TypeError) as exc:
            cls = type(exc) if type(exc) in (ValueError, TypeError) else ValueError
            raise cls(f"{owner}: 'validation_data' is not valid: {exc}") from exc
        return lambda callbacks=None: self._evaluate_arrays(xv, yv, batch_size, wv, callbacks)

    @_distributed
    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict: bool = False):
        """One optimizer step on ``(x, y)``; returns the loss (and metrics on this batch)."""
        who = "train_on_batch"
        owner = f"{type(self).__name__}.{who}"
        self._require_compiled(who)
        _check_bool(return_dict, "return_dict", owner)
        if class_weight is not None:
            validate_params(owner, {"class_weight": [dict]}, {"class_weight": class_weight})
            class_weight = _check_class_weight(class_weight, owner)
        # the step is a transaction of its own (see _train_step); the build and the binding are this one's
        with self._setup_guard():
            x, y = self._prepare_xy(x, y, who)
            w = None if sample_weight is None and class_weight is None else \
                self._sample_weights(y, sample_weight, class_weight, owner, len(x))
            self._prepare_training()
            if self._dist is not None:  # the global batch, split over the ranks
                res = self._dist.train_on_batch(self, x, y, w)
                return res if return_dict else (res["loss"] if len(res) == 1 else list(res.values()))
            value, out = self._train_step(x, y, w)
        return self._batch_result(value, y, out, return_dict, w)

    def _batch_result(self, value, y, out, return_dict, sample_weight=None):
        res = {"loss": float(value)}
        res.update(self._metric_results(y, out, sample_weight))
        if return_dict:
            return res
        return res["loss"] if len(res) == 1 else list(res.values())
