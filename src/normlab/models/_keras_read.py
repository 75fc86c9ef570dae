"""Reading Keras 3 ``.keras`` files from untrusted sources, for :mod:`normlab.models.keras_format`.

The zip, its JSON and its HDF5 weights are checked before they are trusted,
and every allocation is bounded by the file's size (see the docstring of
:mod:`normlab.models.keras_format`, "Safety").
"""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np

from ..layers.base import Layer
from ._keras_common import _NAME, _Bad, _check_object, _h5_keys, _keras_order, _need
from ._keras_compile import (
    _NEGATED_SLOTS,
    _compile_from_keras,
    _is_placeholder,
    _slot_order,
    _slot_shape,
    _trainable_in_keras_order,
)
from ._keras_layers import _KERAS_ONLY_VARS, _batch_shape, _config_keys, _make_layer, _var_keys

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"

#: largest config.json read (a model of a thousand layers takes about 2 MB)
MAX_CONFIG_BYTES = 16 << 20
#: largest metadata.json read
MAX_METADATA_BYTES = 64 << 10
#: deepest JSON nesting (Keras's functional configs need about 10)
MAX_JSON_DEPTH = 64
#: most a deflated member may inflate (Keras stores members uncompressed; float weights deflate ~1.1x)
MAX_INFLATION = 16
#: most layers, HDF5 objects and variables per layer a file may hold
MAX_LAYERS = 10000
MAX_H5_OBJECTS = 200000
MAX_H5_DEPTH = 8

_FLOATS = ("float16", "float32", "float64")


def _read_members(fh, size: int) -> dict:
    """The three members' bytes, each read with a limit (see the module docstring)."""
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile as exc:
        raise _Bad(f"not a .keras file (not a zip archive: {exc})") from None
    with zf:
        infos = zf.infolist()
        _need(len(infos) <= 16, f"the archive holds {len(infos)} members; a .keras file holds three")
        names = [i.filename for i in infos]
        _need(len(set(names)) == len(names), "the archive repeats a member name")
        extra = sorted(set(names) - {CONFIG, METADATA, WEIGHTS})
        _need("model.weights.npz" not in extra,
              "the weights are in Keras's npz layout (weights_format='npz'); normlab reads model.weights.h5")
        _need(not extra, f"the archive holds unexpected members {[e[:80] for e in extra[:5]]}; a .keras file "
                         f"holds only {CONFIG}, {METADATA} and {WEIGHTS}")
        _need(CONFIG in names, f"not a .keras file (no {CONFIG})")
        _need(WEIGHTS in names, f"the archive has no {WEIGHTS}")
        limits = {CONFIG: MAX_CONFIG_BYTES, METADATA: MAX_METADATA_BYTES, WEIGHTS: MAX_INFLATION * size}
        out = {}
        for info in infos:
            name = info.filename
            _need(not info.flag_bits & 0x1, f"member {name} is encrypted")
            _need(info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED),
                  f"member {name} uses compression method {info.compress_type}; stored or deflated expected")
            _need(info.compress_size <= size, f"member {name} declares more bytes than the file holds")
            limit = limits[name]
            if info.compress_type == zipfile.ZIP_STORED:
                _need(info.file_size == info.compress_size, f"member {name} is stored but declares another size")
            else:
                limit = min(limit, max(MAX_INFLATION * info.compress_size, 1 << 16))
            _need(info.file_size <= limit,
                  f"member {name} declares {info.file_size} bytes, more than the {limit} normlab reads "
                  f"(a stored member up to the file's size, a deflated one up to {MAX_INFLATION}x)")
            with zf.open(info) as f:
                data = f.read(limit + 1)  # zipfile stops at the declared size and checks the CRC
            _need(len(data) == info.file_size, f"member {name} is truncated")
            out[name] = data
    return out


def _parse_json(data: bytes, what: str):
    def no_constant(name):
        raise _Bad(f"{what} holds {name}, which is not JSON")

    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except RecursionError:
        raise _Bad(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, integers over the digit limit
        raise _Bad(f"{what} is not valid JSON ({exc})") from None
    stack = [(obj, 1)] if isinstance(obj, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        _need(depth <= MAX_JSON_DEPTH, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
        items = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))
    return obj


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize


class _Weights:
    """The checked HDF5 file: its datasets, looked up by ``layers/<key>/vars/<i>``; nothing read yet."""

    def __init__(self, data: bytes):
        self.h5py = h5py = _require_h5py()
        try:
            self.file = h5py.File(io.BytesIO(data), "r")
        except Exception as exc:  # h5py raises OSError, ValueError... on anything that is not HDF5
            raise _Bad(f"{WEIGHTS} is not a readable HDF5 file ({type(exc).__name__}: {exc})") from None
        self.size = len(data)
        self.groups: set[str] = set()
        self.datasets: dict = {}
        self._walk()
        _need("_layer_checkpoint_dependencies" not in self.groups,
              f"{WEIGHTS} has Keras 2's layout (_layer_checkpoint_dependencies); normlab reads the files of Keras 3")

    def close(self) -> None:
        self.file.close()

    def _walk(self) -> None:
        h5py = self.h5py
        stack, count, total = [("", self.file, 0)], 0, 0
        while stack:
            prefix, group, depth = stack.pop()
            _need(depth < MAX_H5_DEPTH, f"{WEIGHTS} nests groups more than {MAX_H5_DEPTH} deep")
            for name in group:
                count += 1
                _need(count <= MAX_H5_OBJECTS, f"{WEIGHTS} holds more than {MAX_H5_OBJECTS} objects")
                path = prefix + name
                link = group.get(name, getlink=True)
                _need(isinstance(link, h5py.HardLink),
                      f"{WEIGHTS} entry {path[:200]!r} is a {type(link).__name__}; only plain entries are read")
                obj = group[name]
                if isinstance(obj, h5py.Group):
                    self.groups.add(path)
                    stack.append((path + "/", obj, depth + 1))
                    continue
                _need(isinstance(obj, h5py.Dataset), f"{WEIGHTS} entry {path[:200]!r} is neither group nor dataset")
                plist = obj.id.get_create_plist()
                _need(plist.get_external_count() == 0 and plist.get_layout() != h5py.h5d.VIRTUAL,
                      f"{WEIGHTS} dataset {path[:200]!r} keeps its data outside the file")
                _need(obj.shape is not None, f"{WEIGHTS} dataset {path[:200]!r} is empty (no dataspace)")
                dt = obj.dtype
                _need(dt.fields is None and dt.subdtype is None and dt.kind in "fiu",
                      f"{WEIGHTS} dataset {path[:200]!r} has dtype {dt}; numbers are expected")
                total += _nbytes(obj.shape, dt)
                _need(total <= self.size,
                      f"the datasets of {WEIGHTS} declare more bytes ({total}) than the file holds ({self.size})")
                self.datasets[path] = obj

    def check_layout(self, keys: list[str], counts: list[int]) -> None:
        """Exactly the groups and datasets Keras writes for layers ``keys`` with ``counts`` variables."""
        expected_groups = {"layers", "vars", "optimizer", "optimizer/vars"}
        expected = set()
        for key, n in zip(keys, counts):
            expected_groups.update((f"layers/{key}", f"layers/{key}/vars"))
            expected.update(f"layers/{key}/vars/{i}" for i in range(n))
        extra_groups = sorted(self.groups - expected_groups)
        _need(not extra_groups, f"{WEIGHTS} holds groups that no layer of the config has: {extra_groups[:5]}")
        opt = re.compile(r"optimizer/vars/(0|[1-9][0-9]{0,6})")
        extra = sorted(p for p in set(self.datasets) - expected if not opt.fullmatch(p))
        _need(not extra, f"{WEIGHTS} holds datasets that no layer of the config has: {extra[:5]}")
        missing = sorted(expected - set(self.datasets))
        _need(not missing, f"{WEIGHTS} lacks the datasets {missing[:5]}")
        for p in expected:
            dt = self.datasets[p].dtype
            _need(dt.name in _FLOATS or dt.kind in "iu",
                  f"{WEIGHTS} dataset {p!r} has dtype {dt}; weights are numbers")

    def read(self, path: str, target: np.ndarray) -> None:
        ds = self.datasets[path]
        _need(tuple(ds.shape) == target.shape, f"{WEIGHTS} dataset {path!r} has shape {tuple(ds.shape)}, the layer "
                                               f"expects {target.shape}")
        try:
            arr = ds[()]
        except Exception as exc:
            raise _Bad(f"{WEIGHTS} dataset {path!r} could not be read ({type(exc).__name__}: {exc})") from None
        arr = np.asarray(arr)
        _need(arr.shape == target.shape and arr.dtype.kind == "f", f"{WEIGHTS} dataset {path!r} reads as "
                                                                   f"{arr.dtype} {arr.shape}")
        _need(arr.size == 0 or bool(np.isfinite(arr.min()) and np.isfinite(arr.max())),
              f"{WEIGHTS} dataset {path!r} holds NaN or inf")
        np.copyto(target, arr, casting="same_kind")
        if target.dtype.itemsize < arr.dtype.itemsize and target.size:
            _need(bool(np.isfinite(target.min()) and np.isfinite(target.max())),
                  f"{WEIGHTS} dataset {path!r} holds values that overflow {target.dtype}")


def _stand_in(shape, dtype) -> np.ndarray:
    """A zero-strided array of ``shape`` (batch 1; unknown sizes 64, as normlab.load_model builds)."""
    shape = (1,) + tuple(64 if d is None else int(d) for d in shape[1:])
    return np.broadcast_to(np.zeros((), dtype=dtype or np.float32), shape)


def _build_against(layer: Layer, input_shape, stored: dict, where: str, budget: list) -> None:
    """Build ``layer`` for ``input_shape``; each weight only once the file is known to store its shape.

    Buffers a layer fills from its config (``Normalization``'s given mean
    and variance) take from ``budget`` (bytes; the file's size for the
    whole model) instead.
    """
    from_config = set(_config_keys(layer))

    def add_weight(key, shape, initializer="zeros", regularizer=None, trainable=True):
        shape = tuple(int(d) for d in shape)
        if key in from_config:
            budget[0] -= _nbytes(shape, layer.dtype or np.float32)
            _need(budget[0] >= 0, f"{where} fills a weight {key!r} of shape {shape} from its config, more than "
                                  f"the file's size allows")
            return Layer.add_weight(layer, key, shape, initializer, regularizer, trainable)
        _need(key in stored, f"{where} creates a weight {key!r} of shape {shape}, which the file does not store")
        _need(stored[key] == shape,
              f"{where}: the file stores {key!r} with shape {stored[key]}, the layer's config makes it {shape}")
        # every weight is overwritten by the stored values: skip the random initialization
        return Layer.add_weight(layer, key, shape, "zeros", regularizer, trainable)

    layer.add_weight = add_weight
    try:
        if getattr(layer, "multi_input", False):
            layer._ensure_built([_stand_in(s, layer.dtype) for s in input_shape])
        else:
            layer._ensure_built(_stand_in(input_shape, layer.dtype))
    finally:
        layer.__dict__.pop("add_weight", None)
    have = sorted(list(layer.params) + list(layer.buffers))
    want = sorted(list(stored) + list(from_config))
    _need(have == want, f"{where} has the weights {have}, the file stores {sorted(stored)}")


def _history(tensor, where: str) -> str:
    """The name of the layer whose output a ``__keras_tensor__`` entry of an inbound node is."""
    _need(isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__",
          f"{where} must be a __keras_tensor__ entry")
    conf = tensor.get("config")
    _need(isinstance(conf, dict), f"{where} has no config")
    hist = conf.get("keras_history")
    _need(isinstance(hist, list) and len(hist) == 3 and isinstance(hist[0], str),
          f"{where}'s keras_history must be [layer name, node index, tensor index]")
    _need(hist[1] == 0 and hist[2] == 0,
          f"{where} refers to node {hist[1]!r}, tensor {hist[2]!r} of {hist[0]!r}; normlab reads layers called once "
          f"with one output")
    return hist[0]


def _optimizer_state_from(weights: "_Weights", model, pairs, who: str) -> dict | None:
    """The state for ``model.optimizer.set_state`` read from Keras's ``optimizer/vars`` (nothing set yet).

    None when the file has no optimizer variables (an optimizer that never
    stepped), or, with a warning naming ``who``, when they are not laid out
    as this optimizer keeps its state (Keras skips such variables too).
    """
    import warnings

    ds = weights.datasets
    n = sum(1 for p in ds if p.startswith("optimizer/vars/"))
    if n == 0:
        return None
    opt = model.optimizer
    cls = type(opt).__name__
    arrays, index = _trainable_in_keras_order(model, pairs)
    conf = opt.get_config()
    try:
        order = _slot_order(cls, conf, len(arrays))
    except ValueError:  # an optimizer Keras lacks (ChainOptimizer): load_weights into a model compiled with it
        warnings.warn(f"{who}: normlab's {cls} has no Keras counterpart; the file's optimizer variables are "
                      f"skipped.", stacklevel=4)
        return None
    shapes = [() if isinstance(o, str) else _slot_shape(cls, o[0], arrays[o[1]].shape) for o in order]
    have = [tuple(ds[f"optimizer/vars/{k}"].shape) for k in range(n)] if all(
        f"optimizer/vars/{k}" in ds for k in range(n)) else None
    if have != [(), ()] + shapes or ds["optimizer/vars/0"].dtype.kind not in "iu":
        warnings.warn(f"{who}: the file's optimizer variables ({n}) are not laid out as normlab's {cls} "
                      f"keeps its state; the optimizer starts afresh.", stacklevel=4)
        return None
    it = int(ds["optimizer/vars/0"][()])
    _need(it >= 0, "the optimizer's iteration count is negative")
    state = {"iterations": np.array(it, np.int64), "skipped_steps": np.array(0, np.int64)}
    steps = conf.get("gradient_accumulation_steps")
    if steps:  # Keras counts calls: ``it // steps`` updates, then ``it % steps`` gradients accumulated
        state["iterations"] = np.array(it // steps, np.int64)
        state["accumulation_step"] = np.array(it % steps, np.float64)
    for k, o in enumerate(order):
        key = o if isinstance(o, str) else f"{o[0]}/{index[o[1]]}"
        # scalars (Nadam's u_product) are float64 in normlab, slots have their weight's dtype
        target = np.zeros(shapes[k], np.float64 if isinstance(o, str) else arrays[o[1]].dtype)
        if not isinstance(o, str) and _is_placeholder(cls, o[0], arrays[o[1]].shape):
            state[key] = target  # Keras's int stand-in; normlab keeps a float zero there
            continue
        weights.read(f"optimizer/vars/{k + 2}", target)
        if not isinstance(o, str) and (cls, o[0]) in _NEGATED_SLOTS:
            np.negative(target, out=target)
        state[key] = target
    return state


class _Reader:
    def __init__(self, members: dict, size: int):
        self.members = members
        self.budget = [size]  # bytes that layers may fill from their configs

    def load(self, compile: bool):
        if METADATA in self.members:
            meta = _parse_json(self.members[METADATA], METADATA)
            _need(isinstance(meta, dict), f"{METADATA} must be a JSON object")
            version = meta.get("keras_version")
            _need(not (isinstance(version, str) and version.startswith(("1.", "2."))),
                  f"the file was written by Keras {version[:20] if isinstance(version, str) else ''} (tf.keras); "
                  f"normlab reads the files of Keras 3")
        top = _parse_json(self.members[CONFIG], CONFIG)
        _need(isinstance(top, dict), f"{CONFIG} must be a JSON object")
        _check_object(top, "the model")
        cls = top["class_name"]
        _need(cls in ("Sequential", "Functional", "Model"),
              f"the model is a {cls!r}; normlab reads Sequential and Functional models (subclassed models "
              f"are Python code)")
        conf = top.get("config")
        _need(isinstance(conf, dict), "the model's 'config' must be an object")
        _need(conf.get("name") is None or isinstance(conf["name"], str), "the model's 'name' must be a string")
        entries = conf.get("layers")
        _need(isinstance(entries, list) and 1 <= len(entries) <= MAX_LAYERS,
              f"the model's 'layers' must be a list of 1 to {MAX_LAYERS} layers")
        for i, e in enumerate(entries):
            _need(isinstance(e, dict), f"layer {i} of the config must be an object")
        self.weights = _Weights(self.members.pop(WEIGHTS))
        try:
            if cls == "Sequential":
                model, pairs = self.sequential(conf, entries)
            else:
                model, pairs = self.functional(conf, entries)
            # pairs: (h5 key, layer or None) in Keras's model.layers order
            self.weights.check_layout([k for k, _ in pairs], [len(_var_keys(l)) if l else 0 for _, l in pairs])
            for key, layer in pairs:
                if layer is None:
                    continue
                for i, k in enumerate(_var_keys(layer)):
                    if k in _KERAS_ONLY_VARS:
                        continue
                    target = layer.params[k] if k in layer.params else layer.buffers[k]
                    self.weights.read(f"layers/{key}/vars/{i}", target)
            if compile and top.get("compile_config"):  # {} when the Keras model was not compiled
                _compile_from_keras(top["compile_config"], model)
                self.optimizer_state(model, pairs)
        finally:
            self.weights.close()
        return model

    def optimizer_state(self, model, pairs) -> None:
        """Keras's optimizer variables into the optimizer, when they are laid out as this optimizer's are.

        A file without them (an optimizer that never stepped) gives fresh
        state; a layout that does not fit is skipped with a warning, as Keras
        does with its own files.
        """
        state = _optimizer_state_from(self.weights, model, pairs, "load_keras")
        if state is None:
            return
        try:
            model.optimizer.set_state(state)
        except (ValueError, TypeError) as exc:
            raise _Bad(f"the optimizer's state does not fit the model: {exc}") from None

    def stored(self, key: str, layer: Layer) -> dict:
        ds = self.weights.datasets
        out = {}
        for i, k in enumerate(_var_keys(layer)):
            path = f"layers/{key}/vars/{i}"
            _need(path in ds, f"{WEIGHTS} lacks {path!r} ({k!r} of layer {layer.name!r})")
            if k in _KERAS_ONLY_VARS:
                _need(ds[path].shape == () and ds[path].dtype.kind in "iu",
                      f"{WEIGHTS} dataset {path!r} ({k!r}) must be an integer scalar")
                continue
            out[k] = tuple(int(d) for d in ds[path].shape)
        return out

    def sequential(self, conf: dict, entries: list):
        from .sequential import Sequential

        if entries[0].get("class_name") == "InputLayer":
            shape = _batch_shape(entries[0], "layer 0 of the config")
            entries = entries[1:]
        else:
            bis = conf.get("build_input_shape")
            _need(isinstance(bis, list) and len(bis) >= 2,
                  "the Sequential model has neither an InputLayer nor a build_input_shape")
            shape = _batch_shape({"class_name": "InputLayer", "config": {"batch_shape": bis}}, "build_input_shape")
        _need(entries, "the Sequential model has no layers")
        _need(all(d is not None for d in shape[1:]),
              f"the Sequential model's input shape {shape} has unknown sizes; normlab's Sequential needs them all")
        layers = [_make_layer(e, f"layer {i + 1} of the config") for i, e in enumerate(entries)]
        keys = _h5_keys([e["class_name"] for e in entries])
        try:
            model = Sequential(layers, name=conf.get("name"))
        except (ValueError, TypeError) as exc:
            raise _Bad(f"the Sequential model could not be assembled: {exc}") from None
        for key, layer in zip(keys, layers):
            where = f"layer {layer.name!r} ({type(layer).__name__})"
            try:
                _build_against(layer, shape, self.stored(key, layer), where, self.budget)
                shape = (None,) + tuple(layer.compute_output_shape((1,) + tuple(shape[1:]))[1:])
            except (ValueError, TypeError) as exc:
                raise _Bad(f"{where} cannot take inputs of shape {shape}: {exc}") from None
        _need(model.built, "the model is not built after loading")
        return model, list(zip(keys, layers))

    def functional(self, conf: dict, entries: list):
        from .functional import Input, Model

        def one(ref, what):
            if isinstance(ref, list) and len(ref) == 1 and isinstance(ref[0], list):
                ref = ref[0]
            _need(isinstance(ref, list) and len(ref) == 3 and isinstance(ref[0], str) and ref[1:] == [0, 0],
                  f"the model's {what} must be one [layer name, 0, 0] (normlab models have one input and one output)")
            return ref[0]

        in_name = one(conf.get("input_layers"), "input_layers")
        out_name = one(conf.get("output_layers"), "output_layers")
        graph = [self.node(i, entry, in_name) for i, entry in enumerate(entries)]  # (name, inputs, list or not)
        inbound: dict = {}
        for i, (name, inputs, _) in enumerate(graph):
            _need(name not in inbound, f"layer {i} of the config repeats the layer name {name!r}")
            for j, src in enumerate(inputs):
                _need(src in inbound, f"layer {i} of the config's input {j} refers to {src!r}, which is not an "
                                      f"earlier layer of the config")
            inbound[name] = inputs
        _need(in_name in inbound and out_name in inbound and out_name != in_name,
              f"the model's input {in_name!r} or output {out_name!r} is not a layer of the config")
        # the weights file names layers in the order Keras's own model.layers takes, whatever the config's order
        order = _keras_order(inbound, out_name)
        _need(len(order) == len(entries), "the config has layers that are not connected to the output")
        classes = {name: entry["class_name"] for (name, _, _), entry in zip(graph, entries)}
        keys = dict(zip(order, _h5_keys([classes[n] for n in order])))
        known: dict = {}
        built: dict = {}
        for i, ((name, inputs, multi_arg), entry) in enumerate(zip(graph, entries)):
            where = f"layer {i} of the config"
            if not inputs:  # the InputLayer
                try:
                    known[name] = Input(_batch_shape(entry, where)[1:], name=name)
                except (ValueError, TypeError) as exc:
                    raise _Bad(f"{where}: {exc}") from None
                continue
            layer = _make_layer(entry, where)
            multi = getattr(layer, "multi_input", False)
            _need(multi == multi_arg, f"{where} ({entry['class_name']}) must take "
                                      f"{'a list of tensors' if multi else 'one tensor'}")
            args = [known[src] for src in inputs]
            try:
                known[name] = layer(args if multi else args[0])
                shapes = [t.shape for t in args] if multi else args[0].shape
                _build_against(layer, shapes, self.stored(keys[name], layer),
                               f"layer {name!r} ({type(layer).__name__})", self.budget)
            except (ValueError, TypeError) as exc:
                raise _Bad(f"{where} ({name!r}) cannot be connected to its inputs: {exc}") from None
            built[name] = layer
        # every layer is built: skip Model.build, which would allocate a sample of the input shape
        model = Model.__new__(Model)
        model.build = lambda *args, **kwargs: None
        try:
            Model.__init__(model, known[in_name], known[out_name], name=conf.get("name"))
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise _Bad(f"the model could not be assembled: {exc}") from None
        finally:
            model.__dict__.pop("build", None)
        _need(len(model.layers) == len(built) and {id(l) for l in model.layers} == {id(l) for l in built.values()},
              "the config has layers that are not connected to the output")
        _need(model.built, "the model is not built after loading")
        return model, [(keys[n], built.get(n)) for n in order]

    @staticmethod
    def node(i: int, entry: dict, in_name: str) -> tuple:
        """``(name, names of its inputs, whether they come as a list)`` of a functional config's layer ``i``."""
        where = f"layer {i} of the config"
        name = entry.get("name")
        _need(isinstance(name, str) and _NAME.fullmatch(name), f"{where} has no valid 'name'")
        _check_object(entry, where)
        nodes = entry.get("inbound_nodes")
        _need(isinstance(nodes, list), f"{where} ({name!r}) has no 'inbound_nodes' list")
        if entry["class_name"] == "InputLayer":
            _need(name == in_name, f"{where} is an InputLayer {name!r} that is not the model's input")
            _need(not nodes, f"{where} is an InputLayer with inbound nodes")
            return name, [], False
        _need(name != in_name, f"{where} ({entry['class_name']}) has the name of the model's input {name!r}")
        _need(len(nodes) == 1, f"{where} ({name!r}) is called {len(nodes)} times; normlab calls a layer once")
        node = nodes[0]
        _need(isinstance(node, dict) and set(node) <= {"args", "kwargs"},
              f"{where}'s inbound node must be an object {{'args', 'kwargs'}} (Keras 3)")
        args, kwargs = node.get("args"), node.get("kwargs") or {}
        _need(isinstance(args, list) and len(args) == 1, f"{where}'s inbound node must have one argument")
        # a recorded 'training' is replaced by the model's own at every call (Keras's Functional does so)
        _need(isinstance(kwargs, dict)
              and all(v is None or (k == "training" and isinstance(v, bool)) for k, v in kwargs.items()),
              f"{where}'s inbound node passes arguments {sorted(kwargs) if isinstance(kwargs, dict) else kwargs} "
              f"that normlab does not support")
        if isinstance(args[0], list):
            _need(1 <= len(args[0]) <= 64, f"{where} takes {len(args[0])} tensors")
            return name, [_history(t, f"{where}'s input {j}") for j, t in enumerate(args[0])], True
        return name, [_history(args[0], f"{where}'s input")], False


def _require_h5py():
    """The h5py module, or an ImportError that says how to install it."""
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "Reading and writing .keras files needs h5py (the HDF5 weights): pip install 'normlab[keras]'."
        ) from None
    return h5py
