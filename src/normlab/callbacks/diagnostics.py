"""Training diagnostics: activation percentiles, gradient norms, saturation.

:class:`TrainingDiagnostics` looks inside the network every ``every``
training steps and records, for each monitored layer,

- the chosen percentiles (15th, 50th, 85th by default) of the
  *pre-activations* ``z``, the input of each sigmoid / ReLU / ... unit,
  pooled over the batch and the layer's units (and, for the units named in
  ``units``, of each such unit over the batch alone: the Ioffe and Szegedy
  2015, Figure 1 (b, c) view of "one typical sigmoid");
- the fraction of *saturated* units: sigmoid outputs below 0.02 or above
  0.98 (``|tanh| > 0.96``, the same region for tanh), or of *dead* ReLU
  units: units whose ``z <= 0`` for every sample of the batch;

and, for every layer with trainable parameters, the Euclidean norm of its
gradient (all its ``grads`` arrays together) at that step.

Where the numbers come from
---------------------------
Without ``x_probe``, from the training step itself: ``Dense(activation=...)``
(and any layer with an ``activation`` argument, convolutions included) keeps
its logits ``z`` in ``layer._cache.z`` and an ``Activation`` layer its input,
so nothing is recomputed. For convolutions a "unit" is a channel: the dead
fraction counts channels whose ``z <= 0`` at every position of every sample. With ``x_probe``, a fixed batch is run
through the network without dropout at each recorded step, and also once
before training (step 0): the curves then follow one population of inputs and
do not jitter with the batches. Batch normalization normalizes the probe with
the probe's own statistics (``probe_statistics="batch"``, what a training
step does, leaving the moving statistics untouched) or with its moving
statistics (``"moving"``, inference; these lag the weights by about
``1 / (1 - momentum)`` steps). Gradient norms always come from the training step (they
are absent from the step-0 record).
"""

from __future__ import annotations

import numbers
from typing import Iterable

import numpy as np

from .._validation import Instance, Interval, InvalidParameterError, NoneOk, Options, validate_params
from .base import Callback, History

__all__ = ["TrainingDiagnostics"]

# activations without a pre-activation worth watching
_SKIP = (None, "linear", "softmax")
SIGMOID_LOW, SIGMOID_HIGH = 0.02, 0.98


def _saturation(activation: str | None, z: np.ndarray, a: np.ndarray) -> tuple[str, float] | None:
    """``("saturated", fraction)`` for sigmoid/tanh, ``("dead", fraction)`` for relu."""
    if activation == "sigmoid":
        return "saturated", float(np.mean((a < SIGMOID_LOW) | (a > SIGMOID_HIGH)))
    if activation == "tanh":
        # tanh(z) = 2 sigmoid(2z) - 1: the same saturated region as the sigmoid's
        bound = 2 * SIGMOID_HIGH - 1
        return "saturated", float(np.mean(np.abs(a) > bound))
    if activation == "relu":
        z2 = z.reshape(-1, z.shape[-1])
        return "dead", float(np.mean(np.all(z2 <= 0, axis=0)))
    return None


def _probe_array(x_probe) -> np.ndarray:
    """``x_probe`` as a finite float array with a batch axis, or a clear error."""
    try:
        arr = np.asarray(x_probe)
    except (TypeError, ValueError):  # ragged
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        raise InvalidParameterError(
            f"TrainingDiagnostics: 'x_probe' must be an array of real numbers (a batch of inputs), got "
            f"{type(x_probe).__name__}{'' if arr is None else ' of dtype ' + str(arr.dtype)}."
        )
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise InvalidParameterError(
            f"TrainingDiagnostics: 'x_probe' must be a non-empty batch (samples on axis 0), got shape {arr.shape}."
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidParameterError("TrainingDiagnostics: 'x_probe' holds NaN or inf values.")
    return arr


class TrainingDiagnostics(Callback):
    """Record per-layer activation percentiles, gradient norms and saturation.

    Parameters
    ----------
    every : int, default 100
        Record after every ``every``-th training step (steps counted across
        epochs, from 1), and after the last step of training.
    layers : list of str, int or Layer, optional
        The layers whose pre-activations are watched (names, indices in the
        model or the layer objects). By default every layer with a
        non-linear, non-softmax activation: ``Activation`` layers and layers
        with an ``activation`` argument (``Dense``, ``Conv1D``, ``Conv2D``,
        ...). Gradient norms are recorded for all layers with parameters.
    percentiles : sequence of float, default (15, 50, 85)
        Percentiles (0 to 100) of the pre-activations to record.
    x_probe : array, optional
        A fixed batch measured instead of the training batch (see the module
        notes).
    probe_statistics : {"batch", "moving"}, default "batch"
        How batch normalization treats ``x_probe``: with the probe's own
        statistics, as in training, or with the moving ones, as in inference.
    units : dict, optional
        ``{layer: [unit, ...]}``: also record the percentiles of each listed
        unit's pre-activation alone (over the batch or the probe).

    Attributes
    ----------
    records : list of dict
        One per recorded step::

            {"step": 1000, "epoch": 0,
             "layers": {"dense_2": {"activation": "sigmoid",
                                    "percentiles": [p15, p50, p85],
                                    "saturated": 0.03,          # or "dead" for relu
                                    "units": {7: [p15, p50, p85]}}},
             "grad_norms": {"dense": 0.41, "batch_normalization": 0.12, ...}}

    Notes
    -----
    At the end of each epoch the means over that epoch's records are added to
    the epoch logs, so that they land in :class:`~normlab.callbacks.History`
    (``history.history["dense_2/p50"]``, ``".../saturated"``, ``".../dead"``,
    ``".../grad_norm"``) and in later callbacks (``CSVLogger``). ``fit``'s
    History sees the logs before this callback runs, so the values are
    appended to ``model.history`` directly as well (never twice).
    Use :meth:`series` to pull one curve out of :attr:`records`.
    """

    _param_constraints = {
        "every": [Interval(numbers.Integral, 1, None)],
        "layers": [NoneOk(), Instance(list, tuple, label="a list of layer names, indices or layers")],
        "units": [NoneOk(), Instance(dict, label="a dict {layer: [unit, ...]}")],
        "probe_statistics": [Options(("batch", "moving"))],
    }

    def __init__(
        self,
        every: int = 100,
        layers: Iterable | None = None,
        percentiles=(15, 50, 85),
        x_probe=None,
        units: dict | None = None,
        probe_statistics: str = "batch",
    ):
        validate_params(
            type(self).__name__,
            self._param_constraints,
            {"every": every, "layers": layers, "units": units, "probe_statistics": probe_statistics},
        )
        try:
            q = np.asarray(percentiles, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            q = None
        if q is None or isinstance(percentiles, (str, bytes)):
            raise InvalidParameterError(
                f"TrainingDiagnostics: 'percentiles' must be a non-empty sequence of numbers in [0, 100], "
                f"got {percentiles!r}."
            )
        if q.size == 0 or not np.all((q >= 0) & (q <= 100)):
            raise ValueError(
                f"TrainingDiagnostics: 'percentiles' must be a non-empty sequence of numbers in [0, 100], "
                f"got {percentiles!r}."
            )
        super().__init__()
        self.every = int(every)
        self.layers = None if layers is None else list(layers)
        self.percentiles = tuple(float(v) for v in q)
        self.x_probe = None if x_probe is None else _probe_array(x_probe)
        self.probe_statistics = probe_statistics
        self.units = {k: [int(u) for u in v] for k, v in (units or {}).items()}
        self.records: list[dict] = []
        self.step = 0
        self._epoch = 0
        self._epoch_start = 0
        self._watched: list = []
        self._with_params: list = []

    # ------------------------------------------------------------ selection
    @staticmethod
    def _activation_of(layer) -> str | None:
        """The activation name of a layer that applies one (Activation, Dense, Conv, ...), else None."""
        from ..layers import Activation
        from ..layers._activated import ActivatedLinear

        if isinstance(layer, (Activation, ActivatedLinear)):
            return layer.activation
        return None

    def _resolve_layers(self) -> None:
        model_layers = self.model.layers
        if self.layers is None:
            watched = [l for l in model_layers if self._activation_of(l) not in _SKIP]
        else:
            watched = []
            for ident in self.layers:
                watched.append(self._find(ident))
            for l in watched:
                if self._activation_of(l) in _SKIP:
                    raise ValueError(
                        f"TrainingDiagnostics: layer {l.name!r} ({type(l).__name__}) has no non-linear "
                        "activation to watch; pick Dense layers with an activation or Activation layers."
                    )
        self._watched = watched
        self._with_params = [l for l in model_layers if l.grads]
        unit_layers = {}
        for ident, us in self.units.items():
            layer = self._find(ident)
            if not any(layer is w for w in watched):
                raise ValueError(f"TrainingDiagnostics: 'units' names layer {layer.name!r}, which is not watched.")
            unit_layers[layer.name] = us
        self._unit_map = unit_layers

    def _find(self, ident):
        from ..layers import Layer

        layers = self.model.layers
        if isinstance(ident, Layer):
            for l in layers:
                if l is ident:
                    return l
        elif isinstance(ident, numbers.Integral) and not isinstance(ident, bool):
            if -len(layers) <= ident < len(layers):
                return layers[ident]
        elif isinstance(ident, str):
            for l in layers:
                if l.name == ident:
                    return l
        raise ValueError(
            f"TrainingDiagnostics: no layer {ident!r} in model {self.model.name!r}; "
            f"its layers are {[l.name for l in layers]}."
        )

    # ------------------------------------------------------------ measuring
    def _pre_activations_from_training(self):
        """``{layer: (z, a)}`` from the caches of the last training step."""
        out = {}
        for layer in self._watched:
            cache = layer._cache
            if cache is None or not hasattr(cache, "z"):
                continue
            out[layer] = (cache.z, cache.a)
        return out

    def _pre_activations_from_probe(self):
        """``{layer: (z, a)}`` of the probe batch, without dropout (see the module notes)."""
        from .. import activations
        from ..layers import Activation

        watched = {id(l) for l in self._watched}
        h = self.x_probe
        if h.dtype != self.model.dtype:
            h = h.astype(self.model.dtype)
        out = {}
        for layer in self.model.layers:
            if id(layer) in watched:
                z = h if isinstance(layer, Activation) else self._logits_of(layer, h)
                a = activations.get(layer.activation).forward(z.copy())
                out[layer] = (z, a)
                h = a
            elif self.probe_statistics == "batch" and self._batch_statistics_apply(layer, h):
                h = self._call_with_batch_statistics(layer, h)
            else:
                # ``call`` rather than ``__call__``: keeps the training caches
                h = layer.call(h, False)
        return out

    @staticmethod
    def _logits_of(layer, h):
        """The pre-activation of an activated linear layer (Dense, Conv, ...) in inference mode."""
        from .. import activations
        from ..kernels.dense import dense_forward
        from ..layers import Dense

        if type(layer) is Dense:
            return dense_forward(h, layer.params["kernel"], layer.params.get("bias"))
        # any other ActivatedLinear: its inference call with the activation set to linear
        act = layer._act
        layer._act = activations.get("linear")
        try:
            return layer.call(h, False)
        finally:
            layer._act = act

    @staticmethod
    def _batch_statistics_apply(layer, h) -> bool:
        from ..layers import BatchNormalization

        return (
            isinstance(layer, BatchNormalization)
            and layer.trainable
            and layer.virtual_batch_size is None
            and len(h) >= 2
        )

    @staticmethod
    def _call_with_batch_statistics(layer, h):
        """A training-mode BN call on ``h`` that leaves the layer as it was."""
        saved = {k: b.copy() for k, b in layer.buffers.items()}
        cache, out_shape = layer._cache, getattr(layer, "_out_shape", None)
        try:
            return layer.call(h, True)
        finally:
            for k, b in layer.buffers.items():
                np.copyto(b, saved[k])
            layer._cache = cache
            layer._out_shape = out_shape

    def _record(self, *, with_grads: bool) -> None:
        zs = self._pre_activations_from_probe() if self.x_probe is not None else self._pre_activations_from_training()
        layers = {}
        for layer, (z, a) in zs.items():
            entry = {
                "activation": layer.activation,
                "percentiles": [float(v) for v in np.percentile(z, self.percentiles)],
            }
            sat = _saturation(layer.activation, z, a)
            if sat is not None:
                entry[sat[0]] = sat[1]
            us = self._unit_map.get(layer.name)
            if us:
                z2 = z.reshape(-1, z.shape[-1])
                entry["units"] = {u: [float(v) for v in np.percentile(z2[:, u], self.percentiles)] for u in us}
            layers[layer.name] = entry
        grads = {}
        if with_grads:
            for layer in self._with_params:
                total = sum(float(np.sum(np.square(g, dtype=np.float64))) for g in layer.grads.values())
                grads[layer.name] = float(np.sqrt(total))
        self.records.append({"step": self.step, "epoch": self._epoch, "layers": layers, "grad_norms": grads})

    # ---------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        self.records = []
        self.step = 0
        self._resolve_layers()
        shapes = dict(zip((id(l) for l in self.model.layers), self.model._layer_output_shapes()))
        for name, us in self._unit_map.items():
            layer = self._find(name)
            shape = shapes.get(id(layer))
            n = shape[-1] if shape else getattr(layer, "units", None)  # units: the last axis
            if n is not None and any(not -n <= u < n for u in us):
                raise ValueError(
                    f"TrainingDiagnostics: 'units' asks for unit(s) {us} of layer {name!r}, which has {n} units."
                )
        expected = self.model.input_shape
        if self.x_probe is not None and expected is not None and (
                self.x_probe.ndim != len(expected)
                or any(e is not None and e != s for e, s in zip(expected[1:], self.x_probe.shape[1:]))):
            raise ValueError(
                f"TrainingDiagnostics: 'x_probe' has shape {self.x_probe.shape}; the model takes inputs of "
                f"shape {tuple(expected)}."
            )
        if self.x_probe is not None:
            self._record(with_grads=False)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = len(self.records)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self._record(with_grads=True)

    def on_train_end(self, logs=None):
        if self.step and (not self.records or self.records[-1]["step"] != self.step):
            self._record(with_grads=True)

    def on_epoch_end(self, epoch, logs=None):
        recs = [r for r in self.records[self._epoch_start :] if r["epoch"] == epoch and r["grad_norms"]]
        if not recs:
            return
        summary = {}
        for name in recs[-1]["layers"]:
            entries = [r["layers"][name] for r in recs if name in r["layers"]]
            for i, q in enumerate(self.percentiles):
                summary[f"{name}/p{q:g}"] = float(np.mean([e["percentiles"][i] for e in entries]))
            for key in ("saturated", "dead"):
                if key in entries[0]:
                    summary[f"{name}/{key}"] = float(np.mean([e[key] for e in entries]))
        for name in recs[-1]["grad_norms"]:
            summary[f"{name}/grad_norm"] = float(np.mean([r["grad_norms"][name] for r in recs]))
        if logs is not None:
            logs.update(summary)
        hist = getattr(self.model, "history", None)
        if isinstance(hist, History) and hist.epoch and hist.epoch[-1] == epoch:
            for k, v in summary.items():
                values = hist.history.setdefault(k, [])
                if len(values) < len(hist.epoch):
                    values.append(v)

    # -------------------------------------------------------------- reading
    def series(self, layer: str, key: str = "percentiles", unit: int | None = None):
        """``(steps, values)`` arrays of one recorded quantity.

        ``key`` is ``"percentiles"`` (values of shape ``(n, len(percentiles))``),
        ``"saturated"``, ``"dead"`` or ``"grad_norm"``; with ``unit``, the
        percentiles of that unit.
        """
        steps, values = [], []
        for r in self.records:
            if key == "grad_norm":
                if layer in r["grad_norms"]:
                    steps.append(r["step"])
                    values.append(r["grad_norms"][layer])
                continue
            entry = r["layers"].get(layer)
            if entry is None:
                continue
            if unit is not None:
                v = entry.get("units", {}).get(unit)
            else:
                v = entry.get(key)
            if v is not None:
                steps.append(r["step"])
                values.append(v)
        if not steps and not self.records:
            raise ValueError("TrainingDiagnostics.series: nothing recorded yet.")
        return np.asarray(steps), np.asarray(values, dtype=np.float64)
