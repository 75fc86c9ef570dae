"""What the Keras 3 mapping shares, for :mod:`normlab.models.keras_format`.

Checks of values read from a file (:class:`_Bad`, :func:`_need`, Keras's
own classes only), the names of layers in the weights file and Keras's
order of a functional model's layers, and the objects that travel inside
layer configs both ways: dtype policies, initializers, regularizers and
constraints.
"""

from __future__ import annotations

import re

import numpy as np

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

#: where Keras's own classes live: its public modules and, for backend classes (the torch backend's
#: optimizers are ``keras.src.backend.torch.optimizers.torch_adam``), its private package.
#: Only compared, never imported.
_KERAS_MODULE = re.compile(r"keras(\.(layers|models|initializers|regularizers|constraints|optimizers|losses|"
                           r"metrics))?|keras\.src(\.[a-z][a-z0-9_]{0,40}){1,6}")


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


def _policy(dtype) -> dict:
    name = np.dtype(dtype or np.float32).name
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


#: Keras 3.15's classes of the objects inside layer configs (what keras.saving.load_model can build)
KERAS_OBJECTS = {
    "keras.initializers": ("Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Identity",
                           "LecunNormal", "LecunUniform", "Ones", "Orthogonal", "RandomNormal", "RandomUniform",
                           "STFT", "TruncatedNormal", "VarianceScaling", "Zeros"),
    "keras.regularizers": ("L1", "L1L2", "L2", "OrthogonalRegularizer"),
    "keras.constraints": ("MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"),
}


def _object_to_keras(value, module: str, who: str = "save_keras"):
    """A normlab initializer, regularizer or constraint (a name or ``{"class_name", "config"}``) as Keras's."""
    if value is None or isinstance(value, str):
        return value
    cls = value["class_name"]
    if cls not in KERAS_OBJECTS.get(module, (cls,)):
        raise ValueError(f"{who} uses the {module.split('.')[-1][:-1]} {cls!r}, which Keras 3 does not have.")
    return {"module": module, "class_name": cls, "config": dict(value["config"]), "registered_name": None}


def _unique(name: str, taken: set) -> str:
    out, n = name, 0
    while out in taken:
        n += 1
        out = f"{name}_{n}"
    return out
