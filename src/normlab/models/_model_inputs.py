"""What a model call is given, checked before it runs.

``x`` (its shape, dtype and values; the model built on it if need be),
``y`` prepared by the loss, the sample and class weights, each batch of a
PyDataset or a generator, and the ``callbacks`` list. Errors name the call
(``Sequential.fit``) and the argument.
"""

from __future__ import annotations

import numpy as np

from ..callbacks.base import Callback
from ..layers.base import as_float_array
from ._checks import _cast_checked, _check_finite, _class_weights

__all__ = ["InputsMixin"]


class InputsMixin:
    """:class:`~normlab.models.base.BaseModel`'s checks of the data and callbacks a call is given."""

    def _check_input(self, x, who: str) -> np.ndarray:
        owner = f"{type(self).__name__}.{who}"
        x = as_float_array(x, who=owner)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{owner}: 'x' must be a non-empty batch, got shape {x.shape}.")
        if x.size == 0:
            raise ValueError(f"{owner}: 'x' must hold at least one value per sample, got shape {x.shape}.")
        expected = self.input_shape if self.built else self._declared_input_shape()
        if expected is not None and (len(expected) != x.ndim or any(
            e is not None and e != s for e, s in zip(expected[1:], x.shape[1:])
        )):
            raise ValueError(f"{owner}: 'x' must have shape {tuple(expected)} (the model's input shape), got {x.shape}.")
        if self.built:
            if x.dtype != self.dtype:
                # finiteness is checked after the cast: a float64 value above float32's range is an error here
                return _cast_checked(x, self.dtype, owner, "x") if x.dtype.itemsize > self.dtype.itemsize \
                    else self._finite(x.astype(self.dtype), owner)
        return self._finite(x, owner)

    def _declared_input_shape(self) -> tuple | None:
        """The input shape an unbuilt model declares (an ``Input``), batch axis included; None if none."""
        return None

    def _build_on(self, x: np.ndarray, owner: str, rng=None) -> None:
        """Build the model on ``x`` if needed; a layer that refuses it is reported as a problem of 'x'."""
        if self.built:
            return
        try:
            self._ensure_built(x, rng)
        except (ValueError, TypeError) as exc:
            cls = type(exc) if type(exc) in (ValueError, TypeError) else ValueError
            raise cls(f"{owner}: 'x' of shape {x.shape} does not fit the model: {exc}") from exc

    def _finite(self, x: np.ndarray, owner: str) -> np.ndarray:
        if self._dist is not None:  # several ranks: inside a guarded call each checks its own part of x
            self._dist.check_finite(x, owner)
        else:
            _check_finite(x, owner, "x")
        return x

    def _prepare_xy(self, x, y, who: str, rng=None):
        """Check ``(x, y)`` and return them in the model's dtype, building the model on ``x`` if needed.

        Call it inside :meth:`_all_or_nothing` when the model may be unbuilt.
        """
        owner = f"{type(self).__name__}.{who}"
        x = self._check_input(x, who)
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                f"{owner}: 'x' and 'y' must have the same number of samples, "
                f"got {len(x)} and {y.shape[0] if y.ndim else 'a scalar'}."
            )
        self._build_on(x, owner, rng)
        x = _cast_checked(x, self.dtype, owner, "x")
        out_shape = (len(x),) + tuple(self.output_shape_for((None,) + x.shape[1:])[1:])
        y = self.loss.prepare_targets(y, out_shape, who=owner)
        if y.dtype.kind == "f" and y.dtype != self.dtype:
            y = _cast_checked(y, self.dtype, owner, "y")
        return x, y

    def _inference_input(self, x, who: str) -> np.ndarray:
        """``x`` checked (and the model built on it if needed) for an inference call."""
        x = self._check_input(x, who)
        if not self.built:
            self._build_on(x, f"{type(self).__name__}.{who}")
            x = self._check_input(x, who)
        return x

    def _stream_check(self, who: str, class_weight=None, rng=None, *, targets: bool = True):
        """The check of each batch of a stream: ``(x, y, w)`` prepared, the model built on the first."""
        owner = f"{type(self).__name__}.{who}"

        def check(xb, yb, wb):
            if not targets:
                x = self._inference_input(xb, who)
                return x, None, None
            if yb is None:
                raise ValueError(f"{owner}: a batch of 'x' holds no targets; batches must be (x, y) or "
                                 f"(x, y, sample_weight).")
            xb, yb = self._prepare_xy(xb, yb, who, rng)
            wb = self._sample_weights(yb, wb, class_weight, owner, len(xb))
            if who == "fit" and self._trainable_signature is None:
                self._prepare_training()
            return xb, yb, wb

        return check

    def _sample_weights(self, y, sample_weight, class_weight, owner: str, n: int):
        """The checked weights of the samples of prepared targets ``y``: ``sample_weight`` times their class weights."""
        w = None if sample_weight is None else self.loss.check_sample_weight(sample_weight, n, owner)
        if class_weight:
            cw = _class_weights(y, class_weight, owner)
            w = cw if w is None else w * cw.reshape(cw.shape + (1,) * (w.ndim - 1))
        return w

    @staticmethod
    def _check_callbacks(callbacks, owner: str) -> list:
        if callbacks is None:
            return []
        if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"{owner}: 'callbacks' must be a list of Callback instances, got {callbacks!r}.")
        for c in callbacks:
            if not isinstance(c, Callback):
                raise TypeError(f"{owner}: 'callbacks' must hold Callback instances, got {c!r}.")
        return list(callbacks)
