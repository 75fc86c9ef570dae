"""Activations by name: ``get("relu")`` returns the forward/backward kernel pair.

The formulas and derivatives are in :mod:`normlab.kernels.activations`.
Names: linear, sigmoid, tanh, relu, leaky_relu, elu, selu, gelu, softmax
(``None`` means linear).
"""

from __future__ import annotations

from .kernels.activations import (  # noqa: F401  (re-exported functions)
    KERNELS,
    ActivationKernel,
    elu,
    gelu,
    leaky_relu,
    linear,
    relu,
    selu,
    sigmoid,
    softmax,
    tanh,
)

__all__ = ["get", "names"] + sorted(KERNELS)


def names() -> list[str]:
    return sorted(KERNELS)


def get(identifier: str | None) -> ActivationKernel:
    """Return the kernel pair for ``identifier`` (a name or ``None`` for linear)."""
    if identifier is None:
        return KERNELS["linear"]
    if isinstance(identifier, ActivationKernel):
        return identifier
    if not isinstance(identifier, str) or identifier not in KERNELS:
        raise ValueError(
            f"Unknown activation {identifier!r}. Known names: {', '.join(names())}."
        )
    return KERNELS[identifier]
