"""The optimizer toolkit: pure gradient transformations, optimizers built on them, schedules.

- :mod:`normlab.optim.transforms`: ``init`` / ``update`` pairs with explicit
  state, :func:`~normlab.optim.transforms.chain`, clipping, weight decay and
  the scalings of SGD, AdaGrad, RMSprop, Adam, Nadam and Lion (each rule
  written once, in :mod:`normlab.kernels.optim`);
- :mod:`normlab.optim.optimizers`: the Keras-style classes (thin
  constructors over chains) and :class:`ChainOptimizer` (any chain);
- :mod:`normlab.optim.layout`: the memory a bound optimizer steps on;
- :mod:`normlab.optim.schedules`: learning-rate schedules.

The public entry point is :mod:`normlab.optimizers`.
"""

from . import schedules, transforms
from .optimizers import SGD, Adagrad, Adam, AdamW, ChainOptimizer, Lion, Nadam, Optimizer, RMSprop, registry
from .transforms import GradientTransformation, chain

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
    "Lion",
    "ChainOptimizer",
    "GradientTransformation",
    "chain",
    "registry",
]
