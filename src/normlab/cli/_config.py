"""The TOML file of ``normlab train``: reading it, checking every key, loading its data set.

The format is documented in :mod:`normlab.cli.train`. Every mistake is a
:class:`ConfigError` on one line that names the file, the place and what
was expected.
"""

from __future__ import annotations

import inspect
from importlib import import_module
from pathlib import Path

__all__ = ["ConfigError", "load_config", "validate_config", "load_data"]


class ConfigError(ValueError):
    """An invalid training configuration (the message says where): exit status 2 on the command line."""


SECTIONS = {"data", "layers", "optimizer", "training", "callbacks", "output"}
DATA_KEYS = {"dataset", "path", "flatten"}
TRAINING_DEFAULTS = {
    "epochs": 10,
    "batch_size": 32,
    "validation_split": 0.0,
    "seed": 0,
    "shuffle": True,
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "distribute": None,
}
#: the values of [training] distribute (None: one process)
DISTRIBUTE = ("DataParallel",)
OUTPUT_DEFAULTS = {"model": "model.npz", "history": None}
DATASETS = ("digits", "mnist", "fashion-mnist", "mnist1d", "moons", "circles", "linearly_separable")
_IDX_DATASETS = ("mnist", "fashion-mnist")
_DATASET_ALIASES = {"fashion_mnist": "fashion-mnist", "linearly-separable": "linearly_separable"}


def _toml():
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(
                "Reading a TOML config needs Python 3.11+ (tomllib) or the 'tomli' package: pip install tomli"
            ) from None
    return tomllib


def load_config(path) -> dict:
    """Read and validate a TOML training config; returns the normalized dict."""
    path = Path(path)
    tomllib = _toml()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; --config takes a TOML file.") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot be read (permission denied).") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e}).") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); a TOML file is UTF-8."
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{path}: not valid TOML here: arrays or inline tables nested too deeply.") from None
    cfg = validate_config(raw, source=str(path))
    # relative output paths are taken from here, so that the outputs land next to their config
    cfg["config_dir"] = str(path.parent)
    return cfg


def _allowed_kwargs(cls) -> tuple[set, bool]:
    """Constructor keyword names of ``cls`` (through ``**kwargs`` into its bases)."""
    names, var_kw = set(), False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):  # pragma: no cover - builtins
            return names, True
        more = False
        if klass.__module__ == "normlab.layers.base" and klass.__name__ == "Layer":
            # the base layer's **kwargs take only Keras's deprecated input_shape / input_dim
            names.update(("input_shape", "input_dim"))
            names.update(p.name for p in list(sig.parameters.values())[1:] if p.kind == p.KEYWORD_ONLY)
            return names, False
        for p in list(sig.parameters.values())[1:]:
            if p.kind == p.VAR_KEYWORD:
                more = True
            elif p.kind != p.VAR_POSITIONAL:
                names.add(p.name)
        if not more:
            return names, False
        var_kw = True
    return names, var_kw


def _check_keys(where: str, given: dict, allowed: set) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}."
        )


def _table(where: str, value, name: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table, got {type(value).__name__}.")
    return value


def _typed_entries(where: str, value, name: str, registry, kind: str, registry_module: str) -> list[tuple[type, dict]]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: [[{name}]] must be an array of tables.")
    out = []
    for i, entry in enumerate(value):
        at = f"{where}: [[{name}]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be a table.")
        if "type" not in entry:
            raise ConfigError(f"{at} has no 'type' (the {kind} class name, e.g. {registry.names()[0]!r}).")
        type_name = entry["type"]
        if not isinstance(type_name, str):
            raise ConfigError(f"{at}: 'type' must be a string, got {type_name!r}.")
        try:
            cls = registry.lookup(type_name)
        except ValueError:
            public = set(getattr(import_module(registry_module), "__all__", ()))
            known = ", ".join(sorted(c for c in registry.names() if c[:1].isupper() and (not public or c in public)))
            raise ConfigError(f"{at}: unknown {kind} type {type_name!r}. Known {kind} types: {known}.") from None
        kwargs = {k: v for k, v in entry.items() if k != "type"}
        allowed, open_ended = _allowed_kwargs(cls)
        if not open_ended:
            _check_keys(f"{at} ({cls.__name__})", kwargs, allowed | {"type"})
        out.append((cls, kwargs))
    return out


def validate_config(raw: dict, source: str = "config") -> dict:
    """Check a parsed config and fill in the defaults.

    Returns ``{"data", "layers": [(cls, kwargs)], "optimizer", "training",
    "callbacks": [(cls, kwargs)], "output"}``; raises :class:`ConfigError`.
    Layer and callback arguments are checked against the constructors'
    signatures here; their values are checked when the objects are built.
    """
    from ..callbacks import registry as callback_registry
    from ..layers import registry as layer_registry

    where = source
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the config must be a table.")
    _check_keys(where + " (top level)", raw, SECTIONS)
    for req in ("data", "layers"):
        if req not in raw:
            raise ConfigError(f"{where}: missing section [{req}]" + ("" if req == "data" else " (write one [[layers]] table per layer)") + ".")

    data = dict(_table(where, raw["data"], "data"))
    _check_keys(f"{where}: [data]", data, DATA_KEYS)
    if "dataset" not in data:
        raise ConfigError(f"{where}: [data] needs 'dataset' (one of {', '.join(DATASETS)}).")
    if not isinstance(data["dataset"], str):
        raise ConfigError(f"{where}: [data] 'dataset' must be a string, one of {', '.join(DATASETS)}; "
                          f"got {data['dataset']!r}.")
    name = _DATASET_ALIASES.get(data["dataset"], data["dataset"])
    if name not in DATASETS:
        raise ConfigError(f"{where}: [data] unknown dataset {data['dataset']!r}; choose one of {', '.join(DATASETS)}.")
    data["dataset"] = name
    data.setdefault("flatten", True)
    if not isinstance(data["flatten"], bool):
        raise ConfigError(f"{where}: [data] 'flatten' must be true or false, got {data['flatten']!r}.")
    if "path" in data:
        if name not in _IDX_DATASETS:
            raise ConfigError(f"{where}: [data] 'path' is for the IDX data sets ({', '.join(_IDX_DATASETS)}); "
                              f"{name} does not read files.")
        if not isinstance(data["path"], str) or not data["path"]:
            raise ConfigError(f"{where}: [data] 'path' must be a folder name (a string), got {data['path']!r}.")

    layers = _typed_entries(where, raw["layers"], "layers", layer_registry, "layer", "normlab.layers")
    if not layers:
        raise ConfigError(f"{where}: [[layers]] is empty.")

    optimizer = dict(_table(where, raw.get("optimizer", {"name": "adam"}), "optimizer"))
    if "name" not in optimizer:
        raise ConfigError(f"{where}: [optimizer] needs 'name' (e.g. \"adam\", \"sgd\").")
    if not isinstance(optimizer["name"], str):
        raise ConfigError(f"{where}: [optimizer] 'name' must be a string (e.g. \"adam\"), got {optimizer['name']!r}.")
    from ..optimizers import registry as optimizer_registry

    try:
        opt_cls = optimizer_registry.lookup(optimizer["name"])
    except ValueError as e:
        raise ConfigError(f"{where}: [optimizer] {e}") from None
    allowed, open_ended = _allowed_kwargs(opt_cls)
    if not open_ended:
        _check_keys(f"{where}: [optimizer] ({opt_cls.__name__})", optimizer, allowed | {"name"})

    training = dict(_table(where, raw.get("training", {}), "training"))
    _check_keys(f"{where}: [training]", training, set(TRAINING_DEFAULTS))
    training = {**TRAINING_DEFAULTS, **training}
    for key in ("epochs", "batch_size"):
        v = training[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: [training] '{key}' must be an integer >= 1, got {v!r}.")
    vs = training["validation_split"]
    if isinstance(vs, bool) or not isinstance(vs, (int, float)) or not 0 <= vs < 1:
        raise ConfigError(f"{where}: [training] 'validation_split' must be a number in [0, 1), got {vs!r}.")
    seed = training["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"{where}: [training] 'seed' must be an integer in [0, 2**32), got {seed!r}.")
    if not isinstance(training["shuffle"], bool):
        raise ConfigError(f"{where}: [training] 'shuffle' must be true or false, got {training['shuffle']!r}.")
    if not isinstance(training["loss"], str):
        raise ConfigError(f"{where}: [training] 'loss' must be a string (a loss name, e.g. "
                          f"\"sparse_categorical_crossentropy\"), got {training['loss']!r}.")
    if training["distribute"] not in (None, *DISTRIBUTE):
        raise ConfigError(f"{where}: [training] 'distribute' must be {' or '.join(map(repr, DISTRIBUTE))} "
                          f"(normlab.distributed's strategy), got {training['distribute']!r}.")
    metrics = training["metrics"]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"{where}: [training] 'metrics' must be a list of metric names, e.g. [\"accuracy\"]; "
                          f"got {metrics!r}.")

    callbacks = _typed_entries(where, raw.get("callbacks", []), "callbacks", callback_registry, "callback",
                               "normlab.callbacks")

    output = dict(_table(where, raw.get("output", {}), "output"))
    _check_keys(f"{where}: [output]", output, set(OUTPUT_DEFAULTS))
    output = {**OUTPUT_DEFAULTS, **output}
    for k, v in output.items():
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ConfigError(f"{where}: [output] '{k}' must be a path string, got {v!r}.")
    if output["history"] is not None and Path(output["history"]) == Path(output["model"]):
        raise ConfigError(f"{where}: [output] 'history' and 'model' are the same file, {output['model']!r}.")
    return {
        "source": source,
        "data": data,
        "layers": layers,
        "optimizer": optimizer,
        "training": training,
        "callbacks": callbacks,
        "output": output,
    }


def load_data(data: dict):
    from .. import datasets

    name = data["dataset"]
    if name in ("mnist", "fashion-mnist"):
        loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
        return loader(data.get("path"), flatten=bool(data["flatten"]))
    loaders = {
        "digits": datasets.load_digits,
        "mnist1d": datasets.load_mnist1d,
        "moons": datasets.load_moons,
        "circles": datasets.load_circles,
        "linearly_separable": datasets.load_linearly_separable,
    }
    return loaders[name]()

