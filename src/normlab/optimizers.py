"""Optimizers (Keras 3's names, arguments and numerics) and learning-rate schedules.

``normlab.optimizers.get("adam")`` (or ``"sgd"``, ``"rmsprop"``,
``"adagrad"``, ``"adamw"``, ``"nadam"``, ``"lion"``), a config dict
``{"class_name": "Adam", "config": {...}}`` or an instance gives an
optimizer; :func:`serialize` / :func:`deserialize` round-trip it through
JSON. A :func:`normlab.optim.transforms.chain` (any
``GradientTransformation``) gives a :class:`ChainOptimizer` with the
default learning rate (0.001). Schedules live in ``normlab.optimizers.schedules``. The machinery is
in :mod:`normlab.optim` (transforms, classes, schedules).
"""

import sys as _sys

from .optim import schedules, transforms
from .optim.more_optimizers import Adadelta, Adafactor, Adamax, Ftrl, Lamb
from .optim.optimizers import SGD, Adagrad, Adam, AdamW, ChainOptimizer, Lion, Nadam, Optimizer, RMSprop, registry

# ``import normlab.optimizers.schedules`` and ``from normlab.optimizers.schedules import ...`` work too
_sys.modules[__name__ + ".schedules"] = schedules

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Nadam",
    "Lion",
    "Adamax",
    "Adadelta",
    "Lamb",
    "Ftrl",
    "Adafactor",
    "ChainOptimizer",
    "schedules",
    "transforms",
    "get",
    "serialize",
    "deserialize",
]


def get(identifier, **kwargs) -> Optimizer | None:
    """Resolve ``None``, a name (``"sgd"``, ``"adam"``, ...), a config dict or an instance.

    A name builds the optimizer with its defaults (or ``kwargs``); a
    ``GradientTransformation`` (``normlab.optim.transforms.chain(...)``) is
    wrapped in a :class:`ChainOptimizer` (``kwargs``: its ``learning_rate``,
    ``on_nonfinite``, ``name``).
    """
    if isinstance(identifier, transforms.GradientTransformation):
        return ChainOptimizer(identifier, **kwargs)
    return registry.get(identifier, base=Optimizer, **kwargs)


def serialize(optimizer: Optimizer | None) -> dict | None:
    """``{"class_name": ..., "config": {...}}``, plain JSON (schedules included)."""
    return registry.serialize(optimizer)


def deserialize(config: dict) -> Optimizer:
    """Inverse of :func:`serialize`."""
    return registry.deserialize(config)
