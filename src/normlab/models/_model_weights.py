"""The model's arrays and files: the weight lists, ``get_weights`` / ``set_weights``, saving and export.

The formats live elsewhere: normlab's own model file in
:mod:`normlab.models.saving`, Keras's in :mod:`normlab.models.keras_format`,
ONNX in :mod:`normlab.export`; the methods here choose among them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._validation import real_array
from ..kernels.checks import all_finite
from ._checks import _cast_checked

__all__ = ["WeightsMixin"]


class WeightsMixin:
    """:class:`~normlab.models.base.BaseModel`'s weights, their files and export."""

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        return [p for l in self.layers for p in l.trainable_params.values()]

    @property
    def weights(self) -> list[np.ndarray]:
        """Keras's ``model.weights``: every layer's parameters then buffers, in layer order (the arrays)."""
        return [w for l in self.layers for w in l.weights]

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        """Keras's ``non_trainable_weights``: the buffers, and the parameters of frozen layers."""
        return [w for l in self.layers for w in l.non_trainable_weights]

    def _weight_targets(self) -> list:
        """``(layer, key, array)`` of every layer's params then buffers, in layer order (a nested model's by its layers)."""
        return [(l, k, a) for l in self.layers for k, a in list(l.params.items()) + list(l.buffers.items())]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every layer's params then buffers, in layer order."""
        return [a.copy() for _, _, a in self._weight_targets()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Inverse of :meth:`get_weights`: every array is set, or none.

        Each array must have its target's shape and hold finite real numbers
        that fit the target's dtype (a float64 value beyond float32's range
        is an error, not a silent ``inf``); all of them are checked and
        converted before the first is written.
        """
        owner = f"{type(self).__name__}.set_weights"
        if not self.built:
            raise ValueError(f"{owner}: model {self.name!r} is not built yet; call build() or fit() first.")
        targets = self._weight_targets()
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
            raise TypeError(f"{owner}: 'weights' must be a list of arrays (as get_weights() returns), got "
                            f"{type(weights).__name__}.")
        if len(weights) != len(targets):
            raise ValueError(f"{owner}: 'weights' must hold {len(targets)} arrays, got {len(weights)}.")
        converted = []
        for i, ((layer, key, t), w) in enumerate(zip(targets, weights)):
            label = f"'weights[{i}]' ({layer.name}/{key})"
            w = real_array(w, owner, label)
            if w.shape != t.shape:
                raise ValueError(f"{owner}: {label} must have shape {t.shape}, got {w.shape}.")
            converted.append(_cast_checked(w, t.dtype, owner, f"weights[{i}]") if w.dtype.kind == "f"
                             else w.astype(t.dtype))
            if not all_finite(converted[-1]):
                raise ValueError(f"{owner}: {label} holds NaN or inf values.")
            if key in getattr(layer, "_nonnegative_weights", ()) and (converted[-1] < 0).any():
                raise ValueError(f"{owner}: {label} must be >= 0 (a variance), got {converted[-1].min():g}.")
        for (_, _, t), w in zip(targets, converted):
            np.copyto(t, w)

    def count_params(self) -> int:
        return sum(l.count_params() for l in self.layers)

    def export(self, filepath, format: str = "onnx", **kwargs):
        """Export the model for inference outside Python; Keras 3's method name.

        ``format="onnx"`` (the only format, and the default, where Keras's is
        ``"tf_saved_model"``) calls :func:`normlab.export.to_onnx` with
        ``filepath`` and ``kwargs`` (``opset``, ``input_name``,
        ``output_name``, ``fold_batchnorm``, ...). Needs the ``onnx`` extra.
        Returns the ONNX ``ModelProto``.
        """
        if format != "onnx":
            raise ValueError(f"{type(self).__name__}.export: the 'format' argument must be 'onnx' "
                             f"(normlab exports ONNX only), got {format!r}.")
        from ..export import to_onnx

        return to_onnx(self, filepath, **kwargs)

    def save(self, path) -> None:
        """Write architecture, weights, buffers and optimizer state to one file.

        A path ending in ``.keras`` is written in Keras 3's format
        (:func:`normlab.models.keras_format.save_keras`, needs ``h5py``),
        which Keras loads; any other in normlab's own
        (:func:`normlab.models.saving.save_model`). Read either back with
        :func:`normlab.load_model`.
        """
        from .keras_format import is_keras_path, save_keras

        if is_keras_path(path):
            save_keras(self, path)
            return
        from .saving import save_model

        save_model(self, path)

    def save_weights(self, filepath, overwrite: bool = True) -> None:
        """Write the weights alone: Keras's ``.weights.h5`` layout for that suffix, normlab's ``.npz`` otherwise.

        See :func:`normlab.models.keras_format.save_weights`.
        """
        from .keras_format import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath) -> None:
        """Read weights written by :meth:`save_weights` or Keras's ``save_weights`` (all or nothing)."""
        from .keras_format import load_weights

        load_weights(self, filepath)
