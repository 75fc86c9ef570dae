"""Callbacks: hooks into ``fit``, ``evaluate`` and ``predict``."""

from .base import Callback, CallbackList, History, registry

__all__ = ["Callback", "CallbackList", "History", "get"]


def get(identifier):
    return registry.get(identifier, base=Callback)
