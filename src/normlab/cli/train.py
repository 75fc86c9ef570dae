"""``normlab train --config FILE``: train a model described in a TOML file.

The file has these sections (only ``[data]`` and ``[[layers]]`` are required)::

    [data]
    dataset = "digits"          # digits, mnist, fashion-mnist, mnist1d,
                                # moons, circles, linearly_separable
    # path = "~/data/mnist"     # folder of the IDX files (mnist, fashion-mnist)
    # flatten = true            # images as rows of 784 values (default true)

    [[layers]]                  # one table per layer, in order
    type = "Dense"              # a class of normlab.layers
    units = 100                 # the other keys are its constructor arguments
    use_bias = false
    [[layers]]
    type = "BatchNormalization"
    [[layers]]
    type = "Activation"
    activation = "relu"
    [[layers]]
    type = "Dense"
    units = 10
    activation = "softmax"

    [optimizer]                 # default: adam with its defaults
    name = "adam"               # a normlab.optimizers name
    learning_rate = 1e-3        # the other keys are its constructor arguments

    [training]
    epochs = 20                 # default 10
    batch_size = 32             # default 32
    validation_split = 0.1      # default 0
    seed = 0                    # default 0
    shuffle = true              # default true
    loss = "sparse_categorical_crossentropy"   # the default
    metrics = ["accuracy"]      # the default

    [[callbacks]]               # any number, in order
    type = "EarlyStopping"      # a class of normlab.callbacks
    monitor = "val_loss"
    patience = 3

    [output]                    # relative paths: next to this file, or in --output DIR
    model = "model.npz"         # default "model.npz"
    # history = "history.json"  # the per-epoch logs, as JSON

Unknown sections, keys, layer types and callback types are errors that name
the file and the place; so is a batch_size larger than the training set. The
model is trained with a progress bar on a terminal (one line per epoch
elsewhere), saved with ``model.save`` (read it back with
:func:`normlab.load_model`), and its loss and metrics on the data set's test
split are printed.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from ._common import CommandError, add_command, positive_int, say, warm_up

__all__ = ["ConfigError", "load_config", "validate_config", "train_from_config", "add_parser"]


class ConfigError(ValueError):
    """An invalid training configuration (the message says where)."""


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
}
OUTPUT_DEFAULTS = {"model": "model.npz", "history": None}
DATASETS = ("digits", "mnist", "fashion-mnist", "mnist1d", "moons", "circles", "linearly_separable")
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
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
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


def _typed_entries(where: str, value, name: str, registry, kind: str) -> list[tuple[type, dict]]:
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
            known = ", ".join(sorted(c for c in registry.names() if c[:1].isupper() and not c.startswith("_")))
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
    name = _DATASET_ALIASES.get(data["dataset"], data["dataset"])
    if name not in DATASETS:
        raise ConfigError(f"{where}: [data] unknown dataset {data['dataset']!r}; choose one of {', '.join(DATASETS)}.")
    data["dataset"] = name
    data.setdefault("flatten", True)

    layers = _typed_entries(where, raw["layers"], "layers", layer_registry, "layer")
    if not layers:
        raise ConfigError(f"{where}: [[layers]] is empty.")

    optimizer = dict(_table(where, raw.get("optimizer", {"name": "adam"}), "optimizer"))
    if "name" not in optimizer:
        raise ConfigError(f"{where}: [optimizer] needs 'name' (e.g. \"adam\", \"sgd\").")

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
    if not isinstance(training["metrics"], list):
        raise ConfigError(f"{where}: [training] 'metrics' must be a list, e.g. [\"accuracy\"].")

    callbacks = _typed_entries(where, raw.get("callbacks", []), "callbacks", callback_registry, "callback")

    output = dict(_table(where, raw.get("output", {}), "output"))
    _check_keys(f"{where}: [output]", output, set(OUTPUT_DEFAULTS))
    output = {**OUTPUT_DEFAULTS, **output}
    for k, v in output.items():
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{where}: [output] '{k}' must be a path string, got {v!r}.")
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


def _build(cfg: dict):
    from .. import Sequential

    where = cfg["source"]
    layers = []
    for i, (cls, kwargs) in enumerate(cfg["layers"]):
        try:
            layers.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: [[layers]] #{i + 1} ({cls.__name__}): {e}") from None
    callbacks = []
    for i, (cls, kwargs) in enumerate(cfg["callbacks"]):
        try:
            callbacks.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: [[callbacks]] #{i + 1} ({cls.__name__}): {e}") from None
    from .. import optimizers

    opt_cfg = dict(cfg["optimizer"])
    name = opt_cfg.pop("name")
    try:
        optimizer = optimizers.get({"class_name": name, "config": opt_cfg})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: [optimizer] {e}") from None
    model = Sequential(layers, name=Path(where).stem if where != "config" else None)
    tr = cfg["training"]
    try:
        model.compile(optimizer=optimizer, loss=tr["loss"], metrics=tr["metrics"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: [training] {e}") from None
    return model, callbacks


def output_paths(cfg: dict, output_dir=None) -> tuple[Path, Path | None]:
    """Where the model and the history (None: not written) of ``cfg`` go.

    Relative paths of ``[output]`` are taken from ``output_dir`` if given,
    else from the config file's folder (the current folder for a config
    given as a dict); absolute ones are kept.
    """
    if output_dir is not None:
        base = Path(output_dir).expanduser()
    else:
        base = Path(cfg.get("config_dir") or "")

    def place(name):
        p = Path(name).expanduser()
        return p if p.is_absolute() else base / p

    history = cfg["output"].get("history")
    return place(cfg["output"]["model"]), (place(history) if history else None)


def _train_samples(n: int, validation_split: float) -> int:
    # fit holds out int(n * validation_split) samples from the end
    return n - int(n * validation_split)


def train_from_config(
    cfg, *, verbose="auto", output_dir=None, epochs: int | None = None, print_fn=say
) -> dict:
    """Train, save and evaluate the model a config (a path or a validated dict) describes.

    Parameters
    ----------
    cfg : str, Path or dict
        A TOML file, or its parsed (validated or not) contents.
    verbose : "auto", 0, 1 or 2
        As ``fit``'s; 0 also leaves out the model summary.
    output_dir : str or Path, optional
        Folder for the outputs whose ``[output]`` paths are relative; default
        the config file's folder.
    epochs : int, optional
        Overrides ``[training] epochs``.
    print_fn : callable, default print (flushed at once)

    Returns
    -------
    dict
        ``{"model", "history", "test", "model_path", "history_path"}``.

    Raises
    ------
    ConfigError
        An invalid config, or a ``batch_size`` larger than the training set.
    """
    if not isinstance(cfg, dict):
        cfg = load_config(cfg)
    elif "source" not in cfg:  # a parsed, not yet validated config
        cfg = validate_config(cfg)
    tr = dict(cfg["training"])
    if epochs is not None:
        tr["epochs"] = epochs
    model, callbacks = _build(cfg)  # configuration errors first, then the (slower) data
    (x_train, y_train), (x_test, y_test) = load_data(cfg["data"])
    n_fit = _train_samples(len(x_train), tr["validation_split"])
    if tr["batch_size"] > n_fit:
        # fit would quietly take the whole set as one batch; a typo should not train silently
        held = f" after the validation split of {tr['validation_split']:g}" if tr["validation_split"] else ""
        raise ConfigError(
            f"{cfg['source']}: [training] batch_size {tr['batch_size']} is more than the {n_fit} training "
            f"samples of {cfg['data']['dataset']}{held}; use at most {n_fit} (that many trains on all of "
            "them at every step)."
        )
    model_path, history_path = output_paths(cfg, output_dir)
    print_fn(
        f"normlab train: {cfg['data']['dataset']} ({len(x_train)} train / {len(x_test)} test), "
        f"{tr['epochs']} epochs of batches of {tr['batch_size']}, optimizer {cfg['optimizer']['name']}"
    )
    eval_batch = max(tr["batch_size"], 256)

    def warm():
        # the same network for two steps, with the validation and the test passes: every kernel
        # that training calls, compiled (first run) or loaded from the cache before the first epoch
        spare, _ = _build(cfg)
        k = min(len(x_train), 2 * tr["batch_size"])
        val = (x_train[:k], y_train[:k]) if tr["validation_split"] else None
        spare.fit(x_train[:k], y_train[:k], batch_size=tr["batch_size"], epochs=1, verbose=0,
                  validation_data=val, shuffle=tr["shuffle"], seed=tr["seed"])
        spare.evaluate(x_test[:eval_batch], y_test[:eval_batch], batch_size=eval_batch)

    warm_up(warm, "normlab train")
    model.build((None,) + tuple(x_train.shape[1:]), seed=tr["seed"])
    if verbose:
        model.summary(print_fn=print_fn)
    history = model.fit(
        x_train, y_train,
        batch_size=tr["batch_size"], epochs=tr["epochs"], validation_split=tr["validation_split"],
        shuffle=tr["shuffle"], seed=tr["seed"], callbacks=callbacks, verbose=verbose,
    )
    test = model.evaluate(x_test, y_test, batch_size=eval_batch, return_dict=True)
    print_fn("test: " + " - ".join(f"{k}: {v:.4f}" for k, v in test.items()))
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(model_path)
    print_fn(f"saved the model to {os.fspath(model_path)} (normlab.load_model reads it)")
    if history_path is not None:
        history_path.parent.mkdir(parents=True, exist_ok=True)
        history_path.write_text(
            json.dumps({"epoch": history.epoch, "history": history.history, "test": test}, indent=1) + "\n"
        )
        print_fn(f"saved the history to {os.fspath(history_path)}")
    return {"model": model, "history": history, "test": test, "model_path": model_path, "history_path": history_path}


def add_parser(sub) -> None:
    p = add_command(sub, "train", help="train a model described in a TOML config file", description=__doc__)
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML file (see above)")
    p.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="folder for the model and the history when their [output] paths are relative "
        "(default: the config file's folder)",
    )
    p.add_argument("--epochs", type=positive_int, default=None, help="override [training] epochs")
    p.add_argument("--quiet", action="store_true", help="no progress, model summary or epoch lines")
    p.set_defaults(func=_main)


def _main(args) -> int:
    if args.output is not None and Path(args.output).suffix == ".npz" and not Path(args.output).is_dir():
        # --output used to name the model file; a folder called "model.npz" is surely that old use
        args.command_parser.error(
            f"argument --output: a folder now (the model and the history go in it), got {args.output!r}; "
            "name the model file with [output] model in the config"
        )
    try:
        train_from_config(args.config, verbose=0 if args.quiet else "auto", output_dir=args.output,
                          epochs=args.epochs)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    return 0
