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
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat

import numpy as np

from .. import __version__
from .. import losses as _losses
from .. import metrics as _metrics
from ..layers.base import Layer
from ..layers.base import registry as _layer_registry
from ._npzread import READ_ERRORS, ArchiveError, open_archive, read_array

FORMAT = "normlab-model"
FORMAT_VERSION = 1
HEADER = "normlab_header"

#: largest JSON header accepted (a model of a thousand layers takes about 400 KB)
MAX_HEADER_BYTES = 1 << 20
#: fewest header bytes per JSON value (separator): bounds the memory that parsing takes to about
#: 16 times the header's size (model configs have about one value per ten bytes)
MAX_JSON_DENSITY = 4
#: deepest nesting of the JSON header (models need about 10)
MAX_JSON_DEPTH = 64
#: most bytes the members of a file may inflate to, per byte of the file: save_model stores them
#: uncompressed (1); trained float weights deflate by a few percent (np.savez_compressed files load),
#: while a file of deflated zeros, declaring far more than it holds, is refused
MAX_INFLATION = 2
#: most arrays in a model file (each layer stores up to six, the optimizer one or two per weight)
MAX_MEMBERS = 16384

__all__ = ["save_model", "load_model", "ModelFileError", "FORMAT_VERSION"]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_OPT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}(/(0|[1-9][0-9]{0,8}))?")
_LAYER_MEMBER = re.compile(r"layers/(0|[1-9][0-9]{0,8})/(params|buffers)/([^/]+)")
_FLOATS = ("float16", "float32", "float64")
_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


class ModelFileError(ValueError):
    """A file is not a readable normlab model (foreign, truncated, corrupted, tampered)."""


def _serialize_metric(m):
    return m if isinstance(m, str) else _metrics.registry.serialize(m)


def _all_finite(arr: np.ndarray) -> bool:
    # min and max propagate NaN and see inf without a temporary of the array's size
    return arr.size == 0 or bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


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


def _write_atomically(path, write) -> None:
    """Write a file through ``write(fh)`` under a temporary name, then rename it over ``path``'s target."""
    target = os.path.realpath(os.fspath(path))  # a symbolic link: replace what it points to, keep the link
    directory, base = os.path.split(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None  # a new file: 0o666 less the umask, as os.open below gives it
    fd, tmp = _create_temporary(directory, base)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                if hasattr(os, "fchmod"):
                    os.fchmod(fh.fileno(), mode)
                else:  # pragma: no cover - Windows
                    os.chmod(tmp, mode)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _create_temporary(directory: str, base: str) -> tuple[int, str]:
    # tempfile.mkstemp creates 0o600 files; O_EXCL with 0o666 lets the umask decide, as open() does
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.path.join(directory, f".{base}.*.tmp"))


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------- loading
def _member_name_problem(name: str) -> str | None:
    if name == HEADER:
        return None
    m = _LAYER_MEMBER.fullmatch(name)
    if m is not None:
        return None if _KEY.fullmatch(m.group(3)) else "not an array name a model file holds"
    if name.startswith("optimizer/") and _OPT_KEY.fullmatch(name[len("optimizer/") :]):
        return None
    return "not an array a model file holds (expected 'normlab_header', 'layers/<i>/params/<key>', " \
           "'layers/<i>/buffers/<key>' or 'optimizer/<key>')"


def _member_array_problem(name: str, shape: tuple, dtype: np.dtype) -> str | None:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        return f"has dtype {dtype}; model files hold plain numbers only"
    if name == HEADER:
        if dtype != np.uint8 or len(shape) != 1:
            return f"must be a 1-d uint8 array (UTF-8 JSON), got {dtype} of shape {shape}"
        if shape[0] > MAX_HEADER_BYTES:
            return f"holds {shape[0]} bytes, more than the {MAX_HEADER_BYTES} a model header may take"
        return None
    if name.startswith("layers/"):
        if dtype.name not in _FLOATS:
            return f"has dtype {dtype}; weights and buffers are float16, float32 or float64"
        return None
    if dtype.name not in _FLOATS + _INTS:
        return f"has dtype {dtype}; optimizer state is floats or integers"
    return None


class _Bad(Exception):
    """A check failed; the loader turns it into a ModelFileError naming the file."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise _Bad(message)


def _short(value, limit: int = 60) -> str:
    """``repr(value)``, cut short: a hostile file's values can be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_text(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_depth(obj) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH (iteratively: no recursion on hostile input)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            _need(depth <= MAX_JSON_DEPTH, f"the header is nested more than {MAX_JSON_DEPTH} levels deep")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))


def _check_keys(d: dict, required: set, optional: set, where: str) -> None:
    missing = sorted(required - set(d))
    extra = sorted(set(d) - required - optional)
    _need(not missing, f"{where} lacks {_short(missing, 200)}")
    _need(not extra, f"{where} has unexpected entries {_short(extra, 200)}")


def _check_str_list(value, where: str, pattern) -> list:
    _need(isinstance(value, list), f"{where} must be a list of names, got a JSON {_json_type(value)}")
    for k in value:
        _need(isinstance(k, str) and pattern.fullmatch(k) is not None, f"{where} holds an invalid name {_short(k)}")
    _need(len(set(value)) == len(value), f"{where} repeats a name")
    return value


def _check_shape(value, where: str, allow_unknown: bool) -> tuple:
    _need(isinstance(value, list) and len(value) >= 1, f"{where} must be a list [null, size, ...], got {_short(value)}")
    _need(value[0] is None, f"{where} must start with null (the batch axis), got {_short(value)}")
    for d in value[1:]:
        ok = (_is_int(d) and d >= 1) or (allow_unknown and d is None)
        _need(ok, f"{where} must hold sizes >= 1{' or null' if allow_unknown else ''}, got {_short(value)}")
    return tuple(value)


def _check_header(header) -> None:
    """Types and structure of every header field (layer configs are checked by the layers)."""
    _need(isinstance(header, dict), f"the header is a JSON {_json_type(header)}, not an object")
    fmt = header.get("format")
    _need(fmt == FORMAT, f"not a normlab model file (format {_short(fmt)})")
    version = header.get("format_version")
    _need(
        _is_int(version) and 1 <= version <= FORMAT_VERSION,
        f"model file format version {_short(version)} is not supported by normlab {__version__} "
        f"(reads versions 1 to {FORMAT_VERSION})",
    )
    _check_keys(header, {"format", "format_version", "normlab_version", "model_class", "config", "compile",
                         "arrays", "rng_states"}, set(), "the header")
    _need(isinstance(header["normlab_version"], str), "the header's 'normlab_version' must be a string")
    _need(header["model_class"] in ("Sequential", "Model"), f"unknown model class {_short(header['model_class'])}")
    arrays = header["arrays"]
    _need(isinstance(arrays, dict), "the header's 'arrays' must be an object")
    _check_keys(arrays, {"layers", "optimizer"}, set(), "the header's 'arrays'")
    _need(isinstance(arrays["layers"], list), "the header's 'arrays.layers' must be a list")
    for i, entry in enumerate(arrays["layers"]):
        _need(isinstance(entry, dict), f"the header's 'arrays.layers[{i}]' must be an object")
        _check_keys(entry, {"params", "buffers"}, set(), f"the header's 'arrays.layers[{i}]'")
        for kind in ("params", "buffers"):
            _check_str_list(entry[kind], f"the header's 'arrays.layers[{i}].{kind}'", _KEY)
    _check_str_list(arrays["optimizer"], "the header's 'arrays.optimizer'", _OPT_KEY)
    states = header["rng_states"]
    _need(isinstance(states, dict), "the header's 'rng_states' must be an object")
    n = len(arrays["layers"])
    for k, state in states.items():
        _need(re.fullmatch(r"0|[1-9][0-9]{0,8}", k) is not None and int(k) < n,
              f"the header's 'rng_states' has an entry {_short(k)} that is not a layer index below {n}")
        _need(state is None or isinstance(state, dict), f"the header's 'rng_states[{k}]' must be an object or null")
    info = header["compile"]
    if info is not None:
        _need(isinstance(info, dict), "the header's 'compile' must be an object or null")
        _check_keys(info, {"optimizer", "loss", "metrics"}, set(), "the header's 'compile'")
        _need(isinstance(info["optimizer"], dict), "the header's 'compile.optimizer' must be an object")
        _need(isinstance(info["loss"], dict), "the header's 'compile.loss' must be an object")
        metrics = info["metrics"]
        _need(isinstance(metrics, list) and all(isinstance(m, (str, dict)) for m in metrics),
              "the header's 'compile.metrics' must be a list of names or objects")
    elif arrays["optimizer"]:
        raise _Bad("the file stores optimizer arrays but no optimizer ('compile' is null)")
    config = header["config"]
    _need(isinstance(config, dict), "the header's 'config' must be an object")
    where = "the model config"
    if header["model_class"] == "Sequential":
        _check_keys(config, {"layers", "input_shape"}, {"name"}, where)
        _check_shape(config["input_shape"], f"{where}'s 'input_shape'", allow_unknown=False)
    else:
        _check_keys(config, {"layers", "input_shape", "output"}, {"name"}, where)
        _check_shape(config["input_shape"], f"{where}'s 'input_shape'", allow_unknown=True)
    _need(config.get("name") is None or isinstance(config["name"], str), f"{where}'s 'name' must be a string")
    layers = config["layers"]
    _need(isinstance(layers, list) and layers, f"{where}'s 'layers' must be a non-empty list")
    _need(len(layers) == n, f"the file stores arrays of {n} layers but the config has {len(layers)}")
    functional = header["model_class"] == "Model"
    for i, entry in enumerate(layers):
        w = f"{where}'s layer {i}"
        _need(isinstance(entry, dict), f"{w} must be an object")
        _check_keys(entry, {"class_name", "config"} | ({"inbound"} if functional else set()), set(), w)
        _need(isinstance(entry["class_name"], str), f"{w}'s 'class_name' must be a string")
        _need(isinstance(entry["config"], dict), f"{w}'s 'config' must be an object")
        if functional:
            inbound = entry["inbound"]
            _need(isinstance(inbound, list) and inbound and all(_is_int(j) and 0 <= j <= i for j in inbound),
                  f"{w}'s 'inbound' must be a non-empty list of indices of earlier tensors (0 to {i})")
    if functional:
        out = config["output"]
        _need(_is_int(out) and 1 <= out <= n, f"{where}'s 'output' must be a layer's tensor index (1 to {n})")


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
            out.append(_layer_registry.deserialize({"class_name": entry["class_name"], "config": entry["config"]}))
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


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


def _open_regular_file(path):
    """Open ``path`` for reading; ``(file, size)``. Refuses what is not a regular file."""
    name = os.fspath(path)
    # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files)
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path}: not a regular file (a device, pipe or socket).")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


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

