"""What every model shares: compile, the training step, fit/evaluate/predict, weights.

Subclasses (:class:`~normlab.Sequential`, the functional :class:`~normlab.Model`)
define the structure: ``layers`` (in execution order), ``_program()`` (the
layers with the values each reads), ``_output_layer``, ``built``,
``input_shape``, ``build``, ``_ensure_built``, ``output_shape_for``,
``get_config`` and ``from_config``.

:class:`BaseModel` holds the state every model starts with and what runs
the structure; the rest is one mixin per concept, each in its own module:

- :mod:`~normlab.models._model_compile`: ``compile`` and the training plan
  made from it on the first step;
- :mod:`~normlab.models._model_step`: the training step, a transaction;
- :mod:`~normlab.models._model_fit`: ``fit`` and ``train_on_batch``;
- :mod:`~normlab.models._model_eval`: ``evaluate``, ``predict`` and their
  one-batch forms (inference mode);
- :mod:`~normlab.models._model_weights`: the weights, saving and export;
- :mod:`~normlab.models._model_inputs`: the checks of what a call is given;
- :mod:`~normlab.models._model_guards`: a failed call changes nothing.
"""

from __future__ import annotations

import numpy as np

from .. import metrics as _metrics
from ..callbacks.base import History
from ..layers.base import Layer
from ._model_compile import CompileMixin, _compile_lookup  # noqa: F401 - _compile_lookup re-exported
from ._model_eval import EvaluateMixin
from ._model_fit import FitMixin
from ._model_guards import GuardsMixin, _distributed  # noqa: F401 - _distributed re-exported
from ._model_inputs import InputsMixin
from ._model_step import _INTP, StepMixin  # noqa: F401 - _INTP re-exported
from ._model_weights import WeightsMixin

__all__ = ["BaseModel"]


# the mixins define disjoint sets of names, so their order decides nothing; a subclass's own
# definitions (Sequential, Model, and ModelAsLayer before BaseModel) still come first
class BaseModel(CompileMixin, StepMixin, FitMixin, EvaluateMixin, WeightsMixin, InputsMixin, GuardsMixin):
    """Training, evaluation, prediction and weights for any model structure."""

    def _init_training_state(self) -> None:
        self.optimizer = None
        self.loss = None
        self.metrics: list[_metrics.Metric] = []
        self._metric_ids: list = []
        self._weighted_metric_ids: list = []
        self.compiled = False
        self.stop_training = False
        self.stop_evaluating = False
        self.stop_predicting = False
        self.history: History | None = None
        self._fused = False
        self._trainable_signature: tuple | None = None
        self._refs: list[tuple[Layer, str]] = []
        self._flat: tuple[np.ndarray, np.ndarray] | None = None  # (gradients, parameters): the optimizer's
        self._flat_binding = None  # (optimizer, its binding) that the layers' arrays are views of
        self._step_loss = None  # the loss of the last training step, once computed
        self._constrained: list = []
        self.distribute = None
        self._dist = None  # the strategy the calls go through: DataParallel on several ranks, else None

    @property
    def _output_layer(self) -> Layer:
        return self.layers[-1]

    def _layer_output_shapes(self) -> list:
        """Output shape of each layer in ``self.layers`` (``None`` where unknown)."""
        shape, out = self.input_shape, []
        for layer in self.layers:
            shape = layer.compute_output_shape(shape) if shape is not None else None
            out.append(shape)
        return out

    @property
    def dtype(self):
        return self.layers[0].dtype if self.layers else None

    def _program(self) -> tuple[list, int]:  # pragma: no cover - interface
        """The layers in execution order with the value indices each reads, and the output's index.

        Value 0 is the model's input; the ``k``-th entry writes value ``k + 1``
        (see :mod:`normlab.models.executor`).
        """
        raise NotImplementedError

    def _forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The model on a checked batch: the training pass (of a compiled model) or inference."""
        if training:
            return self._executor.forward(x)
        program, output = self._program()
        values = [x]
        for layer, inputs in program:
            arg = [values[i] for i in inputs] if layer.multi_input else values[inputs[0]]
            values.append(layer.call(arg, False))
        return values[output]

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """The layer called ``name``, or at ``index`` in :attr:`layers` (Keras's ``get_layer``)."""
        owner = f"{type(self).__name__}.get_layer"
        if (name is None) == (index is None):
            raise ValueError(f"{owner}: give exactly one of 'name' and 'index'.")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not \
                    -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"{owner}: 'index' must be an int in [0, {len(self.layers)}), got {index!r}.")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"{owner}: no layer named {name!r}; the layers are {[l.name for l in self.layers]}.")

    # defined on the class itself, not in a mixin: tests/models/test_keras_format.py looks for it in
    # vars(BaseModel) to know that pickling goes through the model file
    def __reduce__(self):
        """Pickle (joblib, multiprocessing, ``copy.deepcopy``) through normlab's own model file, never the objects."""
        from .keras_format import _reduce_model

        return _reduce_model(self)

    def summary(self, line_length: int | None = None, positions=None, print_fn=None) -> None:
        """Print the model's layers, output shapes and parameter counts in Keras 3's layout.

        See :func:`normlab.models.summary.print_summary`.
        """
        from .summary import print_summary

        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn)

    def _optimizer_param_count(self) -> int:
        from .summary import optimizer_param_count

        return optimizer_param_count(self)
