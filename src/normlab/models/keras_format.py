"""Keras 3 ``.keras`` files, both ways, and the pickling of models.

A ``.keras`` file is a zip of three members (Keras 3, ``keras/src/saving/saving_lib.py``):

``config.json``
    ``serialize_keras_object(model)``: ``{"module", "class_name", "config",
    "registered_name", "build_config", "compile_config"}``; a ``Sequential``
    lists its layers (an ``InputLayer`` first), a ``Functional`` model gives
    each layer its ``inbound_nodes`` (``__keras_tensor__`` entries whose
    ``keras_history`` is ``[layer name, node index, tensor index]``).
``metadata.json``
    ``{"keras_version", "date_saved"}``.
``model.weights.h5``
    one HDF5 dataset per variable: ``layers/<key>/vars/<i>`` where ``<key>``
    is the snake_case *class* name of the layer, made unique by ``_1``,
    ``_2``, ... in the order of ``model.layers`` (a ``Sequential`` leaves
    its ``InputLayer`` out of that list, a ``Functional`` model keeps it),
    and ``<i>`` the order in which the layer created its variables
    (``BatchNormalization``: gamma, beta, moving_mean, moving_variance).
    ``vars`` (the model's own, none) and ``optimizer/vars/<i>`` complete it.

:func:`load_keras` reads such a file into a normlab model; :func:`save_keras`
writes one that Keras 3 loads (``keras.saving.load_model``) and predicts
with identically. ``normlab.load_model`` and ``model.save`` choose this
format for paths ending in ``.keras``. Layers map by class name; their
arguments share Keras's names and defaults (see :data:`LAYER_SPECS`).

Safety (Keras's ``safe_mode=True`` and more)
--------------------------------------------
A ``.keras`` file is data, never code: ``Lambda`` layers, ``__lambda__``
functions, custom objects (a ``registered_name``, a ``module`` outside
Keras's public ones) and every class normlab does not map are refused;
objects are built only from normlab's registries. Every malformed file
raises :class:`~normlab.models.saving.ModelFileError`, and the memory a load
takes is bounded by the file's size:

1. the zip holds exactly the three members above (no others, no duplicate
   names, no encryption), each within its size limit; a member stored
   deflated may inflate at most :data:`MAX_INFLATION` times, and every
   member is read with a limit, never trusting its declared size;
2. ``config.json`` is at most :data:`MAX_CONFIG_BYTES` of JSON nested at
   most :data:`MAX_JSON_DEPTH` deep; every key of every layer config is
   either mapped or a Keras default that changes nothing;
3. the HDF5 file is walked link by link (only hard links: no external or
   soft links, no external or virtual dataset storage), only the groups
   and datasets above are allowed, and the datasets' declared bytes sum to
   no more than the HDF5 file's size before any is read;
4. layers are built against the stored shapes: a layer's weight is
   allocated only after the file is found to hold a dataset of exactly that
   shape, and from a zero-strided stand-in input (no sample of the declared
   input shape is allocated);
5. the values read are finite (no NaN or inf) and fit the layer's dtype.

Optimizer
---------
The compile settings map (``SGD``, ``Adam``, ``AdamW``, ``RMSprop``,
``Adagrad``, ``Nadam``, ``Lion``; the mean squared error and the
cross-entropies; the accuracy metrics), and so does the optimizer's state,
Keras's ``optimizer/vars``: iteration count, learning rate, then the slots
in Keras's order (``_keras_mapping._slot_order``), so training resumes on either side
as if it had not moved. Keras's RMSprop momentum is normlab's with the
opposite sign. A layout that does not fit the optimizer is skipped with a
warning (fresh state), as Keras does. The moving averages (``use_ema``)
and the gradient accumulators (``gradient_accumulation_steps``) come first,
as Keras creates them; Keras's ``iteration`` counts calls, so it is written
as ``iterations * gradient_accumulation_steps + accumulation_step`` and split
back on reading. Learning-rate schedules and loss scaling are refused.

Weights files
-------------
:func:`save_weights` / :func:`load_weights` write and read the weights alone:
Keras's ``.weights.h5`` (the HDF5 file of a ``.keras`` archive, on its own)
for paths with that suffix, normlab's ``.npz`` of the weights otherwise.
Loading stages every array and checks it (the same checks as above, the
archive's as for normlab's model files) before the first is assigned.

Pickling
--------
:func:`_reduce_model` / :func:`_rebuild_model` pickle a model through
normlab's own model format (JSON and ``.npz`` arrays, no pickle inside), as
Keras's ``Model.__reduce__`` goes through the ``.keras`` format.

Layout: this module holds the public functions and the writing;
:mod:`._keras_mapping` the mapping of layers, objects and compile settings;
:mod:`._keras_read` the checked reading.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from .. import __version__
from .. import losses as _losses
from .. import metrics as _metrics
from ._keras_mapping import (
    _KERAS_ONLY_VARS,
    _NEGATED_SLOTS,
    KERAS_ONLY_LAYERS,
    LAYER_SPECS,
    NOT_IN_KERAS,
    _compile_to_keras,
    _config_keys,
    _h5_keys,
    _input_entry,
    _keras_order,
    _layer_to_keras,
    _policy,
    _slot_order,
    _trainable_in_keras_order,
    _unique,
    _var_keys,
)
from ._keras_read import (
    CONFIG,
    MAX_CONFIG_BYTES,
    MAX_H5_DEPTH,
    MAX_H5_OBJECTS,
    MAX_INFLATION,
    MAX_JSON_DEPTH,
    MAX_LAYERS,
    MAX_METADATA_BYTES,
    METADATA,
    WEIGHTS,
    _Bad,
    _read_members,
    _Reader,
    _require_h5py,
)
from .saving import ModelFileError, _open_regular_file

__all__ = ["load_keras", "save_keras", "is_keras_path", "save_weights", "load_weights", "LAYER_SPECS", "KERAS_ONLY_LAYERS", "NOT_IN_KERAS",
           "MAX_CONFIG_BYTES", "MAX_METADATA_BYTES", "MAX_JSON_DEPTH", "MAX_INFLATION", "MAX_LAYERS", "MAX_H5_OBJECTS", "MAX_H5_DEPTH"]

#: the Keras version whose layout :func:`save_keras` writes (Keras reads it from 3.0 on)
KERAS_VERSION = "3.15.1"


def is_keras_path(path) -> bool:
    """Whether ``normlab.load_model`` / ``model.save`` should use this format: ``path`` ends in ``.keras``.

    Case-sensitive, as Keras's own test (``str(filepath).endswith(".keras")``).
    """
    p = os.fspath(path)
    return p.endswith(b".keras") if isinstance(p, bytes) else p.endswith(".keras")


def load_keras(path, compile: bool = True):
    """Read a Keras 3 ``.keras`` file into a normlab ``Sequential`` or ``Model``.

    Parameters
    ----------
    path : str or os.PathLike
    compile : bool, default True
        Compile the model as the file's ``compile_config`` says (optimizer
        with its state, loss, metrics).

    Returns
    -------
    Sequential or Model
        Built, with the file's weights; ``predict`` gives Keras's predictions.

    Raises
    ------
    ModelFileError
        For every file that is not a ``.keras`` model normlab can read:
        not a zip, members other than the three, a layer or object normlab
        does not map (``Lambda``, custom classes), inconsistent shapes,
        NaN/inf weights, ... The message names the file and the cause.
    ImportError
        When h5py is not installed.
    FileNotFoundError, IsADirectoryError, PermissionError
        When ``path`` cannot be opened as a file.
    """
    _require_h5py()
    fh, size = _open_regular_file(path)
    with fh:
        if size == 0:
            raise ModelFileError(f"{path}: the file is empty.")
        try:
            return _Reader(_read_members(fh, size), size).load(compile)
        except _Bad as exc:
            raise ModelFileError(f"{path}: {exc}.") from None
        except (ModelFileError, MemoryError):
            raise
        except Exception as exc:  # zlib.error, EOFError, OSError from a truncated or corrupted archive
            raise ModelFileError(f"{path}: not a readable .keras file ({type(exc).__name__}: {exc}).") from None


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


def save_keras(model, path, include_compile: bool = True) -> None:
    """Write ``model`` as a Keras 3 ``.keras`` file (``keras.saving.load_model`` reads it).

    Parameters
    ----------
    model : Sequential or Model
        Built, made only of layers with a Keras 3 counterpart.
    path : str or os.PathLike
        Written atomically (a temporary file renamed over it).
    include_compile : bool, default True
        Write the optimizer (with its state), loss and metrics
        (``compile_config``, ``optimizer/vars``) of a compiled model.

    Raises
    ------
    ValueError
        If the model is not built, holds NaN/inf, or has a layer, argument,
        optimizer, loss or metric that Keras 3 lacks (``NoisyDense``,
        ``WeightNormalization``, ``BatchNormalization(virtual_batch_size=...)``
        ...); the message names it.
    ImportError
        When h5py is not installed.
    """
    _require_h5py()

    from .saving import _write_atomically

    if not getattr(model, "built", False):
        raise ValueError(f"save_keras: model {getattr(model, 'name', model)!r} is not built yet; call build() or "
                         f"fit() first.")
    top, pairs = _keras_config(model, include_compile)
    weights = _weights_h5(model, pairs, top.get("compile_config"), "save_keras")
    meta = {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "saved_by": f"normlab {__version__}"}

    def write(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(METADATA, json.dumps(meta))
            zf.writestr(CONFIG, json.dumps(top))
            zf.writestr(WEIGHTS, weights)

    _write_atomically(path, write)


# ------------------------------------------------------------------ weights
#: the suffix of Keras 3's weights files (``model.save_weights`` requires it)
WEIGHTS_SUFFIX = ".weights.h5"


def _is_weights_h5(path) -> bool:
    p = os.fspath(path)
    return p.endswith(WEIGHTS_SUFFIX.encode()) if isinstance(p, bytes) else p.endswith(WEIGHTS_SUFFIX)


def _weight_members(model) -> dict:
    """``{member name: array}`` of normlab's weights file: ``layers/<i>/params/<key>``, ``.../buffers/<key>``."""
    return {f"layers/{i}/{kind}/{key}": arr for i, layer in enumerate(model.layers)
            for kind in ("params", "buffers") for key, arr in getattr(layer, kind).items()}


def save_weights(model, path, overwrite: bool = True) -> None:
    """Write the weights (and buffers) of ``model`` to ``path``, atomically.

    A path ending in ``.weights.h5`` gets Keras 3's weights file, the HDF5
    file inside a ``.keras`` archive (``layers/<key>/vars/<i>``, ``vars``
    and, for a compiled model, ``optimizer/vars/<i>``), which Keras's
    ``model.load_weights`` reads (needs h5py and a model of layers Keras
    has). Any other path gets normlab's: an ``.npz`` of the arrays named as
    in a model file (``layers/<i>/params/<key>``, ``layers/<i>/buffers/<key>``),
    weights only.

    Parameters
    ----------
    model : Sequential or Model
        Built.
    path : str or os.PathLike
    overwrite : bool, default True
        False: raise FileExistsError if ``path`` exists (Keras asks on the
        console instead).

    Raises
    ------
    ValueError
        If the model is not built or holds NaN/inf, or (``.weights.h5``) has
        a layer or optimizer without a Keras 3 counterpart.
    """
    from .saving import _write_atomically

    who = "save_weights"
    if not getattr(model, "built", False):
        raise ValueError(f"{who}: model {getattr(model, 'name', model)!r} is not built yet; call build() or fit() "
                         f"first.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"{who}: 'overwrite' must be a bool, got {overwrite!r}.")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{who}: {os.fspath(path)!s} exists and overwrite=False.")
    if _is_weights_h5(path):
        _require_h5py()
        top, pairs = _keras_config(model, include_compile=True)
        data = _weights_h5(model, pairs, top.get("compile_config"), who)
        _write_atomically(path, lambda fh: fh.write(data))
        return
    arrays = _weight_members(model)
    for name, arr in arrays.items():
        if arr.size and not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
            raise ValueError(f"{who}: array {name!r} of model {model.name!r} holds NaN or inf.")
    _write_atomically(path, lambda fh: np.savez(fh, **arrays))


def load_weights(model, path) -> None:
    """Read weights written by :func:`save_weights` (or Keras's ``model.save_weights``) into ``model``.

    The file must hold exactly the weights of ``model``'s architecture,
    each of its shape: all of them are read and checked before the first is
    assigned, so on any error the model (and its optimizer) is unchanged. A
    ``.weights.h5`` file's optimizer variables are read into a compiled
    model's optimizer when they are laid out as its state (otherwise they
    are skipped with a warning, as Keras does). Memory is bounded by the
    file's size, and no code runs.

    Raises
    ------
    ModelFileError
        For a file that is not a weights file of this model (foreign,
        truncated, corrupted, other layers or shapes, NaN/inf values).
    ValueError
        If the model is not built (or, for ``.weights.h5``, has a layer
        without a Keras 3 counterpart).
    FileNotFoundError, IsADirectoryError, PermissionError
        When ``path`` cannot be opened as a file.
    """
    who = "load_weights"
    if not getattr(model, "built", False):
        raise ValueError(f"{who}: model {getattr(model, 'name', model)!r} is not built yet; call build() or fit() "
                         f"first, then load its weights.")
    if _is_weights_h5(path):
        _require_h5py()
        pairs = _keras_config(model, include_compile=False)[1]
        staged, state = _read_weights_h5(model, pairs, path)
    else:
        staged, state = _read_weights_npz(model, path), None
    if state is not None:
        try:
            model.optimizer.set_state(state)  # checks everything before it changes anything
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f"{path}: the optimizer's state does not fit the model: {exc}") from None
    for target, value in staged:
        np.copyto(target, value)


def _read_weights_h5(model, pairs, path):
    """``([(target, value)], optimizer state or None)`` from a Keras ``.weights.h5`` file; nothing assigned."""
    from ._keras_read import _KERAS_ONLY_VARS, _optimizer_state_from, _Weights

    fh, size = _open_regular_file(path)
    with fh:
        if size == 0:
            raise ModelFileError(f"{path}: the file is empty.")
        try:
            data = fh.read(size + 1)
            if len(data) != size:
                raise _Bad("the file changed size while it was read")
            weights = _Weights(data)
            try:
                weights.check_layout([k for k, _ in pairs], [len(_var_keys(l)) if l else 0 for _, l in pairs])
                staged = []
                for key, layer in pairs:
                    if layer is None:
                        continue
                    for i, k in enumerate(_var_keys(layer)):
                        p = f"layers/{key}/vars/{i}"
                        if k in _KERAS_ONLY_VARS:
                            ds = weights.datasets[p]
                            if ds.shape != () or ds.dtype.kind not in "iu":
                                raise _Bad(f"dataset {p!r} ({k!r}) must be an integer scalar")
                            continue
                        target = layer.params[k] if k in layer.params else layer.buffers[k]
                        value = np.empty_like(target)
                        weights.read(p, value)
                        staged.append((target, value))
                state = None
                if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
                    state = _optimizer_state_from(weights, model, pairs, "load_weights")
            finally:
                weights.close()
        except _Bad as exc:
            raise ModelFileError(f"{path}: {exc}.") from None
        except (ModelFileError, MemoryError):
            raise
        except Exception as exc:  # OSError, h5py's errors on a truncated or corrupted file
            raise ModelFileError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc}).") from None
    return staged, state


def _read_weights_npz(model, path):
    """``[(target, value)]`` from normlab's weights ``.npz``, every array checked; nothing assigned."""
    from ._npzread import READ_ERRORS, ArchiveError, open_archive, read_array
    from .saving import MAX_INFLATION as NPZ_INFLATION
    from .saving import _open_regular_file as open_npz

    targets = _weight_members(model)

    def name_problem(name):
        return None if name in targets else "not a weight of this model (another architecture?)"

    def array_problem(name, shape, dtype):
        t = targets[name]
        if dtype.name not in ("float16", "float32", "float64"):
            return f"has dtype {dtype}; weights are float16, float32 or float64"
        if tuple(shape) != t.shape:
            return f"has shape {tuple(shape)}, the model's weight has {t.shape}"
        return None

    fh, size = open_npz(path)
    with fh:
        if size == 0:
            raise ModelFileError(f"{path}: the file is empty.")
        try:
            zf, members = open_archive(fh, size, max_members=len(targets) + 1, max_inflation=NPZ_INFLATION,
                                       check_name=name_problem, check=array_problem)
        except (ArchiveError, OSError) as exc:
            raise ModelFileError(f"{path}: not a weights file of model {model.name!r}: {str(exc).rstrip('.')}.") \
                from None
        except READ_ERRORS as exc:
            raise ModelFileError(f"{path}: not a readable weights file (truncated, corrupted or another format): "
                                 f"{type(exc).__name__}: {exc}.") from None
        with zf:
            missing = sorted(set(targets) - set(members))
            if missing:
                raise ModelFileError(f"{path}: the file lacks the weights {missing[:5]} of model {model.name!r}.")
            staged = []
            for name, target in targets.items():
                try:
                    arr = read_array(zf, members[name])
                except READ_ERRORS as exc:  # ArchiveError is a ValueError
                    raise ModelFileError(f"{path}: array {name!r} could not be read (truncated or corrupted): "
                                         f"{exc}.") from None
                if arr.size and not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
                    raise ModelFileError(f"{path}: array {name!r} holds NaN or inf.")
                value = arr.astype(target.dtype)
                if value.size and not (np.isfinite(value.min()) and np.isfinite(value.max())):
                    raise ModelFileError(f"{path}: array {name!r} holds values that overflow {target.dtype}.")
                staged.append((target, value))
    return staged


# ----------------------------------------------------------------- pickling
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
                                        for m in model._metric_ids]}
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
                               for m in info["metrics"]])
    return model
