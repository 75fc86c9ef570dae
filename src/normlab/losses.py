"""Loss objects (Keras names and conventions); formulas in :mod:`normlab.kernels.losses`.

Every loss is averaged over the batch (Keras's ``"sum_over_batch_size"``).
``loss(y_true, y_pred)`` returns the value and ``loss.gradient(y_true, y_pred)``
its gradient with respect to ``y_pred``.

Fusion. When a model ends in a softmax (sigmoid) layer and is compiled with
categorical (binary) cross-entropy on probabilities, the model computes the
loss and its gradient from the logits of that layer instead, with the stable
``from_logits`` formulas: the gradient with respect to the logits is simply
``(p - y) / N``. Values agree with the probability form except where Keras
would clip a probability at ``1e-7`` (there the fused value is the exact one).
"""

from __future__ import annotations

import numbers

import numpy as np

from ._registry import Registry
from ._validation import Boolean, Interval, NoneOk, validate_params
from .kernels import losses as K
from .kernels.checks import all_finite

registry = Registry("loss")

__all__ = [
    "Loss",
    "MeanSquaredError",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "get",
    "serialize",
    "deserialize",
]


def _finite(arr: np.ndarray, who: str, arg: str) -> None:
    if not all_finite(arr):
        raise ValueError(f"{who}: '{arg}' holds NaN or inf values.")


class Loss:
    """Base class.

    Subclasses set ``fused_activation`` (the output activation whose logits
    the loss can take directly) and implement the four kernels.
    """

    fused_activation: str | None = None
    _param_constraints = {"from_logits": [Boolean()], "name": [NoneOk(), str]}

    def __init__(self, from_logits: bool = False, name: str | None = None):
        validate_params(type(self).__name__, self._param_constraints, {"from_logits": from_logits, "name": name})
        self.from_logits = bool(from_logits)
        self.name = name or type(self).__name__

    # targets ---------------------------------------------------------------
    def prepare_targets(self, y_true, y_pred_shape: tuple, *, who: str = "") -> np.ndarray:
        """Check ``y_true`` against the prediction shape and return it as an array."""
        who = who or type(self).__name__
        y = np.asarray(y_true)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{who}: 'y' must be numeric, got dtype {y.dtype}.")
        _finite(y, who, "y")
        if y.shape != tuple(y_pred_shape):
            if y.ndim == 1 and len(y_pred_shape) == 2 and y_pred_shape[1] == 1 and y.shape[0] == y_pred_shape[0]:
                y = y.reshape(-1, 1)
            else:
                raise ValueError(
                    f"{who}: 'y' has shape {y.shape} but the predictions have shape "
                    f"{tuple(y_pred_shape)}."
                )
        return y

    # values and gradients --------------------------------------------------
    def __call__(self, y_true, y_pred) -> float:
        y_pred = np.asarray(y_pred)
        y = self.prepare_targets(y_true, y_pred.shape)
        if self.from_logits:
            return self.value_from_logits(y, y_pred)
        return self.value(y, y_pred)

    def gradient(self, y_true, y_pred) -> np.ndarray:
        y_pred = np.asarray(y_pred)
        y = self.prepare_targets(y_true, y_pred.shape)
        if self.from_logits:
            return self.gradient_from_logits(y, y_pred)
        return self.gradient_wrt_output(y, y_pred)

    def value(self, y, p) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def gradient_wrt_output(self, y, p) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def value_from_logits(self, y, z) -> float:
        raise ValueError(f"{type(self).__name__} has no logits form.")

    def gradient_from_logits(self, y, z) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} has no logits form.")

    def value_and_gradient_from_logits(self, y, z) -> tuple[float, np.ndarray]:
        """``(value_from_logits(y, z), gradient_from_logits(y, z))``; subclasses may share work."""
        return self.value_from_logits(y, z), self.gradient_from_logits(y, z)

    # config ------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"from_logits": self.from_logits, "name": self.name}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class _SmoothedLoss(Loss):
    """A cross-entropy with Keras's ``label_smoothing``.

    With smoothing ``s`` the targets become ``y (1 - s) + s / K`` (``K``
    classes; ``K = 2`` for binary cross-entropy, so ``y (1 - s) + s / 2``).
    Only the loss and its gradient see the smoothed targets; metrics compare
    with the true labels.
    """

    _param_constraints = {
        **Loss._param_constraints,
        "label_smoothing": [Interval(numbers.Real, 0, 1, closed="both")],
    }

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: str | None = None):
        validate_params(type(self).__name__, self._param_constraints,
                        {"from_logits": from_logits, "label_smoothing": label_smoothing, "name": name})
        super().__init__(from_logits=from_logits, name=name)
        self.label_smoothing = float(label_smoothing)

    def _smooth(self, y, classes: int):
        s = self.label_smoothing
        if s == 0.0:
            return y
        return y * (1.0 - s) + s / classes

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}

    def __repr__(self):
        return (f"{type(self).__name__}(from_logits={self.from_logits}, "
                f"label_smoothing={self.label_smoothing})")


@registry.register(aliases=("mse", "mean_squared_error"))
class MeanSquaredError(Loss):
    """``mean((y_pred - y_true) ** 2)`` over all entries; gradient ``2 (p - y) / size``.

    ``from_logits`` is accepted for uniformity and ignored (MSE acts on any output).
    """

    def value(self, y, p):
        return K.mse(y, p)

    def gradient_wrt_output(self, y, p):
        return K.mse_grad(y, p)

    value_from_logits = value
    gradient_from_logits = gradient_wrt_output


@registry.register(aliases=("binary_crossentropy", "bce"))
class BinaryCrossentropy(_SmoothedLoss):
    """``-mean(y log p + (1 - y) log(1 - p))``; targets in [0, 1].

    With ``from_logits=True`` ``y_pred`` are logits ``z`` and ``p = sigmoid(z)``.
    ``label_smoothing=s`` replaces ``y`` by ``y (1 - s) + s / 2``.
    """

    fused_activation = "sigmoid"

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        y = super().prepare_targets(y_true, y_pred_shape, who=who)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{who or type(self).__name__}: 'y': binary targets must lie in [0, 1], "
                             f"got values from {y.min():g} to {y.max():g}.")
        return y

    def value(self, y, p):
        return K.binary_crossentropy(self._smooth(y, 2), p)

    def gradient_wrt_output(self, y, p):
        return K.binary_crossentropy_grad(self._smooth(y, 2), p)

    def value_from_logits(self, y, z):
        return K.binary_crossentropy_logits(self._smooth(y, 2), z)

    def gradient_from_logits(self, y, z):
        return K.binary_crossentropy_logits_grad(self._smooth(y, 2), z)


@registry.register(aliases=("categorical_crossentropy", "cce"))
class CategoricalCrossentropy(_SmoothedLoss):
    """``-mean_i sum_k y_ik log p_ik`` with one-hot (or soft) targets of shape (N, K).

    ``label_smoothing=s`` replaces ``y`` by ``y (1 - s) + s / K``.
    """

    fused_activation = "softmax"

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        y = super().prepare_targets(y_true, y_pred_shape, who=who)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{who or type(self).__name__}: 'y' (one-hot or probability targets) must lie in "
                             f"[0, 1], got values from {y.min():g} to {y.max():g}.")
        return y

    def value(self, y, p):
        return K.categorical_crossentropy(self._smooth(y, p.shape[-1]), p)

    def gradient_wrt_output(self, y, p):
        return K.categorical_crossentropy_grad(self._smooth(y, p.shape[-1]), p)

    def value_from_logits(self, y, z):
        return K.categorical_crossentropy_logits(self._smooth(y, z.shape[-1]), z)

    def gradient_from_logits(self, y, z):
        return K.categorical_crossentropy_logits_grad(self._smooth(y, z.shape[-1]), z)


@registry.register(aliases=("sparse_categorical_crossentropy", "scce"))
class SparseCategoricalCrossentropy(_SmoothedLoss):
    """``-mean_i log p_{i, y_i}`` with integer labels ``y_i`` in ``[0, K)``.

    ``label_smoothing=s`` (PyTorch's ``CrossEntropyLoss(label_smoothing=s)``;
    Keras offers it only on the dense loss) trains against the soft targets
    ``onehot(y) (1 - s) + s / K``.
    """

    fused_activation = "softmax"

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        who = who or type(self).__name__
        y = np.asarray(y_true)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if len(y_pred_shape) != 2 or y.shape != (y_pred_shape[0],):
            raise ValueError(
                f"{who}: 'y': sparse labels must have shape ({y_pred_shape[0]},) for predictions of "
                f"shape {tuple(y_pred_shape)}; got {y.shape}."
            )
        if y.dtype.kind == "f":
            _finite(y, who, "y")
            if not np.array_equal(y, np.round(y)):
                raise ValueError(f"{who}: 'y': sparse labels must be integers, got "
                                 f"{y[y != np.round(y)][0]:g}.")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{who}: 'y': sparse labels must be integers, got dtype {y.dtype}.")
        k = y_pred_shape[1]
        if y.dtype.kind != "i" or y.dtype.itemsize > np.dtype(np.intp).itemsize:
            # checked in the labels' own dtype: a float 1e20 or a uint64 beyond intp would wrap in the cast
            if y.size and (y.min() < 0 or y.max() >= k):
                bad = y[(y < 0) | (y >= k)][0]
                raise ValueError(
                    f"{who}: 'y': labels must be in [0, {k}) for {k} output units; found label {bad.item():g}."
                    if y.dtype.kind == "f" else
                    f"{who}: 'y': labels must be in [0, {k}) for {k} output units; found label {bad.item()}."
                )
            return y.astype(np.intp)
        y = y.astype(np.intp, copy=False)
        # seen as unsigned, a negative label is beyond any k: one reduction checks both ends
        if y.size and y.view(np.uintp).max() >= k:
            bad = int(y[(y < 0) | (y >= k)][0])
            raise ValueError(
                f"{who}: 'y': labels must be in [0, {k}) for {k} output units; found label {bad}."
            )
        return y

    def _soft(self, labels, out):
        k = out.shape[-1]
        y = np.zeros(out.shape, dtype=out.dtype)
        y[np.arange(out.shape[0]), labels] = 1.0
        return self._smooth(y, k)

    def value(self, y, p):
        if self.label_smoothing:
            return K.categorical_crossentropy(self._soft(y, p), p)
        return K.sparse_categorical_crossentropy(y, p)

    def gradient_wrt_output(self, y, p):
        if self.label_smoothing:
            return K.categorical_crossentropy_grad(self._soft(y, p), p)
        return K.sparse_categorical_crossentropy_grad(y, p)

    def value_from_logits(self, y, z):
        if self.label_smoothing:
            return K.categorical_crossentropy_logits(self._soft(y, z), z)
        return K.sparse_categorical_crossentropy_logits(y, z)

    def gradient_from_logits(self, y, z):
        if self.label_smoothing:
            return K.categorical_crossentropy_logits_grad(self._soft(y, z), z)
        return K.sparse_categorical_crossentropy_logits_grad(y, z)

    def value_and_gradient_from_logits(self, y, z):
        if self.label_smoothing:
            return super().value_and_gradient_from_logits(y, z)
        return K.sparse_categorical_crossentropy_logits_value_and_grad(y, z)


def get(identifier) -> Loss:
    """Resolve a loss name (``"mse"``, ``"categorical_crossentropy"``, ...), config or instance."""
    loss = registry.get(identifier, base=Loss)
    if loss is None:
        raise ValueError("A loss is required.")
    return loss


def serialize(loss: Loss) -> dict:
    return registry.serialize(loss)


def deserialize(config: dict) -> Loss:
    return registry.deserialize(config)
