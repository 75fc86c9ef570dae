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

from ._validation import InvalidParameterError, invalid_parameter


class LookupFailed(InvalidParameterError):
    """A registry could not resolve ``identifier``: an unknown name or class_name, a malformed config, a wrong type.

    An :class:`~normlab.InvalidParameterError` (so both a ``ValueError`` and a
    ``TypeError``) that keeps what it failed on, so that a caller which knows
    the argument (a layer's constructor, ``compile``) can say which one it was
    (:func:`argument_error`).
    """

    def __init__(self, message: str, registry: "Registry", identifier: Any, base: type | None = None,
                 reason: str | None = None):
        super().__init__(message)
        self.registry, self.identifier, self.base = registry, identifier, base
        #: the message without the list of names (which the template's "must be ..." gives)
        self.reason = message if reason is None else reason


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


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

    def _key(self, name: str) -> str:
        """The class name ``name`` stands for (itself, an alias, or an alias in lower case)."""
        key = self._aliases.get(name, name)
        if key not in self._classes:
            key = self._aliases.get(name.lower(), key)
        return key

    def lookup(self, name: str) -> type:
        key = self._key(name)
        if key not in self._classes:
            known = ", ".join(sorted(self._aliases))
            raise LookupFailed(f"Unknown {self.kind} {name!r}. Known names: {known}.", self, name,
                               reason=f"Unknown {self.kind} {name!r}.")
        return self._classes[key]

    def knows(self, name: str) -> bool:
        """Whether :meth:`lookup` resolves ``name``."""
        return self._key(name) in self._classes

    def problem(self, identifier: Any, base: type | None = None, also: tuple = ()) -> str | None:
        """Why :meth:`get` would fail to resolve ``identifier`` (its message), or ``None`` if it resolves.

        Checks the lookup only (the name, the config's form and class_name,
        the type); the class's own checks of a config's values run when it is
        built. ``also``: further types the caller accepts as they are. An
        unknown name gives ``"Unknown <kind> <name>."`` without the list of
        names, which :meth:`expected` gives.
        """
        if identifier is None or (also and isinstance(identifier, also)):
            return None
        if isinstance(identifier, str):
            return None if self.knows(identifier) else f"Unknown {self.kind} {identifier!r}."
        if isinstance(identifier, dict):
            name, config = identifier.get("class_name"), identifier.get("config", {})
            if not isinstance(name, str) or not isinstance(config, dict):
                return self._config_message(identifier)
            return self.problem(name)
        if base is not None and not isinstance(identifier, base):
            return self._type_message(identifier, base)
        return None

    def expected(self, base: type | None = None, extras: tuple = ()) -> str:
        """What :meth:`get` accepts, in words, for the template ``The 'x' parameter of C must be ...``.

        ``extras``: further forms the caller accepts ("None", "a NumPy array").
        """
        names = ", ".join(repr(n) for n in sorted(self._aliases))
        parts = [f"{_article(self.kind)} {self.kind} name (one of {names}, or a class name such as "
                 f"{min(self._classes)!r})",
                 "a config dict {'class_name': <such a name>, 'config': {...}}"]
        if base is not None:
            parts.append(f"{_article(base.__name__)} {base.__name__} instance")
        parts.extend(extras)
        return ", ".join(parts[:-1]) + " or " + parts[-1]

    def _config_message(self, config: Any) -> str:
        return (f"{_article(self.kind).capitalize()} {self.kind} config must be a dict with 'class_name' and "
                f"'config'; got {config!r}.")

    def _type_message(self, identifier: Any, base: type) -> str:
        return (f"Expected {_article(self.kind)} {self.kind} name, config dict or {base.__name__} instance, "
                f"got {identifier!r}.")

    def get(self, identifier: Any, base: type | None = None, **kwargs):
        """Resolve ``identifier`` to an instance (or ``None``)."""
        if identifier is None:
            return None
        if isinstance(identifier, str):
            return self.lookup(identifier)(**kwargs)
        if isinstance(identifier, dict):
            return self.deserialize(identifier)
        if base is not None and not isinstance(identifier, base):
            raise LookupFailed(self._type_message(identifier, base), self, identifier, base)
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
            raise LookupFailed(self._config_message(config), self, config)
        if not isinstance(config["class_name"], str):
            raise LookupFailed(self._config_message(config), self, config)
        cls = self.lookup(config["class_name"])
        return cls.from_config(dict(config.get("config", {})))


def argument_error(owner, arg: str, value: Any, exc: LookupFailed, base: type | None = None,
                   extras: tuple = ()) -> InvalidParameterError | None:
    """``exc`` (raised while resolving ``value``, given as ``arg`` to ``owner``) as the parameter template, or None.

    None when ``exc`` is about something else than ``value`` itself or its
    class_name (a schedule inside an optimizer's config, say): its own message
    says best what failed. The message is normlab's template (owner, argument,
    what is accepted: ``exc``'s registry in words, then ``extras``), the
    owner's Keras sentence where it declares one, then the registry's reason
    ("Unknown initializer 'nope'. Known names: ...").
    """
    ident = exc.identifier
    if not (ident is value or (isinstance(value, dict) and (ident is value.get("class_name")))):
        return None
    return check_failed(owner, arg, value, exc.reason, exc.registry.expected(base or exc.base, extras))


def check_failed(owner, arg: str, value: Any, reason: str, expected: str) -> InvalidParameterError:
    """The template error for ``arg`` of ``owner``, followed by ``reason``."""
    err = invalid_parameter(owner, arg, expected, value)
    return InvalidParameterError(f"{err} {reason}")
