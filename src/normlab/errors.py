"""normlab's exception classes, in one place.

- :class:`~normlab._validation.InvalidParameterError` (``ValueError`` and
  ``TypeError``): a hyperparameter rejected at construction.
- :class:`~normlab.models.saving.ModelFileError` (``ValueError``): a file
  that is not a readable normlab model.
- :class:`NonFiniteError` (``FloatingPointError`` and ``ValueError``): a
  training step whose values are not finite, or overflow.
"""

from __future__ import annotations

from ._validation import InvalidParameterError

__all__ = ["InvalidParameterError", "NonFiniteError"]  # and ModelFileError, read lazily


class NonFiniteError(FloatingPointError, ValueError):
    """A value of a training step is NaN or infinite, or overflows its dtype.

    Raised by a layer whose input in training holds NaN or inf or whose
    statistics overflow (batch normalization), and by an optimizer refusing
    non-finite gradients. A model's step treats every such error alike,
    by the optimizer's ``on_nonfinite`` policy: ``"raise"`` (the error
    stands, nothing changed), ``"skip"`` (the step is skipped and counted)
    or ``"proceed"``. It is a ``ValueError`` for the callers that catch bad
    input, and a ``FloatingPointError`` as NumPy's ``errstate`` raises.
    """


def __getattr__(name):
    if name == "ModelFileError":  # defined beside the reader; imported lazily (models import this module)
        from .models.saving import ModelFileError

        return ModelFileError
    raise AttributeError(f"module 'normlab.errors' has no attribute {name!r}")
