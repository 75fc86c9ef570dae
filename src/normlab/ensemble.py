"""Bagging: an ensemble of networks trained on bootstrap samples (notes, "Bagging").

Each of ``n_estimators`` models is built by ``build_fn()`` (which returns a
compiled model) and trained on a sample of ``max_samples * n`` rows drawn
from the training set, with replacement when ``bootstrap`` is true. The
ensemble predicts the average of the members' outputs (class probabilities
for classifiers). The out-of-bag score evaluates each training row with the
average of the members that did not see it (rows seen by every member are
left out), giving a validation estimate without a held-out set.
"""

from __future__ import annotations

import numbers
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ._validation import Boolean, Callable, Interval, NoneOk, validate_params

__all__ = ["Bagging"]


def _train_member(build_fn, x, y, idx, fit_kwargs, seed):
    model = build_fn()
    model.fit(x[idx], y[idx], seed=seed, **fit_kwargs)
    # plain data crosses the process boundary: config and arrays
    return model.get_config(), model.get_weights()


class Bagging:
    """Bootstrap aggregating of normlab models.

    Parameters
    ----------
    build_fn : callable
        ``build_fn() -> compiled model``. With ``n_jobs > 1`` it must be
        importable from a worker process (a module-level function).
    n_estimators : int, default 10
    max_samples : float in (0, 1], default 1.0
        Fraction of the training rows drawn for each member.
    bootstrap : bool, default True
        Draw with replacement (bagging proper); without, members see
        distinct random subsets.
    seed : int, optional
        Seeds the samples and each member's training.
    n_jobs : int, default 1
        Worker processes used to train members in parallel.

    Attributes
    ----------
    estimators_ : list of models
    samples_ : list of index arrays (rows each member was trained on)
    oob_score_ : float
        Out-of-bag accuracy (classification: integer labels and
        probabilistic outputs) or negative mean squared error (regression).
    oob_prediction_ : ndarray
        Averaged out-of-bag outputs (NaN rows where no member left the row out).
    """

    _param_constraints = {
        "build_fn": [Callable()],
        "n_estimators": [Interval(numbers.Integral, 1, None)],
        "max_samples": [Interval(numbers.Real, 0, 1, closed="right")],
        "bootstrap": [Boolean()],
        "seed": [NoneOk(), Interval(numbers.Integral, 0, None)],
        "n_jobs": [Interval(numbers.Integral, 1, None)],
    }

    def __init__(self, build_fn, n_estimators: int = 10, max_samples: float = 1.0, bootstrap: bool = True, seed=None, n_jobs: int = 1):
        validate_params(type(self).__name__, self._param_constraints, dict(
            build_fn=build_fn, n_estimators=n_estimators, max_samples=max_samples,
            bootstrap=bootstrap, seed=seed, n_jobs=n_jobs))
        self.build_fn = build_fn
        self.n_estimators = int(n_estimators)
        self.max_samples = float(max_samples)
        self.bootstrap = bool(bootstrap)
        self.seed = seed
        self.n_jobs = int(n_jobs)

    def fit(self, x, y, **fit_kwargs) -> "Bagging":
        """Train every member; ``fit_kwargs`` (epochs, batch_size, ...) go to each ``fit``."""
        from .models.sequential import Sequential

        x = np.asarray(x)
        y = np.asarray(y)
        if len(x) != len(y) or len(x) < 2:
            raise ValueError(f"Bagging.fit: 'x' and 'y' must have the same number (>= 2) of rows, got {len(x)} and {len(y)}.")
        fit_kwargs.setdefault("verbose", 0)
        if "seed" in fit_kwargs:
            raise ValueError("Bagging.fit: pass the seed to Bagging(seed=...), not to fit.")
        n = len(x)
        k = max(1, int(round(self.max_samples * n)))
        ss = np.random.SeedSequence(self.seed)
        children = ss.spawn(self.n_estimators)
        samples, seeds = [], []
        for child in children:
            rng = np.random.default_rng(child)
            samples.append(np.sort(rng.choice(n, size=k, replace=self.bootstrap)))
            seeds.append(int(rng.integers(2**31 - 1)))
        if self.n_jobs == 1:
            results = [_train_member(self.build_fn, x, y, idx, fit_kwargs, s) for idx, s in zip(samples, seeds)]
        else:
            with ProcessPoolExecutor(max_workers=self.n_jobs) as pool:
                futures = [pool.submit(_train_member, self.build_fn, x, y, idx, fit_kwargs, s) for idx, s in zip(samples, seeds)]
                results = [f.result() for f in futures]
        self.estimators_ = []
        for (config, weights) in results:
            model = self.build_fn()  # compiled like the members, then given their weights
            trained = Sequential.from_config(config)
            if not model.built:
                model.build(tuple(trained.input_shape))
            model.set_weights(weights)
            self.estimators_.append(model)
        self.samples_ = samples
        self._oob(x, y)
        return self

    def _oob(self, x, y):
        n = len(x)
        total = None
        counts = np.zeros(n)
        for model, idx in zip(self.estimators_, self.samples_):
            out_mask = np.ones(n, bool)
            out_mask[idx] = False
            if not out_mask.any():
                continue
            pred = model.predict(x[out_mask])
            if total is None:
                total = np.zeros((n,) + pred.shape[1:])
            total[out_mask] += pred
            counts[out_mask] += 1
        if total is None:
            self.oob_prediction_ = None
            self.oob_score_ = float("nan")
            return
        seen = counts > 0
        pred = np.full_like(total, np.nan)
        pred[seen] = total[seen] / counts[seen].reshape((-1,) + (1,) * (total.ndim - 1))
        self.oob_prediction_ = pred
        if np.issubdtype(y.dtype, np.integer) and pred.ndim == 2 and pred.shape[1] > 1:
            self.oob_score_ = float(np.mean(pred[seen].argmax(1) == y[seen]))
        elif np.issubdtype(y.dtype, np.integer) and pred.ndim == 2 and pred.shape[1] == 1:
            self.oob_score_ = float(np.mean((pred[seen, 0] > 0.5) == (y[seen] > 0.5)))
        else:
            self.oob_score_ = -float(np.mean((pred[seen] - y[seen].reshape(pred[seen].shape)) ** 2))

    def _check_fitted(self):
        if not hasattr(self, "estimators_"):
            raise RuntimeError("Bagging: call fit() first.")

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Average of the members' outputs (probabilities for classifiers)."""
        self._check_fitted()
        return np.mean([m.predict(x, batch_size=batch_size) for m in self.estimators_], axis=0)

    def score(self, x, y) -> float:
        """Accuracy of the averaged prediction (integer labels), else negative MSE."""
        pred = self.predict(x)
        y = np.asarray(y)
        if np.issubdtype(y.dtype, np.integer) and pred.ndim == 2 and pred.shape[1] > 1:
            return float(np.mean(pred.argmax(1) == y))
        return -float(np.mean((pred - y.reshape(pred.shape)) ** 2))
