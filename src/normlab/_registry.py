"""One registry mechanism for everything that is looked up by name.

Initializers, regularizers, activations, losses, metrics, optimizers, layers
and callbacks are each kept in a :class:`Registry`. ``get`` accepts a name, a
config dict ``{"class_name": ..., "config": {...}}``, an instance or ``None``;
``serialize`` turns an instance into such a dict, which is plain JSON.

Only registered classes can be built from a config, so deserializing a model
file never imports or runs arbitrary code.
"""

from __future__ import annotations

import re
from typing import Any


def snake_case(name: str) -> str:
    """``"BatchNormalization"`` -> ``"batch_normalization"``."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


class Registry:
    """Name -> class mapping for one kind of object.

    Parameters
    ----------
    kind : str
        What the registry holds ("initializer", "layer", ...), used in errors.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type] = {}
        self._aliases: dict[str, str] = {}

    def register(self, cls: type | None = None, *, aliases: tuple[str, ...] = ()):
        """Register ``cls`` under its class name, its snake_case name and ``aliases``."""

        def deco(c: type) -> type:
            self._classes[c.__name__] = c
            self._aliases[snake_case(c.__name__)] = c.__name__
            for a in aliases:
                self._aliases[a] = c.__name__
            return c

        return deco(cls) if cls is not None else deco

    def names(self) -> list[str]:
        return sorted(set(self._aliases) | set(self._classes))

    def lookup(self, name: str) -> type:
        key = self._aliases.get(name, name)
        if key not in self._classes:
            key = self._aliases.get(name.lower(), key)
        if key not in self._classes:
            known = ", ".join(sorted(self._aliases))
            raise ValueError(f"Unknown {self.kind} {name!r}. Known names: {known}.")
        return self._classes[key]

    def get(self, identifier: Any, base: type | None = None, **kwargs):
        """Resolve ``identifier`` to an instance (or ``None``)."""
        if identifier is None:
            return None
        if isinstance(identifier, str):
            return self.lookup(identifier)(**kwargs)
        if isinstance(identifier, dict):
            return self.deserialize(identifier)
        if base is not None and not isinstance(identifier, base):
            raise TypeError(
                f"Expected a {self.kind} name, config dict or {base.__name__} instance, "
                f"got {identifier!r}."
            )
        return identifier

    def serialize(self, obj: Any) -> dict | None:
        if obj is None:
            return None
        name = type(obj).__name__
        if name not in self._classes:
            raise ValueError(
                f"{name} is not a registered {self.kind}; register it to save it."
            )
        return {"class_name": name, "config": obj.get_config()}

    def deserialize(self, config: dict):
        if not isinstance(config, dict) or "class_name" not in config:
            raise ValueError(
                f"A {self.kind} config must be a dict with 'class_name' and 'config'; "
                f"got {config!r}."
            )
        cls = self.lookup(config["class_name"])
        return cls.from_config(dict(config.get("config", {})))
