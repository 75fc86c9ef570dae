"""Loading normlab's model files from untrusted sources, for :mod:`normlab.models.saving`.

:class:`_Loader` builds each layer against the arrays the file stores
(see the module docstring of :mod:`normlab.models.saving`, "Reading
untrusted files").
"""

from __future__ import annotations

import contextlib
import json

import numpy as np

from .. import losses as _losses
from .. import metrics as _metrics
from ..layers.base import Layer
from .model_config import deserialize_layer
from ._npzread import READ_ERRORS, ArchiveError, read_array
from ._saving_files import ModelFileError
from ._saving_header import (
    HEADER,
    MAX_JSON_DENSITY,
    MAX_JSON_DEPTH,
    _Bad,
    _check_depth,
    _check_header,
    _first_line,
    _short,
    _short_text,
)


class _Loader:
    """One load: the checked archive, the header, the model being assembled."""

    def __init__(self, path, zf, members):
        self.path, self.zf, self.members = path, zf, members

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {message.rstrip('.')}.")

    def read(self, name: str) -> np.ndarray:
        try:
            return read_array(self.zf, self.members[name])
        except ArchiveError as exc:
            raise self.fail(str(exc)) from None
        except READ_ERRORS as exc:
            raise self.fail(f"array {name!r} could not be read (truncated or corrupted): {_first_line(exc)}") from None

    def header(self) -> dict:
        if HEADER not in self.members:
            raise self.fail(f"not a normlab model file (no '{HEADER}' entry)")
        raw = self.read(HEADER).tobytes()
        # Python objects cost 20 to 60 bytes per byte of JSON such as "[],[],[]": bound the number of
        # values (at most one per separator) before parsing; configs have about one per ten bytes
        values = sum(raw.count(c) for c in (b"[", b"{", b",", b":"))
        if values > len(raw) // MAX_JSON_DENSITY + 64:
            raise self.fail(
                f"the model header holds {values} JSON values in {len(raw)} bytes, more than one per "
                f"{MAX_JSON_DENSITY} bytes (model headers hold about one per ten)"
            )
        try:
            header = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise self.fail(f"the model header is nested more than {MAX_JSON_DEPTH} levels deep") from None
        except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, int digits over the limit
            raise self.fail(f"the model header is not valid JSON ({exc})") from None
        try:
            _check_depth(header)
            _check_header(header)
        except _Bad as exc:
            raise self.fail(str(exc)) from None
        return header

    def check_members(self, header) -> None:
        index = header["arrays"]
        expected = {HEADER}
        for i, entry in enumerate(index["layers"]):
            expected.update(f"layers/{i}/{kind}/{k}" for kind in ("params", "buffers") for k in entry[kind])
        expected.update(f"optimizer/{k}" for k in index["optimizer"])
        extra = sorted(set(self.members) - expected)
        missing = sorted(expected - set(self.members))
        if extra:
            raise self.fail(f"the file holds arrays that the header does not refer to: {extra[:10]}")
        if missing:
            raise self.fail(f"missing arrays {missing[:10]}")

    # ------------------------------------------------------------ building
    def layer_bytes(self, i: int, entry: dict) -> int:
        return sum(
            self.members[f"layers/{i}/{kind}/{k}"].size * self.members[f"layers/{i}/{kind}/{k}"].dtype.itemsize
            for kind in ("params", "buffers") for k in entry[kind]
        )

    def build_layer(self, i: int, layer: Layer, entry: dict, input_shape, rng) -> None:
        """Build ``layer`` for ``input_shape`` (batch axis None) against the arrays the file stores for it."""
        stored = {(kind, k) for kind in ("params", "buffers") for k in entry[kind]}
        members = self.members
        who = f"layer {i} ({_short(layer.name)}, {type(layer).__name__})"

        def checked_add_weight(key, shape, initializer="zeros", regularizer=None, trainable=True, **more):
            kind = "params" if trainable else "buffers"
            name = f"layers/{i}/{kind}/{key}"
            shape = tuple(int(d) for d in shape)
            if (kind, key) not in stored:
                raise self.fail(f"{who} creates a weight {name!r} of shape {shape} that the file does not store")
            if members[name].shape != shape:
                raise self.fail(
                    f"array {name!r} has shape {members[name].shape}, {who} expects {shape} from its config"
                )
            # every weight is overwritten by its stored array: skip the random initialization
            return type(layer).add_weight(layer, key, shape, "zeros", regularizer, trainable, **more)

        budget = [self.layer_bytes(i, entry)]
        with _building(layer, checked_add_weight, budget, who, self.fail):
            if getattr(layer, "multi_input", False):
                layer._ensure_built([_stand_in(s, layer.dtype) for s in input_shape], rng)
            else:
                layer._ensure_built(_stand_in(input_shape, layer.dtype), rng)
        for kind in ("params", "buffers"):
            have, want = sorted(getattr(layer, kind)), sorted(entry[kind])
            if have != want:
                raise self.fail(f"{who} has {kind} {have}, the file stores {want}")

    def layers(self, config: dict) -> list[Layer]:
        out = []
        for i, entry in enumerate(config["layers"]):
            self.stage = f"layer {i} ({_short(entry['class_name'])}) could not be constructed from its config"
            # (a nested Sequential or Functional model too: models/model_config.py)
            out.append(deserialize_layer({"class_name": entry["class_name"], "config": entry["config"]}))
        return out

    def sequential(self, config: dict, index: list):
        from .sequential import Sequential

        layers = self.layers(config)
        self.stage = "the model could not be assembled"
        model = Sequential(layers, name=config.get("name"))
        rng = np.random.default_rng()
        shape = (None,) + tuple(config["input_shape"][1:])
        for i, layer in enumerate(layers):
            self.stage = (f"layer {i} ({_short(layer.name)}, {type(layer).__name__}) could not be built for "
                          f"inputs {_short(shape, 120)}")
            self.build_layer(i, layer, index[i], shape, rng)
            shape = (None,) + tuple(layer.compute_output_shape((1,) + shape[1:])[1:])
        return model

    def functional(self, config: dict, index: list):
        from .functional import Input, Model

        layers = self.layers(config)
        self.stage = "the model's input could not be created"
        inp = Input(tuple(config["input_shape"][1:]))
        tensors = {0: inp}
        rng = np.random.default_rng()
        for i, (entry, layer) in enumerate(zip(config["layers"], layers)):
            self.stage = f"layer {i} ({_short(layer.name)}, {type(layer).__name__}) could not be connected"
            args = [tensors[j] for j in entry["inbound"]]
            multi = getattr(layer, "multi_input", False)
            if not multi and len(args) != 1:
                raise self.fail(f"layer {i} ({_short(layer.name)}) takes one input, the config gives it {len(args)}")
            tensors[i + 1] = layer(args if multi else args[0])
            # unknown sizes get Model.build's placeholder
            shapes = [(None,) + tuple(64 if d is None else d for d in t.shape[1:]) for t in args]
            self.stage = (f"layer {i} ({_short(layer.name)}, {type(layer).__name__}) could not be built for "
                          f"inputs {_short(shapes, 120)}")
            self.build_layer(i, layer, index[i], shapes if multi else shapes[0], rng)
        self.stage = "the model could not be assembled"
        # every layer is built: skip Model.build, which would allocate a sample of the input shape first
        model = Model.__new__(Model)
        model.build = lambda *args, **kwargs: None
        try:
            Model.__init__(model, inp, tensors[config["output"]], name=config.get("name"))
        finally:
            del model.build
        if len(model.layers) != len(layers) or any(a is not b for a, b in zip(model.layers, layers)):
            raise self.fail(
                "the config's layers are not all connected to the output in the order of the stored arrays"
            )
        return model

    def copy_weights(self, model, index: list) -> None:
        for i, (layer, entry) in enumerate(zip(model.layers, index)):
            for kind in ("params", "buffers"):
                target = getattr(layer, kind)
                for key in entry[kind]:
                    self.copy(f"layers/{i}/{kind}/{key}", target[key])

    def copy(self, name: str, target: np.ndarray) -> None:
        arr = self.read(name)
        self.check_values(name, arr, target.dtype)
        np.copyto(target, arr, casting="same_kind")

    def check_values(self, name: str, arr: np.ndarray, dtype) -> None:
        """No NaN or inf in a float array, and none made by casting it to ``dtype``."""
        if arr.dtype.kind != "f" or not arr.size:
            return
        lo, hi = arr.min(), arr.max()  # NaN propagates; no temporary of the array's size
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise self.fail(f"array {name!r} holds NaN or inf")
        dtype = np.dtype(dtype)
        if dtype.kind == "f" and dtype.itemsize < arr.dtype.itemsize:
            with np.errstate(over="ignore"):  # a scalar cast overflows exactly when the array's would
                if not (np.isfinite(dtype.type(lo)) and np.isfinite(dtype.type(hi))):
                    raise self.fail(
                        f"array {name!r} holds values (from {float(lo)!r} to {float(hi)!r}) that overflow "
                        f"{dtype}"
                    )

    def restore(self, model, header: dict, compile: bool) -> None:
        for k, state in header["rng_states"].items():
            layer = model.layers[int(k)]
            self.stage = f"the generator state of layer {k} ({_short(layer.name)}) is invalid"
            if state is None:
                continue
            if not hasattr(layer, "set_rng_state"):
                raise self.fail(
                    f"the file stores a generator state for layer {k} ({_short(layer.name)}), which has none"
                )
            layer.set_rng_state(state)
        info = header["compile"]
        if not compile or info is None:
            return
        from .. import optimizers as _optimizers

        self.stage = "the optimizer, loss or metrics could not be restored"
        model.compile(
            optimizer=_optimizers.deserialize(info["optimizer"]),
            loss=_losses.deserialize(info["loss"]),
            metrics=[m if isinstance(m, str) else _metrics.registry.deserialize(m) for m in info["metrics"]],
            weighted_metrics=[m if isinstance(m, str) else _metrics.registry.deserialize(m)
                              for m in info.get("weighted_metrics", [])],
        )
        keys = header["arrays"]["optimizer"]
        if keys:
            self.stage = "the optimizer state does not fit the model"
            model._prepare_training()
            binding = getattr(model.optimizer, "_binding", None)
            slots = binding.state_arrays() if binding is not None else {}  # views: the dtypes they keep
            state = {}
            for k in keys:
                arr = self.read(f"optimizer/{k}")
                self.check_values(f"optimizer/{k}", arr, slots[k].dtype if k in slots else arr.dtype)
                state[k] = arr
            model.optimizer.set_state(state)

    def load(self, compile: bool):
        header = self.header()
        self.check_members(header)
        index = header["arrays"]["layers"]
        self.stage = "the model could not be built"
        try:
            if header["model_class"] == "Sequential":
                model = self.sequential(header["config"], index)
            else:
                model = self.functional(header["config"], index)
            if not model.built:
                raise self.fail("the model is not built after loading")
            self.copy_weights(model, index)
            self.restore(model, header, compile)
        except (ModelFileError, MemoryError):
            raise
        except Exception as exc:
            # a config a constructor refuses, a state a generator refuses, ...: the cause is in the message
            raise self.fail(f"{self.stage}: {type(exc).__name__}: {_short_text(str(exc))}") from exc
        return model


def _stand_in(shape, dtype) -> np.ndarray:
    """A zero-strided array of ``shape`` (batch axis 1): building reads only its shape and dtype."""
    shape = (1,) + tuple(int(d) for d in shape[1:])
    return np.broadcast_to(np.zeros((), dtype=dtype or np.float32), shape)


@contextlib.contextmanager
def _building(layer: Layer, add_weight, budget: list, who: str, fail):
    """While ``layer`` builds: its weights go through ``add_weight``; inner layers stay within ``budget``.

    A wrapper (``WeightNormalization``) builds the layer it wraps, whose
    weights the file does not store: together they may allocate at most the
    bytes the wrapper stores, and they are built from a stand-in too.
    """
    patched = [layer]
    inner = [v for v in vars(layer).values() if isinstance(v, Layer)]
    while inner:
        sub = inner.pop()
        if any(sub is p for p in patched):
            continue
        patched.append(sub)
        inner.extend(v for v in vars(sub).values() if isinstance(v, Layer))

        def bounded_add_weight(key, shape, initializer="zeros", regularizer=None, trainable=True, _sub=sub):
            shape = tuple(int(d) for d in shape)
            nbytes = int(np.prod(shape, dtype=object)) * np.dtype(_sub.dtype or np.float32).itemsize
            budget[0] -= nbytes
            if budget[0] < 0:
                raise fail(f"{who} wraps a layer whose weight {key!r} of shape {shape} is larger than what the "
                           f"file stores for it")
            return type(_sub).add_weight(_sub, key, shape, "zeros", regularizer, trainable)

        def stand_in_build(input_shape, rng=None, _sub=sub):
            if getattr(_sub, "multi_input", False):
                _sub._ensure_built([_stand_in(s, _sub.dtype) for s in input_shape], rng)
            else:
                _sub._ensure_built(_stand_in(input_shape, _sub.dtype), rng)

        sub.add_weight = bounded_add_weight
        sub.build_from_shape = stand_in_build
    try:
        layer.add_weight = add_weight  # instance attributes: the class and other instances are untouched
        yield
    finally:
        for obj in patched:
            obj.__dict__.pop("add_weight", None)
            obj.__dict__.pop("build_from_shape", None)
