"""The mapping between Keras 3 configs and normlab objects, for :mod:`normlab.models.keras_format`.

Layers (:data:`LAYER_SPECS`: class names, arguments, the order of their
variables), initializers, regularizers, dtype policies, and the compile
settings (optimizer, loss, metrics, and the layout of the optimizer's state),
both ways. Keras -> normlab checks every value it reads and raises
:class:`_Bad` (the reader names the file); normlab -> Keras raises
``ValueError`` naming what Keras 3 lacks.
"""

from __future__ import annotations

import json
import re

import numpy as np

from .. import initializers as _initializers
from .. import losses as _losses
from .. import metrics as _metrics
from .. import regularizers as _regularizers
from ..layers.base import Layer
from ..layers.base import registry as _layer_registry

#: layer names read from a file (names only name layers: any printable text, bounded)
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")

#: a Keras-only or normlab-only argument whose value does not matter (renorm_momentum without renorm)
_ANY = object()


class _Bad(Exception):
    """A check failed; turned into a ModelFileError naming the file."""


def _need(ok, message: str) -> None:
    if not ok:
        raise _Bad(message)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _snake(name: str) -> str:
    """Keras's ``naming.to_snake_case`` (the keys of ``layers/`` in the weights file)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_keys(class_names) -> list[str]:
    """``layers/<key>`` of each layer: snake_case class name, ``_1``, ``_2``... on repeats (Keras's order)."""
    used: dict[str, int] = {}
    out = []
    for c in class_names:
        base = _snake(c)
        if base in used:
            used[base] += 1
            out.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            out.append(base)
    return out


def _keras_order(inbound: dict, output) -> list:
    """The order of a functional model's layers in Keras's ``model.layers`` (which names ``layers/<key>``).

    ``inbound`` maps each node (layer) to the nodes it takes, in argument
    order (``[]`` for the input). Keras 3 (``ops/function.py``, ``map_graph``)
    sorts by depth, the longest path to the output, deepest first, and breaks
    ties by the order of a depth-first walk from the output that visits a
    node before its inputs.
    """
    index, post, stack = {}, [], [(output, False)]
    while stack:  # iterative: a hostile graph may be deep
        node, done = stack.pop()
        if done:
            post.append(node)
            continue
        if node in index:
            continue
        index[node] = len(index)
        stack.append((node, True))
        stack.extend((p, False) for p in reversed(inbound[node]) if p not in index)
    depth = {output: 0}
    for node in reversed(post):  # consumers before the nodes they take
        for p in inbound[node]:
            depth[p] = max(depth.get(p, 0), depth[node] + 1)
    return sorted(index, key=lambda n: (-depth[n], index[n]))


# ------------------------------------------------------------------ the mapping
class _Spec:
    """How one layer class maps between Keras 3 and normlab.

    ``same``: arguments with the same name and meaning on both sides;
    ``init`` / ``reg``: initializer and regularizer arguments (objects);
    ``keras_only``: Keras arguments normlab lacks, accepted at these values
    only (they change nothing; any Keras argument not listed is accepted
    only as ``None``); ``normlab_only``: normlab arguments Keras lacks,
    saved only at these values; ``_ANY``: any value (it has no effect);
    ``extra``: fixed Keras arguments written on saving; ``trainable``:
    whether Keras's constructor takes ``trainable``.
    """

    def __init__(self, keras, normlab, same=(), init=(), reg=(), keras_only=None, normlab_only=None, extra=None,
                 trainable=True):
        self.keras, self.normlab = keras, normlab
        self.same, self.init, self.reg = tuple(same), tuple(init), tuple(reg)
        self.keras_only = dict(keras_only or {})
        self.normlab_only = dict(normlab_only or {})
        self.extra = dict(extra or {})
        self.trainable = trainable  # False: Keras's constructor takes no 'trainable' (SpatialDropout2D)


_DENSE_INIT, _DENSE_REG = ("kernel_initializer", "bias_initializer"), ("kernel_regularizer", "bias_regularizer")
_NORM_INIT, _NORM_REG = ("beta_initializer", "gamma_initializer"), ("beta_regularizer", "gamma_regularizer")
_POOL = ("pool_size", "strides", "padding", "data_format")
_ONES = {"class_name": "Ones", "config": {}}
_AFFINE = ("fill_mode", "interpolation", "fill_value", "seed")

_SPEC_LIST = [
    _Spec("Dense", "Dense", ("units", "activation", "use_bias"), _DENSE_INIT, _DENSE_REG),
    *(
        _Spec(c, c, ("filters", "kernel_size", "strides", "padding", "dilation_rate", "activation", "use_bias",
                     "data_format"), _DENSE_INIT, _DENSE_REG, keras_only={"groups": 1})
        for c in ("Conv1D", "Conv2D")
    ),
    _Spec("BatchNormalization", "BatchNormalization",
          ("axis", "momentum", "epsilon", "center", "scale", "renorm", "renorm_clipping", "renorm_momentum"),
          _NORM_INIT + ("moving_mean_initializer", "moving_variance_initializer"), _NORM_REG,
          keras_only={"synchronized": False},
          normlab_only={"unbiased_moving_variance": False, "virtual_batch_size": None, "batch_of_one": "error"}),
    _Spec("LayerNormalization", "LayerNormalization", ("axis", "epsilon", "center", "scale", "rms_scaling"),
          _NORM_INIT, _NORM_REG),
    _Spec("GroupNormalization", "GroupNormalization", ("groups", "axis", "epsilon", "center", "scale"),
          _NORM_INIT, _NORM_REG),
    _Spec("RMSNormalization", "RMSNormalization", ("axis", "epsilon"),
          normlab_only={"gamma_initializer": _ONES, "gamma_regularizer": None}),
    _Spec("UnitNormalization", "UnitNormalization", ("axis",)),
    _Spec("Dropout", "Dropout", ("rate", "noise_shape", "seed")),
    _Spec("AlphaDropout", "AlphaDropout", ("rate", "noise_shape", "seed")),
    _Spec("SpatialDropout2D", "SpatialDropout2D", ("rate", "data_format", "seed"), trainable=False),
    _Spec("GaussianNoise", "GaussianNoise", ("stddev", "seed")),
    _Spec("GaussianDropout", "GaussianDropout", ("rate", "seed")),
    _Spec("Activation", "Activation", ("activation",)),
    _Spec("Flatten", "Flatten", ("data_format",)),
    _Spec("Reshape", "Reshape", ("target_shape",)),
    *(_Spec(c, c, _POOL) for c in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")),
    *(_Spec(c, c, ("data_format", "keepdims")) for c in ("GlobalAveragePooling1D", "GlobalAveragePooling2D",
                                                         "GlobalMaxPooling1D", "GlobalMaxPooling2D")),
    *(_Spec(c, c) for c in ("Add", "Subtract", "Average", "Multiply")),
    _Spec("Concatenate", "Concatenate", ("axis",)),
    _Spec("Rescaling", "Rescaling", ("scale", "offset")),
    _Spec("Normalization", "Normalization", ("axis", "mean", "variance", "invert")),
    _Spec("RandomFlip", "RandomFlip", ("mode", "seed"), keras_only={"data_format": "channels_last"}),
    _Spec("RandomRotation", "RandomRotation", ("factor",) + _AFFINE, keras_only={"data_format": "channels_last"}),
    *(_Spec(c, c, ("height_factor", "width_factor") + _AFFINE, keras_only={"data_format": "channels_last"})
      for c in ("RandomTranslation", "RandomZoom")),
]

#: Keras class name -> how it maps (loading)
LAYER_SPECS: dict[str, _Spec] = {s.keras: s for s in _SPEC_LIST}
#: Keras aliases of the same classes
for _alias, _name in (("MaxPool1D", "MaxPooling1D"), ("MaxPool2D", "MaxPooling2D"), ("AvgPool1D", "AveragePooling1D"),
                      ("AvgPool2D", "AveragePooling2D"), ("GlobalAvgPool1D", "GlobalAveragePooling1D"),
                      ("GlobalAvgPool2D", "GlobalAveragePooling2D"), ("GlobalMaxPool1D", "GlobalMaxPooling1D"),
                      ("GlobalMaxPool2D", "GlobalMaxPooling2D"), ("Convolution1D", "Conv1D"),
                      ("Convolution2D", "Conv2D")):
    LAYER_SPECS[_alias] = LAYER_SPECS[_name]
#: normlab class name -> how it maps (saving); InstanceNormalization is Keras's GroupNormalization(groups=-1)
_SAVE_SPECS: dict[str, _Spec] = {s.normlab: s for s in _SPEC_LIST}
_SAVE_SPECS["InstanceNormalization"] = _Spec(
    "GroupNormalization", "InstanceNormalization", ("axis", "epsilon", "center", "scale"), _NORM_INIT, _NORM_REG,
    extra={"groups": -1},
)
#: normlab layers Keras 3 has no class for: refused by save_keras
NOT_IN_KERAS = ("NoisyDense", "WeightNormalization")
#: Keras layers refused by load_keras with a reason of their own
KERAS_ONLY_LAYERS = {
    "Lambda": "a Lambda layer holds Python code, and a .keras file is never run (Keras's safe_mode=True)",
    "TFSMLayer": "a TFSMLayer runs a TensorFlow SavedModel",
    "TorchModuleWrapper": "a TorchModuleWrapper holds a pickled torch module",
    "JaxLayer": "a JaxLayer holds Python code",
    "FlaxLayer": "a FlaxLayer holds Python code",
}

_ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "softmax")
_ACTIVATION_ARGS = ("activation",)


#: Keras variables normlab has no use for: Normalization's sample count (only adapt() reads it)
_KERAS_ONLY_VARS = ("count",)


def _var_keys(layer: Layer) -> list[str]:
    """normlab weight keys in the order Keras creates the layer's variables (``vars/0``, ``vars/1``, ...).

    ``"count"`` is Keras's int variable of an adapted ``Normalization``, which normlab does not keep.
    """
    cls = type(layer).__name__
    if cls == "Normalization":  # given statistics are constants in Keras (no variables), adapted ones variables
        return ["mean", "variance", "count"] if layer.input_mean is None else []
    if cls in ("Dense", "Conv1D", "Conv2D"):
        return ["kernel"] + (["bias"] if layer.use_bias else [])
    if cls == "BatchNormalization":
        return ([k for k, on in (("gamma", layer.scale), ("beta", layer.center)) if on]
                + ["moving_mean", "moving_variance"]
                + (["moving_stddev", "renorm_mean", "renorm_stddev"] if layer.renorm else []))
    if cls == "LayerNormalization" and getattr(layer, "rms_scaling", False):
        return ["gamma"]  # Keras's rms_scaling: a scale, never a center
    if cls in ("LayerNormalization", "GroupNormalization", "InstanceNormalization"):
        return [k for k, on in (("gamma", layer.scale), ("beta", layer.center)) if on]
    if cls == "RMSNormalization":
        return ["gamma"]
    return []


def _config_keys(layer: Layer) -> list[str]:
    """normlab buffers filled from the layer's config, not stored as Keras variables."""
    if type(layer).__name__ == "Normalization" and layer.input_mean is not None:
        return ["mean", "variance"]
    return []


# ------------------------------------------------------------ Keras -> normlab
#: where Keras's own classes live: its public modules and, for backend classes (the torch backend's
#: optimizers are ``keras.src.backend.torch.optimizers.torch_adam``), its private package.
#: Only compared, never imported.
_KERAS_MODULE = re.compile(r"keras(\.(layers|models|initializers|regularizers|optimizers|losses|metrics))?"
                           r"|keras\.src(\.[a-z][a-z0-9_]{0,40}){1,6}")


def _check_object(obj: dict, where: str) -> None:
    """A serialized Keras object must be one of Keras's own public classes (no custom or code objects)."""
    cls = obj.get("class_name")
    _need(isinstance(cls, str), f"{where} has no 'class_name'")
    _need(not cls.startswith("__"), f"{where} is a {cls!r} object; a .keras file read by normlab holds no code, "
                                    f"functions, tensors or arrays (Keras's safe_mode)")
    module = obj.get("module")
    _need(module is None or (isinstance(module, str) and _KERAS_MODULE.fullmatch(module) is not None),
          f"{where} ({cls!r}) names module {module!r}; only Keras's own classes are read, never imported "
          f"(custom objects are refused, as with safe_mode=True)")
    _need(obj.get("registered_name") in (None, cls),
          f"{where} ({cls!r}) is a registered custom object ({obj.get('registered_name')!r}); only Keras's "
          f"built-in classes are read")


def _plain(value, where: str):
    """A JSON value without objects (a dict would be a serialized object: code, array or tensor)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            raise _Bad(f"{where} is a serialized object ({v.get('class_name')!r}); a plain value is expected")
        if isinstance(v, list):
            stack.extend(v)
    return value


def _dtype_from_keras(value, where: str) -> str:
    if isinstance(value, dict):
        _check_object(value, where)
        _need(value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"), f"{where} is not a dtype policy")
        conf = value.get("config")
        _need(isinstance(conf, dict), f"{where} has no config")
        value = conf.get("name")
    _need(value in ("float32", "float64"),
          f"{where} is {value!r}; normlab computes in float32 or float64 (no mixed precision)")
    return value


def _object_from_keras(value, where: str, registry, kind: str):
    """An initializer or regularizer: ``None``, a registered name, or a Keras object dict."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            registry.lookup(value)
        except ValueError:
            raise _Bad(f"{where} is the {kind} {value!r}, which normlab does not have") from None
        return value
    _need(isinstance(value, dict), f"{where} must be a {kind} object, got {type(value).__name__}")
    _check_object(value, where)
    cls, conf = value["class_name"], value.get("config", {})
    _need(isinstance(conf, dict), f"{where}'s config must be an object")
    try:
        registry.lookup(cls)
    except ValueError:
        raise _Bad(f"{where} is the {kind} {cls!r}, which normlab does not have") from None
    # Keras 3.15 adds input_axes/output_axes (None: the usual fans) to the variance-scaling initializers
    conf = {k: _plain(v, f"{where}'s {k!r}") for k, v in conf.items()
            if not (k in ("input_axes", "output_axes") and v is None)}
    return {"class_name": cls, "config": conf}


def _layer_kwargs(entry: dict, where: str) -> tuple[str, dict]:
    """(normlab class name, constructor arguments) of one Keras layer entry."""
    _check_object(entry, where)
    cls = entry["class_name"]
    if cls in KERAS_ONLY_LAYERS:
        raise _Bad(f"{where} is a {cls}: {KERAS_ONLY_LAYERS[cls]}")
    if cls in ("Sequential", "Functional", "Model"):
        raise _Bad(f"{where} is a nested model ({cls}); normlab reads flat models only")
    spec = LAYER_SPECS.get(cls)
    _need(spec is not None, f"{where} is a Keras {cls!r} layer, which normlab does not have")
    conf = entry.get("config")
    _need(isinstance(conf, dict), f"{where}'s 'config' must be an object")
    kwargs: dict = {}
    for key, value in conf.items():
        w = f"{where} ({cls}) argument {key!r}"
        if key == "name":
            _need(isinstance(value, str) and _NAME.fullmatch(value), f"{w} must be a layer name")
            kwargs["name"] = value
        elif key == "trainable":
            _need(isinstance(value, bool), f"{w} must be a bool")
            kwargs["trainable"] = value
        elif key == "dtype":
            kwargs["dtype"] = _dtype_from_keras(value, w)
        elif key == "renorm_clipping" and isinstance(value, dict):
            # a dict of numbers, not a serialized object: Keras's {"rmax": r, "rmin": ..., "dmax": ...}
            _need(set(value) <= {"rmax", "rmin", "dmax"} and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()),
                f"{w} must map 'rmax', 'rmin', 'dmax' to numbers")
            kwargs[key] = dict(value) or None
        elif key in spec.same:
            kwargs[key] = _plain(value, w)
        elif key in spec.init:
            kwargs[key] = _object_from_keras(value, w, _initializers.registry, "initializer")
        elif key in spec.reg:
            kwargs[key] = _object_from_keras(value, w, _regularizers.registry, "regularizer")
        elif key in spec.keras_only:
            default = spec.keras_only[key]
            _need(default is _ANY or value == default or value is None,
                  f"{w} is {value!r}; normlab's {spec.normlab} supports only {default!r}")
        else:
            _need(value is None, f"{w} is {value!r}, which normlab's {spec.normlab} does not support")
    for key in _ACTIVATION_ARGS:
        if key in kwargs and kwargs[key] is not None:
            _need(kwargs[key] in _ACTIVATIONS,
                  f"{where} ({cls}) uses activation {kwargs[key]!r}, which normlab does not have "
                  f"(it has {', '.join(_ACTIVATIONS)})")
    kwargs.setdefault("dtype", "float32")
    return spec.normlab, kwargs


def _make_layer(entry: dict, where: str) -> Layer:
    name, kwargs = _layer_kwargs(entry, where)
    try:
        return _layer_registry.deserialize({"class_name": name, "config": kwargs})
    except (ValueError, TypeError) as exc:  # InvalidParameterError is a ValueError
        raise _Bad(f"{where} ({entry['class_name']}) could not be constructed: {exc}") from None


def _batch_shape(entry: dict, where: str) -> tuple:
    """The input shape of an ``InputLayer`` entry (batch axis None)."""
    _check_object(entry, where)
    _need(entry["class_name"] == "InputLayer", f"{where} must be an InputLayer, got {entry['class_name']!r}")
    conf = entry.get("config")
    _need(isinstance(conf, dict), f"{where}'s config must be an object")
    shape = conf.get("batch_shape", conf.get("batch_input_shape"))
    _need(isinstance(shape, list) and 2 <= len(shape) <= 8,
          f"{where}'s 'batch_shape' must be a list [batch, size, ...], got {shape!r}")
    for d in shape[1:]:
        _need(d is None or (_is_int(d) and d >= 1), f"{where}'s 'batch_shape' holds an invalid size {d!r}")
    _need(shape[0] is None or (_is_int(shape[0]) and shape[0] >= 1), f"{where}'s batch size is invalid")
    if "dtype" in conf and conf["dtype"] is not None:
        _dtype_from_keras(conf["dtype"], f"{where}'s dtype")
    for key in ("sparse", "ragged"):
        _need(conf.get(key) in (None, False), f"{where} is {key}; normlab reads dense inputs only")
    return (None,) + tuple(shape[1:])


# ----------------------------------------------------------------- compile
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


# ------------------------------------------------------------ normlab -> Keras
def _policy(dtype) -> dict:
    name = np.dtype(dtype or np.float32).name
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def _object_to_keras(value, module: str):
    if value is None or isinstance(value, str):
        return value
    return {"module": module, "class_name": value["class_name"], "config": dict(value["config"]),
            "registered_name": None}


def _layer_to_keras(layer: Layer) -> dict:
    """The Keras entry ``{"module", "class_name", "config", "registered_name"}`` of a built normlab layer."""
    cls = type(layer).__name__
    who = f"save_keras: layer {layer.name!r} ({cls})"
    if cls in NOT_IN_KERAS:
        raise ValueError(f"{who} has no Keras 3 counterpart (Keras has no {cls}); save the model in normlab's own "
                         f"format (model.save('model.npz')) instead.")
    spec = _SAVE_SPECS.get(cls)
    if spec is None:
        raise ValueError(f"{who} is not one of the layers normlab maps to Keras 3 "
                         f"({', '.join(sorted(_SAVE_SPECS))}).")
    conf = layer.get_config()
    out = {"name": conf.pop("name"), "trainable": conf.pop("trainable"), "dtype": _policy(layer.dtype)}
    if not spec.trainable:
        del out["trainable"]
    conf.pop("dtype", None)
    for key, value in conf.items():
        if key in spec.same:
            out[key] = value
        elif key in spec.init:
            out[key] = _object_to_keras(value, "keras.initializers")
        elif key in spec.reg:
            out[key] = _object_to_keras(value, "keras.regularizers")
        elif key in spec.normlab_only:
            default = spec.normlab_only[key]
            if default is not _ANY and value != default:
                raise ValueError(f"{who} sets {key}={value!r}, which Keras 3's {spec.keras} does not have; only "
                                 f"{default!r} can be saved to a .keras file.")
        else:
            raise ValueError(f"{who} has the argument {key!r}, which normlab does not map to Keras 3.")
    if cls == "BatchNormalization" and not isinstance(out["axis"], int):
        raise ValueError(f"{who} normalizes over axes {out['axis']!r}; Keras's BatchNormalization takes one axis.")
    out.update(spec.extra)
    return {"module": "keras.layers", "class_name": spec.keras, "config": json.loads(json.dumps(out)),
            "registered_name": None}


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


def _unique(name: str, taken: set) -> str:
    out, n = name, 0
    while out in taken:
        n += 1
        out = f"{name}_{n}"
    return out


def _input_entry(shape, name: str, dtype) -> dict:
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": list(shape), "dtype": np.dtype(dtype or np.float32).name, "sparse": False,
                       "ragged": False, "name": name, "optional": False},
            "registered_name": None}
