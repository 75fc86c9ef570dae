"""The mapping between Keras 3 configs and normlab objects, for :mod:`normlab.models.keras_format`.

One name for the three modules that hold it (kept for imports from here):
:mod:`._keras_common` (checks of read values, weight-file names, Keras's
layer order, initializers, regularizers, constraints and dtype policies),
:mod:`._keras_layers` (the layers: :data:`LAYER_SPECS`, the order of their
variables) and :mod:`._keras_compile` (optimizer, loss, metrics and the
layout of the optimizer's state). Keras -> normlab checks every value it
reads and raises :class:`_Bad` (the reader names the file); normlab ->
Keras raises ``ValueError`` naming what Keras 3 lacks.
"""

from __future__ import annotations

from ._keras_common import (  # noqa: F401 - re-exported
    _ANY,
    _KERAS_MODULE,
    _NAME,
    _Bad,
    _check_object,
    _dtype_from_keras,
    _h5_keys,
    _is_int,
    _keras_order,
    _need,
    _object_from_keras,
    _object_to_keras,
    _plain,
    _policy,
    _snake,
    _unique,
)
from ._keras_compile import (  # noqa: F401 - re-exported
    _KERAS_OPT_DEFAULTS,
    KERAS_LOSSES,
    KERAS_METRIC_NAMES,
    KERAS_METRICS,
    _NEGATED_SLOTS,
    _OPTIMIZERS,
    _compile_from_keras,
    _compile_to_keras,
    _loss_from_keras,
    _loss_to_keras,
    _metric_from_keras,
    _metric_to_keras,
    _optimizer_from_keras,
    _optimizer_to_keras,
    _rule_slot_order,
    _slot_order,
    _trainable_in_keras_order,
)
from ._keras_layers import (  # noqa: F401 - re-exported
    _KERAS_ONLY_VARS,
    _SAVE_SPECS,
    KERAS_ACTIVATIONS,
    KERAS_ONLY_LAYERS,
    LAYER_SPECS,
    NOT_IN_KERAS,
    _batch_shape,
    _config_keys,
    _input_entry,
    _layer_kwargs,
    _layer_to_keras,
    _make_layer,
    _Spec,
    _var_keys,
)
