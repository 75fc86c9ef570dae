"""Central-difference gradient checks (float64) for layers, losses and models.

For a scalar function ``f`` of an array ``x`` the numerical gradient is::

    df/dx_i ~= (f(x + h e_i) - f(x - h e_i)) / (2 h)

with truncation error ``O(h^2)``; with ``h = 1e-6`` in float64 the relative
error of a correct analytic gradient is typically below ``1e-7``.

A layer is checked through the scalar ``L = sum(layer(x) * dy)`` for a fixed
random ``dy``, so that ``dL/dx = layer.backward(dy)`` and
``dL/dparam = layer.grads[param]``.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

__all__ = [
    "rel_error",
    "grad_error",
    "numerical_gradient",
    "check_layer_gradients",
    "assert_layer_gradients",
    "check_loss_gradients",
    "check_model_gradients",
]


def rel_error(a, b, floor: float = 1e-8) -> float:
    """Largest elementwise ``|a - b| / max(floor, |a| + |b|)``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}.")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))))


def grad_error(analytic, numeric, floor: float = 1e-12) -> float:
    """``max|a - n| / max(max|a|, max|n|)``: the error relative to the gradient's scale.

    Unlike the elementwise :func:`rel_error`, an entry that is tiny compared
    with the rest of the gradient (where central differences carry rounding
    noise of order ``eps * |f| / h``) does not dominate the result.
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"grad_error: shapes differ, {a.shape} vs {n.shape}.")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(n))), floor)
    return float(np.max(np.abs(a - n))) / scale


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``x`` (perturbed in place).

    ``x`` must be a float64 array that ``f`` reads; it is restored afterwards.
    """
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient needs a float64 array, got {x.dtype}.")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = float(f())
        x[i] = old - h
        fm = float(f())
        x[i] = old
        grad[i] = (fp - fm) / (2.0 * h)
    return grad


def _snapshot(layer):
    return {k: v.copy() for k, v in layer.buffers.items()}


def _restore(layer, snap):
    for k, v in snap.items():
        np.copyto(layer.buffers[k], v)


def check_layer_gradients(
    layer,
    x,
    *,
    training: bool = True,
    seed: int = 0,
    h: float = 1e-6,
) -> dict[str, float]:
    """Compare ``layer.backward`` with central differences.

    Parameters
    ----------
    layer : Layer
        Built or not; it is built on ``x`` (float64) if needed and must compute
        in float64.
    x : array_like
        Input batch (converted to float64).
    training : bool
        The mode of the forward calls.

    Returns
    -------
    dict
        ``{"x": error of dx, "<param>": error of each gradient}``, each the
        :func:`grad_error` (max deviation relative to the gradient's largest entry).
        Buffers (moving statistics) are restored, so the check leaves the
        layer's state as it found it (except its ``grads``, which are zeroed).
    """
    x = np.array(x, dtype=np.float64)
    with contextlib.ExitStack() as noise:
        # a random layer (dropout, noise, augmentation) draws the same noise in every call of the
        # check, so that it is a fixed function of x and the parameters; its generator is given
        # back as it was afterwards
        for random_layer in _random_layers(layer):
            state = random_layer.get_rng_state()
            noise.callback(_set_rng_state, random_layer, state)
            noise.enter_context(random_layer.fixed_noise())
        snap = _snapshot(layer) if layer.built else None
        y = layer(x, training=training)
        if layer.dtype != np.float64:
            raise TypeError(
                f"check_layer_gradients needs a float64 layer; {layer.name!r} computes in {layer.dtype}."
            )
        if snap is None:
            snap = _snapshot(layer)
        rng = np.random.default_rng(seed)
        dy = rng.standard_normal(y.shape)

        def loss():
            return float(np.sum(layer(x, training=training) * dy))

        layer.zero_grads()
        layer(x, training=training)
        dx = layer.backward(dy)
        analytic = {"x": dx}
        analytic.update({k: g.copy() for k, g in layer.grads.items()})
        numeric = {"x": numerical_gradient(loss, x, h)}
        for k, p in layer.params.items():
            if layer.trainable:
                numeric[k] = numerical_gradient(loss, p, h)
        _restore(layer, snap)
        layer.zero_grads()
    return {k: grad_error(analytic[k], numeric[k]) for k in numeric}


def _random_layers(layer) -> list:
    """``layer`` and the layers it wraps that draw random numbers (they have ``fixed_noise``)."""
    out, stack = [], [layer]
    while stack:
        current = stack.pop()
        if any(current is seen for seen in out):
            continue
        out.append(current)
        stack.extend(v for v in vars(current).values() if hasattr(v, "fixed_noise") and hasattr(v, "built"))
    return [lay for lay in out if hasattr(lay, "fixed_noise")]


def _set_rng_state(layer, state) -> None:
    if state is None:
        layer._rng = None  # not created before the check: created afresh on the next call, as it would have been
    else:
        layer.set_rng_state(state)


def assert_layer_gradients(layer, x, *, tol: float = 1e-6, **kwargs) -> dict[str, float]:
    """:func:`check_layer_gradients`, raising ``AssertionError`` above ``tol``."""
    errs = check_layer_gradients(layer, x, **kwargs)
    bad = {k: e for k, e in errs.items() if not e <= tol}
    if bad:
        raise AssertionError(f"gradient check of {layer.name!r} failed: {bad} (tol {tol}).")
    return errs


def check_loss_gradients(loss, y_true, y_pred, *, h: float = 1e-6) -> float:
    """:func:`grad_error` between ``loss.gradient(y_true, y_pred)`` and central differences."""
    y_pred = np.array(y_pred, dtype=np.float64)
    analytic = loss.gradient(y_true, y_pred)
    numeric = numerical_gradient(lambda: loss(y_true, y_pred), y_pred, h)
    return grad_error(analytic, numeric)


def check_model_gradients(model, x, y, *, h: float = 1e-6) -> dict[str, float]:
    """Check every trainable parameter of a compiled float64 model.

    The scalar is the model's training loss on ``(x, y)`` (regularization
    included) computed in training mode; buffers are restored after each
    evaluation so that batch-norm moving statistics do not drift.
    Returns ``{"<layer>/<param>": rel_error}``.
    """
    x = np.asarray(x, dtype=np.float64)
    model._ensure_built(x)
    snaps = [(layer, _snapshot(layer)) for layer in model.layers]

    def restore():
        for layer, s in snaps:
            _restore(layer, s)

    analytic = model.compute_gradients(x, y)
    restore()

    def loss():
        value = model.compute_loss_value(x, y)
        restore()
        return value

    out = {}
    for (layer, key), g in analytic.items():
        p = layer.params[key]
        if p.dtype != np.float64:
            raise TypeError("check_model_gradients needs a float64 model (fit or build it on float64 data).")
        out[f"{layer.name}/{key}"] = grad_error(g, numerical_gradient(loss, p, h))
    return out
