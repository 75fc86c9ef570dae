"""The checked header and member names of normlab's model files, for :mod:`normlab.models.saving`.

The format's constants, which members a file may hold and of which dtypes,
and the structure of the JSON header (layer configs are checked by the
layers themselves when they are constructed).
"""

from __future__ import annotations

import re

import numpy as np

from .. import __version__

FORMAT = "normlab-model"
FORMAT_VERSION = 1
HEADER = "normlab_header"

#: largest JSON header accepted (a model of a thousand layers takes about 400 KB)
MAX_HEADER_BYTES = 1 << 20
#: fewest header bytes per JSON value (separator): bounds the memory that parsing takes to about
#: 16 times the header's size (model configs have about one value per ten bytes)
MAX_JSON_DENSITY = 4
#: deepest nesting of the JSON header (models need about 10)
MAX_JSON_DEPTH = 64
#: most bytes the members of a file may inflate to, per byte of the file: save_model stores them
#: uncompressed (1); trained float weights deflate by a few percent (np.savez_compressed files load),
#: while a file of deflated zeros, declaring far more than it holds, is refused
MAX_INFLATION = 2
#: most arrays in a model file (each layer stores up to six, the optimizer one or two per weight)
MAX_MEMBERS = 16384

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_OPT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}(/(0|[1-9][0-9]{0,8}))?")
_LAYER_MEMBER = re.compile(r"layers/(0|[1-9][0-9]{0,8})/(params|buffers)/([^/]+)")
_FLOATS = ("float16", "float32", "float64")
_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _member_name_problem(name: str) -> str | None:
    if name == HEADER:
        return None
    m = _LAYER_MEMBER.fullmatch(name)
    if m is not None:
        return None if _KEY.fullmatch(m.group(3)) else "not an array name a model file holds"
    if name.startswith("optimizer/") and _OPT_KEY.fullmatch(name[len("optimizer/") :]):
        return None
    return "not an array a model file holds (expected 'normlab_header', 'layers/<i>/params/<key>', " \
           "'layers/<i>/buffers/<key>' or 'optimizer/<key>')"


def _member_array_problem(name: str, shape: tuple, dtype: np.dtype) -> str | None:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        return f"has dtype {dtype}; model files hold plain numbers only"
    if name == HEADER:
        if dtype != np.uint8 or len(shape) != 1:
            return f"must be a 1-d uint8 array (UTF-8 JSON), got {dtype} of shape {shape}"
        if shape[0] > MAX_HEADER_BYTES:
            return f"holds {shape[0]} bytes, more than the {MAX_HEADER_BYTES} a model header may take"
        return None
    if name.startswith("layers/"):
        if dtype.name not in _FLOATS:
            return f"has dtype {dtype}; weights and buffers are float16, float32 or float64"
        return None
    if dtype.name not in _FLOATS + _INTS:
        return f"has dtype {dtype}; optimizer state is floats or integers"
    return None


class _Bad(Exception):
    """A check failed; the loader turns it into a ModelFileError naming the file."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise _Bad(message)


def _short(value, limit: int = 60) -> str:
    """``repr(value)``, cut short: a hostile file's values can be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_text(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_depth(obj) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH (iteratively: no recursion on hostile input)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            _need(depth <= MAX_JSON_DEPTH, f"the header is nested more than {MAX_JSON_DEPTH} levels deep")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))


def _check_keys(d: dict, required: set, optional: set, where: str) -> None:
    missing = sorted(required - set(d))
    extra = sorted(set(d) - required - optional)
    _need(not missing, f"{where} lacks {_short(missing, 200)}")
    _need(not extra, f"{where} has unexpected entries {_short(extra, 200)}")


def _check_str_list(value, where: str, pattern) -> list:
    _need(isinstance(value, list), f"{where} must be a list of names, got a JSON {_json_type(value)}")
    for k in value:
        _need(isinstance(k, str) and pattern.fullmatch(k) is not None, f"{where} holds an invalid name {_short(k)}")
    _need(len(set(value)) == len(value), f"{where} repeats a name")
    return value


def _check_shape(value, where: str, allow_unknown: bool) -> tuple:
    _need(isinstance(value, list) and len(value) >= 1, f"{where} must be a list [null, size, ...], got {_short(value)}")
    _need(value[0] is None, f"{where} must start with null (the batch axis), got {_short(value)}")
    for d in value[1:]:
        ok = (_is_int(d) and d >= 1) or (allow_unknown and d is None)
        _need(ok, f"{where} must hold sizes >= 1{' or null' if allow_unknown else ''}, got {_short(value)}")
    return tuple(value)


def _check_header(header) -> None:
    """Types and structure of every header field (layer configs are checked by the layers)."""
    _need(isinstance(header, dict), f"the header is a JSON {_json_type(header)}, not an object")
    fmt = header.get("format")
    _need(fmt == FORMAT, f"not a normlab model file (format {_short(fmt)})")
    version = header.get("format_version")
    _need(
        _is_int(version) and 1 <= version <= FORMAT_VERSION,
        f"model file format version {_short(version)} is not supported by normlab {__version__} "
        f"(reads versions 1 to {FORMAT_VERSION})",
    )
    _check_keys(header, {"format", "format_version", "normlab_version", "model_class", "config", "compile",
                         "arrays", "rng_states"}, set(), "the header")
    _need(isinstance(header["normlab_version"], str), "the header's 'normlab_version' must be a string")
    _need(header["model_class"] in ("Sequential", "Model"), f"unknown model class {_short(header['model_class'])}")
    arrays = header["arrays"]
    _need(isinstance(arrays, dict), "the header's 'arrays' must be an object")
    _check_keys(arrays, {"layers", "optimizer"}, set(), "the header's 'arrays'")
    _need(isinstance(arrays["layers"], list), "the header's 'arrays.layers' must be a list")
    for i, entry in enumerate(arrays["layers"]):
        _need(isinstance(entry, dict), f"the header's 'arrays.layers[{i}]' must be an object")
        _check_keys(entry, {"params", "buffers"}, set(), f"the header's 'arrays.layers[{i}]'")
        for kind in ("params", "buffers"):
            _check_str_list(entry[kind], f"the header's 'arrays.layers[{i}].{kind}'", _KEY)
    _check_str_list(arrays["optimizer"], "the header's 'arrays.optimizer'", _OPT_KEY)
    states = header["rng_states"]
    _need(isinstance(states, dict), "the header's 'rng_states' must be an object")
    n = len(arrays["layers"])
    for k, state in states.items():
        _need(re.fullmatch(r"0|[1-9][0-9]{0,8}", k) is not None and int(k) < n,
              f"the header's 'rng_states' has an entry {_short(k)} that is not a layer index below {n}")
        _need(state is None or isinstance(state, dict), f"the header's 'rng_states[{k}]' must be an object or null")
    info = header["compile"]
    if info is not None:
        _need(isinstance(info, dict), "the header's 'compile' must be an object or null")
        _check_keys(info, {"optimizer", "loss", "metrics"}, {"weighted_metrics"}, "the header's 'compile'")
        _need(isinstance(info["optimizer"], dict), "the header's 'compile.optimizer' must be an object")
        _need(isinstance(info["loss"], dict), "the header's 'compile.loss' must be an object")
        for key in ("metrics", "weighted_metrics"):
            metrics = info.get(key, [])
            _need(isinstance(metrics, list) and all(isinstance(m, (str, dict)) for m in metrics),
                  f"the header's 'compile.{key}' must be a list of names or objects")
    elif arrays["optimizer"]:
        raise _Bad("the file stores optimizer arrays but no optimizer ('compile' is null)")
    config = header["config"]
    _need(isinstance(config, dict), "the header's 'config' must be an object")
    where = "the model config"
    if header["model_class"] == "Sequential":
        _check_keys(config, {"layers", "input_shape"}, {"name"}, where)
        _check_shape(config["input_shape"], f"{where}'s 'input_shape'", allow_unknown=False)
    else:
        _check_keys(config, {"layers", "input_shape", "output"}, {"name"}, where)
        _check_shape(config["input_shape"], f"{where}'s 'input_shape'", allow_unknown=True)
    _need(config.get("name") is None or isinstance(config["name"], str), f"{where}'s 'name' must be a string")
    layers = config["layers"]
    _need(isinstance(layers, list) and layers, f"{where}'s 'layers' must be a non-empty list")
    _need(len(layers) == n, f"the file stores arrays of {n} layers but the config has {len(layers)}")
    functional = header["model_class"] == "Model"
    for i, entry in enumerate(layers):
        w = f"{where}'s layer {i}"
        _need(isinstance(entry, dict), f"{w} must be an object")
        _check_keys(entry, {"class_name", "config"} | ({"inbound"} if functional else set()), set(), w)
        _need(isinstance(entry["class_name"], str), f"{w}'s 'class_name' must be a string")
        _need(isinstance(entry["config"], dict), f"{w}'s 'config' must be an object")
        if functional:
            inbound = entry["inbound"]
            _need(isinstance(inbound, list) and inbound and all(_is_int(j) and 0 <= j <= i for j in inbound),
                  f"{w}'s 'inbound' must be a non-empty list of indices of earlier tensors (0 to {i})")
    if functional:
        out = config["output"]
        _need(_is_int(out) and 1 <= out <= n, f"{where}'s 'output' must be a layer's tensor index (1 to {n})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
