"""Tools for checking gradients of layers, losses and whole models (shipped for users)."""

from .gradcheck import (
    assert_layer_gradients,
    check_layer_gradients,
    check_loss_gradients,
    check_model_gradients,
    grad_error,
    numerical_gradient,
    rel_error,
)

__all__ = [
    "rel_error",
    "grad_error",
    "numerical_gradient",
    "check_layer_gradients",
    "assert_layer_gradients",
    "check_loss_gradients",
    "check_model_gradients",
]
