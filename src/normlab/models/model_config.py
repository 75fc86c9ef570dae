"""Model configs as JSON: ``model.to_json()`` and :func:`model_from_json` (Keras's names).

A model's JSON is ``{"class_name": "Sequential" | "Functional", "config":
model.get_config()}``: the architecture only, no weights. Reading it builds
registered classes from their configs and nothing else: no code in the
string runs (as with Keras's ``safe_mode``).

A nested model is an entry of its outer model's ``"layers"`` in the same
form (Keras's), which :func:`serialize_layer` / :func:`deserialize_layer`
write and read; the model file's loader reads layers through the latter.
"""

from __future__ import annotations

import json

from ..layers.base import registry as _layer_registry
from .nested import is_nested

__all__ = ["model_from_json", "model_to_json", "serialize_layer", "deserialize_layer"]

#: class names a model config may carry ("Model" is read as Keras's "Functional")
_MODEL_CLASSES = ("Sequential", "Functional", "Model")


def _model_class_name(model) -> str:
    from .sequential import Sequential

    return "Sequential" if isinstance(model, Sequential) else "Functional"


def serialize_layer(layer) -> dict:
    """``{"class_name", "config"}`` of a layer, or of the model a nested-model layer stands for."""
    if is_nested(layer):
        return {"class_name": _model_class_name(layer.model), "config": layer.model.get_config()}
    return _layer_registry.serialize(layer)


def _model_from_entry(entry: dict, owner: str, build: bool = True):
    from .functional import Model
    from .sequential import Sequential

    config = entry.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{owner}: the config of a {entry['class_name']} must be a JSON object, got {config!r}.")
    if entry["class_name"] == "Sequential":
        if build:
            return Sequential.from_config(dict(config))
        model = Sequential.from_config({**config, "input_shape": None})
        if config.get("input_shape") is not None:
            model._input_spec = tuple(config["input_shape"])
        return model
    return Model.from_config(dict(config), _build=build)


def deserialize_layer(entry: dict):
    """A layer from ``{"class_name", "config"}``; a Sequential or Functional entry gives a nested model's layer.

    A nested model is left unbuilt: the outer model builds it as it builds
    its other layers (the model file's loader, within what the file stores).
    """
    if isinstance(entry, dict) and entry.get("class_name") in _MODEL_CLASSES:
        return _model_from_entry(entry, "deserialize_layer", build=False)._as_layer()
    return _layer_registry.deserialize(entry)


def model_to_json(model, **kwargs) -> str:
    return json.dumps({"class_name": _model_class_name(model), "config": model.get_config()}, **kwargs)


def model_from_json(json_string, custom_objects=None):
    """A model from the JSON of ``model.to_json()`` (Keras's ``keras.models.model_from_json``).

    Parameters
    ----------
    json_string : str
        ``{"class_name": "Sequential" | "Functional", "config": {...}}``.
    custom_objects : dict, optional
        Keras's ``{name: class}``. normlab finds every Layer subclass by its
        name already, so each entry must be a class registered under that
        name (code is never looked up from the string).

    Returns
    -------
    Sequential or Model
        With fresh weights (the JSON holds none); built when the config gives
        the input shape.
    """
    owner = "model_from_json"
    if not isinstance(json_string, (str, bytes, bytearray)):
        raise TypeError(f"{owner}: 'json_string' must be a str, got {type(json_string).__name__}.")
    if custom_objects is not None:
        if not isinstance(custom_objects, dict):
            raise TypeError(f"{owner}: 'custom_objects' must be a dict of {{name: class}} or None, "
                            f"got {custom_objects!r}.")
        for name, cls in custom_objects.items():
            try:
                known = _layer_registry.lookup(name)
            except ValueError:
                known = None
            if known is not cls:
                raise ValueError(f"{owner}: custom object {name!r} is not a registered normlab layer class; "
                                 f"subclass normlab.layers.Layer to register it (no code is read from the JSON).")
    try:
        entry = json.loads(json_string)
    except ValueError as exc:
        raise ValueError(f"{owner}: 'json_string' is not valid JSON: {exc}") from None
    if not isinstance(entry, dict) or entry.get("class_name") not in _MODEL_CLASSES:
        got = entry.get("class_name") if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"{owner}: expected a model's JSON, {{\"class_name\": \"Sequential\" or \"Functional\", "
                         f"\"config\": {{...}}}}, got class_name {got!r}.")
    return _model_from_entry(entry, owner)
