"""Tools for checking gradients of layers, losses and whole models (shipped for users)."""

from .gradcheck import (
    assert_layer_gradients,
    check_layer_gradients,
    check_loss_gradients,
    check_model_gradients,
    numerical_gradient,
    rel_error,
)

__all__ = [
    "rel_error",
    "numerical_gradient",
    "check_layer_gradients",
    "assert_layer_gradients",
    "check_loss_gradients",
    "check_model_gradients",
]
