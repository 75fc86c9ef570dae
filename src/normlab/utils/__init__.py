"""Utilities with Keras's names (``keras.utils``): labels, arrays, seeds, Python datasets.

- :func:`to_categorical`: integer labels to one-hot float32 rows.
- :func:`normalize`: divide by the norm along an axis.
- :func:`set_random_seed`: one global seed for Python's and NumPy's global
  generators and for everything in normlab that was given no seed
  (initializers, noise layers, initial weights, shuffling).
- :class:`PyDataset` (alias ``Sequence``): batches produced by Python code,
  for ``fit``, ``evaluate`` and ``predict``.
"""

from ._random import get_random_seed, set_random_seed
from .numerical import normalize, to_categorical
from .py_dataset import PyDataset

#: Keras keeps its 2.x name as an alias of :class:`PyDataset`.
Sequence = PyDataset

__all__ = ["to_categorical", "normalize", "set_random_seed", "get_random_seed", "PyDataset", "Sequence"]
