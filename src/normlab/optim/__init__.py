"""The optimizer toolkit: pure gradient transformations, optimizers built on them, schedules.

- :mod:`normlab.optim.transforms`: ``init`` / ``update`` pairs with explicit
  state, :func:`~normlab.optim.transforms.chain`, clipping, weight decay and
  the scalings of SGD, AdaGrad, RMSprop, Adam and Nadam;
- :mod:`normlab.optim.optimizers`: the Keras-style classes (thin
  constructors over chains);
- :mod:`normlab.optim.schedules`: learning-rate schedules.

The public entry point is :mod:`normlab.optimizers`.
"""

from . import schedules, transforms
from .optimizers import SGD, Adagrad, Adam, AdamW, Nadam, Optimizer, RMSprop, registry

__all__ = [
    "transforms",
    "schedules",
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Nadam",
    "registry",
]
