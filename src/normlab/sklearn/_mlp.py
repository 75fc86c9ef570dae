"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's MLP parameters on a normlab network.

The network for ``hidden_layer_sizes=(h1, h2, ...)``::

    [Dense(h, use_bias=False) -> BatchNormalization -> Activation -> Dropout]  per hidden layer
    Dense(n_outputs, activation=sigmoid | softmax | linear)

With ``batch_norm=False`` a hidden layer is ``Dense(h, activation)`` (with a
bias); ``Dropout`` is there only when ``dropout > 0``.

Conventions, and where they differ from scikit-learn
----------------------------------------------------
- ``alpha`` is scikit-learn's L2 penalty ``alpha / (2 b) * sum(W ** 2)``
  per batch of ``b`` samples, on the kernels (not the biases): a Keras
  ``L2(l2=alpha / (2 * batch_size))`` regularizer.
- ``loss_curve_`` holds normlab's training loss of each epoch (the mean of
  the batch losses, penalty included): the cross-entropy for classifiers,
  the mean squared error for regressors (scikit-learn records half of it).
- Batch normalization uses ``momentum=0.9`` for its moving averages; after
  a ``fit`` of fewer than 100 steps (where they may still hold their initial
  values) they are replaced by the exact statistics of the training data
  (:func:`normlab.recompute_batchnorm_statistics`); ``partial_fit`` keeps
  the moving averages. A trailing batch of one sample is normalized with the
  moving statistics (``batch_of_one="moving_statistics"``).
"""

from __future__ import annotations

import numbers

from sklearn.utils._param_validation import Interval, StrOptions

from .. import layers as _layers
from .. import regularizers as _regularizers
from ..models import Sequential
from ._base import LOOP_CONSTRAINTS, STOP_CONSTRAINTS
from ._heads import ClassifierBase, RegressorBase

__all__ = ["MLPClassifier", "MLPRegressor", "build_mlp"]

#: scikit-learn's names first, then normlab's own activations
ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "elu": "elu", "gelu": "gelu", "selu": "selu", "leaky_relu": "leaky_relu"}
_OUT = {"logistic": "sigmoid", "softmax": "softmax", "identity": "linear"}


def build_mlp(n_features: int, hidden_layer_sizes, activation: str, n_outputs: int, out_activation: str, *,
              alpha: float, batch_size: int, batch_norm: bool, dropout: float, dtype: str) -> Sequential:
    """The (unbuilt) network of an MLP estimator; see the module docstring."""
    act = ACTIVATIONS[activation]
    dt = str(dtype)

    def reg():
        return _regularizers.L2(0.5 * alpha / batch_size) if alpha > 0 else None

    stack = []
    for width in hidden_layer_sizes:
        if batch_norm:
            stack += [_layers.Dense(int(width), use_bias=False, kernel_regularizer=reg(), dtype=dt),
                      _layers.BatchNormalization(momentum=0.9, batch_of_one="moving_statistics", dtype=dt),
                      _layers.Activation(act, dtype=dt)]
        else:
            stack.append(_layers.Dense(int(width), activation=act, kernel_regularizer=reg(), dtype=dt))
        if dropout > 0:
            stack.append(_layers.Dropout(float(dropout), dtype=dt))
    stack.append(_layers.Dense(int(n_outputs), activation=_OUT[out_activation], kernel_regularizer=reg(), dtype=dt))
    return Sequential(stack)


class _MLPMixin:
    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_norm": ["boolean"],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        **LOOP_CONSTRAINTS,
        **STOP_CONSTRAINTS,
    }

    def _epochs(self) -> int:
        return int(self.max_iter)

    def _hidden(self) -> list:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        if any(not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 1 for s in sizes):
            raise ValueError(f"The 'hidden_layer_sizes' parameter of {self._owner} must be ints >= 1. "
                             f"Got {self.hidden_layer_sizes!r} instead.")
        return sizes

    def _new_model(self, n_features: int, meta: dict, seed: int, n: int):
        model = build_mlp(n_features, self._hidden(), self.activation, meta["n_outputs_"], meta["out_activation_"],
                          alpha=float(self.alpha), batch_size=self._batch_size(n), batch_norm=bool(self.batch_norm),
                          dropout=float(self.dropout), dtype=self._dtype_.name)
        model.compile(optimizer=self._make_optimizer(), loss=self._default_loss(meta["_target_type_"],
                                                                                 meta["n_outputs_"]))
        model.build((None, n_features), seed=seed)
        return model


_DOC_PARAMS = """
    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default (100,)
        Units of each hidden layer.
    activation : {"relu", "tanh", "logistic", "identity", "elu", "gelu", "selu", "leaky_relu"}, default "relu"
        Hidden activation (scikit-learn's four names and normlab's own).
    alpha : float >= 0, default 1e-4
        L2 penalty of the kernels, scikit-learn's scale (see the module notes).
    batch_size : int or "auto", default "auto"
        ``min(200, n_samples)`` for "auto".
    learning_rate_init : float > 0, default 0.001
        The optimizer's learning rate when ``optimizer`` is a name (and the
        schedule's is not given).
    max_iter : int >= 1, default 200
        Epochs of one ``fit`` at most.
    shuffle : bool, default True
        Reshuffle the samples every epoch.
    random_state : int, RandomState or None
        Seeds initialization, shuffling, dropout and the validation split:
        an int gives the same fit bit for bit.
    tol : float >= 0, default 1e-4
    verbose : bool, default False
        Print each epoch's loss.
    warm_start : bool, default False
        ``fit`` goes on from the fitted network (and its optimizer state).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified for
        classifiers) and stop on its score; the best epoch's weights are kept.
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int >= 1, default 10
    batch_norm : bool, default True
        Batch normalization before each hidden activation.
    dropout : float in [0, 1), default 0.0
        Dropout rate after each hidden activation.
    optimizer : str or normlab Optimizer, default "adam"
        A name (``"adam"``, ``"sgd"``, ``"rmsprop"``, ``"adamw"``, ``"nadam"``,
        ``"adagrad"``, ``"lion"``) built with ``learning_rate_init``, or an
        optimizer object (copied at every ``fit``; its own learning rate is used).
    clipnorm : float > 0, optional
        Rescale each gradient array whose L2 norm exceeds it (Keras's ``clipnorm``).
    lr_schedule : normlab LearningRateSchedule, its config dict, or callable, optional
        Learning rate as a function of the step (replaces ``learning_rate_init``).
    dtype : {"float32", "float64"}, default "float32"
        The network's dtype; inputs are cast to it once per call.
"""

_DOC_ATTRS = """
    model_ : normlab.Sequential
        The trained network (``normlab.export.to_onnx(est.model_)``, ``est.model_.save(path)``).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names (a pandas DataFrame).
    n_outputs_ : int
    out_activation_ : str
    loss_ : float
        The last epoch's training loss.
    loss_curve_ : list of float
        Each epoch's training loss.
    best_loss_ : float or None
        The lowest of ``loss_curve_`` (None with ``early_stopping``).
    validation_scores_ : list of float or None
        Each epoch's score on the held-out data (with ``early_stopping``).
    best_validation_score_ : float or None
    n_iter_ : int
        Epochs run (summed over ``warm_start`` fits and ``partial_fit`` calls).
    t_ : int
        Training samples seen.
"""


class MLPClassifier(_MLPMixin, ClassifierBase):
    __doc__ = """Multi-layer perceptron classifier (scikit-learn's ``MLPClassifier``) with batch norm, dropout and clipping.

    Binary, multiclass and multilabel targets; labels of any type.
    """ + _DOC_PARAMS + """
    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted (``arange(n_labels)`` for a multilabel indicator matrix).""" + _DOC_ATTRS

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, alpha=0.0001, batch_size="auto",
                 learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 batch_norm=True, dropout=0.0, optimizer="adam", clipnorm=None, lr_schedule=None, dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.optimizer = optimizer
        self.clipnorm = clipnorm
        self.lr_schedule = lr_schedule
        self.dtype = dtype


class MLPRegressor(_MLPMixin, RegressorBase):
    __doc__ = """Multi-layer perceptron regressor (scikit-learn's ``MLPRegressor``) with batch norm, dropout and clipping.

    Trains on the mean squared error; one or several targets.
    """ + _DOC_PARAMS + """
    Attributes
    ----------""" + _DOC_ATTRS

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, alpha=0.0001, batch_size="auto",
                 learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 batch_norm=True, dropout=0.0, optimizer="adam", clipnorm=None, lr_schedule=None, dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.optimizer = optimizer
        self.clipnorm = clipnorm
        self.lr_schedule = lr_schedule
        self.dtype = dtype
