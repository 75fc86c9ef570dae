"""``KerasStyleClassifier`` / ``KerasStyleRegressor``: any normlab model as an estimator (the scikeras pattern).

``model`` is a function (or class) returning a normlab model, unbuilt or
built, compiled or not. Keyword arguments named ``model__<name>`` are passed
to it as ``<name>`` (so ``GridSearchCV`` can tune them:
``{"model__units": [32, 64]}``); if it takes a ``meta`` argument it gets a
dict describing the data::

    n_features_in_, n_outputs_, out_activation_   (the head the target needs: n_outputs_ units and
                                                   a normlab activation, "softmax" for binary and
                                                   multiclass, "sigmoid" for multilabel, "linear")
    classes_, n_classes_, target_type_            (classifiers; target_type_ as scikit-learn's type_of_target)

A model returned compiled trains as compiled. Otherwise it is compiled with
``optimizer`` (and ``learning_rate_init``, ``clipnorm``, ``lr_schedule``)
and ``loss``: by default binary cross-entropy for one sigmoid output (a
binary target may use one unit) or a multilabel target, sparse categorical
cross-entropy for a softmax over the classes, the mean squared error for regression. A classifier whose model is
compiled with ``categorical_crossentropy`` gets one-hot targets.

Each ``fit`` trains ``epochs`` epochs (Keras's semantics; stop earlier with a
normlab ``EarlyStopping`` in ``callbacks``, copied at every fit).
"""

from __future__ import annotations

import copy
import inspect
import numbers

from sklearn.utils._param_validation import Interval

from ..models.base import BaseModel
from ._base import LOOP_CONSTRAINTS
from ._heads import ClassifierBase, RegressorBase

__all__ = ["KerasStyleClassifier", "KerasStyleRegressor"]

_PREFIX = "model__"
_ACT = {"logistic": "sigmoid", "softmax": "softmax", "identity": "linear"}


class _KerasStyleMixin:
    _parameter_constraints = {
        "model": [None, callable],
        "loss": [None, str, dict, callable],
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "callbacks": [None, list],
        **LOOP_CONSTRAINTS,
    }

    def _init(self, model, loss, optimizer, learning_rate_init, clipnorm, lr_schedule, epochs, batch_size, shuffle,
              callbacks, random_state, verbose, warm_start, dtype, routed):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
        self.clipnorm = clipnorm
        self.lr_schedule = lr_schedule
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.dtype = dtype
        for key in routed:
            if not key.startswith(_PREFIX):
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {key!r} "
                                f"(arguments of the model function are named '{_PREFIX}<name>').")
        # private: scikit-learn's checks allow no public attribute that is not in the signature
        self._routed = dict(routed)

    # scikit-learn's get_params reads the signature: add the routed arguments
    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update(self._routed)
        return params

    def set_params(self, **params):
        for key in [k for k in params if k.startswith(_PREFIX)]:
            self._routed[key] = params.pop(key)
        return super().set_params(**params)

    def _epochs(self) -> int:
        return int(self.epochs)

    def _stop_rule(self):
        return None

    def _user_callbacks(self):
        return self.callbacks

    def _batch_size(self, n: int) -> int:
        return min(32, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    def _new_model(self, n_features: int, meta: dict, seed: int, n: int):
        owner = type(self).__name__
        if self.model is None:
            raise ValueError(f"{owner}.fit: 'model' must be a function that returns a normlab model, got None.")
        kwargs = {k[len(_PREFIX):]: v for k, v in self.get_params(deep=False).items() if k.startswith(_PREFIX)}
        try:
            takes_meta = "meta" in inspect.signature(self.model).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            takes_meta = False
        if takes_meta:
            info = {"n_features_in_": n_features, "n_outputs_": meta["n_outputs_"],
                    "out_activation_": _ACT[meta["out_activation_"]], "target_type_": meta["_target_type_"]}
            if "classes_" in meta:
                info.update(classes_=meta["classes_"], n_classes_=len(meta["classes_"]))
            kwargs["meta"] = info
        model = self.model(**kwargs)
        if not isinstance(model, BaseModel):
            raise TypeError(f"{owner}.fit: 'model' must return a normlab model (Sequential or Model), got "
                            f"{type(model).__name__}.")
        if not model.built:
            model.build((None, n_features), seed=seed)
        out = model.output_shape_for((None, n_features))
        if len(out) != 2:
            raise ValueError(f"{owner}.fit: the model's output must be (batch, units), got shape {tuple(out)}.")
        self._check_output_units(int(out[-1]), meta)
        if not model.compiled:
            loss = copy.deepcopy(self.loss) if self.loss is not None \
                else self._default_loss(meta["_target_type_"], int(out[-1]))
            model.compile(optimizer=self._make_optimizer(), loss=loss)
        return model


class KerasStyleClassifier(_KerasStyleMixin, ClassifierBase):
    """A classifier around a function that builds a normlab model (see :mod:`normlab.sklearn._wrappers`).

    Parameters
    ----------
    model : callable
        ``model(**model__kwargs[, meta=...]) -> normlab model``: a
        module-level function for ``GridSearchCV(n_jobs > 1)``.
    loss : str, dict or Loss, optional
        Default from the target and the output (module notes).
    optimizer : str or normlab Optimizer, default "adam"
    learning_rate_init : float, default 0.001
    clipnorm : float, optional
    lr_schedule : LearningRateSchedule, config dict or callable, optional
    epochs : int, default 1
        Epochs of every ``fit`` (Keras's default).
    batch_size : int or "auto", default 32
    shuffle : bool, default True
    callbacks : list of normlab callbacks, optional
    random_state : int, RandomState or None
        Seeds the weights of an unbuilt model, the shuffling and the noise layers.
    verbose : int, default 0
    warm_start : bool, default False
    dtype : {"float32", "float64"}, default "float32"
    **model__kwargs
        Passed to ``model`` without the prefix.

    Attributes
    ----------
    model_, classes_, n_features_in_, feature_names_in_, n_outputs_, loss_, loss_curve_, best_loss_, n_iter_, t_
        As in :class:`normlab.sklearn.MLPClassifier`.
    """

    def __init__(self, model=None, *, loss=None, optimizer="adam", learning_rate_init=0.001, clipnorm=None,
                 lr_schedule=None, epochs=1, batch_size=32, shuffle=True, callbacks=None, random_state=None,
                 verbose=0, warm_start=False, dtype="float32", **model__kwargs):
        self._init(model, loss, optimizer, learning_rate_init, clipnorm, lr_schedule, epochs, batch_size, shuffle,
                   callbacks, random_state, verbose, warm_start, dtype, model__kwargs)

    def _check_output_units(self, units: int, meta: dict) -> None:
        want = {1, 2} if meta["_target_type_"] == "binary" else {meta["n_outputs_"]}
        if units not in want:
            raise ValueError(f"{type(self).__name__}.fit: the model has {units} outputs; the target "
                             f"({meta['_target_type_']}, {len(meta['classes_'])} classes) needs "
                             f"{' or '.join(map(str, sorted(want)))}.")


class KerasStyleRegressor(_KerasStyleMixin, RegressorBase):
    """A regressor around a function that builds a normlab model (see :mod:`normlab.sklearn._wrappers`).

    Parameters and attributes are those of :class:`KerasStyleClassifier`
    (no ``classes_``); the default loss is the mean squared error.
    """

    def __init__(self, model=None, *, loss=None, optimizer="adam", learning_rate_init=0.001, clipnorm=None,
                 lr_schedule=None, epochs=1, batch_size=32, shuffle=True, callbacks=None, random_state=None,
                 verbose=0, warm_start=False, dtype="float32", **model__kwargs):
        self._init(model, loss, optimizer, learning_rate_init, clipnorm, lr_schedule, epochs, batch_size, shuffle,
                   callbacks, random_state, verbose, warm_start, dtype, model__kwargs)

    def _check_output_units(self, units: int, meta: dict) -> None:
        if units != meta["n_outputs_"]:
            raise ValueError(f"{type(self).__name__}.fit: the model has {units} outputs; the target has "
                             f"{meta['n_outputs_']} columns.")
