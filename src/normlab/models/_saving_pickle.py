"""Pickling models through normlab's own model format (no pickle inside), as Keras's ``Model.__reduce__`` does.

``BaseModel.__reduce__`` calls :func:`_reduce_model`; see the module
docstring of :mod:`normlab.models.keras_format`, "Pickling".
"""

from __future__ import annotations

import json
import os
import tempfile

from .. import losses as _losses
from .. import metrics as _metrics


def _reduce_model(model):
    """``model.__reduce__()``: the model travels as normlab's own model file, never as pickled insides.

    A built model travels as the bytes of its model file (weights, buffers,
    optimizer state, generator states), written and read back through a
    temporary file (``save_model`` and ``load_model`` take paths); an
    unbuilt one as its JSON config and compile settings.
    """
    from .saving import save_model

    if not model.built:
        compile_info = None
        if model.compiled:
            from .. import optimizers as _optimizers

            compile_info = {"optimizer": _optimizers.serialize(model.optimizer),
                            "loss": _losses.serialize(model.loss),
                            "metrics": [m if isinstance(m, str) else _metrics.registry.serialize(m)
                                        for m in model._metric_ids],
                            "weighted_metrics": [m if isinstance(m, str) else _metrics.registry.serialize(m)
                                                 for m in model._weighted_metric_ids]}
        return _rebuild_unbuilt, (type(model).__name__, json.dumps(model.get_config()), json.dumps(compile_info))
    with tempfile.TemporaryDirectory(prefix="normlab-pickle-") as d:
        path = os.path.join(d, "model.npz")
        save_model(model, path)
        with open(path, "rb") as fh:
            blob = fh.read()
    return _rebuild_model, (blob,)


def _rebuild_model(blob: bytes):
    """Unpickle a built model: ``normlab.load_model`` on the bytes (every check of a model file applies)."""
    from .saving import load_model

    if not isinstance(blob, (bytes, bytearray)):
        raise TypeError(f"_rebuild_model: expected the bytes of a model file, got {type(blob).__name__}.")
    with tempfile.TemporaryDirectory(prefix="normlab-pickle-") as d:
        path = os.path.join(d, "model.npz")
        with open(path, "wb") as fh:
            fh.write(blob)
        return load_model(path, compile=True)


def _rebuild_unbuilt(class_name: str, config: str, compile_info: str):
    """Unpickle an unbuilt model from its JSON config (registered classes only)."""
    from .functional import Model
    from .sequential import Sequential

    classes = {"Sequential": Sequential, "Model": Model}
    if class_name not in classes:
        raise TypeError(f"_rebuild_unbuilt: unknown model class {class_name!r}.")
    model = classes[class_name].from_config(json.loads(config))
    info = json.loads(compile_info)
    if info is not None:
        from .. import optimizers as _optimizers

        model.compile(optimizer=_optimizers.deserialize(info["optimizer"]), loss=_losses.deserialize(info["loss"]),
                      metrics=[m if isinstance(m, str) else _metrics.registry.deserialize(m)
                               for m in info["metrics"]],
                      weighted_metrics=[m if isinstance(m, str) else _metrics.registry.deserialize(m)
                                        for m in info.get("weighted_metrics", [])])
    return model
