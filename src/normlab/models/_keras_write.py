"""Writing Keras 3 files, for :mod:`normlab.models.keras_format`: the config and the HDF5 weights.

:func:`_keras_config` turns a normlab model into Keras's ``config.json``
object and lists its layers in Keras's ``model.layers`` order (which names
``layers/<key>`` in the weights file); :func:`_weights_h5` writes the
weights file of a ``.keras`` archive or of ``model.save_weights``.
"""

from __future__ import annotations

import io

import numpy as np

from ._keras_common import _h5_keys, _keras_order, _policy, _unique
from ._keras_compile import _NEGATED_SLOTS, _compile_to_keras, _is_placeholder, _slot_order, _trainable_in_keras_order
from ._keras_layers import _KERAS_ONLY_VARS, _config_keys, _input_entry, _layer_to_keras, _var_keys
from ._keras_read import _require_h5py


def _keras_config(model, include_compile: bool) -> tuple[dict, list]:
    """(config.json object, [(h5 key, layer or None)] in Keras's ``model.layers`` order)."""
    from .functional import Model
    from .sequential import Sequential

    layers = list(model.layers)
    names = [l.name for l in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"save_keras: model {model.name!r} has repeated layer names; Keras needs unique names.")
    entries = [_layer_to_keras(l) for l in layers]
    dtype = layers[0].dtype
    input_name = _unique("input_layer", set(names))
    if isinstance(model, Sequential):
        shape = list(model.input_shape)
        keys = _h5_keys([e["class_name"] for e in entries])
        top = {"module": "keras", "class_name": "Sequential",
               "config": {"name": model.name, "trainable": True, "dtype": _policy(dtype),
                          "layers": [_input_entry(shape, input_name, dtype)] + entries, "build_input_shape": shape},
               "registered_name": None, "build_config": {"input_shape": shape}}
        pairs = list(zip(keys, layers))
    elif isinstance(model, Model):
        conf = model.get_config()
        shape = list(conf["input_shape"])
        tensor_names = [input_name] + names
        shapes = [tuple(shape)]
        for layer, entry in zip(layers, conf["layers"]):
            args = [shapes[j] for j in entry["inbound"]]
            if getattr(layer, "multi_input", False):
                out = layer.compute_output_shape([(1,) + tuple(s[1:]) for s in args])
            else:
                out = layer.compute_output_shape((1,) + tuple(args[0][1:]))
            shapes.append((None,) + tuple(out[1:]))

        def tensor(j):
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": list(shapes[j]), "dtype": np.dtype(dtype or np.float32).name,
                               "keras_history": [tensor_names[j], 0, 0]}}

        # Keras orders model.layers its own way (depth first): the config and the weights file follow it
        order = _keras_order({0: [], **{i + 1: lc["inbound"] for i, lc in enumerate(conf["layers"])}}, conf["output"])
        full = []
        for t in order:
            if t == 0:
                full.append({**_input_entry(shape, input_name, dtype), "name": input_name, "inbound_nodes": []})
                continue
            layer, entry, lconf = layers[t - 1], entries[t - 1], conf["layers"][t - 1]
            inbound = [tensor(j) for j in lconf["inbound"]]
            arg = inbound if getattr(layer, "multi_input", False) else inbound[0]
            full.append({**entry, "name": layer.name, "inbound_nodes": [{"args": [arg], "kwargs": {}}]})
        keys = _h5_keys([e["class_name"] for e in full])
        top = {"module": "keras.src.models.functional", "class_name": "Functional",
               "config": {"name": model.name, "trainable": True, "layers": full,
                          # one tensor, not a list of one: Keras then expects a plain array, as it writes itself
                          "input_layers": [input_name, 0, 0],
                          "output_layers": [tensor_names[conf["output"]], 0, 0]},
               "registered_name": "Functional", "build_config": {"input_shape": shape}}
        pairs = list(zip(keys, [None if t == 0 else layers[t - 1] for t in order]))
    else:
        raise TypeError(f"save_keras: expected a normlab Sequential or Model, got {type(model).__name__}.")
    if include_compile and getattr(model, "compiled", False):
        top["compile_config"] = _compile_to_keras(model)
    return top, pairs


def _keras_optimizer_vars(model, pairs) -> list:
    """Keras's ``optimizer/vars``: iteration, learning rate, slots in Keras's order (none before the first step)."""
    opt = model.optimizer
    state = opt.get_state()
    cls = type(opt).__name__
    arrays, index = _trainable_in_keras_order(model, pairs)
    order = _slot_order(cls, opt.get_config(), len(arrays))
    if not any("/" in k for k in state) and (order or int(state["iterations"]) == 0):
        return []  # no step taken: Keras's optimizer is not built either
    # Keras's ``iteration`` counts calls, normlab's ``iterations`` updates: with gradient accumulation a call
    # between two updates is the ``accumulation_step``-th of the current group
    steps = opt.get_config().get("gradient_accumulation_steps") or 1
    calls = int(state["iterations"]) * steps + int(state.get("accumulation_step", 0))
    out = [np.array(calls, np.int64), np.array(opt.get_config()["learning_rate"], np.float32)]
    for o in order:
        if not isinstance(o, str) and _is_placeholder(cls, o[0], arrays[o[1]].shape):
            out.append(np.zeros((), np.int32))  # as Keras keeps it (an int stand-in, never read)
            continue
        arr = np.asarray(state[o if isinstance(o, str) else f"{o[0]}/{index[o[1]]}"])
        out.append(-arr if not isinstance(o, str) and (cls, o[0]) in _NEGATED_SLOTS else arr)
    return out


def _weights_h5(model, pairs, compile_config, who: str) -> bytes:
    """The bytes of Keras's weights file (``model.weights.h5`` in a ``.keras`` file, or a ``.weights.h5``).

    ``layers/<key>/vars/<i>`` per layer, the model's (empty) ``vars`` and,
    when ``compile_config`` is given, ``optimizer/vars/<i>``.
    """
    h5py = _require_h5py()
    arrays = []
    for key, layer in pairs:
        if layer is None:
            arrays.append((key, None, []))
            continue
        ks = _var_keys(layer)
        have = sorted(list(layer.params) + list(layer.buffers))
        want = sorted([k for k in ks if k not in _KERAS_ONLY_VARS] + _config_keys(layer))
        if want != have:
            raise ValueError(f"{who}: layer {layer.name!r} ({type(layer).__name__}) holds {have}, Keras's "
                             f"layer holds {sorted(ks)}.")
        # Normalization's count: how many samples adapt() saw (Keras's adapt() alone reads it; normlab has none)
        vals = [np.zeros((), np.int64) if k in _KERAS_ONLY_VARS else
                layer.params[k] if k in layer.params else layer.buffers[k] for k in ks]
        for k, v in zip(ks, vals):
            if v.size and not (np.isfinite(v.min()) and np.isfinite(v.max())):
                raise ValueError(f"{who}: weight {k!r} of layer {layer.name!r} holds NaN or inf.")
        arrays.append((key, layer.name, vals))
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        group = f.create_group("layers")
        for key, name, vals in arrays:
            v = group.create_group(key).create_group("vars")
            v.attrs["name"] = name or key
            for i, arr in enumerate(vals):
                v.create_dataset(str(i), data=np.array(arr, order="C"))  # keeps 0-d (Keras's count)
        f.create_group("vars").attrs["name"] = model.name
        if compile_config:
            opt_vars = _keras_optimizer_vars(model, pairs)
            v = f.create_group("optimizer").create_group("vars")
            v.attrs["name"] = compile_config["optimizer"]["config"].get("name", "optimizer")
            for i, arr in enumerate(opt_vars):
                v.create_dataset(str(i), data=arr)
    return buf.getvalue()
