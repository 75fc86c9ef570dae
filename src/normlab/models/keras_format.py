"""Keras 3 ``.keras`` files, both ways, and the pickling of models.

A ``.keras`` file is a zip of three members (Keras 3, ``keras/src/saving/saving_lib.py``):

``config.json``
    ``serialize_keras_object(model)``: ``{"module", "class_name", "config",
    "registered_name", "build_config", "compile_config"}``; a ``Sequential``
    lists its layers (an ``InputLayer`` first), a ``Functional`` model gives
    each layer its ``inbound_nodes`` (``__keras_tensor__`` entries whose
    ``keras_history`` is ``[layer name, node index, tensor index]``).
``metadata.json``
    ``{"keras_version", "date_saved"}``.
``model.weights.h5``
    one HDF5 dataset per variable: ``layers/<key>/vars/<i>`` where ``<key>``
    is the snake_case *class* name of the layer, made unique by ``_1``,
    ``_2``, ... in the order of ``model.layers`` (a ``Sequential`` leaves
    its ``InputLayer`` out of that list, a ``Functional`` model keeps it),
    and ``<i>`` the order in which the layer created its variables
    (``BatchNormalization``: gamma, beta, moving_mean, moving_variance).
    ``vars`` (the model's own, none) and ``optimizer/vars/<i>`` complete it.

:func:`load_keras` reads such a file into a normlab model; :func:`save_keras`
writes one that Keras 3 loads (``keras.saving.load_model``) and predicts
with identically. ``normlab.load_model`` and ``model.save`` choose this
format for paths ending in ``.keras``. Layers map by class name; their
arguments share Keras's names and defaults (see :data:`LAYER_SPECS`).

Safety (Keras's ``safe_mode=True`` and more)
--------------------------------------------
A ``.keras`` file is data, never code: ``Lambda`` layers, ``__lambda__``
functions, custom objects (a ``registered_name``, a ``module`` outside
Keras's public ones) and every class normlab does not map are refused;
objects are built only from normlab's registries. Every malformed file
raises :class:`~normlab.models.saving.ModelFileError`, and the memory a load
takes is bounded by the file's size:

1. the zip holds exactly the three members above (no others, no duplicate
   names, no encryption), each within its size limit; a member stored
   deflated may inflate at most :data:`MAX_INFLATION` times, and every
   member is read with a limit, never trusting its declared size;
2. ``config.json`` is at most :data:`MAX_CONFIG_BYTES` of JSON nested at
   most :data:`MAX_JSON_DEPTH` deep; every key of every layer config is
   either mapped or a Keras default that changes nothing;
3. the HDF5 file is walked link by link (only hard links: no external or
   soft links, no external or virtual dataset storage), only the groups
   and datasets above are allowed, and the datasets' declared bytes sum to
   no more than the HDF5 file's size before any is read;
4. layers are built against the stored shapes: a layer's weight is
   allocated only after the file is found to hold a dataset of exactly that
   shape, and from a zero-strided stand-in input (no sample of the declared
   input shape is allocated);
5. the values read are finite (no NaN or inf) and fit the layer's dtype.

Optimizer
---------
The compile settings map (``SGD``, ``Adam``, ``AdamW``, ``RMSprop``,
``Adagrad``, ``Nadam``, ``Lion``; the mean squared error and the
cross-entropies; the accuracy metrics), and so does the optimizer's state,
Keras's ``optimizer/vars``: iteration count, learning rate, then the slots
in Keras's order (:func:`_slot_order`), so training resumes on either side
as if it had not moved. Keras's RMSprop momentum is normlab's with the
opposite sign. A layout that does not fit the optimizer is skipped with a
warning (fresh state), as Keras does. Learning-rate schedules, EMA, loss
scaling and gradient accumulation are refused.

Pickling
--------
:func:`_reduce_model` / :func:`_rebuild_model` pickle a model through
normlab's own model format (JSON and ``.npz`` arrays, no pickle inside), as
Keras's ``Model.__reduce__`` goes through the ``.keras`` format.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import tempfile
import zipfile

import numpy as np

from .. import __version__
from .. import initializers as _initializers
from .. import losses as _losses
from .. import metrics as _metrics
from .. import regularizers as _regularizers
from ..layers.base import Layer
from ..layers.base import registry as _layer_registry
from .saving import ModelFileError

__all__ = ["load_keras", "save_keras", "LAYER_SPECS", "KERAS_ONLY_LAYERS", "NOT_IN_KERAS"]

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"

#: largest config.json read (a model of a thousand layers takes about 2 MB)
MAX_CONFIG_BYTES = 16 << 20
#: largest metadata.json read
MAX_METADATA_BYTES = 64 << 10
#: deepest JSON nesting (Keras's functional configs need about 10)
MAX_JSON_DEPTH = 64
#: most a deflated member may inflate (Keras stores members uncompressed; float weights deflate ~1.1x)
MAX_INFLATION = 16
#: most layers, HDF5 objects and variables per layer a file may hold
MAX_LAYERS = 10000
MAX_H5_OBJECTS = 200000
MAX_H5_DEPTH = 8

#: the Keras version whose layout :func:`save_keras` writes (Keras reads it from 3.0 on)
KERAS_VERSION = "3.15.1"

_NAME = re.compile(r"[A-Za-z0-9_.\-/ ]{1,200}")
_FLOATS = ("float16", "float32", "float64")


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
    _Spec("BatchNormalization", "BatchNormalization", ("axis", "momentum", "epsilon", "center", "scale"),
          _NORM_INIT + ("moving_mean_initializer", "moving_variance_initializer"), _NORM_REG,
          keras_only={"synchronized": False, "renorm": False, "renorm_momentum": _ANY},
          normlab_only={"unbiased_moving_variance": False, "virtual_batch_size": None, "renorm": False,
                        "renorm_clipping": None, "renorm_momentum": _ANY, "batch_of_one": "error"}),
    _Spec("LayerNormalization", "LayerNormalization", ("axis", "epsilon", "center", "scale"), _NORM_INIT, _NORM_REG,
          keras_only={"rms_scaling": False}),
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
                + ["moving_mean", "moving_variance"])
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
#: optimizers are ``keras.src.backend.torch.optimizers.torch_adam``), its private package. Only compared, never imported.
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
#: Keras optimizer arguments normlab lacks, accepted at these values (ema_momentum matters only with use_ema)
_KERAS_OPT_DEFAULTS = {"use_ema": False, "ema_momentum": _ANY, "ema_overwrite_frequency": None,
                       "loss_scale_factor": None, "gradient_accumulation_steps": None, "is_legacy_optimizer": False}
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
            _need(v in (None, "sum_over_batch_size", "auto"), f"{w} is {v!r}; normlab averages over the batch")
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
    as a block.
    """
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


# ------------------------------------------------------------------ reading
def _open_regular_file(path):
    """``(file, size)`` of ``path`` opened for reading; refuses what is not a regular file."""
    import errno
    import stat

    name = os.fspath(path)
    # O_NONBLOCK: opening a FIFO must not wait for a writer
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path}: not a regular file (a device, pipe or socket).")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_members(fh, size: int) -> dict:
    """The three members' bytes, each read with a limit (see the module docstring)."""
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile as exc:
        raise _Bad(f"not a .keras file (not a zip archive: {exc})") from None
    with zf:
        infos = zf.infolist()
        _need(len(infos) <= 16, f"the archive holds {len(infos)} members; a .keras file holds three")
        names = [i.filename for i in infos]
        _need(len(set(names)) == len(names), "the archive repeats a member name")
        extra = sorted(set(names) - {CONFIG, METADATA, WEIGHTS})
        _need("model.weights.npz" not in extra,
              "the weights are in Keras's npz layout (weights_format='npz'); normlab reads model.weights.h5")
        _need(not extra, f"the archive holds unexpected members {[e[:80] for e in extra[:5]]}; a .keras file "
                         f"holds only {CONFIG}, {METADATA} and {WEIGHTS}")
        _need(CONFIG in names, f"not a .keras file (no {CONFIG})")
        _need(WEIGHTS in names, f"the archive has no {WEIGHTS}")
        limits = {CONFIG: MAX_CONFIG_BYTES, METADATA: MAX_METADATA_BYTES, WEIGHTS: MAX_INFLATION * size}
        out = {}
        for info in infos:
            name = info.filename
            _need(not info.flag_bits & 0x1, f"member {name} is encrypted")
            _need(info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED),
                  f"member {name} uses compression method {info.compress_type}; stored or deflated expected")
            _need(info.compress_size <= size, f"member {name} declares more bytes than the file holds")
            limit = limits[name]
            if info.compress_type == zipfile.ZIP_STORED:
                _need(info.file_size == info.compress_size, f"member {name} is stored but declares another size")
            else:
                limit = min(limit, max(MAX_INFLATION * info.compress_size, 1 << 16))
            _need(info.file_size <= limit,
                  f"member {name} declares {info.file_size} bytes, more than the {limit} normlab reads "
                  f"(a stored member up to the file's size, a deflated one up to {MAX_INFLATION}x)")
            with zf.open(info) as f:
                data = f.read(limit + 1)  # zipfile stops at the declared size and checks the CRC
            _need(len(data) == info.file_size, f"member {name} is truncated")
            out[name] = data
    return out


def _parse_json(data: bytes, what: str):
    def no_constant(name):
        raise _Bad(f"{what} holds {name}, which is not JSON")

    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except RecursionError:
        raise _Bad(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, integers over the digit limit
        raise _Bad(f"{what} is not valid JSON ({exc})") from None
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        _need(depth <= MAX_JSON_DEPTH, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
        items = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))
    return obj


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize


class _Weights:
    """The checked HDF5 file: its datasets, looked up by ``layers/<key>/vars/<i>``; nothing read yet."""

    def __init__(self, data: bytes):
        try:
            import h5py
        except ImportError:  # pragma: no cover - checked before
            raise ImportError("Reading .keras files needs h5py: pip install 'normlab[keras]'.") from None
        self.h5py = h5py
        try:
            self.file = h5py.File(io.BytesIO(data), "r")
        except Exception as exc:  # h5py raises OSError, ValueError... on anything that is not HDF5
            raise _Bad(f"{WEIGHTS} is not a readable HDF5 file ({type(exc).__name__}: {exc})") from None
        self.size = len(data)
        self.groups: set[str] = set()
        self.datasets: dict = {}
        self._walk()

    def close(self) -> None:
        self.file.close()

    def _walk(self) -> None:
        h5py = self.h5py
        stack, count, total = [("", self.file, 0)], 0, 0
        while stack:
            prefix, group, depth = stack.pop()
            _need(depth < MAX_H5_DEPTH, f"{WEIGHTS} nests groups more than {MAX_H5_DEPTH} deep")
            for name in group:
                count += 1
                _need(count <= MAX_H5_OBJECTS, f"{WEIGHTS} holds more than {MAX_H5_OBJECTS} objects")
                path = prefix + name
                link = group.get(name, getlink=True)
                _need(isinstance(link, h5py.HardLink),
                      f"{WEIGHTS} entry {path[:200]!r} is a {type(link).__name__}; only plain entries are read")
                obj = group[name]
                if isinstance(obj, h5py.Group):
                    self.groups.add(path)
                    stack.append((path + "/", obj, depth + 1))
                    continue
                _need(isinstance(obj, h5py.Dataset), f"{WEIGHTS} entry {path[:200]!r} is neither group nor dataset")
                plist = obj.id.get_create_plist()
                _need(plist.get_external_count() == 0 and plist.get_layout() != h5py.h5d.VIRTUAL,
                      f"{WEIGHTS} dataset {path[:200]!r} keeps its data outside the file")
                _need(obj.shape is not None, f"{WEIGHTS} dataset {path[:200]!r} is empty (no dataspace)")
                dt = obj.dtype
                _need(dt.fields is None and dt.subdtype is None and dt.kind in "fiu",
                      f"{WEIGHTS} dataset {path[:200]!r} has dtype {dt}; numbers are expected")
                total += _nbytes(obj.shape, dt)
                _need(total <= self.size,
                      f"the datasets of {WEIGHTS} declare more bytes ({total}) than the file holds ({self.size})")
                self.datasets[path] = obj

    def check_layout(self, keys: list[str], counts: list[int]) -> None:
        """Exactly the groups and datasets Keras writes for layers ``keys`` with ``counts`` variables."""
        expected_groups = {"layers", "vars", "optimizer", "optimizer/vars"}
        expected = set()
        for key, n in zip(keys, counts):
            expected_groups.update((f"layers/{key}", f"layers/{key}/vars"))
            expected.update(f"layers/{key}/vars/{i}" for i in range(n))
        extra_groups = sorted(self.groups - expected_groups)
        _need(not extra_groups, f"{WEIGHTS} holds groups that no layer of the config has: {extra_groups[:5]}")
        opt = re.compile(r"optimizer/vars/(0|[1-9][0-9]{0,6})")
        extra = sorted(p for p in set(self.datasets) - expected if not opt.fullmatch(p))
        _need(not extra, f"{WEIGHTS} holds datasets that no layer of the config has: {extra[:5]}")
        missing = sorted(expected - set(self.datasets))
        _need(not missing, f"{WEIGHTS} lacks the datasets {missing[:5]}")
        for p in expected:
            dt = self.datasets[p].dtype
            _need(dt.name in _FLOATS or dt.kind in "iu",
                  f"{WEIGHTS} dataset {p!r} has dtype {dt}; weights are numbers")

    def read(self, path: str, target: np.ndarray) -> None:
        ds = self.datasets[path]
        _need(tuple(ds.shape) == target.shape, f"{WEIGHTS} dataset {path!r} has shape {tuple(ds.shape)}, the layer "
                                               f"expects {target.shape}")
        try:
            arr = ds[()]
        except Exception as exc:
            raise _Bad(f"{WEIGHTS} dataset {path!r} could not be read ({type(exc).__name__}: {exc})") from None
        arr = np.asarray(arr)
        _need(arr.shape == target.shape and arr.dtype.kind == "f", f"{WEIGHTS} dataset {path!r} reads as "
                                                                   f"{arr.dtype} {arr.shape}")
        _need(arr.size == 0 or bool(np.isfinite(arr.min()) and np.isfinite(arr.max())),
              f"{WEIGHTS} dataset {path!r} holds NaN or inf")
        np.copyto(target, arr, casting="same_kind")
        if target.dtype.itemsize < arr.dtype.itemsize and target.size:
            _need(bool(np.isfinite(target.min()) and np.isfinite(target.max())),
                  f"{WEIGHTS} dataset {path!r} holds values that overflow {target.dtype}")


def _stand_in(shape, dtype) -> np.ndarray:
    """A zero-strided array of ``shape`` (batch 1; unknown sizes 64, as normlab.load_model builds)."""
    shape = (1,) + tuple(64 if d is None else int(d) for d in shape[1:])
    return np.broadcast_to(np.zeros((), dtype=dtype or np.float32), shape)


def _build_against(layer: Layer, input_shape, stored: dict, where: str, budget: list) -> None:
    """Build ``layer`` for ``input_shape``; each weight only once the file is known to store its shape.

    Buffers a layer fills from its config (``Normalization``'s given mean
    and variance) take from ``budget`` (bytes; the file's size for the
    whole model) instead.
    """
    from_config = set(_config_keys(layer))

    def add_weight(key, shape, initializer="zeros", regularizer=None, trainable=True):
        shape = tuple(int(d) for d in shape)
        if key in from_config:
            budget[0] -= _nbytes(shape, layer.dtype or np.float32)
            _need(budget[0] >= 0, f"{where} fills a weight {key!r} of shape {shape} from its config, more than "
                                  f"the file's size allows")
            return Layer.add_weight(layer, key, shape, initializer, regularizer, trainable)
        _need(key in stored, f"{where} creates a weight {key!r} of shape {shape}, which the file does not store")
        _need(stored[key] == shape,
              f"{where}: the file stores {key!r} with shape {stored[key]}, the layer's config makes it {shape}")
        # every weight is overwritten by the stored values: skip the random initialization
        return Layer.add_weight(layer, key, shape, "zeros", regularizer, trainable)

    layer.add_weight = add_weight
    try:
        if getattr(layer, "multi_input", False):
            layer._ensure_built([_stand_in(s, layer.dtype) for s in input_shape])
        else:
            layer._ensure_built(_stand_in(input_shape, layer.dtype))
    finally:
        layer.__dict__.pop("add_weight", None)
    have = sorted(list(layer.params) + list(layer.buffers))
    want = sorted(list(stored) + list(from_config))
    _need(have == want, f"{where} has the weights {have}, the file stores {sorted(stored)}")


def _history(tensor, where: str, known: dict):
    """The tensor a ``__keras_tensor__`` entry of an inbound node refers to."""
    _need(isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__",
          f"{where} must be a __keras_tensor__ entry")
    conf = tensor.get("config")
    _need(isinstance(conf, dict), f"{where} has no config")
    hist = conf.get("keras_history")
    _need(isinstance(hist, list) and len(hist) == 3 and isinstance(hist[0], str),
          f"{where}'s keras_history must be [layer name, node index, tensor index]")
    _need(hist[1] == 0 and hist[2] == 0,
          f"{where} refers to node {hist[1]!r}, tensor {hist[2]!r} of {hist[0]!r}; normlab reads layers called once "
          f"with one output")
    _need(hist[0] in known, f"{where} refers to {hist[0]!r}, which is not an earlier layer of the config")
    return known[hist[0]]


class _Reader:
    def __init__(self, members: dict, size: int):
        self.members = members
        self.budget = [size]  # bytes that layers may fill from their configs

    def load(self, compile: bool):
        if METADATA in self.members:
            meta = _parse_json(self.members[METADATA], METADATA)
            _need(isinstance(meta, dict), f"{METADATA} must be a JSON object")
        top = _parse_json(self.members[CONFIG], CONFIG)
        _need(isinstance(top, dict), f"{CONFIG} must be a JSON object")
        _check_object(top, "the model")
        cls = top["class_name"]
        _need(cls in ("Sequential", "Functional", "Model"),
              f"the model is a {cls!r}; normlab reads Sequential and Functional models (subclassed models "
              f"are Python code)")
        conf = top.get("config")
        _need(isinstance(conf, dict), "the model's 'config' must be an object")
        _need(conf.get("name") is None or isinstance(conf["name"], str), "the model's 'name' must be a string")
        entries = conf.get("layers")
        _need(isinstance(entries, list) and 1 <= len(entries) <= MAX_LAYERS,
              f"the model's 'layers' must be a list of 1 to {MAX_LAYERS} layers")
        for i, e in enumerate(entries):
            _need(isinstance(e, dict), f"layer {i} of the config must be an object")
        self.weights = _Weights(self.members.pop(WEIGHTS))
        try:
            if cls == "Sequential":
                model, pairs = self.sequential(conf, entries)
            else:
                model, pairs = self.functional(conf, entries)
            # pairs: (h5 key, layer or None) in Keras's model.layers order
            self.weights.check_layout([k for k, _ in pairs], [len(_var_keys(l)) if l else 0 for _, l in pairs])
            for key, layer in pairs:
                if layer is None:
                    continue
                for i, k in enumerate(_var_keys(layer)):
                    if k in _KERAS_ONLY_VARS:
                        continue
                    target = layer.params[k] if k in layer.params else layer.buffers[k]
                    self.weights.read(f"layers/{key}/vars/{i}", target)
            if compile and top.get("compile_config"):  # {} when the Keras model was not compiled
                _compile_from_keras(top["compile_config"], model)
                self.optimizer_state(model, pairs)
        finally:
            self.weights.close()
        return model

    def optimizer_state(self, model, pairs) -> None:
        """Keras's optimizer variables into the optimizer, when they are laid out as this optimizer's are.

        A file without them (an optimizer that never stepped) gives fresh
        state; a layout that does not fit is skipped with a warning, as Keras
        does with its own files.
        """
        import warnings

        ds = self.weights.datasets
        n = sum(1 for p in ds if p.startswith("optimizer/vars/"))
        if n == 0:
            return
        opt = model.optimizer
        cls = type(opt).__name__
        arrays, index = _trainable_in_keras_order(model, pairs)
        order = _slot_order(cls, opt.get_config(), len(arrays))
        shapes = [() if isinstance(o, str) else arrays[o[1]].shape for o in order]
        have = [tuple(ds[f"optimizer/vars/{k}"].shape) for k in range(n)] if all(
            f"optimizer/vars/{k}" in ds for k in range(n)) else None
        if have != [(), ()] + shapes or ds["optimizer/vars/0"].dtype.kind not in "iu":
            warnings.warn(f"load_keras: the file's optimizer variables ({n}) are not laid out as normlab's {cls} "
                          f"keeps its state; the optimizer starts afresh.", stacklevel=3)
            return
        it = int(ds["optimizer/vars/0"][()])
        _need(it >= 0, "the optimizer's iteration count is negative")
        state = {"iterations": np.array(it, np.int64), "skipped_steps": np.array(0, np.int64)}
        for k, o in enumerate(order):
            key = o if isinstance(o, str) else f"{o[0]}/{index[o[1]]}"
            # scalars (Nadam's u_product) are float64 in normlab, slots have their weight's dtype
            target = np.zeros(shapes[k], np.float64 if isinstance(o, str) else arrays[o[1]].dtype)
            self.weights.read(f"optimizer/vars/{k + 2}", target)
            if not isinstance(o, str) and (cls, o[0]) in _NEGATED_SLOTS:
                np.negative(target, out=target)
            state[key] = target
        try:
            opt.set_state(state)
        except (ValueError, TypeError) as exc:
            raise _Bad(f"the optimizer's state does not fit the model: {exc}") from None

    def stored(self, key: str, layer: Layer) -> dict:
        ds = self.weights.datasets
        out = {}
        for i, k in enumerate(_var_keys(layer)):
            path = f"layers/{key}/vars/{i}"
            _need(path in ds, f"{WEIGHTS} lacks {path!r} ({k!r} of layer {layer.name!r})")
            if k in _KERAS_ONLY_VARS:
                _need(ds[path].shape == () and ds[path].dtype.kind in "iu",
                      f"{WEIGHTS} dataset {path!r} ({k!r}) must be an integer scalar")
                continue
            out[k] = tuple(int(d) for d in ds[path].shape)
        return out

    def sequential(self, conf: dict, entries: list):
        from .sequential import Sequential

        if entries[0].get("class_name") == "InputLayer":
            shape = _batch_shape(entries[0], "layer 0 of the config")
            entries = entries[1:]
        else:
            bis = conf.get("build_input_shape")
            _need(isinstance(bis, list) and len(bis) >= 2,
                  "the Sequential model has neither an InputLayer nor a build_input_shape")
            shape = _batch_shape({"class_name": "InputLayer", "config": {"batch_shape": bis}}, "build_input_shape")
        _need(entries, "the Sequential model has no layers")
        _need(all(d is not None for d in shape[1:]),
              f"the Sequential model's input shape {shape} has unknown sizes; normlab's Sequential needs them all")
        layers = [_make_layer(e, f"layer {i + 1} of the config") for i, e in enumerate(entries)]
        keys = _h5_keys([e["class_name"] for e in entries])
        try:
            model = Sequential(layers, name=conf.get("name"))
        except (ValueError, TypeError) as exc:
            raise _Bad(f"the Sequential model could not be assembled: {exc}") from None
        for key, layer in zip(keys, layers):
            where = f"layer {layer.name!r} ({type(layer).__name__})"
            try:
                _build_against(layer, shape, self.stored(key, layer), where, self.budget)
                shape = (None,) + tuple(layer.compute_output_shape((1,) + tuple(shape[1:]))[1:])
            except (ValueError, TypeError) as exc:
                raise _Bad(f"{where} cannot take inputs of shape {shape}: {exc}") from None
        _need(model.built, "the model is not built after loading")
        return model, list(zip(keys, layers))

    def functional(self, conf: dict, entries: list):
        from .functional import Input, Model

        def one(ref, what):
            if isinstance(ref, list) and len(ref) == 1 and isinstance(ref[0], list):
                ref = ref[0]
            _need(isinstance(ref, list) and len(ref) == 3 and isinstance(ref[0], str) and ref[1:] == [0, 0],
                  f"the model's {what} must be one [layer name, 0, 0] (normlab models have one input and one output)")
            return ref[0]

        in_name, out_name = one(conf.get("input_layers"), "input_layers"), one(conf.get("output_layers"), "output_layers")
        known: dict = {}
        names = []
        pairs = []
        keys = _h5_keys([e.get("class_name") if isinstance(e.get("class_name"), str) else "" for e in entries])
        for i, (entry, key) in enumerate(zip(entries, keys)):
            where = f"layer {i} of the config"
            name = entry.get("name")
            _need(isinstance(name, str) and _NAME.fullmatch(name), f"{where} has no valid 'name'")
            _need(name not in known, f"{where} repeats the layer name {name!r}")
            names.append(name)
            nodes = entry.get("inbound_nodes")
            _need(isinstance(nodes, list), f"{where} ({name!r}) has no 'inbound_nodes' list")
            if entry.get("class_name") == "InputLayer":
                _need(name == in_name, f"{where} is an InputLayer {name!r} that is not the model's input")
                _need(not nodes, f"{where} is an InputLayer with inbound nodes")
                try:
                    known[name] = Input(_batch_shape(entry, where)[1:], name=name)
                except (ValueError, TypeError) as exc:
                    raise _Bad(f"{where}: {exc}") from None
                pairs.append((key, None))
                continue
            layer = _make_layer(entry, where)
            _need(len(nodes) == 1, f"{where} ({name!r}) is called {len(nodes)} times; normlab calls a layer once")
            node = nodes[0]
            _need(isinstance(node, dict) and set(node) <= {"args", "kwargs"},
                  f"{where}'s inbound node must be an object {{'args', 'kwargs'}} (Keras 3)")
            args, kwargs = node.get("args"), node.get("kwargs") or {}
            _need(isinstance(args, list) and len(args) == 1, f"{where}'s inbound node must have one argument")
            # a recorded 'training' is replaced by the model's own at every call (Keras's Functional does so)
            _need(isinstance(kwargs, dict)
                  and all(v is None or (k == "training" and isinstance(v, bool)) for k, v in kwargs.items()),
                  f"{where}'s inbound node passes arguments {sorted(kwargs) if isinstance(kwargs, dict) else kwargs} "
                  f"that normlab does not support")
            multi = getattr(layer, "multi_input", False)
            if multi:
                _need(isinstance(args[0], list) and 1 <= len(args[0]) <= 64,
                      f"{where} ({entry['class_name']}) must take a list of tensors")
                inputs = [_history(t, f"{where}'s input {j}", known) for j, t in enumerate(args[0])]
            else:
                inputs = _history(args[0], f"{where}'s input", known)
            try:
                known[name] = layer(inputs)
                shapes = [t.shape for t in inputs] if multi else inputs.shape
                _build_against(layer, shapes, self.stored(key, layer), f"layer {name!r} ({type(layer).__name__})",
                               self.budget)
            except (ValueError, TypeError) as exc:
                raise _Bad(f"{where} ({name!r}) cannot be connected to its inputs: {exc}") from None
            pairs.append((key, layer))
        _need(in_name in known and out_name in known and out_name != in_name,
              f"the model's input {in_name!r} or output {out_name!r} is not a layer of the config")
        # every layer is built: skip Model.build, which would allocate a sample of the input shape
        model = Model.__new__(Model)
        model.build = lambda *args, **kwargs: None
        try:
            Model.__init__(model, known[in_name], known[out_name], name=conf.get("name"))
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise _Bad(f"the model could not be assembled: {exc}") from None
        finally:
            model.__dict__.pop("build", None)
        layers = [l for _, l in pairs if l is not None]
        _need(len(model.layers) == len(layers) and {id(l) for l in model.layers} == {id(l) for l in layers},
              "the config has layers that are not connected to the output")
        _need(model.built, "the model is not built after loading")
        return model, pairs


def _require_h5py():
    try:
        import h5py  # noqa: F401
    except ImportError:
        raise ImportError(
            "Reading and writing .keras files needs h5py (the HDF5 weights): pip install 'normlab[keras]'."
        ) from None


def load_keras(path, compile: bool = True):
    """Read a Keras 3 ``.keras`` file into a normlab ``Sequential`` or ``Model``.

    Parameters
    ----------
    path : str or os.PathLike
    compile : bool, default True
        Compile the model as the file's ``compile_config`` says (optimizer
        with its state, loss, metrics).

    Returns
    -------
    Sequential or Model
        Built, with the file's weights; ``predict`` gives Keras's predictions.

    Raises
    ------
    ModelFileError
        For every file that is not a ``.keras`` model normlab can read:
        not a zip, members other than the three, a layer or object normlab
        does not map (``Lambda``, custom classes), inconsistent shapes,
        NaN/inf weights, ... The message names the file and the cause.
    ImportError
        When h5py is not installed.
    FileNotFoundError, IsADirectoryError, PermissionError
        When ``path`` cannot be opened as a file.
    """
    _require_h5py()
    fh, size = _open_regular_file(path)
    with fh:
        if size == 0:
            raise ModelFileError(f"{path}: the file is empty.")
        try:
            return _Reader(_read_members(fh, size), size).load(compile)
        except _Bad as exc:
            raise ModelFileError(f"{path}: {exc}.") from None
        except (ModelFileError, MemoryError):
            raise
        except Exception as exc:  # zlib.error, EOFError, OSError from a truncated or corrupted archive
            raise ModelFileError(f"{path}: not a readable .keras file ({type(exc).__name__}: {exc}).") from None


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
    out = {"name": _LOSSES[cls], "reduction": "sum_over_batch_size"}
    if cls == "MeanSquaredError":
        if c.get("from_logits"):
            raise ValueError("save_keras: MeanSquaredError(from_logits=True) has no Keras 3 counterpart.")
    else:
        out["from_logits"] = bool(c.get("from_logits", False))
        smoothing = float(c.get("label_smoothing", 0.0))
        if cls == "SparseCategoricalCrossentropy":  # Keras's has no label_smoothing
            if smoothing:
                raise ValueError("save_keras: Keras 3's SparseCategoricalCrossentropy has no label_smoothing.")
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


def _keras_config(model, include_compile: bool) -> tuple[dict, list]:
    """(config.json object, [(h5 key, layer or None)] in Keras's ``model.layers`` order)."""
    from .functional import Model
    from .sequential import Sequential

    layers = list(model.layers)
    names = [l.name for l in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"save_keras: model {model.name!r} has repeated layer names; Keras needs unique names.")
    entries = [_layer_to_keras(l) for l in layers]
    dtype = layers[0].dtype
    input_name = _unique("input_layer", set(names))
    if isinstance(model, Sequential):
        shape = list(model.input_shape)
        keys = _h5_keys([e["class_name"] for e in entries])
        top = {"module": "keras", "class_name": "Sequential",
               "config": {"name": model.name, "trainable": True, "dtype": _policy(dtype),
                          "layers": [_input_entry(shape, input_name, dtype)] + entries, "build_input_shape": shape},
               "registered_name": None, "build_config": {"input_shape": shape}}
        pairs = list(zip(keys, layers))
    elif isinstance(model, Model):
        conf = model.get_config()
        shape = list(conf["input_shape"])
        tensor_names = [input_name] + names
        shapes = [tuple(shape)]
        for layer, entry in zip(layers, conf["layers"]):
            args = [shapes[j] for j in entry["inbound"]]
            if getattr(layer, "multi_input", False):
                out = layer.compute_output_shape([(1,) + tuple(s[1:]) for s in args])
            else:
                out = layer.compute_output_shape((1,) + tuple(args[0][1:]))
            shapes.append((None,) + tuple(out[1:]))

        def tensor(j):
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": list(shapes[j]), "dtype": np.dtype(dtype or np.float32).name,
                               "keras_history": [tensor_names[j], 0, 0]}}

        full = [{**_input_entry(shape, input_name, dtype), "name": input_name, "inbound_nodes": []}]
        for layer, entry, lconf in zip(layers, entries, conf["layers"]):
            inbound = [tensor(j) for j in lconf["inbound"]]
            arg = inbound if getattr(layer, "multi_input", False) else inbound[0]
            full.append({**entry, "name": layer.name, "inbound_nodes": [{"args": [arg], "kwargs": {}}]})
        keys = _h5_keys(["InputLayer"] + [e["class_name"] for e in entries])
        top = {"module": "keras.src.models.functional", "class_name": "Functional",
               "config": {"name": model.name, "trainable": True, "layers": full,
                          # one tensor, not a list of one: Keras then expects a plain array, as it writes itself
                          "input_layers": [input_name, 0, 0],
                          "output_layers": [tensor_names[conf["output"]], 0, 0]},
               "registered_name": "Functional", "build_config": {"input_shape": shape}}
        pairs = list(zip(keys, [None] + layers))
    else:
        raise TypeError(f"save_keras: expected a normlab Sequential or Model, got {type(model).__name__}.")
    if include_compile and getattr(model, "compiled", False):
        top["compile_config"] = _compile_to_keras(model)
    return top, pairs


def _keras_optimizer_vars(model, pairs) -> list:
    """Keras's ``optimizer/vars``: iteration, learning rate, slots in Keras's order (none before the first step)."""
    opt = model.optimizer
    state = opt.get_state()
    cls = type(opt).__name__
    arrays, index = _trainable_in_keras_order(model, pairs)
    order = _slot_order(cls, opt.get_config(), len(arrays))
    if not any("/" in k for k in state) and (order or int(state["iterations"]) == 0):
        return []  # no step taken: Keras's optimizer is not built either
    out = [np.array(state["iterations"], np.int64), np.array(opt.get_config()["learning_rate"], np.float32)]
    for o in order:
        arr = np.asarray(state[o if isinstance(o, str) else f"{o[0]}/{index[o[1]]}"])
        out.append(-arr if not isinstance(o, str) and (cls, o[0]) in _NEGATED_SLOTS else arr)
    return out


def save_keras(model, path, include_compile: bool = True) -> None:
    """Write ``model`` as a Keras 3 ``.keras`` file (``keras.saving.load_model`` reads it).

    Parameters
    ----------
    model : Sequential or Model
        Built, made only of layers with a Keras 3 counterpart.
    path : str or os.PathLike
        Written atomically (a temporary file renamed over it).
    include_compile : bool, default True
        Write the optimizer (with its state), loss and metrics
        (``compile_config``, ``optimizer/vars``) of a compiled model.

    Raises
    ------
    ValueError
        If the model is not built, holds NaN/inf, or has a layer, argument,
        optimizer, loss or metric that Keras 3 lacks (``NoisyDense``,
        ``WeightNormalization``, ``BatchNormalization(virtual_batch_size=...)``
        ...); the message names it.
    ImportError
        When h5py is not installed.
    """
    _require_h5py()
    import h5py

    from .saving import _write_atomically

    if not getattr(model, "built", False):
        raise ValueError(f"save_keras: model {getattr(model, 'name', model)!r} is not built yet; call build() or "
                         f"fit() first.")
    top, pairs = _keras_config(model, include_compile)
    arrays = []
    for key, layer in pairs:
        if layer is None:
            arrays.append((key, None, []))
            continue
        ks = _var_keys(layer)
        have = sorted(list(layer.params) + list(layer.buffers))
        want = sorted([k for k in ks if k not in _KERAS_ONLY_VARS] + _config_keys(layer))
        if want != have:
            raise ValueError(f"save_keras: layer {layer.name!r} ({type(layer).__name__}) holds {have}, Keras's "
                             f"layer holds {sorted(ks)}.")
        # Normalization's count: how many samples adapt() saw (Keras's adapt() alone reads it; normlab has none)
        vals = [np.zeros((), np.int64) if k in _KERAS_ONLY_VARS else
                layer.params[k] if k in layer.params else layer.buffers[k] for k in ks]
        for k, v in zip(ks, vals):
            if v.size and not (np.isfinite(v.min()) and np.isfinite(v.max())):
                raise ValueError(f"save_keras: weight {k!r} of layer {layer.name!r} holds NaN or inf.")
        arrays.append((key, layer.name, vals))
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        group = f.create_group("layers")
        for key, name, vals in arrays:
            v = group.create_group(key).create_group("vars")
            v.attrs["name"] = name or key
            for i, arr in enumerate(vals):
                v.create_dataset(str(i), data=np.array(arr, order="C"))  # keeps 0-d (Keras's count)
        f.create_group("vars").attrs["name"] = model.name
        if "compile_config" in top:
            opt_vars = _keras_optimizer_vars(model, pairs)
            v = f.create_group("optimizer").create_group("vars")
            v.attrs["name"] = top["compile_config"]["optimizer"]["config"].get("name", "optimizer")
            for i, arr in enumerate(opt_vars):
                v.create_dataset(str(i), data=arr)
    meta = {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "saved_by": f"normlab {__version__}"}

    def write(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(METADATA, json.dumps(meta))
            zf.writestr(CONFIG, json.dumps(top))
            zf.writestr(WEIGHTS, buf.getvalue())

    _write_atomically(path, write)


# ----------------------------------------------------------------- pickling
def _reduce_model(model):
    """``model.__reduce__()``: rebuild from normlab's own file format in memory (no pickle of the model's insides).

    A built model travels as the bytes of its model file (weights, buffers,
    optimizer state, generator states); an unbuilt one as its config (and
    compile settings).
    """
    from .saving import save_model

    if not model.built:
        compile_info = None
        if model.compiled:
            from .. import optimizers as _optimizers
            from .saving import _serialize_metric

            compile_info = {"optimizer": _optimizers.serialize(model.optimizer),
                            "loss": _losses.serialize(model.loss),
                            "metrics": [_serialize_metric(m) for m in model._metric_ids]}
        return _rebuild_unbuilt, (type(model).__name__, json.dumps(model.get_config()), json.dumps(compile_info))
    with tempfile.TemporaryDirectory(prefix="normlab-pickle-") as d:
        path = os.path.join(d, "model.npz")
        save_model(model, path)
        with open(path, "rb") as fh:
            blob = fh.read()
    return _rebuild_model, (blob,)


def _rebuild_model(blob: bytes):
    """Unpickle a built model: ``normlab.load_model`` on the bytes (every check of a model file applies)."""
    from .saving import load_model

    if not isinstance(blob, (bytes, bytearray)):
        raise TypeError(f"_rebuild_model: expected the bytes of a model file, got {type(blob).__name__}.")
    with tempfile.TemporaryDirectory(prefix="normlab-pickle-") as d:
        path = os.path.join(d, "model.npz")
        with open(path, "wb") as fh:
            fh.write(blob)
        return load_model(path, compile=True)


def _rebuild_unbuilt(class_name: str, config: str, compile_info: str):
    """Unpickle an unbuilt model from its JSON config (registered classes only)."""
    from .functional import Model
    from .sequential import Sequential

    classes = {"Sequential": Sequential, "Model": Model}
    if class_name not in classes:
        raise TypeError(f"_rebuild_unbuilt: unknown model class {class_name!r}.")
    model = classes[class_name].from_config(json.loads(config))
    info = json.loads(compile_info)
    if info is not None:
        from .. import optimizers as _optimizers

        model.compile(optimizer=_optimizers.deserialize(info["optimizer"]), loss=_losses.deserialize(info["loss"]),
                      metrics=[m if isinstance(m, str) else _metrics.registry.deserialize(m)
                               for m in info["metrics"]])
    return model
