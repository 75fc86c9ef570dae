"""The mapping of layers between Keras 3 configs and normlab, for :mod:`normlab.models.keras_format`.

:data:`LAYER_SPECS` lists, per Keras class, the arguments both libraries
share (same name, same meaning, same default), the Keras arguments normlab
lacks (read only at values that change nothing) and the normlab arguments
Keras lacks (written only at values that change nothing). Arguments ending
in ``_initializer``, ``_regularizer`` and ``_constraint`` are objects and
travel through normlab's registries. :func:`_var_keys` gives the order in
which Keras creates a layer's variables (``vars/0``, ``vars/1``, ... in the
weights file).

Keras -> normlab checks every value it reads and raises :class:`_Bad` (the
reader names the file); normlab -> Keras raises ``ValueError`` naming the
layer and what Keras 3 lacks.
"""

from __future__ import annotations

import json

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..layers.base import Layer
from ..layers.base import registry as _layer_registry
from ._keras_common import (
    _ANY,
    _NAME,
    _Bad,
    _check_object,
    _dtype_from_keras,
    _is_int,
    _need,
    _object_from_keras,
    _object_to_keras,
    _plain,
    _policy,
)


class _Spec:
    """How one layer class maps between Keras 3 and normlab.

    ``args``: arguments with the same name and meaning on both sides
    (``*_initializer``, ``*_regularizer``, ``*_constraint`` are objects);
    ``keras_only``: Keras arguments normlab lacks, accepted at these values
    only (any Keras argument not listed is accepted only as ``None``);
    ``normlab_only``: normlab arguments Keras lacks, saved only at these
    values (``_ANY``: any value, it does not change what the layer
    computes); ``extra``: fixed Keras arguments written on saving;
    ``trainable``: whether Keras's config has ``trainable`` (the spatial
    dropouts' has not); ``optional``: shared arguments mapped once normlab's
    constructor takes them (until then read only as ``None``).
    """

    def __init__(self, keras, normlab=None, args=(), keras_only=None, normlab_only=None, extra=None,
                 trainable=True, optional=()):
        self.keras, self.normlab = keras, normlab or keras
        self.args = tuple(args)
        self.optional = tuple(optional)
        self.keras_only = dict(keras_only or {})
        self.normlab_only = dict(normlab_only or {})
        self.extra = dict(extra or {})
        self.trainable = trainable


#: argument suffix -> (Keras module, normlab registry, what it is)
_OBJECTS = {
    "_initializer": ("keras.initializers", _initializers.registry, "initializer"),
    "_regularizer": ("keras.regularizers", _regularizers.registry, "regularizer"),
    "_constraint": ("keras.constraints", _constraints.registry, "constraint"),
}


def _object_kind(key: str):
    for suffix, kind in _OBJECTS.items():
        if key.endswith(suffix):
            return kind
    return None


def _objects(*prefixes, constraint=True) -> tuple:
    kinds = ("initializer", "regularizer") + (("constraint",) if constraint else ())
    return tuple(f"{p}_{k}" for p in prefixes for k in kinds)


_CL = {"data_format": "channels_last"}
_POOL = ("pool_size", "strides", "padding", "data_format")
_ONES = {"class_name": "Ones", "config": {}}
_AFFINE = ("fill_mode", "interpolation", "fill_value", "seed")
#: normlab's dropout layers take scaling='inference' (the notes' dropout), which Keras lacks
_INVERTED = {"scaling": "inverted"}

_SPEC_LIST = [
    # core
    _Spec("Dense", args=("units", "activation", "use_bias") + _objects("kernel", "bias")),
    *(_Spec(c, args=("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups",
                     "activation", "use_bias") + _objects("kernel", "bias"),
            # how normlab computes the convolution (GEMM, Winograd, direct): the same function to rounding
            normlab_only={"algorithm": _ANY})
      for c in ("Conv1D", "Conv2D")),
    _Spec("Identity"),
    # normalization
    _Spec("BatchNormalization",
          args=("axis", "momentum", "epsilon", "center", "scale", "synchronized", "renorm", "renorm_clipping",
                "renorm_momentum", "moving_mean_initializer", "moving_variance_initializer")
          + _objects("beta", "gamma", constraint=False),
          normlab_only={"unbiased_moving_variance": False, "virtual_batch_size": None, "batch_of_one": "error"},
          optional=("beta_constraint", "gamma_constraint")),
    _Spec("LayerNormalization", args=("axis", "epsilon", "center", "scale", "rms_scaling") + _objects("beta", "gamma")),
    _Spec("GroupNormalization", args=("groups", "axis", "epsilon", "center", "scale") + _objects("beta", "gamma")),
    _Spec("RMSNormalization", args=("axis", "epsilon"),
          normlab_only={"gamma_initializer": _ONES, "gamma_regularizer": None, "gamma_constraint": None}),
    _Spec("UnitNormalization", args=("axis",)),
    # regularization
    _Spec("Dropout", args=("rate", "noise_shape", "seed"), normlab_only=_INVERTED),
    _Spec("AlphaDropout", args=("rate", "noise_shape", "seed"), normlab_only=_INVERTED),
    _Spec("SpatialDropout1D", args=("rate", "seed"), normlab_only=_INVERTED, trainable=False),
    *(_Spec(c, args=("rate", "data_format", "seed"), normlab_only=_INVERTED, trainable=False)
      for c in ("SpatialDropout2D", "SpatialDropout3D")),
    _Spec("GaussianNoise", args=("stddev", "seed")),
    _Spec("GaussianDropout", args=("rate", "seed")),
    _Spec("ActivityRegularization", args=("l1", "l2")),
    # activations
    _Spec("Activation", args=("activation",)),
    _Spec("ReLU", args=("max_value", "negative_slope", "threshold")),
    _Spec("LeakyReLU", args=("negative_slope",)),
    _Spec("ELU", args=("alpha",)),
    _Spec("Softmax", args=("axis",)),
    _Spec("PReLU", args=("shared_axes",) + _objects("alpha")),
    # reshaping
    _Spec("Flatten", args=("data_format",)),
    _Spec("Reshape", args=("target_shape",)),
    _Spec("Permute", args=("dims",)),
    _Spec("RepeatVector", args=("n",)),
    _Spec("Cropping1D", args=("cropping",)),
    *(_Spec(c, args=("cropping", "data_format")) for c in ("Cropping2D", "Cropping3D")),
    *(_Spec(c, args=("padding", "data_format")) for c in ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")),
    _Spec("UpSampling1D", args=("size",)),
    _Spec("UpSampling2D", args=("size", "data_format", "interpolation")),
    _Spec("UpSampling3D", args=("size", "data_format")),
    # pooling
    *(_Spec(c, args=_POOL) for c in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")),
    *(_Spec(c, args=("data_format", "keepdims")) for c in ("GlobalAveragePooling1D", "GlobalAveragePooling2D",
                                                           "GlobalMaxPooling1D", "GlobalMaxPooling2D")),
    # merging
    *(_Spec(c) for c in ("Add", "Subtract", "Average", "Multiply", "Maximum", "Minimum")),
    _Spec("Concatenate", args=("axis",)),
    _Spec("Dot", args=("axes", "normalize")),
    # preprocessing
    _Spec("Rescaling", args=("scale", "offset")),
    _Spec("Normalization", args=("axis", "mean", "variance", "invert")),
    _Spec("RandomFlip", args=("mode", "seed"), keras_only=_CL),
    _Spec("RandomRotation", args=("factor",) + _AFFINE, keras_only=_CL),
    *(_Spec(c, args=("height_factor", "width_factor") + _AFFINE, keras_only=_CL)
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
    "GroupNormalization", "InstanceNormalization",
    ("axis", "epsilon", "center", "scale") + _objects("beta", "gamma", constraint=False),
    extra={"groups": -1},
)
#: normlab layers Keras 3 has no class for, refused by save_keras: why
NOT_IN_KERAS = {
    "NoisyDense": "Keras 3 has no noisy layers (NoisyDense is normlab's, after Fortunato et al. 2018)",
    "WeightNormalization": "Keras 3 has no weight-normalization wrapper",
    "NormPropDense": "Keras 3 has no normalization propagation (NormPropDense is normlab's, after Arpit et al. 2016)",
}
#: Keras layers refused by load_keras with a reason of their own
KERAS_ONLY_LAYERS = {
    "Lambda": "a Lambda layer holds Python code, and a .keras file is never run (Keras's safe_mode=True)",
    "TFSMLayer": "a TFSMLayer runs a TensorFlow SavedModel",
    "TorchModuleWrapper": "a TorchModuleWrapper holds a pickled torch module",
    "JaxLayer": "a JaxLayer holds Python code",
    "FlaxLayer": "a FlaxLayer holds Python code",
}

#: Keras 3.15's activation names (``keras.activations.get``); a layer reads those normlab has too
KERAS_ACTIVATIONS = (
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish",
    "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid",
    "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax",
    "squareplus", "swish", "tanh", "tanh_shrink", "threshold",
)


def _activation_names() -> list[str]:
    """The activations both libraries have (normlab's list grows: asked at each use)."""
    from .. import activations as _activations

    names = set(_activations.names()) if hasattr(_activations, "names") else set()
    return sorted(names & set(KERAS_ACTIVATIONS))


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
    if cls == "PReLU":
        return ["alpha"]
    return []


def _config_keys(layer: Layer) -> list[str]:
    """normlab buffers filled from the layer's config, not stored as Keras variables."""
    if type(layer).__name__ == "Normalization" and layer.input_mean is not None:
        return ["mean", "variance"]
    return []


# ------------------------------------------------------------ Keras -> normlab
def _takes(normlab_class: str, key: str) -> bool:
    """Whether normlab's layer class takes the constructor argument ``key``."""
    import inspect

    return key in inspect.signature(_layer_registry.lookup(normlab_class).__init__).parameters


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
    args = spec.args + tuple(k for k in spec.optional if _takes(spec.normlab, k))
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
        elif key in args:
            kind = _object_kind(key)
            if kind is None:
                kwargs[key] = _plain(value, w)
            else:
                kwargs[key] = _object_from_keras(value, w, kind[1], kind[2])
        elif key in spec.keras_only:
            default = spec.keras_only[key]
            _need(default is _ANY or value == default or value is None,
                  f"{w} is {value!r}; normlab's {spec.normlab} supports only {default!r}")
        else:
            _need(value is None, f"{w} is {value!r}, which normlab's {spec.normlab} does not support")
    activation = kwargs.get("activation")
    if activation is not None:
        names = _activation_names()
        _need(isinstance(activation, str) and activation in names,
              f"{where} ({cls}) uses activation {activation!r}, which normlab does not have "
              f"(it has {', '.join(names)})")
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


# ------------------------------------------------------------ normlab -> Keras
def _layer_to_keras(layer: Layer) -> dict:
    """The Keras entry ``{"module", "class_name", "config", "registered_name"}`` of a built normlab layer."""
    cls = type(layer).__name__
    who = f"save_keras: layer {layer.name!r} ({cls})"
    if cls in NOT_IN_KERAS:
        raise ValueError(f"{who} has no Keras 3 counterpart: {NOT_IN_KERAS[cls]}. Save the model in normlab's own "
                         f"format (model.save('model.npz')) instead.")
    inner = layer.__dict__.get("model")
    if inner is not None and cls == "_NestedModel":  # a model used as a layer (models/nested.py)
        raise ValueError(f"save_keras: layer {layer.name!r} is a nested model ({type(inner).__name__}); normlab "
                         f"writes .keras files of flat models only. Save the model in normlab's own format "
                         f"(model.save('model.npz')) instead.")
    spec = _SAVE_SPECS.get(cls)
    if spec is None:
        raise ValueError(f"{who} is not one of the layers normlab maps to Keras 3 "
                         f"({', '.join(sorted(_SAVE_SPECS))}); save the model in normlab's own format "
                         f"(model.save('model.npz')) instead.")
    conf = layer.get_config()
    out = {"name": conf.pop("name"), "trainable": conf.pop("trainable"), "dtype": _policy(layer.dtype)}
    if not spec.trainable:
        del out["trainable"]
    conf.pop("dtype", None)
    for key, value in conf.items():
        if key in spec.args or key in spec.optional:
            kind = _object_kind(key)
            out[key] = value if kind is None else _object_to_keras(value, kind[0], f"{who} argument {key!r}")
        elif key in spec.normlab_only:
            default = spec.normlab_only[key]
            if default is not _ANY and value != default:
                raise ValueError(f"{who} sets {key}={value!r}, which Keras 3's {spec.keras} does not have; only "
                                 f"{default!r} can be saved to a .keras file.")
        else:
            raise ValueError(f"{who} has the argument {key!r}, which normlab does not map to Keras 3.")
    if out.get("data_format", 0) is None:
        # normlab's None is channels-last; Keras's None would follow the user's keras.json
        out["data_format"] = "channels_last"
    activation = out.get("activation")
    if activation is not None and activation not in KERAS_ACTIVATIONS:
        raise ValueError(f"{who} uses activation {activation!r}, which Keras 3 does not have.")
    if cls == "BatchNormalization" and not isinstance(out["axis"], int):
        raise ValueError(f"{who} normalizes over axes {out['axis']!r}; Keras's BatchNormalization takes one axis.")
    out.update(spec.extra)
    return {"module": "keras.layers", "class_name": spec.keras, "config": json.loads(json.dumps(out)),
            "registered_name": None}


def _input_entry(shape, name: str, dtype) -> dict:
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": list(shape), "dtype": np.dtype(dtype or np.float32).name, "sparse": False,
                       "ragged": False, "name": name, "optional": False},
            "registered_name": None}
