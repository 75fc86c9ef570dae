"""The compile settings between Keras 3 configs and normlab, for :mod:`normlab.models.keras_format`.

The optimizer, loss and metrics of ``compile_config`` both ways, and the
layout of the optimizer's state in Keras's ``optimizer/vars`` (iteration,
learning rate, then the slots in Keras's order).
"""

from __future__ import annotations

from .. import losses as _losses
from .. import metrics as _metrics
from ._keras_common import _ANY, _Bad, _check_object, _is_int, _need, _plain
from ._keras_layers import _var_keys

_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Nadam", "Lion")
#: Keras optimizer arguments normlab lacks, accepted at these values
_KERAS_OPT_DEFAULTS = {"loss_scale_factor": None, "is_legacy_optimizer": False}
_LOSSES = {"MeanSquaredError": "mean_squared_error", "BinaryCrossentropy": "binary_crossentropy",
           "CategoricalCrossentropy": "categorical_crossentropy",
           "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy"}
_METRICS = {"Accuracy": "accuracy", "BinaryAccuracy": "binary_accuracy",
            "CategoricalAccuracy": "categorical_accuracy", "SparseCategoricalAccuracy": "sparse_categorical_accuracy"}


def _optimizer_from_keras(value, where: str):
    from .. import optimizers as _optimizers

    if isinstance(value, str):
        _need(value.lower() in [o.lower() for o in _OPTIMIZERS], f"{where} is {value!r}, which normlab does not have")
        return _optimizers.get(value.lower())
    _need(isinstance(value, dict), f"{where} must be an optimizer object")
    _check_object(value, where)
    cls = value["class_name"]
    _need(cls in _OPTIMIZERS, f"{where} is the Keras optimizer {cls!r}, which normlab does not have")
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


def _loss_from_keras(value, where: str):
    if isinstance(value, str):
        try:
            return _losses.get(value)
        except ValueError:
            raise _Bad(f"{where} is the loss {value!r}, which normlab does not have") from None
    _need(isinstance(value, dict), f"{where} must be one loss (a name or an object)")
    _check_object(value, where)
    cls = value["class_name"]
    _need(cls in _LOSSES, f"{where} is the Keras loss {cls!r}, which normlab does not have")
    conf = value.get("config") or {}
    _need(isinstance(conf, dict), f"{where}'s config must be an object")
    kwargs = {}
    for key, v in conf.items():
        w = f"{where} ({cls}) argument {key!r}"
        if key in ("from_logits", "label_smoothing") and cls != "MeanSquaredError":
            kwargs[key] = _plain(v, w)
        elif key == "reduction":
            _need(v in (None, "auto") or v in _losses.REDUCTIONS, f"{w} is {v!r}, which normlab does not have")
            if v not in (None, "auto"):  # Keras 2's "auto" is the default reduction
                kwargs[key] = v
        elif key == "ignore_class" and cls == "SparseCategoricalCrossentropy":
            _need(v is None or _is_int(v), f"{w} must be an int or null")
            kwargs[key] = v
        elif key == "axis":
            _need(v in (None, -1), f"{w} is {v!r}; normlab reduces over the last axis")
        elif key in ("name", "dtype", "fn"):
            pass
        else:
            _need(v is None, f"{w} is {v!r}, which normlab does not support")
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
    _need(cls in _METRICS, f"{where} is the Keras metric {cls!r}, which normlab does not have")
    conf = value.get("config") or {}
    _need(isinstance(conf, dict), f"{where}'s config must be an object")
    for key, v in conf.items():
        _need(key in ("name", "dtype") or (key == "threshold" and v == 0.5) or v is None,
              f"{where} ({cls}) argument {key!r} is {v!r}, which normlab does not support")
    return _METRICS[cls]


def _compile_from_keras(info, model) -> None:
    where = "the model's compile_config"
    _need(isinstance(info, dict), f"{where} must be an object")
    for key in ("loss_weights", "weighted_metrics"):
        _need(info.get(key) is None, f"{where} sets {key!r}, which normlab does not support")
    optimizer = _optimizer_from_keras(info.get("optimizer", "rmsprop"), f"{where}'s optimizer")
    _need(info.get("loss") is not None, f"{where} has no loss")
    loss = _loss_from_keras(info["loss"], f"{where}'s loss")
    metrics = info.get("metrics") or []
    _need(isinstance(metrics, list) and len(metrics) <= 64, f"{where}'s metrics must be a list")
    names = [_metric_from_keras(m, f"{where}'s metric {i}") for i, m in enumerate(metrics)]
    try:
        model.compile(optimizer=optimizer, loss=loss, metrics=names)
    except (ValueError, TypeError) as exc:
        raise _Bad(f"the model could not be compiled as {where} says: {exc}") from None


# ----------------------------------------------------------- optimizer state
def _slot_order(cls: str, conf: dict, n: int) -> list:
    """The optimizer's state keys in the order of Keras's ``optimizer/vars/2...`` (after iteration, learning rate).

    ``(slot, i)`` is the slot of Keras's ``i``-th trainable variable; a bare
    string is a scalar (Nadam's ``u_product``). Keras 3 creates Adam's
    momentum and velocity per variable in turn, AMSGrad's ``velocity_hat``
    after them, RMSprop's velocities, momentums and average gradients each
    as a block. Keras's base optimizer creates its own variables first:
    the moving averages (``use_ema``), then the gradient accumulators
    (``gradient_accumulation_steps``), one per variable each.
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
    raise ValueError(f"no Keras optimizer layout for {cls}")  # pragma: no cover - _OPTIMIZERS only


#: slots normlab keeps with the opposite sign of Keras's (normlab's RMSprop momentum is the notes' velocity)
_NEGATED_SLOTS = {("RMSprop", "momentum")}


def _trainable_in_keras_order(model, pairs) -> tuple[list, list]:
    """(the trainable weights in Keras's order, the index of each in normlab's optimizer state)."""
    arrays = [layer.params[k] for _, layer in pairs if layer is not None and layer.trainable
              for k in _var_keys(layer) if k in layer.params]
    index = {id(a): i for i, a in enumerate(model.trainable_weights)}
    return arrays, [index[id(a)] for a in arrays]


def _loss_to_keras(loss) -> dict:
    conf = _losses.serialize(loss)
    cls = conf["class_name"]
    if cls not in _LOSSES:
        raise ValueError(f"save_keras: the loss {cls!r} has no Keras 3 counterpart normlab maps.")
    c = conf["config"]
    out = {"name": _LOSSES[cls], "reduction": c.get("reduction", "sum_over_batch_size")}
    if cls == "MeanSquaredError":
        if c.get("from_logits"):
            raise ValueError("save_keras: MeanSquaredError(from_logits=True) has no Keras 3 counterpart.")
    else:
        out["from_logits"] = bool(c.get("from_logits", False))
        smoothing = float(c.get("label_smoothing", 0.0))
        if cls == "SparseCategoricalCrossentropy":  # Keras's has no label_smoothing
            if smoothing:
                raise ValueError("save_keras: Keras 3's SparseCategoricalCrossentropy has no label_smoothing.")
            out["ignore_class"] = c.get("ignore_class")
        else:
            out["label_smoothing"] = smoothing
    return {"module": "keras.losses", "class_name": cls, "config": out, "registered_name": None}


def _optimizer_to_keras(optimizer) -> dict:
    from .. import optimizers as _optimizers

    conf = _optimizers.serialize(optimizer)
    cls = conf["class_name"]
    if cls not in _OPTIMIZERS:
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
    metrics = []
    for m in model._metric_ids:
        if not isinstance(m, str):
            m = _metrics.registry.serialize(m)["class_name"]
            m = _METRICS.get(m, m)
        if m not in ("accuracy", "acc") and m not in _METRICS.values():
            raise ValueError(f"save_keras: the metric {m!r} has no Keras 3 counterpart normlab maps.")
        metrics.append(m)
    return {
        "optimizer": _optimizer_to_keras(model.optimizer),
        "loss": _loss_to_keras(model.loss),
        "loss_weights": None,
        "metrics": metrics,
        "weighted_metrics": None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }
