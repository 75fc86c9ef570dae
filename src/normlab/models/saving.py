"""Model files: one ``.npz`` (a zip of ``.npy`` arrays) holding JSON plus arrays.

Layout (format version 1):

``normlab_header``
    UTF-8 JSON as a ``uint8`` array: ``{"format": "normlab-model",
    "format_version": 1, "normlab_version", "model_class", "config"`` (the
    model's ``get_config()``), ``"compile"`` (serialized optimizer, loss and
    metrics, or null), ``"arrays"`` (which array belongs where),
    ``"rng_states"`` (the generators of random layers)``}``.
``layers/<i>/params/<key>``, ``layers/<i>/buffers/<key>``
    weights and non-trainable state (moving statistics) of layer ``i``.
``optimizer/<key>``
    the optimizer's state (slots, step count, schedule position).

Loading uses ``numpy.load(..., allow_pickle=False)`` and builds objects only
from registered class names, so opening a model file never runs code from
it. Files are written to a temporary name and renamed, so an interrupted save
never leaves a half-written file under the target name.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__
from .. import losses as _losses
from .. import metrics as _metrics

FORMAT = "normlab-model"
FORMAT_VERSION = 1
HEADER = "normlab_header"

__all__ = ["save_model", "load_model", "FORMAT_VERSION"]


def _serialize_metric(m):
    return m if isinstance(m, str) else _metrics.registry.serialize(m)


def save_model(model, path) -> None:
    """Write ``model`` (architecture, weights, buffers, optimizer state) to ``path``.

    Parameters
    ----------
    model : Sequential
        Must be built (called or fit at least once, or ``build``-ed).
    path : str or os.PathLike
        Conventionally ending in ``.npz``; written atomically.
    """
    if not model.built:
        raise ValueError(f"save_model: model {model.name!r} is not built yet; call build() or fit() first.")
    arrays: dict[str, np.ndarray] = {}
    index = []
    rng_states = {}
    for i, layer in enumerate(model.layers):
        entry = {"params": list(layer.params), "buffers": list(layer.buffers)}
        for kind in ("params", "buffers"):
            for key, arr in getattr(layer, kind).items():
                arrays[f"layers/{i}/{kind}/{key}"] = arr
        index.append(entry)
        if hasattr(layer, "get_rng_state"):
            rng_states[str(i)] = layer.get_rng_state()
    compile_info = None
    opt_keys: list[str] = []
    if model.compiled:
        from .. import optimizers as _optimizers

        compile_info = {
            "optimizer": _optimizers.serialize(model.optimizer),
            "loss": _losses.serialize(model.loss),
            "metrics": [_serialize_metric(m) for m in model._metric_ids],
        }
        if hasattr(model.optimizer, "get_state"):
            for key, arr in model.optimizer.get_state().items():
                arrays[f"optimizer/{key}"] = np.asarray(arr)
                opt_keys.append(key)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "normlab_version": __version__,
        "model_class": type(model).__name__,
        "config": model.get_config(),
        "compile": compile_info,
        "arrays": {"layers": index, "optimizer": opt_keys},
        "rng_states": rng_states,
    }
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)

    path = Path(os.fspath(path))
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ModelFileError(ValueError):
    """A file is not a readable normlab model (foreign, truncated, corrupted, tampered)."""


def _read(path):
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            names = set(data.files)
            if HEADER not in names:
                raise ModelFileError(f"{path}: not a normlab model file (no '{HEADER}' entry).")
            return {name: data[name] for name in names}
    except ModelFileError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"{path}: not a readable normlab model file (truncated, corrupted or another format): {exc}"
        ) from None


def load_model(path, compile: bool = True):
    """Read a model written by :func:`save_model` (or ``model.save``).

    Returns a built model with its weights, buffers and, when it was compiled
    and ``compile`` is true, its optimizer (with state), loss and metrics.
    Raises :class:`ModelFileError` (a ``ValueError``) for a file that is not
    a valid normlab model.
    """
    from .functional import Model
    from .sequential import Sequential

    data = _read(path)
    try:
        header = json.loads(bytes(data.pop(HEADER).astype(np.uint8)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: the model header is not valid JSON ({exc}).") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a normlab model file (format {header.get('format')!r}).")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"{path}: model file format version {version!r} is not supported by normlab "
            f"{__version__} (reads versions 1 to {FORMAT_VERSION})."
        )
    classes = {"Sequential": Sequential, "Model": Model}
    if header.get("model_class") not in classes:
        raise ModelFileError(f"{path}: unknown model class {header.get('model_class')!r}.")
    try:
        model = classes[header["model_class"]].from_config(header["config"])
        index = header["arrays"]["layers"]
        if len(index) != len(model.layers):
            raise ModelFileError(f"{path}: the file lists {len(index)} layers but the config has {len(model.layers)}.")
        for i, (layer, entry) in enumerate(zip(model.layers, index)):
            for kind in ("params", "buffers"):
                target = getattr(layer, kind)
                if sorted(entry[kind]) != sorted(target):
                    raise ModelFileError(
                        f"{path}: layer {layer.name!r} expects {kind} {sorted(target)}, the file has {sorted(entry[kind])}."
                    )
                for key in entry[kind]:
                    name = f"layers/{i}/{kind}/{key}"
                    if name not in data:
                        raise ModelFileError(f"{path}: missing array {name!r}.")
                    arr = data[name]
                    if arr.shape != target[key].shape:
                        raise ModelFileError(
                            f"{path}: array {name!r} has shape {arr.shape}, layer {layer.name!r} "
                            f"expects {target[key].shape}."
                        )
                    np.copyto(target[key], arr, casting="same_kind")
            state = header.get("rng_states", {}).get(str(i))
            if state is not None and hasattr(layer, "set_rng_state"):
                layer.set_rng_state(state)
        info = header.get("compile")
        if compile and info is not None:
            from .. import optimizers as _optimizers

            model.compile(
                optimizer=_optimizers.deserialize(info["optimizer"]),
                loss=_losses.deserialize(info["loss"]),
                metrics=[m if isinstance(m, str) else _metrics.registry.deserialize(m) for m in info["metrics"]],
            )
            keys = header["arrays"].get("optimizer", [])
            if keys and hasattr(model.optimizer, "set_state"):
                missing = [k for k in keys if f"optimizer/{k}" not in data]
                if missing:
                    raise ModelFileError(f"{path}: missing optimizer arrays {missing}.")
                model._prepare_training()
                model.optimizer.set_state({k: data[f"optimizer/{k}"] for k in keys})
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: the model file is inconsistent or tampered with: {exc}") from None
    return model
