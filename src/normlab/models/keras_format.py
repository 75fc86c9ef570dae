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
:mod:`._keras_layers`, :mod:`._keras_compile` and :mod:`._keras_common` the
mapping of layers, compile settings and the objects inside configs;
:mod:`._keras_read` the checked reading, :mod:`._keras_write` the config and
weights written, :mod:`._keras_weights` the weights files and
:mod:`._saving_pickle` the pickling (all re-exported here).
"""
from __future__ import annotations

import datetime
import json
import os
import zipfile

from .. import __version__
from ._keras_layers import KERAS_ONLY_LAYERS, LAYER_SPECS, NOT_IN_KERAS
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
from ._keras_weights import (  # noqa: F401 - re-exported
    WEIGHTS_SUFFIX,
    _is_weights_h5,
    _read_weights_h5,
    _read_weights_npz,
    _weight_members,
    load_weights,
    save_weights,
)
from ._keras_write import _keras_config, _keras_optimizer_vars, _weights_h5  # noqa: F401 - re-exported
from ._saving_files import ModelFileError, _open_regular_file, _write_atomically
from ._saving_pickle import _rebuild_model, _rebuild_unbuilt, _reduce_model  # noqa: F401 - re-exported

__all__ = ["load_keras", "save_keras", "is_keras_path", "save_weights", "load_weights", "LAYER_SPECS",
           "KERAS_ONLY_LAYERS", "NOT_IN_KERAS", "MAX_CONFIG_BYTES", "MAX_METADATA_BYTES", "MAX_JSON_DEPTH",
           "MAX_INFLATION", "MAX_LAYERS", "MAX_H5_OBJECTS", "MAX_H5_DEPTH"]

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
