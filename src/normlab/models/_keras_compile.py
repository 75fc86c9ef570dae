"""The compile settings between Keras 3 configs and normlab, for :mod:`normlab.models.keras_format`.

The optimizer, loss and metrics of ``compile_config`` both ways, and the
layout of the optimizer's state in Keras's ``optimizer/vars`` (iteration,
learning rate, then the slots in Keras's order).
"""

from __future__ import annotations

from .. import losses as _losses
from .. import metrics as _metrics
from ._keras_common import _ANY, _Bad, _check_object, _dtype_from_keras, _need, _plain, _snake
from ._keras_layers import _var_keys

#: Keras 3 optimizers whose state layout normlab maps (those normlab has travel: :func:`_mapped_optimizers`)
_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Nadam", "Lion", "Adamax", "Adadelta", "Ftrl", "Lamb",
               "Adafactor")


def _mapped_optimizers() -> list[str]:
    """The optimizers both libraries have (normlab's list grows: asked at each use)."""
    from .. import optimizers as _optimizers

    return [o for o in _OPTIMIZERS if isinstance(getattr(_optimizers, o, None), type)]
#: Keras optimizer arguments normlab lacks, accepted at these values
_KERAS_OPT_DEFAULTS = {"loss_scale_factor": None, "is_legacy_optimizer": False}
#: Keras 3.15's loss classes (``keras.losses``): those normlab has too travel, with their arguments
KERAS_LOSSES = (
    "BinaryCrossentropy", "BinaryFocalCrossentropy", "CategoricalCrossentropy", "CategoricalFocalCrossentropy",
    "CategoricalGeneralizedCrossEntropy", "CategoricalHinge", "Circle", "CosineSimilarity", "CTC", "Dice", "Hinge",
    "Huber", "KLDivergence", "LogCosh", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredError",
    "MeanSquaredLogarithmicError", "Poisson", "SparseCategoricalCrossentropy", "SquaredHinge", "Tversky",
)
#: normlab loss arguments Keras's class lacks: saved only at these values
_LOSS_NORMLAB_ONLY = {"MeanSquaredError": {"from_logits": False},
                      "SparseCategoricalCrossentropy": {"axis": -1, "label_smoothing": 0.0}}
#: Keras 3.15's metric classes (``keras.metrics``)
KERAS_METRICS = (
    "AUC", "Accuracy", "BinaryAccuracy", "BinaryCrossentropy", "BinaryIoU", "CategoricalAccuracy",
    "CategoricalCrossentropy", "CategoricalHinge", "ConcordanceCorrelation", "CosineSimilarity", "F1Score",
    "FBetaScore", "FalseNegatives", "FalsePositives", "Hinge", "IoU", "KLDivergence", "LogCoshError", "Mean",
    "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanIoU", "MeanSquaredError", "MeanSquaredLogarithmicError",
    "OneHotIoU", "OneHotMeanIoU", "PearsonCorrelation", "Poisson", "Precision", "PrecisionAtRecall", "R2Score",
    "Recall", "RecallAtPrecision", "RootMeanSquaredError", "SensitivityAtSpecificity", "SparseCategoricalAccuracy",
    "SparseCategoricalCrossentropy", "SparseTopKCategoricalAccuracy", "SpecificityAtSensitivity", "SquaredHinge",
    "Sum", "TopKCategoricalAccuracy", "TrueNegatives", "TruePositives",
)
#: the metric names Keras's compile() takes (its own lookup, and "acc", "crossentropy", "ce")
KERAS_METRIC_NAMES = frozenset(
    [_snake(c) for c in KERAS_METRICS] + list(KERAS_METRICS)
    + ["acc", "crossentropy", "ce", "mse", "mae", "mape", "msle", "MSE", "MAE", "MAPE", "MSLE", "bce", "BCE",
       "binary_io_u", "io_u", "mean_io_u", "one_hot_io_u", "one_hot_mean_io_u"]
)
#: normlab metric arguments Keras's class lacks: saved only at these values
_METRIC_NORMLAB_ONLY = {"SparseTopKCategoricalAccuracy": {"from_sorted_ids": False}}

def _optimizer_from_keras(value, where: str):
    from .. import optimizers as _optimizers

    if isinstance(value, str):
        _need(value.lower() in [o.lower() for o in _mapped_optimizers()],
              f"{where} is {value!r}, which normlab does not have")
        return _optimizers.get(value.lower())
    _need(isinstance(value, dict), f"{where} must be an optimizer object")
    _check_object(value, where)
    cls = value["class_name"]
    _need(cls in _mapped_optimizers(), f"{where} is the Keras optimizer {cls!r}, which normlab does not have")
    conf = value.get("config")
    _need(isinstance(conf, dict), f"{where}'s config must be an object")
    known = set(_optimizers.get(cls.lower()).get_config())
    kwargs = {}
    for key, v in conf.items():
        w = f"{where} ({cls}) argument {key!r}"
        if key in _KERAS_OPT_DEFAULTS:
            d = _KERAS_OPT_DEFAULTS[key]
            _need(d is _ANY or v == d or v is None, f"{w} is {v!r}; normlab supports only {d!r}")
        elif key in known:
            _need(not isinstance(v, dict), f"{w} is an object (a schedule); normlab reads a float learning rate")
            kwargs[key] = _plain(v, w)
        else:
            _need(v is None, f"{w} is {v!r}, which normlab's {cls} does not support")
    try:
        return _optimizers.deserialize({"class_name": cls, "config": kwargs})
    except (ValueError, TypeError) as exc:
        raise _Bad(f"{where} ({cls}) could not be constructed: {exc}") from None


def _object_config(value: dict, where: str, cls: str) -> dict:
    """The constructor arguments of a Keras loss or metric object: plain values, Keras's dtype policy read."""
    conf = value.get("config") or {}
    _need(isinstance(conf, dict), f"{where}'s config must be an object")
    kwargs = {}
    for key, v in conf.items():
        w = f"{where} ({cls}) argument {key!r}"
        if key == "fn":  # Keras's LossFunctionWrapper names its function; the class says it
            continue
        if key == "dtype":
            if v in ("int32", "int64"):  # the counts of Keras's IoU metrics: normlab keeps its own
                continue
            kwargs[key] = None if v is None else _dtype_from_keras(v, w)
        elif key == "reduction":
            _need(v in (None, "auto") or v in _losses.REDUCTIONS, f"{w} is {v!r}, which normlab does not have")
            if v not in (None, "auto"):  # Keras 2's "auto" is the default reduction
                kwargs[key] = v
        else:
            kwargs[key] = _plain(v, w)
    return kwargs


def _loss_from_keras(value, where: str):
    if isinstance(value, str):
        try:
            return _losses.get(value)
        except ValueError:
            raise _Bad(f"{where} is the loss {value!r}, which normlab does not have") from None
    _need(isinstance(value, dict), f"{where} must be one loss (a name or an object)")
    _check_object(value, where)
    cls = value["class_name"]
    _need(cls in KERAS_LOSSES and cls in _losses.registry._classes,
          f"{where} is the Keras loss {cls!r}, which normlab does not have")
    kwargs = _object_config(value, where, cls)
    try:
        return _losses.deserialize({"class_name": cls, "config": kwargs})
    except (ValueError, TypeError) as exc:
        raise _Bad(f"{where} ({cls}) could not be constructed: {exc}") from None


def _metric_from_keras(value, where: str):
    if isinstance(value, str):
        name = "accuracy" if value in ("acc", "accuracy") else value
        try:
            _metrics.registry.lookup(name)
        except ValueError:
            raise _Bad(f"{where} is the metric {value!r}, which normlab does not have") from None
        return name
    _need(isinstance(value, dict), f"{where} must be a metric name or object")
    _check_object(value, where)
    cls = value["class_name"]
    _need(cls in KERAS_METRICS and cls in _metrics.registry._classes,
          f"{where} is the Keras metric {cls!r}, which normlab does not have")
    kwargs = _object_config(value, where, cls)
    try:
        return _metrics.registry.deserialize({"class_name": cls, "config": kwargs})
    except (ValueError, TypeError) as exc:
        raise _Bad(f"{where} ({cls}) could not be constructed: {exc}") from None


def _compile_from_keras(info, model) -> None:
    where = "the model's compile_config"
    _need(isinstance(info, dict), f"{where} must be an object")
    _need(info.get("loss_weights") is None, f"{where} sets 'loss_weights', which normlab does not support")
    optimizer = _optimizer_from_keras(info.get("optimizer", "rmsprop"), f"{where}'s optimizer")
    _need(info.get("loss") is not None, f"{where} has no loss")
    loss = _loss_from_keras(info["loss"], f"{where}'s loss")
    metrics = info.get("metrics") or []
    _need(isinstance(metrics, list) and len(metrics) <= 64, f"{where}'s metrics must be a list")
    names = [_metric_from_keras(m, f"{where}'s metric {i}") for i, m in enumerate(metrics)]
    weighted = info.get("weighted_metrics") or []
    _need(isinstance(weighted, list) and len(weighted) <= 64,
          f"{where}'s weighted_metrics must be a list (normlab's models have one output)")
    weighted = [_metric_from_keras(m, f"{where}'s weighted metric {i}") for i, m in enumerate(weighted)]
    try:
        model.compile(optimizer=optimizer, loss=loss, metrics=names, weighted_metrics=weighted)
    except (ValueError, TypeError) as exc:
        raise _Bad(f"the model could not be compiled as {where} says: {exc}") from None


# ----------------------------------------------------------- optimizer state
def _slot_order(cls: str, conf: dict, n: int) -> list:
    """The optimizer's state keys in the order of Keras's ``optimizer/vars/2...`` (after iteration, learning rate).

    ``(slot, i)`` is the slot of Keras's ``i``-th trainable variable; a bare
    string is a scalar (Nadam's ``u_product``). Keras 3 creates Adam's
    momentum and velocity per variable in turn (Adamax's momentum and norm,
    Adadelta's accumulated gradient and delta, Ftrl's accumulator and linear,
    Lamb's momentum and velocity likewise), AMSGrad's ``velocity_hat`` after
    them, RMSprop's velocities, momentums and average gradients each as a
    block. Keras's base optimizer creates its own variables first:
    the moving averages (``use_ema``), then the gradient accumulators
    (``gradient_accumulation_steps``), one per variable each. Adafactor
    keeps ``r``, ``c`` (the factors of the second moment of a variable of
    rank 2 or more; int scalars that stand in for them below rank 2) and a
    velocity per variable in turn.
    """
    head = [("average", i) for i in range(n)] if conf.get("use_ema") else []
    if conf.get("gradient_accumulation_steps"):
        head += [("gradient_accumulator", i) for i in range(n)]
    return head + _rule_slot_order(cls, conf, n)


def _rule_slot_order(cls: str, conf: dict, n: int) -> list:
    """The update rule's own slots, in Keras's order (see :func:`_slot_order`)."""
    if cls in ("Adam", "AdamW", "Nadam"):
        order = [(slot, i) for i in range(n) for slot in ("momentum", "velocity")]
        if conf.get("amsgrad"):
            order += [("velocity_hat", i) for i in range(n)]
        return order + (["u_product"] if cls == "Nadam" else [])
    if cls == "SGD":
        return [("momentum", i) for i in range(n)] if conf.get("momentum") else []
    if cls == "RMSprop":
        order = [("velocity", i) for i in range(n)]
        if conf.get("momentum"):
            order += [("momentum", i) for i in range(n)]
        return order + ([("average_gradient", i) for i in range(n)] if conf.get("centered") else [])
    if cls == "Adagrad":
        return [("accumulator", i) for i in range(n)]
    if cls == "Lion":
        return [("momentum", i) for i in range(n)]
    if cls == "Adamax":
        return [(slot, i) for i in range(n) for slot in ("momentum", "norm")]
    if cls == "Adadelta":
        return [(slot, i) for i in range(n) for slot in ("accumulated_grad", "accumulated_delta_var")]
    if cls == "Ftrl":
        return [(slot, i) for i in range(n) for slot in ("accumulator", "linear")]
    if cls == "Lamb":
        return [(slot, i) for i in range(n) for slot in ("momentum", "velocity")]
    if cls == "Adafactor":
        return [(slot, i) for i in range(n) for slot in ("r", "c", "velocity")]
    raise ValueError(f"no Keras optimizer layout for {cls}")  # pragma: no cover - _OPTIMIZERS only


def _slot_shape(cls: str, slot: str, shape: tuple) -> tuple:
    """The shape of a slot of a variable of ``shape`` (Adafactor's factors drop an axis)."""
    if cls == "Adafactor" and slot in ("r", "c"):
        if len(shape) < 2:
            return ()
        return tuple(shape[:-1]) if slot == "r" else tuple(shape[:-2]) + tuple(shape[-1:])
    return tuple(shape)


def _is_placeholder(cls: str, slot: str, shape: tuple) -> bool:
    """A slot Keras keeps as an int scalar that stands in for a factor (Adafactor, variables of rank < 2)."""
    return cls == "Adafactor" and slot in ("r", "c") and len(shape) < 2


#: slots normlab keeps with the opposite sign of Keras's (normlab's RMSprop momentum is the notes' velocity)
_NEGATED_SLOTS = {("RMSprop", "momentum")}


def _trainable_in_keras_order(model, pairs) -> tuple[list, list]:
    """(the trainable weights in Keras's order, the index of each in normlab's optimizer state)."""
    arrays = [layer.params[k] for _, layer in pairs if layer is not None and layer.trainable
              for k in _var_keys(layer) if k in layer.params]
    index = {id(a): i for i, a in enumerate(model.trainable_weights)}
    return arrays, [index[id(a)] for a in arrays]


def _object_to_keras_config(kind: str, cls: str, config: dict, normlab_only: dict) -> dict:
    """A normlab loss or metric config as Keras's, refusing arguments Keras's class lacks (unless at default)."""
    out = {}
    for key, value in config.items():
        if key in normlab_only:
            if value != normlab_only[key]:
                raise ValueError(f"save_keras: the {kind} {cls}({key}={value!r}) has no Keras 3 counterpart "
                                 f"(Keras's {cls} has no {key!r}).")
            continue
        if isinstance(value, dict):
            raise ValueError(f"save_keras: the {kind} {cls}'s {key!r} is an object, which normlab does not map.")
        out[key] = value
    return out


def _loss_to_keras(loss) -> dict:
    conf = _losses.serialize(loss)
    cls = conf["class_name"]
    if cls not in KERAS_LOSSES:
        raise ValueError(f"save_keras: the loss {cls!r} has no Keras 3 counterpart.")
    out = _object_to_keras_config("loss", cls, conf["config"], _LOSS_NORMLAB_ONLY.get(cls, {}))
    return {"module": "keras.losses", "class_name": cls, "config": out, "registered_name": None}


def _metric_to_keras(metric):
    """A metric of ``compile(metrics=...)``: a name Keras's compile takes, or a serialized Keras metric."""
    if isinstance(metric, str):
        if metric not in KERAS_METRIC_NAMES:
            raise ValueError(f"save_keras: the metric name {metric!r} is not one Keras 3's compile() takes; "
                             f"pass a metric object or one of Keras's names.")
        return metric
    conf = _metrics.registry.serialize(metric)
    cls = conf["class_name"]
    if cls not in KERAS_METRICS:
        raise ValueError(f"save_keras: the metric {cls!r} has no Keras 3 counterpart.")
    out = _object_to_keras_config("metric", cls, conf["config"], _METRIC_NORMLAB_ONLY.get(cls, {}))
    return {"module": "keras.metrics", "class_name": cls, "config": out, "registered_name": None}


def _optimizer_to_keras(optimizer) -> dict:
    from .. import optimizers as _optimizers

    conf = _optimizers.serialize(optimizer)
    cls = conf["class_name"]
    if cls not in _mapped_optimizers():
        raise ValueError(f"save_keras: the optimizer {cls!r} has no Keras 3 counterpart normlab maps.")
    defaults = _optimizers.get(cls.lower()).get_config()
    out = {}
    for key, value in conf["config"].items():
        if key == "on_nonfinite":  # normlab's guard against NaN steps; no effect on a finite step
            continue
        if key in ("epsilon_form", "momentum_decay", "nesterov") and not (cls == "SGD" and key == "nesterov"):
            # normlab-only conventions and options (RMSprop's nesterov): saved at their defaults only
            if value != defaults.get(key):
                raise ValueError(f"save_keras: {cls}({key}={value!r}) has no Keras 3 counterpart.")
            continue
        if isinstance(value, dict):
            raise ValueError(f"save_keras: {cls}'s {key!r} is a schedule or object, which normlab does not map.")
        out[key] = value
    return {"module": "keras.optimizers", "class_name": cls, "config": out, "registered_name": None}


def _compile_to_keras(model) -> dict:
    metrics = [_metric_to_keras(m) for m in model._metric_ids]
    return {
        "optimizer": _optimizer_to_keras(model.optimizer),
        "loss": _loss_to_keras(model.loss),
        "loss_weights": None,
        "metrics": metrics,
        "weighted_metrics": [_metric_to_keras(m) for m in model._weighted_metric_ids] or None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }
