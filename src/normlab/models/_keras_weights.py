"""Weights files, for :mod:`normlab.models.keras_format`: Keras's ``.weights.h5`` and normlab's ``.npz``.

:func:`save_weights` / :func:`load_weights` (see the module docstring of
:mod:`normlab.models.keras_format`, "Weights files").
"""

from __future__ import annotations

import os

import numpy as np

from ._keras_common import _Bad
from ._keras_layers import _var_keys
from ._keras_read import _require_h5py
from ._keras_write import _keras_config, _weights_h5
from ._saving_files import ModelFileError, _open_regular_file

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
