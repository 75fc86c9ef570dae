"""Models: :class:`Sequential` (and, later, functional graphs) with compile/fit/evaluate/predict."""

from .sequential import Sequential

__all__ = ["Sequential"]
