"""``to_onnx``: walk a built model's program, convert each layer, check and write the ONNX model."""

from __future__ import annotations

import collections
import errno
import numbers
import os

import numpy as np

from .._validation import Boolean, Interval, NoneOk, invalid_parameter, validate_params
from ..layers.normalization import BatchNormalization
from . import _keras_layers, _layers, _linear, _normalization  # noqa: F401  (they register their converters)
from ._convert import converter_for
from ._graph import MIN_OPSET, ExportError, GraphBuilder, Tensor, identity
from ._linear import linear_spec, output_channel_axis

__all__ = ["to_onnx", "DEFAULT_OPSET"]

#: ONNX 1.12 (2022): the first opset with LayerNormalization, and one that every current runtime reads
DEFAULT_OPSET = 17

_INT64_MAX = (1 << 63) - 1


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("to_onnx needs the 'onnx' package: pip install 'normlab[onnx]' (or onnx).") from None
    return onnx


def _as_model(model):
    """The normlab model to export: ``model`` itself, or a fitted scikit-learn wrapper's ``model_``."""
    if hasattr(model, "_program") and hasattr(model, "layers"):
        return model
    inner = getattr(model, "model_", None)
    if inner is not None and hasattr(inner, "_program"):
        return inner
    if inner is None and any(c.__module__.startswith("normlab.sklearn") for c in type(model).__mro__):
        # a normlab estimator before fit: scikit-learn's NotFittedError (a ValueError and an AttributeError),
        # as its predict would raise
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(model)
    raise TypeError(f"to_onnx: 'model' must be a normlab Sequential or Model (or a fitted normlab.sklearn "
                    f"estimator), got {type(model).__name__}.")


def _checked_path(path):
    """``path`` as a ``str`` (or None), refused before any work if no file can be written there."""
    if path is None:
        return None
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise invalid_parameter("to_onnx", "path", "None, a str or a path-like object", path)
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError:  # a PathLike whose __fspath__ returns something else
        raise invalid_parameter("to_onnx", "path", "None, a str or a path-like object", path) from None
    if not name:
        raise invalid_parameter("to_onnx", "path", "None or a file name", path)
    if os.path.isdir(name):
        raise IsADirectoryError(errno.EISDIR, f"to_onnx: 'path' is a directory; expected a file name such as "
                                              f"{os.path.join(name, 'model.onnx')!r}", name)
    parent = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(parent):
        kind = NotADirectoryError if os.path.exists(parent) else FileNotFoundError
        what = "is not a directory" if kind is NotADirectoryError else "does not exist"
        raise kind(errno.ENOTDIR if kind is NotADirectoryError else errno.ENOENT,
                   f"to_onnx: the folder of 'path' ({parent!r}) {what}", name)
    return name


def _checked_dtype(dtype):
    """``dtype`` as "float32", "float64" or None; a NumPy dtype or scalar type stands for its name."""
    if dtype is None:
        return None
    try:
        name = np.dtype(dtype).name if isinstance(dtype, (str, np.dtype, type)) else None
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise invalid_parameter("to_onnx", "dtype", "None or one of 'float32', 'float64'", dtype)
    return name


def _check_weights_finite(program) -> None:
    """Refuse a model holding NaN or inf: its ONNX graph would compute NaN (``save_model`` refuses it too)."""
    seen = set()
    for layer, _ in program:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        for store in (getattr(layer, "params", {}), getattr(layer, "buffers", {})):
            for key, arr in store.items():
                arr = np.asarray(arr)
                if arr.dtype.kind != "f" or not arr.size or (np.isfinite(arr.min()) and np.isfinite(arr.max())):
                    continue
                bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
                raise ExportError(f"to_onnx: layer {layer.name!r} ({type(layer).__name__}) cannot be exported to "
                                  f"ONNX: its weight {key!r} holds NaN or inf ({bad} of {arr.size} values); a "
                                  f"model with non-finite weights computes NaN.")


def _output_shape(layer, shapes) -> tuple:
    """normlab's output shape of ``layer`` for its input shapes, with the batch axis unknown (None)."""
    arg = list(shapes) if layer.multi_input else shapes[0]
    try:
        out = layer.compute_output_shape(arg)
    except (TypeError, ValueError):  # a layer that wants a concrete batch size
        one = [(1,) + tuple(s[1:]) for s in shapes]
        out = layer.compute_output_shape(one if layer.multi_input else one[0])
    return (None,) + tuple(out[1:])


def _plan_folds(program, out_index) -> tuple[dict, dict]:
    """``(folds, skipped)``: id(linear layer) -> the batch norm folded into it; program index of that BN -> its source."""
    uses = collections.Counter(i for _, inputs in program for i in inputs)
    uses[out_index] += 1
    folds, skipped = {}, {}
    for k, (layer, inputs) in enumerate(program):
        if type(layer) is not BatchNormalization or len(inputs) != 1:
            continue
        src = inputs[0]
        if src == 0 or uses[src] != 1:  # the model's input, or a value something else reads too
            continue
        prev = program[src - 1][0]
        if type(prev) not in _linear.LINEAR_LAYERS or id(prev) in folds:
            continue
        if linear_spec(prev).activation not in (None, "linear"):
            continue
        if layer._feature_axes != (output_channel_axis(prev, len(layer.input_shape)),):
            continue
        folds[id(prev)] = layer
        skipped[k] = src
    return folds, skipped


def _value_info(name, dtype, shape, batch, prefix):
    from onnx import helper

    dims = [batch] + [d if d is not None else f"{prefix}_dim{i}" for i, d in enumerate(shape[1:], 1)]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), dims)


def _rename(g: GraphBuilder, old: str, new: str) -> None:
    for node in g.nodes:
        for field in (node.input, node.output):
            for i, n in enumerate(field):
                if n == old:
                    field[i] = new


def _save(proto, path: str) -> None:
    """Write ``proto`` to ``path`` through a temporary file beside it: a reader never sees half a model.

    The writer of ``model.save`` (a new name in the same folder, flushed, then
    renamed over the target; a symbolic link keeps pointing at the new file).
    An error of the file system names ``to_onnx`` and ``path``, not the
    temporary name.
    """
    from ..models._saving_files import _write_atomically

    data = proto.SerializeToString()
    try:
        _write_atomically(path, lambda fh: fh.write(data))
    except OSError as exc:
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, f"to_onnx: cannot write the model to 'path' ({exc.strerror})", path) from exc


def to_onnx(model, path=None, opset=None, *, input_name: str = "input", output_name: str = "output",
            fold_batchnorm: bool = False, batch_size=None, dtype=None):
    """Export a built model to ONNX: a graph that onnxruntime (or any ONNX runtime) runs in place of ``predict``.

    The ONNX model takes what ``model.predict`` takes, in the same layout
    (normlab's channels-last images, ``(batch, height, width, channels)``),
    and returns what it returns, computed as in inference mode: dropout,
    noise and augmentation layers are the identity, batch normalization uses
    its moving statistics. ``onnx.checker`` (full check, with shape
    inference) passes on the result before it is written.

    Parameters
    ----------
    model : Sequential or Model
        A built normlab model (fitted, loaded, or built from an ``Input``);
        a fitted ``normlab.sklearn`` estimator stands for its ``model_``.
    path : str or path-like, optional
        Where to write the ``.onnx`` file (atomically); None: only return it.
        Checked before any work: a directory, or a file in a folder that does
        not exist, is refused at once.
    opset : int, optional
        The ONNX opset, from 13 to the newest the installed ``onnx`` knows.
        Default :data:`DEFAULT_OPSET` (17). Newer opsets use native operators
        where older ones get a decomposition: Gelu (20), RMSNormalization (23);
        LayerNormalization needs 17.
    input_name, output_name : str, default "input", "output"
        Names of the graph's input and output.
    fold_batchnorm : bool, default False
        Fold each batch norm into the Dense / convolution layer before it
        where that layer has no activation and the batch norm is its only
        reader (as :func:`normlab.models.fold_batchnorm` does, also in
        functional models); other batch norms stay ``BatchNormalization``
        operators.
    batch_size : int, optional
        Fix the batch size; by default it is dynamic (the symbol ``"batch"``).
    dtype : {"float32", "float64"}, optional
        Element type of the input, the output and the weights; default the
        model's. A NumPy dtype or scalar type (``np.float32``) stands for its
        name.

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    InvalidParameterError
        An option of the wrong type or out of range (a ``ValueError`` and a
        ``TypeError``; the message names the option and what it must be).
    ExportError
        A layer with no ONNX form (the message names it and says why; add
        one with :func:`normlab.export.register_converter`), or a layer
        whose weights hold NaN or inf (named with the weight), or a constant
        that would be inf in the graph's type (a float64 weight beyond
        float32's range with ``dtype="float32"``). A ``ValueError``.
    ValueError
        An unbuilt model; ``input_name`` equal to ``output_name`` or empty.
    TypeError
        ``model`` is not a normlab model or estimator.
    sklearn.exceptions.NotFittedError
        A ``normlab.sklearn`` estimator before ``fit``.
    IsADirectoryError, FileNotFoundError, NotADirectoryError, PermissionError
        ``path`` is a directory, its folder is missing or not a folder, or
        the file cannot be written (the message names ``to_onnx`` and
        ``path``). Nothing is written when any error is raised, and the
        model is never changed.
    ImportError
        Without the ``onnx`` package (``pip install 'normlab[onnx]'``).

    Notes
    -----
    Convolutions and pooling run channels-first in ONNX; the exporter
    tracks each tensor's layout and inserts a ``Transpose`` only where a
    layer needs normlab's order (e.g. before ``Flatten``), not around every
    convolution. The model's IR version is the oldest that carries the
    opset, so older runtimes can read it.
    """
    onnx = _import_onnx()
    from onnx import helper

    from .. import __version__

    who = "to_onnx"
    model = _as_model(model)
    newest = onnx.defs.onnx_opset_version()
    validate_params(who, {
        "opset": [NoneOk(), Interval(numbers.Integral, MIN_OPSET, newest)],
        "input_name": [str],
        "output_name": [str],
        "fold_batchnorm": [Boolean()],
        "batch_size": [NoneOk(), Interval(numbers.Integral, 1, None)],
    }, {"opset": opset, "input_name": input_name, "output_name": output_name,
        "fold_batchnorm": fold_batchnorm, "batch_size": batch_size})
    if batch_size is not None and batch_size > _INT64_MAX:  # an ONNX dimension is an int64
        raise invalid_parameter(who, "batch_size", "None or an int in the range [1, 2**63 - 1] (an ONNX "
                                "dimension is an int64)", batch_size)
    dtype = _checked_dtype(dtype)
    if not input_name or not output_name or input_name == output_name:
        raise ValueError(f"{who}: 'input_name' and 'output_name' must be two different non-empty names, got "
                         f"{input_name!r} and {output_name!r}.")
    path = _checked_path(path)
    if not model.built:
        raise ValueError(f"{who}: model {model.name!r} is not built; build it (model.build(input_shape)), fit it "
                         f"or call it once first.")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    dtype = np.dtype(dtype or model.dtype or "float32")
    batch = "batch" if batch_size is None else int(batch_size)

    program, out_index = model._program()
    _check_weights_finite(program)
    in_shape = (None,) + tuple(model.input_shape[1:])
    g = GraphBuilder(opset, dtype, reserved=(input_name, output_name))
    values = [Tensor(input_name, in_shape, identity(len(in_shape)))]
    if fold_batchnorm:
        g.folds, skipped = _plan_folds(program, out_index)
    else:
        skipped = {}
    for k, (layer, inputs) in enumerate(program):
        xs = [values[i] for i in inputs]
        if k in skipped:  # folded into the layer before it: its output is that layer's
            values.append(values[skipped[k]])
            continue
        convert = converter_for(layer)
        label = f"{who}: layer {layer.name!r} ({type(layer).__name__}) cannot be exported to ONNX"
        if convert is None:
            raise ExportError(f"{label}: there is no converter for {type(layer).__name__}; add one with "
                              f"normlab.export.register_converter.")
        try:
            values.append(convert(g, layer, xs, _output_shape(layer, [x.shape for x in xs])))
        except ExportError as exc:
            raise ExportError(f"{label}: {exc}") from None

    out = g.logical(values[out_index])
    if out.name == input_name:  # a model that is the identity at inference
        g.nodes.append(helper.make_node("Identity", [out.name], [output_name], name=g.unique("Identity")))
    else:
        _rename(g, out.name, output_name)
    graph = helper.make_graph(
        g.nodes, model.name,
        [_value_info(input_name, dtype, in_shape, batch, input_name)],
        [_value_info(output_name, dtype, out.shape, batch, output_name)],
        initializer=g.initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="normlab",
                              producer_version=__version__, doc_string=f"normlab {type(model).__name__} "
                              f"{model.name!r}, exported in inference mode")
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    helper.set_model_props(proto, {"normlab_model": type(model).__name__, "input_layout": "normlab (channels last)",
                                   "fold_batchnorm": str(bool(fold_batchnorm))})
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        _save(proto, path)
    return proto
