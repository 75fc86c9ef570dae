"""Helpers shared by the dataset loaders: the optional scikit-learn import and
the ``(x_train, y_train), (x_test, y_test)`` return convention."""

from __future__ import annotations

import importlib
import numbers

import numpy as np

from .._validation import Interval

#: Constraint for seeds handed to ``numpy.random.RandomState`` / scikit-learn.
SEED = Interval(numbers.Integral, 0, 2**32 - 1)


def import_sklearn(module: str, caller: str):
    """Import ``module`` (a scikit-learn submodule) or say how to install it.

    scikit-learn is an optional dependency (the ``datasets`` extra), so it is
    imported here, inside the loaders that need it, never at package import.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{caller} needs scikit-learn, an optional dependency of normlab "
            f"({module} could not be imported: {exc}). Install it with: "
            'pip install "normlab[datasets]"'
        ) from exc


def as_split(x_train, y_train, x_test, y_test):
    """Cast to the library convention: float32 inputs, int64 labels, C order."""
    return (
        (np.ascontiguousarray(x_train, dtype=np.float32), np.ascontiguousarray(y_train, dtype=np.int64)),
        (np.ascontiguousarray(x_test, dtype=np.float32), np.ascontiguousarray(y_test, dtype=np.int64)),
    )
