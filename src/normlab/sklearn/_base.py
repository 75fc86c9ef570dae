"""What every normlab estimator shares: data checks, seeds, the training loop and its stopping rule.

The estimators follow scikit-learn's conventions: ``__init__`` stores its
arguments untouched, ``fit`` validates them (``_parameter_constraints``,
scikit-learn's own declarations and message template), learned attributes
end in ``_``. A fit drives one call of the normlab model's own ``fit``; a
private callback records ``loss_curve_`` and applies scikit-learn's stopping
rule after every epoch, so training runs on normlab's one executor and not
on a loop of its own.

Stopping rule (scikit-learn's ``MLPClassifier`` with ``solver="adam"``)
-----------------------------------------------------------------------
Without ``early_stopping``: an epoch whose training loss is not below
``best_loss_ - tol`` counts as no improvement. With it: the score
(accuracy or R^2) on the held-out ``validation_fraction`` of the training
data must exceed ``best_validation_score_ + tol``; the weights of the best
epoch are put back at the end. Training stops once more than
``n_iter_no_change`` epochs in a row did not improve; reaching ``max_iter``
first warns with a ``ConvergenceWarning``. ``partial_fit`` runs exactly one
epoch and never stops early.
"""

from __future__ import annotations

import copy
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)

from .. import optimizers as _optimizers
from ..callbacks.base import Callback
from ..models.batchnorm_tools import recompute_batchnorm_statistics
from ..layers.normalization import BatchNormalization

__all__ = ["NormlabEstimatorBase", "LOOP_CONSTRAINTS", "STOP_CONSTRAINTS"]

_OPTIMIZER_NAMES = {"adam", "adamw", "sgd", "rmsprop", "adagrad", "nadam", "lion"}

#: the parameters of the training loop, declared once for every estimator of this package
LOOP_CONSTRAINTS = {
    "optimizer": [StrOptions(_OPTIMIZER_NAMES), HasMethods(["get_config"])],
    "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
    "clipnorm": [None, Interval(numbers.Real, 0, None, closed="neither")],
    "lr_schedule": [None, dict, callable],
    "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "dtype": [StrOptions({"float32", "float64"}), type],
}
#: scikit-learn's stopping rule (the MLPs)
STOP_CONSTRAINTS = {
    "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
    "tol": [Interval(numbers.Real, 0, None, closed="left")],
}


#: a fit of fewer steps replaces the batch-norm moving averages by the exact statistics of its data: with
#: momentum 0.9 they keep 0.9 ** steps of their initial values (3e-5 after 100 steps). Longer fits keep the
#: moving averages: recomputing costs a forward pass in float64 sums, 10% of a 10-epoch fit on 200k x 50.
EXACT_STATISTICS_BELOW_STEPS = 100


def _network_dtype(dtype, owner: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype("float32"), np.dtype("float64")):
        raise ValueError(f"The 'dtype' parameter of {owner} must be 'float32' or 'float64'. Got {dtype!r} instead.")
    return dt


class _EpochRecorder(Callback):
    """Records each epoch's loss and applies scikit-learn's stopping rule (see the module docstring)."""

    def __init__(self, est, state: dict, n_samples: int, validation, can_stop: bool):
        super().__init__()
        self.est, self.state, self.n_samples = est, state, n_samples
        self.validation, self.can_stop = validation, can_stop

    def on_epoch_end(self, epoch, logs=None):
        s, est = self.state, self.est
        loss = float(logs["loss"])
        s["loss_curve"].append(loss)
        s["n_iter"] += 1
        s["t"] += self.n_samples
        if self.validation is not None:
            X_val, y_val = self.validation
            score = est._score_model(self.model, X_val, y_val)
            s["validation_scores"].append(score)
            s["no_improvement"] = s["no_improvement"] + 1 if score < s["best_validation_score"] + est.tol else 0
            if score > s["best_validation_score"]:
                s["best_validation_score"] = score
                s["best_weights"] = self.model.get_weights()
        else:
            if self.can_stop:
                s["no_improvement"] = s["no_improvement"] + 1 if loss > s["best_loss"] - est.tol else 0
            s["best_loss"] = min(s["best_loss"], loss)
        if est.verbose:
            print(f"Iteration {s['n_iter']}, loss = {loss:.8f}")
        if self.can_stop and s["no_improvement"] > est.n_iter_no_change:
            s["converged"] = True
            self.model.stop_training = True


class NormlabEstimatorBase(BaseEstimator):
    """Training loop shared by :mod:`normlab.sklearn`'s estimators.

    A subclass provides ``_epochs()`` (epochs of one ``fit``),
    ``_new_model(n_features, targets_meta)`` (a compiled model),
    ``_encode_y(y, first, classes)`` and ``_score_model(model, X, y)``.
    """

    _estimator_kind = "base"

    # ------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.non_deterministic = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"_xfail_checks": dict(self._xfail_checks())}

    def _xfail_checks(self):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "minibatch training with batch normalization: a repeated sample enters the minibatches and the "
                "batch statistics as several rows, a weighted one as one row with its weight, so the two fits "
                "see different batches (scikit-learn's own MLPs pass this check only with full-batch training: "
                "lbfgs, or sgd on fewer samples than one batch)"
            ),
        }

    # ------------------------------------------------------------ helpers
    @property
    def _owner(self) -> str:
        return type(self).__name__

    def _seed_stream(self) -> np.random.RandomState:
        return check_random_state(self.random_state)

    @staticmethod
    def _draw_seed(rs: np.random.RandomState) -> int:
        return int(rs.randint(0, np.iinfo(np.int32).max))

    def _batch_size(self, n: int) -> int:
        return min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    def _validate_X(self, X, reset: bool):
        X = _validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))
        return self._cast(X)

    def _cast(self, X):
        dt = self._dtype_ if hasattr(self, "_dtype_") else _network_dtype(self.dtype, self._owner)
        if X.dtype != dt:
            X = X.astype(dt)
            if not np.isfinite(X).all():
                raise ValueError(f"{self._owner}: X holds values too large for the network's dtype {dt.name} "
                                 f"(pass dtype='float64' to train in float64).")
        return X

    def _make_optimizer(self):
        """A fresh optimizer: the name or a copy of the given object (never the object itself), with lr_schedule and clipnorm."""
        lr = self.learning_rate_init
        if self.lr_schedule is not None:
            lr = self.lr_schedule if callable(self.lr_schedule) and not hasattr(self.lr_schedule, "get_config") \
                else _optimizers.schedules.get(copy.deepcopy(self.lr_schedule))
            if hasattr(lr, "get_config"):
                lr = _optimizers.schedules.deserialize(_optimizers.schedules.serialize(lr))
        if isinstance(self.optimizer, str):
            extra = {} if self.clipnorm is None else {"clipnorm": float(self.clipnorm)}
            return _optimizers.get(self.optimizer, learning_rate=lr, **extra)
        config = _optimizers.serialize(self.optimizer)
        if self.clipnorm is not None:
            config["config"]["clipnorm"] = float(self.clipnorm)
        if self.lr_schedule is not None:
            opt = _optimizers.deserialize(config)
            opt.learning_rate = lr
            return opt
        return _optimizers.deserialize(config)

    def _check_sample_weight(self, sample_weight, X):
        if sample_weight is None:
            return None
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if (sw < 0).any():
            raise ValueError(f"{self._owner}.fit: sample_weight must be non-negative.")
        total = sw.sum()
        if not total > 0:
            raise ValueError(f"{self._owner}.fit: sample_weight sums to zero; at least one sample must have a "
                             f"positive weight.")
        # mean 1: the learning rate means the same whatever the weights' scale (ones stay exactly ones)
        return (sw * (len(sw) / total)).astype(self._dtype_ if hasattr(self, "_dtype_") else np.float32)

    # ------------------------------------------------------------ fitting
    def _fit(self, X, y, sample_weight=None, *, incremental: bool, classes=None):
        previous = self.__dict__.get("_dtype_")
        try:
            return self._fit_checked(X, y, sample_weight, incremental=incremental, classes=classes)
        except BaseException:
            # a failed fresh fit must not leave the fitted network beside another dtype
            if previous is None:
                self.__dict__.pop("_dtype_", None)
            else:
                self._dtype_ = previous
            raise

    def _fit_checked(self, X, y, sample_weight, *, incremental: bool, classes):
        self._validate_params()
        fitted = hasattr(self, "model_")
        reuse = fitted and (incremental or self.warm_start)
        if not reuse:
            dtype = _network_dtype(self.dtype, self._owner)
        X, y = self._validate_X_y(X, y, reset=not reuse)
        if not reuse:
            self._dtype_ = dtype
        X = self._cast(X)
        y_enc, meta = self._encode_y(y, first=not reuse, classes=classes, incremental=incremental)
        sw = self._check_sample_weight(sample_weight, X)
        self._check_weighted_targets(y_enc, sw)
        if reuse:
            rs = self._random_state
            model = self.model_
            state = dict(loss_curve=list(self.loss_curve_), n_iter=self.n_iter_, t=self.t_,
                         validation_scores=None if self.validation_scores_ is None else list(self.validation_scores_),
                         best_loss=np.inf if self.best_loss_ is None else self.best_loss_,
                         best_validation_score=-np.inf if self.best_validation_score_ is None
                         else self.best_validation_score_, no_improvement=0 if not incremental else self._no_improvement)
        else:
            rs = self._seed_stream()
            model = self._new_model(X.shape[1], meta, self._draw_seed(rs), len(X))
            state = dict(loss_curve=[], n_iter=0, t=0, validation_scores=None, best_loss=np.inf,
                         best_validation_score=-np.inf, no_improvement=0)
        rule = None if incremental else self._stop_rule()
        early = rule is not None and self.early_stopping
        validation = None
        X_fit, y_fit, w_fit = X, y_enc, sw
        if early:
            X_fit, X_val, y_fit, y_val, w_fit = self._split_validation(X, y_enc, sw, rs)
            validation = (X_val, y_val)
            if state["validation_scores"] is None:
                state["validation_scores"] = []
        state["best_weights"] = None
        state["converged"] = False
        start_iter = state["n_iter"]
        epochs = 1 if incremental else self._epochs()
        batch = self._batch_size(len(X_fit))
        recorder = _EpochRecorder(self, state, len(X_fit), validation, can_stop=rule is not None)
        callbacks = [copy.deepcopy(c) for c in (self._user_callbacks() or [])]
        model.fit(X_fit, self._targets_for(model, y_fit), batch_size=batch, epochs=epochs, verbose=0,
                  callbacks=callbacks + [recorder], sample_weight=w_fit, shuffle=self.shuffle,
                  seed=self._draw_seed(rs))
        if early and state["best_weights"] is not None:
            model.set_weights(state["best_weights"])
        steps = (state["n_iter"] - start_iter) * -(-len(X_fit) // batch)
        if not incremental and 1 < len(X_fit) and steps < EXACT_STATISTICS_BELOW_STEPS and any(
                isinstance(layer, BatchNormalization) for layer in model.layers):
            # the population statistics of the training data replace moving averages that may still hold
            # their initial values (Chainer's finetune)
            recompute_batchnorm_statistics(model, X_fit, batch_size=max(batch, 1024))
        if rule is not None and not state["converged"] and state["n_iter"] - start_iter >= epochs:
            warnings.warn(f"{self._owner}: maximum iterations ({epochs}) reached and the optimization hasn't "
                          f"converged yet.", ConvergenceWarning)
        # everything learned is set together, after training succeeded
        self.model_ = model
        self._random_state = rs
        self.loss_curve_ = state["loss_curve"]
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = state["n_iter"]
        self.t_ = state["t"]
        self._no_improvement = state["no_improvement"]
        if state["validation_scores"] is not None:
            self.validation_scores_ = state["validation_scores"]
            self.best_validation_score_ = float(state["best_validation_score"])
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = float(state["best_loss"])
        for key, value in meta.items():
            setattr(self, key, value)
        return self

    def _stop_rule(self) -> bool | None:
        """True where ``fit`` applies scikit-learn's stopping rule (the MLPs); None: plain epochs (Keras style)."""
        return True

    def _user_callbacks(self):
        return None

    def _targets_for(self, model, y_enc):
        return y_enc

    def _split_validation(self, X, y, sw, rs):
        from sklearn.model_selection import train_test_split

        stratify = y if self._stratify(y) else None
        arrays = (X, y) if sw is None else (X, y, sw)
        parts = train_test_split(*arrays, random_state=self._draw_seed(rs), test_size=self.validation_fraction,
                                 stratify=stratify)
        if sw is None:
            X_tr, X_val, y_tr, y_val = parts
            w_tr = None
        else:
            X_tr, X_val, y_tr, y_val, w_tr, _ = parts
        if len(X_val) < 2:
            raise ValueError(f"{self._owner}.fit: early_stopping holds out validation_fraction="
                             f"{self.validation_fraction} of {len(X)} samples, fewer than 2; raise "
                             f"validation_fraction or pass more data.")
        return X_tr, X_val, y_tr, y_val, w_tr

    def _stratify(self, y) -> bool:
        return False

    def _check_weighted_targets(self, y_enc, sw) -> None:
        return None

    # ------------------------------------------------------------ public
    def fit(self, X, y, sample_weight=None):
        """Train from scratch (or, with ``warm_start``, from the current weights) for at most ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Cast to the network's ``dtype`` (float32 by default) once.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional
            Each sample's weight in the loss, rescaled to mean 1 (so that
            their scale does not change the learning rate).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _predict_raw(self, X):
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        return self.model_.predict(X, batch_size=max(1024, self._batch_size(len(X))), verbose=0)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")
