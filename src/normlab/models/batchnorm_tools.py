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
    if not hasattr(model, "layers") or not hasattr(model, "_program"):
        raise TypeError(f"{who}: expected a Sequential or functional Model, got {model!r}.")
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
    model : Sequential or Model
        A built model (a chain or a functional graph); its parameters are not
        changed.
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


def _input_of(program, index, x):
    """The inference-mode input of ``program[index]``'s layer for the batch ``x``.

    Only the entries before ``index`` run (the program is in execution
    order), so a batch norm downstream of ``index`` does not matter yet.
    """
    values = [x]
    for layer, reads in program[:index]:
        args = [values[i] for i in reads]
        values.append(layer.call(args if layer.multi_input else args[0], False))
    return values[program[index][1][0]]


def _recompute(model, x, batch_size, who):
    out = {}
    program, _ = model._program()
    for index, (layer, _reads) in enumerate(program):
        if not isinstance(layer, BatchNormalization):
            continue
        buffers = (layer.buffers["moving_mean"], layer.buffers["moving_variance"])
        batches = [_input_of(program, index, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
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


def _foldable(layer, bn) -> bool:
    return (
        isinstance(layer, (Dense, Conv1D, Conv2D))
        and layer.activation in (None, "linear")
        and isinstance(bn, BatchNormalization)
        and bn._feature_axes == (len(bn.input_shape) - 1,)
        and getattr(layer, "data_format", None) in (None, "channels_last")
    )


def _folded_layer(layer, bn, activation=None):
    """A copy of ``layer`` (Dense or convolution) computing ``bn(layer(x))`` at inference."""
    kernel, bias = fold_conv_bn_params(
        layer.params["kernel"].astype(np.float64),
        layer.params["bias"].astype(np.float64) if layer.use_bias else None,
        bn.params["gamma"] if bn.scale else None,
        bn.params["beta"] if bn.center else None,
        bn.buffers["moving_mean"],
        bn.buffers["moving_variance"],
        bn.epsilon,
    )
    config = layer.get_config()
    config.update(use_bias=True, name=f"{layer.name}_folded", trainable=layer.trainable)
    if activation is not None:
        config["activation"] = activation
    fused = type(layer).from_config(config)
    fused.build_from_shape(layer.input_shape)
    np.copyto(fused.params["kernel"], kernel, casting="same_kind")
    np.copyto(fused.params["bias"], bias, casting="same_kind")
    return fused


def _copied_layer(layer):
    clone = _clone_layer(layer)
    clone.build_from_shape(layer.input_shape)
    for kind in ("params", "buffers"):
        for k, v in getattr(layer, kind).items():
            np.copyto(getattr(clone, kind)[k], v)
    return clone


def _fold_graph(model):
    """fold_batchnorm for a functional model: the graph rebuilt on copies, each foldable pair as one layer."""
    from .functional import Input, Model

    program, output = model._program()
    readers: dict[int, list[int]] = {}
    for k, (_, reads) in enumerate(program):
        for i in reads:
            readers.setdefault(i, []).append(k)
    first = model.layers[0]
    symbols = {0: Input(batch_shape=tuple(model.input_shape), dtype=first.dtype)}
    absorbed: set[int] = set()
    folded = 0
    for k, (layer, reads) in enumerate(program):
        if k in absorbed:
            continue
        args = [symbols[i] for i in reads]
        value = k + 1
        after = readers.get(value, [])
        if value != output and len(after) == 1 and _foldable(layer, program[after[0]][0]):
            j = after[0]
            out = _folded_layer(layer, program[j][0])(args[0])
            absorbed.add(j)
            symbols[value] = symbols[j + 1] = out
            folded += 1
            continue
        clone = _copied_layer(layer)
        symbols[value] = clone(args if layer.multi_input else args[0])
    out = Model(symbols[0], symbols[output], name=f"{model.name}_folded")
    out.folded_pairs = folded
    return out


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

    A functional :class:`~normlab.Model` folds the same pairs wherever the
    batch norm is the only reader of the layer's output (a residual branch
    that also reads the pre-BN value keeps its batch norm); the result is a
    functional model of the same graph.

    The returned model is not compiled; ``folded_pairs`` tells how many pairs
    were merged.
    """
    who = "fold_batchnorm"
    _check_model(model, who)
    from .sequential import Sequential

    from .nested import is_nested

    if not isinstance(model, Sequential) or any(is_nested(layer) for layer in model.layers):
        return _fold_graph(model)

    new_layers = []
    layers = model.layers
    i = 0
    folded = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if _foldable(layer, nxt):
            after = layers[i + 2] if i + 2 < len(layers) else None
            merge_act = type(after) is Activation
            new_layers.append(_folded_layer(layer, nxt, after.activation if merge_act else None))
            folded += 1
            i += 3 if merge_act else 2
            continue
        new_layers.append(_copied_layer(layer))
        i += 1
    out = Sequential(new_layers, name=f"{model.name}_folded")
    out.folded_pairs = folded
    return out
