"""Batch-norm tools for whole models: exact population statistics, folding.

``recompute_batchnorm_statistics`` is the paper's inference procedure
(Ioffe and Szegedy 2015, Algorithm 2; "precise BN"): instead of the moving
averages, each BatchNormalization layer gets the exact mean and unbiased
variance of its input over a whole data set, layer after layer (each layer's
input is computed with the statistics already fixed upstream)::

    E[x]   = mean over all samples (and spatial positions)
    Var[x] = m / (m - 1) * mean((x - E[x])^2)        (var with ddof = 1)

``fold_batchnorm`` merges a Dense (or Conv1D/Conv2D) layer followed by an
inference-mode batch norm into one layer of the same kind::

    BN(x W + b) = (x W + b - mu) * s + beta,  s = gamma / sqrt(var + eps)
                = x (W * s) + ((b - mu) * s + beta)

(for a convolution ``W * s`` scales each output filter).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..kernels.conv import fold_conv_bn_params
from ..layers.base import registry as _layer_registry
from ..layers.conv import Conv1D, Conv2D
from ..layers.core import Activation, Dense
from ..layers.normalization import BatchNormalization

__all__ = ["recompute_batchnorm_statistics", "fold_batchnorm"]


def _check_model(model, who):
    if not hasattr(model, "layers"):
        raise TypeError(f"{who}: expected a Sequential model, got {model!r}.")
    if not model.built:
        raise ValueError(f"{who}: the model must be built (called or fit) first.")


def _population_moments(batches, axes, shape):
    """Mean and unbiased variance (float64, of ``shape``) over every value of ``batches`` per feature.

    Two passes over the kept activations, the sums shifted by the first
    value of each feature (a constant feature gets its value and 0 exactly)
    and, where float64 sums of large values would overflow, scaled by a
    power of two (exact). The variance is ``inf`` only where it exceeds the
    float64 range; NaN or inf values give NaN.
    """
    first = batches[0][tuple(slice(0, 1) if a in axes else slice(None) for a in range(batches[0].ndim))]
    x0 = first.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        amax = np.zeros(x0.shape)
        for h in batches:
            amax = np.maximum(amax, np.abs(h - x0).max(axis=axes, keepdims=True))
        e = np.where((amax > 2.0**500) & (amax < np.inf), np.frexp(amax)[1], 0)
        k = np.ldexp(1.0, -e)
        count = sum(h.size for h in batches) // x0.size
        total = np.zeros(x0.shape)
        for h in batches:
            total += ((h - x0) * k).sum(axis=axes, keepdims=True)
        shift = total / count  # mean - x0, scaled
        sq = np.zeros(x0.shape)
        for h in batches:
            sq += np.square((h - x0) * k - shift).sum(axis=axes, keepdims=True)
        mean = x0 + np.ldexp(shift, e)
        var = np.ldexp(sq / (count - 1), 2 * e)
    return mean.reshape(shape), var.reshape(shape)


def recompute_batchnorm_statistics(model, x, batch_size: int = 256) -> dict:
    """Set every BatchNormalization layer's moving statistics to the exact ones of ``x``.

    Parameters
    ----------
    model : Sequential
        A built model; its parameters are not changed.
    x : array_like
        Data (e.g. the whole training set) to compute the statistics from.
    batch_size : int
        Batch size for the forward passes (it does not change the result:
        sums are merged exactly, in float64).

    Returns
    -------
    dict
        ``{layer_name: (mean, var)}`` of the statistics written.

    Raises
    ------
    ValueError
        Where a layer's statistics do not fit its buffers' dtype (a float32
        moving variance holds at most 3.4e38: "overflow"), or its input
        holds NaN or inf values. Every layer's moving statistics are then
        left as they were: all are written, or none.
    """
    who = "recompute_batchnorm_statistics"
    _check_model(model, who)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"{who}: 'batch_size' must be an int >= 1, got {batch_size!r}.")
    x = model._check_input(x, who)
    layers = [layer for layer in model.layers if isinstance(layer, BatchNormalization)]
    old = [(layer.buffers["moving_mean"].copy(), layer.buffers["moving_variance"].copy()) for layer in layers]
    try:
        return _recompute(model, x, batch_size, who)
    except BaseException:
        for layer, (mm, mv) in zip(layers, old):
            np.copyto(layer.buffers["moving_mean"], mm)
            np.copyto(layer.buffers["moving_variance"], mv)
        raise


def _recompute(model, x, batch_size, who):
    out = {}
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, BatchNormalization):
            continue
        buffers = (layer.buffers["moving_mean"], layer.buffers["moving_variance"])
        batches = []
        for i in range(0, len(x), batch_size):
            h = x[i : i + batch_size]
            for prev in model.layers[:index]:
                h = prev.call(h, False)
            batches.append(h)
        count = sum(math.prod(h.shape[a] for a in layer._reduce_axes) for h in batches)
        if count < 2:
            raise ValueError(
                f"{who}: 'x' must give layer {layer.name!r} (BatchNormalization) at least 2 values per "
                f"feature to estimate a variance, got {count} (x of shape {x.shape})."
            )
        mean, var = _population_moments(batches, layer._reduce_axes, buffers[0].shape)
        with np.errstate(over="ignore"):
            fits = all(np.isfinite(v.astype(b.dtype)).all() for v, b in zip((mean, var), buffers))
        if not fits:
            finite = all(np.isfinite(h).all() for h in batches)
            what = (f"overflow: they exceed the largest {buffers[1].dtype} ({np.finfo(buffers[1].dtype).max:.3g})"
                    if finite else "are not finite: its input holds NaN or inf values")
            raise ValueError(
                f"{who}: the population statistics that 'x' gives layer {layer.name!r} (BatchNormalization) "
                f"{what}; no layer's moving statistics were changed."
            )
        np.copyto(buffers[0], mean, casting="same_kind")
        np.copyto(buffers[1], var, casting="same_kind")
        out[layer.name] = (mean, var)
    return out


def _clone_layer(layer):
    clone = _layer_registry.deserialize(_layer_registry.serialize(layer))
    return clone


def fold_batchnorm(model):
    """Return a new model in which each Dense/Conv + BatchNormalization pair is one layer.

    A pair folds when the Dense (or Conv1D/Conv2D) layer has no activation
    (``None`` or ``"linear"``), the batch norm follows it directly, normalizes the last
    axis. An :class:`Activation` layer right after the pair becomes the
    folded layer's activation (the same function of the same ``z``: one
    layer call instead of three at inference). Other layers are copied
    unchanged. Predictions
    agree with the original model's inference-mode predictions to rounding
    (float64 arithmetic is used for the folding itself).

    The returned model is not compiled; ``folded_pairs`` tells how many pairs
    were merged.
    """
    who = "fold_batchnorm"
    _check_model(model, who)
    from .sequential import Sequential

    new_layers = []
    layers = model.layers
    i = 0
    folded = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if (
            isinstance(layer, (Dense, Conv1D, Conv2D))
            and layer.activation in (None, "linear")
            and isinstance(nxt, BatchNormalization)
            and nxt._feature_axes == (len(nxt.input_shape) - 1,)
        ):
            kernel, bias = fold_conv_bn_params(
                layer.params["kernel"].astype(np.float64),
                layer.params["bias"].astype(np.float64) if layer.use_bias else None,
                nxt.params["gamma"] if nxt.scale else None,
                nxt.params["beta"] if nxt.center else None,
                nxt.buffers["moving_mean"],
                nxt.buffers["moving_variance"],
                nxt.epsilon,
            )
            after = layers[i + 2] if i + 2 < len(layers) else None
            merge_act = type(after) is Activation
            config = layer.get_config()
            config.update(use_bias=True, name=f"{layer.name}_folded", trainable=layer.trainable)
            if merge_act:
                config["activation"] = after.activation
            fused = type(layer).from_config(config)
            fused.build_from_shape(layer.input_shape)
            np.copyto(fused.params["kernel"], kernel, casting="same_kind")
            np.copyto(fused.params["bias"], bias, casting="same_kind")
            new_layers.append(fused)
            folded += 1
            i += 3 if merge_act else 2
            continue
        clone = _clone_layer(layer)
        clone.build_from_shape(layer.input_shape)
        for kind in ("params", "buffers"):
            for k, v in getattr(layer, kind).items():
                np.copyto(getattr(clone, kind)[k], v)
        new_layers.append(clone)
        i += 1
    out = Sequential(new_layers, name=f"{model.name}_folded")
    out.folded_pairs = folded
    return out
