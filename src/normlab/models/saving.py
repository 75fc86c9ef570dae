"""Model files: one ``.npz`` (a zip of ``.npy`` arrays) holding JSON plus arrays.

Layout (format version 1):

``normlab_header``
    UTF-8 JSON as a ``uint8`` array: ``{"format": "normlab-model",
    "format_version": 1, "normlab_version", "model_class", "config"`` (the
    model's ``get_config()``), ``"compile"`` (serialized optimizer, loss and
    metrics, or null), ``"arrays"`` (which array belongs where),
    ``"rng_states"`` (the generators of random layers)``}``.
``layers/<i>/params/<key>``, ``layers/<i>/buffers/<key>``
    weights and non-trainable state (moving statistics) of layer ``i``.
``optimizer/<key>``
    the optimizer's state (slots, step count, schedule position).

Writing
-------
Files are written to a temporary name in the target's directory and renamed
over it, so an interrupted save never leaves a half-written file under the
target name. Saving through a symbolic link replaces the link's target (the
link stays); an existing file keeps its permission bits, a new one gets
``0o666`` less the umask, as ``open`` would give it. A model file holds
finite values only: :func:`save_model` refuses NaN and inf.

Reading untrusted files
-----------------------
:func:`load_model` treats the file as hostile until checked, and every
malformed file raises :class:`ModelFileError` (a ``ValueError``) naming the
file and what is wrong. Opening a model file never runs code from it
(no pickle; objects are built only from registered class names), and the
memory a load takes is bounded by what the file *holds*, never by what it
*declares*:

1. :mod:`normlab.models._npzread` checks the zip directory and every
   member's ``.npy`` header before reading any data: allowed names and
   dtypes only, declared sizes consistent with each other and, summed, at
   most :data:`MAX_INFLATION` times the file's size (so a small file cannot
   inflate; :func:`save_model` stores arrays uncompressed), at most
   :data:`MAX_MEMBERS` members.
2. The header is at most :data:`MAX_HEADER_BYTES` of JSON nested at most
   :data:`MAX_JSON_DEPTH` deep, with at most one value per
   :data:`MAX_JSON_DENSITY` bytes (parsing ``[],[],...`` would otherwise
   take 40 times its size), and every field has the expected type. Every
   member must be one the header refers to, and every array it refers to
   must be there.
3. Layers are constructed from their configs (constructors store and
   validate hyperparameters; they allocate nothing in proportion to a size),
   then built one by one **against the stored arrays**: while a layer
   builds, its ``add_weight`` only allocates a weight after checking that
   the file holds an array of that name and exactly that shape (a wrapped
   inner layer may allocate at most what its wrapper stores), and the
   layer is built from a zero-strided stand-in for its input, so no sample
   of the declared input shape is allocated either. A config that asks for
   a 4096 x 4096 ``Dense`` while the file stores a 4 x 4 kernel fails
   before a byte of it is allocated. The model is then assembled from the
   built layers (nothing left to build), and the arrays are read one at a
   time into the weights: no NaN or inf, and a float64 value that would
   overflow a float32 weight is an error, not a silent ``inf``.

What that means, measured with ``tracemalloc`` (which sees NumPy's buffers):
files refused for declaring more than they hold peak below 100 KiB (a
0.27 MB file with 256 MiB of deflated zeros: 69 KiB; a 1.3 KB file asking for
a 4096 x 4096 ``Dense``: 24 KiB; a ``.npy`` header declaring 4 TB: 45 KiB).
A valid file loads in about 1.2 times its size without ``compile``; compiling
adds the optimizer's own buffers (parameters, gradients, slots), about 6
times the file with Adam. The largest amplification left is in Python
objects: a 1 MiB header listing 8000 weightless layers builds 8000 layer
objects, about 30 bytes per byte of JSON (22 MiB), bounded by
:data:`MAX_HEADER_BYTES`.

Only a missing file (:class:`FileNotFoundError`), a directory
(:class:`IsADirectoryError`) and an unreadable path (:class:`PermissionError`)
raise what ``open`` raises: they are not malformed files.

Layout: this module holds the public functions and the writing;
:mod:`._saving_header` the format's constants and header checks,
:mod:`._saving_loader` the checked loading, :mod:`._saving_files` the
error class, atomic writes and opening files.
"""

from __future__ import annotations

import json

import numpy as np

from .. import __version__
from .. import losses as _losses
from .. import metrics as _metrics
from ._npzread import READ_ERRORS, ArchiveError, open_archive
from ._saving_files import (  # noqa: F401 - re-exported: callbacks and keras_format use them from here
    ModelFileError,
    _all_finite,
    _create_temporary,
    _fsync_directory,
    _open_regular_file,
    _write_atomically,
)
from ._saving_header import (  # noqa: F401 - the format's constants, public as saving.MAX_HEADER_BYTES ...
    _FLOATS,
    _INTS,
    _KEY,
    _LAYER_MEMBER,
    _OPT_KEY,
    FORMAT,
    FORMAT_VERSION,
    HEADER,
    MAX_HEADER_BYTES,
    MAX_INFLATION,
    MAX_JSON_DENSITY,
    MAX_JSON_DEPTH,
    MAX_MEMBERS,
    _Bad,
    _check_header,
    _first_line,
    _member_array_problem,
    _member_name_problem,
)
from ._saving_loader import _building, _Loader, _stand_in  # noqa: F401 - re-exported

__all__ = ["save_model", "load_model", "ModelFileError", "FORMAT_VERSION"]


def _serialize_metric(m):
    return m if isinstance(m, str) else _metrics.registry.serialize(m)


# ---------------------------------------------------------------------- saving
def save_model(model, path) -> None:
    """Write ``model`` (architecture, weights, buffers, optimizer state) to ``path``.

    Parameters
    ----------
    model : Sequential or Model
        Must be built (called or fit at least once, or ``build``-ed).
    path : str or os.PathLike
        Conventionally ending in ``.npz``; written atomically. A symbolic link
        is followed (its target is replaced, the link kept); an existing
        file keeps its permissions.

    Raises
    ------
    ValueError
        If the model is not built, holds NaN or inf in a weight, buffer or
        optimizer slot, or is beyond what :func:`load_model` reads
        (:data:`MAX_MEMBERS`, :data:`MAX_HEADER_BYTES`).
    """
    if not model.built:
        raise ValueError(f"save_model: model {model.name!r} is not built yet; call build() or fit() first.")
    arrays: dict[str, np.ndarray] = {}
    index = []
    rng_states = {}
    for i, layer in enumerate(model.layers):
        entry = {"params": list(layer.params), "buffers": list(layer.buffers)}
        for kind in ("params", "buffers"):
            for key, arr in getattr(layer, kind).items():
                arrays[f"layers/{i}/{kind}/{key}"] = arr
        index.append(entry)
        if hasattr(layer, "get_rng_state"):
            rng_states[str(i)] = layer.get_rng_state()
    compile_info = None
    opt_keys: list[str] = []
    if model.compiled:
        from .. import optimizers as _optimizers

        compile_info = {
            "optimizer": _optimizers.serialize(model.optimizer),
            "loss": _losses.serialize(model.loss),
            "metrics": [_serialize_metric(m) for m in model._metric_ids],
        }
        if model._weighted_metric_ids:  # written only when used: older readers still read the file
            compile_info["weighted_metrics"] = [_serialize_metric(m) for m in model._weighted_metric_ids]
        if hasattr(model.optimizer, "get_state"):
            for key, arr in model.optimizer.get_state().items():
                arrays[f"optimizer/{key}"] = np.asarray(arr)
                opt_keys.append(key)
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and not _all_finite(arr):
            raise ValueError(
                f"save_model: array {name!r} of model {model.name!r} holds NaN or inf; a model file holds "
                f"finite values only."
            )
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "normlab_version": __version__,
        "model_class": type(model).__name__,
        "config": model.get_config(),
        "compile": compile_info,
        "arrays": {"layers": index, "optimizer": opt_keys},
        "rng_states": rng_states,
    }
    text = json.dumps(header).encode("utf-8")
    if len(text) > MAX_HEADER_BYTES:
        raise ValueError(
            f"save_model: the header of model {model.name!r} takes {len(text)} bytes, more than the "
            f"{MAX_HEADER_BYTES} that load_model reads (normlab.models.saving.MAX_HEADER_BYTES)."
        )
    if len(arrays) + 1 > MAX_MEMBERS:
        raise ValueError(
            f"save_model: model {model.name!r} has {len(arrays)} arrays, more than the {MAX_MEMBERS - 1} "
            f"that load_model reads (normlab.models.saving.MAX_MEMBERS)."
        )
    arrays[HEADER] = np.frombuffer(text, dtype=np.uint8)
    _write_atomically(path, lambda fh: np.savez(fh, **arrays))


def load_model(path, compile: bool = True):
    """Read a model written by :func:`save_model` (or ``model.save``).

    Returns a built model with its weights, buffers and, when it was compiled
    and ``compile`` is true, its optimizer (with state), loss and metrics.

    Raises
    ------
    ModelFileError
        (a ``ValueError``) for any file that is not a valid normlab model:
        foreign, truncated, corrupted or tampered with. The message names the
        file and what is wrong. See the module docstring for what is checked
        and the memory bound.
    FileNotFoundError, IsADirectoryError, PermissionError
        When ``path`` cannot be opened as a file.

    A path ending in ``.keras`` is read as a Keras 3 file
    (:func:`normlab.models.keras_format.load_keras`), with the same
    guarantees: no code runs, memory is bounded by the file, and every
    malformed file raises :class:`ModelFileError`.
    """
    from .keras_format import is_keras_path, load_keras  # here: keras_format imports this module

    if is_keras_path(path):
        return load_keras(path, compile=compile)
    fh, size = _open_regular_file(path)
    with fh:
        if size == 0:
            raise ModelFileError(f"{path}: the file is empty.")
        try:
            zf, members = open_archive(
                fh, size, max_members=MAX_MEMBERS, max_inflation=MAX_INFLATION,
                check_name=_member_name_problem, check=_member_array_problem,
            )
        except ArchiveError as exc:
            raise ModelFileError(f"{path}: not a readable normlab model file: {str(exc).rstrip('.')}.") from None
        except OSError as exc:  # a seek to a negative offset: the file is shorter than its directory says
            raise ModelFileError(
                f"{path}: not a readable normlab model file: its zip directory points outside the file "
                f"(truncated or corrupted; {exc})."
            ) from None
        except READ_ERRORS as exc:
            raise ModelFileError(
                f"{path}: not a readable normlab model file (truncated, corrupted or another format): "
                f"{_first_line(exc).rstrip('.')}."
            ) from None
        with zf:
            return _Loader(path, zf, members).load(compile)
