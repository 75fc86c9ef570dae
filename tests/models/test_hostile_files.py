"""Hostile and malformed model files: every one raises ModelFileError, with bounded memory.

A catalogue of files made from two good ones (a compiled Sequential with a
batch norm and a functional model with dropout, a skip connection and a
weight-normalized layer), each broken one way: the zip container, the
``.npy`` headers, the JSON header and every field of it, the layer configs,
the arrays and the optimizer state. Each must raise exactly
:class:`normlab.ModelFileError` naming the file; nothing else (no
``AttributeError``, ``TypeError``, ``RecursionError``, ``MemoryError``).

The memory tests trace allocations (``tracemalloc``, which sees NumPy's
buffers) while loading files that declare far more than they hold; the peak
must stay within a small multiple of the file's size.
"""

import io
import json
import os
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.layers import Activation, Add, BatchNormalization, Dense, Dropout, WeightNormalization
from normlab.models import saving

HEADER = "normlab_header"


# --------------------------------------------------------------- good files
def _sequential():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    m = normlab.Sequential(
        [Dense(6, use_bias=False), BatchNormalization(momentum=0.9), Activation("relu"), Dense(3, activation="softmax")]
    )
    m.compile(optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    m.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0)
    return m


def _functional():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    inp = normlab.Input((4,))
    h = Dense(4)(inp)
    h = Dropout(0.25, seed=3)(h)
    h = Add()([h, inp])
    out = WeightNormalization(Dense(2, activation="softmax"))(h)
    m = normlab.Model(inp, out, seed=0)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0)
    return m


def _convolutional():
    from normlab.layers import (Conv2D, GaussianNoise, GroupNormalization, LayerNormalization, MaxPooling2D,
                                Reshape)

    inp = normlab.Input((6, 6, 2))
    h = Conv2D(4, 3, padding="same")(inp)
    h = GroupNormalization(groups=2)(h)
    h = MaxPooling2D(2)(h)
    h = Reshape((36,))(h)
    h = GaussianNoise(0.1, seed=1)(h)
    h = LayerNormalization()(h)
    m = normlab.Model(inp, Dense(3, activation="softmax")(h), seed=0)
    m.compile(optimizer="adamw", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).standard_normal((8, 6, 6, 2)).astype(np.float32)
    m.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    return m


def _unpack(raw: bytes):
    with np.load(io.BytesIO(raw), allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    header = json.loads(bytes(arrays.pop(HEADER)).decode())
    return header, arrays


def pack(header, arrays, compress=False) -> bytes:
    buf = io.BytesIO()
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    text = text.encode() if isinstance(text, str) else text
    (np.savez_compressed if compress else np.savez)(buf, **{HEADER: np.frombuffer(text, np.uint8)}, **arrays)
    return buf.getvalue()


def npy_bytes(arr=None, header=None, data=b"", version=(1, 0)) -> bytes:
    """``.npy`` bytes of ``arr``, or a hand-written ``header`` dict followed by ``data``."""
    buf = io.BytesIO()
    if arr is not None:
        np.lib.format.write_array(buf, arr, allow_pickle=True)
        return buf.getvalue()
    if header is None:
        return data
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue() + data


def zip_of(members, compression=zipfile.ZIP_STORED) -> bytes:
    """A zip of ``(name, bytes)`` pairs (or ``(ZipInfo, bytes)``), in order, duplicates allowed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def members_of(header, arrays):
    text = json.dumps(header).encode()
    return [(HEADER + ".npy", npy_bytes(np.frombuffer(text, np.uint8)))] + [
        (k + ".npy", npy_bytes(v)) for k, v in arrays.items()
    ]


class Good:
    def __init__(self):
        self.seq = _sequential()
        self.fun = _functional()
        self.raw = self._bytes(self.seq)
        self.fraw = self._bytes(self.fun)

    @staticmethod
    def _bytes(model):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "m.npz")
            model.save(p)
            with open(p, "rb") as fh:
                return fh.read()

    def seq_parts(self):
        return _unpack(self.raw)

    def fun_parts(self):
        return _unpack(self.fraw)


@pytest.fixture(scope="module")
def good():
    return Good()


# ------------------------------------------------------------- the catalogue
CATALOGUE = {}


def case(name):
    def deco(fn):
        assert name not in CATALOGUE
        CATALOGUE[name] = fn
        return fn

    return deco


def header_case(name, edit, functional=False):
    """A case that edits a copy of the good header (and arrays) in place."""

    def make(g):
        header, arrays = g.fun_parts() if functional else g.seq_parts()
        edit(header, arrays)
        return pack(header, arrays)

    CATALOGUE[name] = make


# the container
case("empty")(lambda g: b"")
case("text")(lambda g: b"hello, I am not a model")
case("png")(lambda g: b"\x89PNG\r\n\x1a\n" + bytes(100))
case("gzip")(lambda g: b"\x1f\x8b\x08\x00" + bytes(40))
case("plain_npy")(lambda g: npy_bytes(np.ones((3, 3), np.float32)))
case("npy_of_header_bytes")(lambda g: npy_bytes(np.frombuffer(b'{"format": "normlab-model"}', np.uint8)))
case("eocd_only")(lambda g: b"PK\x05\x06" + bytes(18))
case("eocd_declares_many_members")(lambda g: b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 0xFFFF, 0xFFFF, 0, 0, 0))
case("empty_zip")(lambda g: zip_of([]))
for _frac in (0.02, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.98):
    case(f"truncated_{int(_frac * 100)}pct")(lambda g, f=_frac: g.raw[: int(len(g.raw) * f)])
case("truncated_last_byte")(lambda g: g.raw[:-1])
case("truncated_eocd")(lambda g: g.raw[:-22])
case("cut_50_bytes_at_30pct")(lambda g: g.raw[: len(g.raw) * 3 // 10] + g.raw[len(g.raw) * 3 // 10 + 50:])
case("cut_50_bytes_at_60pct")(lambda g: g.raw[: len(g.raw) * 6 // 10] + g.raw[len(g.raw) * 6 // 10 + 50:])
case("zeroed_tail")(lambda g: g.raw[: len(g.raw) * 7 // 10] + bytes(len(g.raw) - len(g.raw) * 7 // 10))
case("body_truncated_directory_kept")(
    lambda g: g.raw[: len(g.raw) // 2] + g.raw[g.raw.find(b"PK\x01\x02"):])
case("two_archives_concatenated")(lambda g: g.raw + g.fraw)
case("junk_prepended")(lambda g: b"#!/bin/sh\necho hi\n" + g.raw)
case("png_polyglot")(lambda g: b"\x89PNG\r\n\x1a\n" + bytes(100) + g.raw)
case("zeroed_middle")(lambda g: g.raw[: len(g.raw) // 3] + bytes(64) + g.raw[len(g.raw) // 3 + 64:])


def _flip(raw: bytes, at: int) -> bytes:
    b = bytearray(raw)
    b[at] ^= 0x20
    return bytes(b)


def _json_offset(raw: bytes, needle: bytes) -> int:
    at = raw.find(needle)
    assert at > 0
    return at


# bit flips in CRC-protected data: the JSON header and a weight array
case("bitflip_header_format")(lambda g: _flip(g.raw, _json_offset(g.raw, b'"normlab-model"') + 3))
case("bitflip_header_brace")(lambda g: _flip(g.raw, _json_offset(g.raw, b'{"format"')))
case("bitflip_header_class_name")(lambda g: _flip(g.raw, _json_offset(g.raw, b'"Dense"') + 2))
case("bitflip_kernel_data")(lambda g: _flip(g.raw, g.raw.find(b"layers/0/params/kernel.npy") + 200))

# members
case("extra_text_member")(lambda g: zip_of(members_of(*g.seq_parts()) + [("README.txt", b"hi")]))
case("extra_unreferenced_array")(
    lambda g: zip_of(members_of(*g.seq_parts()) + [("layers/9/params/kernel.npy", npy_bytes(np.ones(3, np.float32)))]))
case("path_traversal_member")(
    lambda g: zip_of(members_of(*g.seq_parts()) + [("../../evil.npy", npy_bytes(np.ones(3, np.float32)))]))
case("absolute_path_member")(
    lambda g: zip_of(members_of(*g.seq_parts()) + [("/etc/evil.npy", npy_bytes(np.ones(3, np.float32)))]))
case("directory_member")(lambda g: zip_of(members_of(*g.seq_parts()) + [("layers/", b"")]))


def _duplicate(g):
    ms = members_of(*g.seq_parts())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zip_of(ms + [ms[1]])


case("duplicate_member")(_duplicate)


def _encrypted(g):
    # zipfile clears the flag when it writes: set it in the local and central headers afterwards
    raw = bytearray(_plain_zip(g))
    name = b"layers/0/params/kernel.npy"
    local = raw.find(b"PK\x03\x04")
    while True:
        n = struct.unpack_from("<H", raw, local + 26)[0]
        if bytes(raw[local + 30: local + 30 + n]) == name:
            break
        local = raw.find(b"PK\x03\x04", local + 4)
    raw[local + 6] |= 0x1
    return _patch_central(bytes(raw), name, flags=0x1)


case("encrypted_flag")(_encrypted)
case("bzip2_member")(lambda g: zip_of(members_of(*g.seq_parts()), zipfile.ZIP_BZIP2))
case("lzma_member")(lambda g: zip_of(members_of(*g.seq_parts()), zipfile.ZIP_LZMA))
case("no_header_member")(lambda g: pack_arrays_only(g))


def pack_arrays_only(g):
    buf = io.BytesIO()
    np.savez(buf, weights=np.ones(3))
    return buf.getvalue()


def _patch_central(raw: bytes, name: bytes, *, file_size=None, compress_size=None, offset=None, flags=None) -> bytes:
    """Rewrite a member's sizes in the central directory (the zip's table of contents)."""
    b = bytearray(raw)
    at = b.find(b"PK\x01\x02", b.rfind(name) - 46 - 10)
    while at >= 0:
        n = struct.unpack_from("<H", b, at + 28)[0]
        if bytes(b[at + 46: at + 46 + n]) == name:
            break
        at = b.find(b"PK\x01\x02", at + 4)
    assert at >= 0
    if compress_size is not None:
        struct.pack_into("<L", b, at + 20, compress_size)
    if file_size is not None:
        struct.pack_into("<L", b, at + 24, file_size)
    if offset is not None:
        struct.pack_into("<L", b, at + 42, offset)
    if flags is not None:
        b[at + 8] |= flags
    return bytes(b)


def _plain_zip(g):
    """The good Sequential file written without zip64 extras (so that sizes sit in the fixed fields)."""
    return zip_of(members_of(*g.seq_parts()))


case("member_declares_more_than_file")(
    lambda g: _patch_central(_plain_zip(g), b"layers/0/params/kernel.npy", file_size=1 << 31, compress_size=1 << 31))
case("member_declares_less")(lambda g: _patch_central(_plain_zip(g), b"layers/0/params/kernel.npy", file_size=100))
case("member_offset_beyond_file")(lambda g: _patch_central(_plain_zip(g), b"layers/0/params/kernel.npy", offset=1 << 30))


def _inflating(g):
    """A deflated member declared 2 KiB that inflates to 64 MiB (a zip bomb lying about its size)."""
    ms = members_of(*g.seq_parts())
    bomb = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (400,)}, data=bytes(64 << 20))
    raw = zip_of(ms + [("layers/0/buffers/bomb.npy", bomb)], zipfile.ZIP_DEFLATED)
    return _patch_central(raw, b"layers/0/buffers/bomb.npy", file_size=len(bomb[:1728]))


case("zip_bomb_declared_small")(_inflating)


def lying_zip(n, declared, data=None):
    """One local member and ``n`` directory entries all pointing at it; the end record declares ``declared``."""
    data = npy_bytes(np.zeros(0, np.float32)) if data is None else data
    crc = zlib.crc32(data)
    first = b"optimizer/s0.npy"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(first), 0)
    local += first + data
    directory = bytearray()
    for i in range(n):
        name = f"optimizer/s{i}.npy".encode()
        directory += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data), len(data),
                                 len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, declared, declared, len(directory), len(local), 0)
    return local + bytes(directory) + end


case("directory_lies_about_count")(lambda g: lying_zip(20000, 1))
case("overlapping_members")(lambda g: lying_zip(2, 2, npy_bytes(np.zeros(300, np.float32))))


# .npy headers
def _npy_case(name, header=None, data=b"", arr=None, member="layers/0/params/kernel", version=(1, 0)):
    def make(g):
        ms = [(n, d) for n, d in members_of(*g.seq_parts()) if n != member + ".npy"]
        return zip_of(ms + [(member + ".npy", npy_bytes(arr, header, data, version))])

    CATALOGUE[name] = make


_npy_case("npy_declares_terabytes", {"descr": "<f4", "fortran_order": False, "shape": (1 << 38, 4)}, bytes(96))
_npy_case("npy_declares_fewer_bytes", {"descr": "<f4", "fortran_order": False, "shape": (5, 6)}, bytes(200))
_npy_case("npy_declares_more_bytes", {"descr": "<f4", "fortran_order": False, "shape": (5, 6)}, bytes(100))
_npy_case("npy_object_dtype", arr=np.array([{"a": 1}, None], dtype=object))
_npy_case("npy_object_header_only", {"descr": "|O", "fortran_order": False, "shape": (2,)}, bytes(16))
_npy_case("npy_complex_kernel", arr=np.ones((5, 6), np.complex64))
_npy_case("npy_int_kernel", arr=np.ones((5, 6), np.int32))
_npy_case("npy_bool_kernel", arr=np.ones((5, 6), bool))
_npy_case("npy_string_kernel", arr=np.array([["abc"] * 6] * 5))
_npy_case("npy_bytes_kernel", arr=np.array([[b"abc"] * 6] * 5))
_npy_case("npy_structured_kernel", arr=np.zeros((5, 6), dtype=[("a", "<f4")]))
_npy_case("npy_datetime_kernel", arr=np.zeros((5, 6), dtype="datetime64[s]"))
_npy_case("npy_bad_magic", data=b"\x93NUMPY\x09\x00" + bytes(100))
_npy_case("npy_not_npy", data=b"just some bytes that are not an array")
_npy_case("npy_header_not_dict", data=b"\x93NUMPY\x01\x00\x10\x00[1, 2, 3]      \n")
_npy_case("npy_header_huge", {"descr": "<f4", "fortran_order": False, "shape": (5, 6), "pad": "x" * 20000}, bytes(120))
_npy_case("npy_negative_shape", data=b"\x93NUMPY\x01\x00\x40\x00" +
          b"{'descr': '<f4', 'fortran_order': False, 'shape': (-5, 6), }".ljust(63) + b"\n" + bytes(120))
# headers that NumPy's reader fails on with errors other than ValueError: Python's tokenizer
# (an unclosed bracket: tokenize.TokenError) and ast.literal_eval of a non-literal
_npy_case("npy_header_unclosed_bracket", data=b"\x93NUMPY\x01\x00\x40\x00" +
          b"{'descr': '<f4', 'fortran_order': False, 'shape': (5, 6".ljust(63) + b"\n" + bytes(120))
_npy_case("npy_header_not_literal", data=b"\x93NUMPY\x01\x00\x40\x00" +
          b"{'descr': '<f4', 'fortran_order': False, 'shape': f(5, 6), }".ljust(63) + b"\n" + bytes(120))
_npy_case("npy_header_member_float", arr=np.ones(10, np.float32), member=HEADER)
_npy_case("npy_header_member_2d", arr=np.ones((2, 5), np.uint8), member=HEADER)
_npy_case("npy_header_member_terabytes", {"descr": "|u1", "fortran_order": False, "shape": (1 << 40,)}, bytes(10),
          member=HEADER)
_npy_case("npy_version_2_terabytes", {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)}, bytes(8),
          version=(2, 0))


# the JSON header
def _raw_header_case(name, text):
    def make(g):
        _, arrays = g.seq_parts()
        return pack(text, arrays)

    CATALOGUE[name] = make


_raw_header_case("header_not_utf8", b"\xff\xfe{}")
_raw_header_case("header_not_json", "{'format': 'normlab-model'}")
_raw_header_case("header_empty", b"")
_raw_header_case("header_is_list", "[1, 2, 3]")
_raw_header_case("header_is_string", '"normlab-model"')
_raw_header_case("header_is_null", "null")
_raw_header_case("header_deep_nesting", "[" * 100000 + "]" * 100000)
_raw_header_case("header_deep_nesting_sparse", "[    " * 20000 + "]" * 20000)
_raw_header_case("header_deep_objects", '{"a":' * 50000 + "1" + "}" * 50000)
_raw_header_case("header_huge_int", '{"format": "normlab-model", "format_version": ' + "9" * 6000 + "}")
_raw_header_case("header_dense_values", "[" + ",".join(["[]"] * 100000) + "]")
_raw_header_case("header_too_large", '{"format": "normlab-model", "pad": "' + "x" * (saving.MAX_HEADER_BYTES + 10) + '"}')


def _set(path, value):
    """An edit that sets ``header[path[0]][path[1]]... = value`` (None deletes with value=DELETE)."""

    def edit(header, arrays):
        node = header
        for k in path[:-1]:
            node = node[k]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


DELETE = object()

def _nest(depth):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


header_case("config_nested_100_deep", _set(["config", "layers", 0, "config", "kernel_initializer"], _nest(100)))
header_case("format_missing", _set(["format"], DELETE))
header_case("format_wrong", _set(["format"], "keras"))
header_case("format_int", _set(["format"], 1))
for _name, _value in {"float": 1.0, "str": "1", "bool": True, "huge": 10 ** 30, "zero": 0, "newer": 2,
                      "null": None, "list": [1]}.items():
    header_case(f"format_version_{_name}", _set(["format_version"], _value))
header_case("format_version_missing", _set(["format_version"], DELETE))
header_case("normlab_version_int", _set(["normlab_version"], 1))
header_case("unknown_header_key", _set(["extra"], 1))
header_case("model_class_unknown", _set(["model_class"], "Transformer"))
header_case("model_class_os_system", _set(["model_class"], "os.system"))
header_case("model_class_list", _set(["model_class"], ["Sequential"]))
header_case("config_string", _set(["config"], "layers"))
header_case("config_list", _set(["config"], []))
header_case("config_layers_string", _set(["config", "layers"], "Dense"))
header_case("config_layers_empty", _set(["config", "layers"], []))
header_case("config_name_int", _set(["config", "name"], 3))
header_case("config_input_shape_string", _set(["config", "input_shape"], "5"))
header_case("config_input_shape_negative", _set(["config", "input_shape"], [None, -5]))
header_case("config_input_shape_float", _set(["config", "input_shape"], [None, 5.0]))
header_case("config_input_shape_no_batch", _set(["config", "input_shape"], [32, 5]))
header_case("config_input_shape_huge", _set(["config", "input_shape"], [None, 10 ** 15, 10 ** 15]))
header_case("config_input_shape_wrong", _set(["config", "input_shape"], [None, 7]))
header_case("layer_entry_string", _set(["config", "layers", 0], "Dense"))
header_case("layer_class_name_missing", _set(["config", "layers", 0, "class_name"], DELETE))
header_case("layer_class_name_int", _set(["config", "layers", 0, "class_name"], 7))
for _cls in ("__import__", "os.system", "builtins.eval", "Layer", "Sequential", "Model", "numpy.load", ""):
    header_case(f"layer_class_{_cls or 'empty'}", _set(["config", "layers", 0, "class_name"], _cls))
header_case("layer_config_string", _set(["config", "layers", 0, "config"], "units=8"))
header_case("layer_config_list", _set(["config", "layers", 0, "config"], [6]))
header_case("layer_config_unknown_kwarg", _set(["config", "layers", 0, "config", "evil"], 1))
header_case("layer_units_string", _set(["config", "layers", 0, "config", "units"], "6"))
header_case("layer_units_negative", _set(["config", "layers", 0, "config", "units"], -6))
header_case("layer_units_zero", _set(["config", "layers", 0, "config", "units"], 0))
header_case("layer_units_float", _set(["config", "layers", 0, "config", "units"], 6.5))
header_case("layer_units_huge", _set(["config", "layers", 0, "config", "units"], 10 ** 12))
header_case("layer_units_other", _set(["config", "layers", 0, "config", "units"], 7))
header_case("layer_activation_unknown", _set(["config", "layers", 2, "config", "activation"], "os.system"))
header_case("layer_initializer_unknown", _set(["config", "layers", 0, "config", "kernel_initializer"],
                                              {"class_name": "os.system", "config": {}}))
header_case("layer_dtype_unknown", _set(["config", "layers", 0, "config", "dtype"], "object"))
header_case("layer_momentum_nan", _set(["config", "layers", 1, "config", "momentum"], float("nan")))
header_case("layer_use_bias_flipped", _set(["config", "layers", 0, "config", "use_bias"], True))
header_case("arrays_missing", _set(["arrays"], DELETE))
header_case("arrays_list", _set(["arrays"], []))
header_case("arrays_layers_dict", _set(["arrays", "layers"], {}))
header_case("arrays_layers_short", lambda h, a: h["arrays"]["layers"].pop())
header_case("arrays_entry_list", _set(["arrays", "layers", 0], ["kernel"]))
header_case("arrays_params_string", _set(["arrays", "layers", 0, "params"], "kernel"))
header_case("arrays_params_int_key", _set(["arrays", "layers", 0, "params"], [0]))
header_case("arrays_params_traversal_key", _set(["arrays", "layers", 0, "params"], ["../kernel"]))
header_case("arrays_params_repeated", _set(["arrays", "layers", 0, "params"], ["kernel", "kernel"]))
header_case("arrays_params_missing_key", _set(["arrays", "layers", 0, "params"], []))
header_case("arrays_optimizer_string", _set(["arrays", "optimizer"], "iterations"))
header_case("array_missing", lambda h, a: a.pop("layers/0/params/kernel"))
header_case("array_wrong_shape", lambda h, a: a.__setitem__("layers/0/params/kernel", np.zeros((2, 2), np.float32)))
header_case("array_transposed", lambda h, a: a.__setitem__("layers/0/params/kernel",
                                                           np.ascontiguousarray(a["layers/0/params/kernel"].T)))
header_case("array_scalar", lambda h, a: a.__setitem__("layers/1/params/gamma", np.float32(1)))
header_case("array_nan", lambda h, a: a["layers/0/params/kernel"].__setitem__((0, 0), np.nan))
header_case("array_inf_buffer", lambda h, a: a["layers/1/buffers/moving_variance"].__setitem__(0, np.inf))
header_case("array_float64_overflow", lambda h, a: a.__setitem__(
    "layers/0/params/kernel", np.full(a["layers/0/params/kernel"].shape, 1e300)))
header_case("array_float64_overflow_buffer", lambda h, a: a.__setitem__(
    "layers/1/buffers/moving_mean", np.full(a["layers/1/buffers/moving_mean"].shape, -3.5e38)))
header_case("array_int_kernel", lambda h, a: a.__setitem__("layers/0/params/kernel",
                                                           a["layers/0/params/kernel"].astype(np.int64)))
header_case("rng_states_list", _set(["rng_states"], []))
header_case("rng_states_for_plain_layer", _set(["rng_states", "0"], {"bit_generator": "PCG64"}))
header_case("rng_states_bad_index", _set(["rng_states", "-1"], None))
header_case("rng_states_index_past_end", _set(["rng_states", "9"], None))
header_case("rng_states_string", _set(["rng_states", "0"], "PCG64"))
header_case("compile_string", _set(["compile"], "sgd"))
header_case("compile_optimizer_unknown", _set(["compile", "optimizer"], {"class_name": "os.system", "config": {}}))
header_case("compile_optimizer_string", _set(["compile", "optimizer"], "sgd"))
header_case("compile_optimizer_bad_config", _set(["compile", "optimizer", "config", "learning_rate"], "fast"))
header_case("compile_optimizer_negative_lr", _set(["compile", "optimizer", "config", "learning_rate"], -1.0))
header_case("compile_optimizer_is_adam", _set(["compile", "optimizer"], {"class_name": "Adam", "config": {}}))
header_case("compile_loss_unknown", _set(["compile", "loss"], {"class_name": "__import__", "config": {}}))
header_case("compile_metrics_dict", _set(["compile", "metrics"], {"accuracy": 1}))
header_case("compile_metrics_unknown", _set(["compile", "metrics"], ["os.system"]))
header_case("compile_null_with_optimizer_arrays", _set(["compile"], None))
header_case("optimizer_state_wrong_shape", lambda h, a: a.__setitem__(
    "optimizer/momentum/0", np.zeros((7, 7), np.float32)))
header_case("optimizer_state_nan", lambda h, a: a["optimizer/momentum/0"].__setitem__((0, 0), np.nan))
header_case("optimizer_state_overflow", lambda h, a: a.__setitem__(
    "optimizer/momentum/0", np.full(a["optimizer/momentum/0"].shape, 1e300)))
header_case("optimizer_iterations_negative", lambda h, a: a.__setitem__("optimizer/iterations", np.array(-1)))
header_case("optimizer_iterations_vector", lambda h, a: a.__setitem__("optimizer/iterations", np.arange(3)))
header_case("optimizer_key_unlisted", lambda h, a: h["arrays"]["optimizer"].remove("momentum/0"))


def _extra_slot(h, a):
    h["arrays"]["optimizer"].append("velocity/0")
    a["optimizer/velocity/0"] = np.zeros_like(a["optimizer/momentum/0"])


header_case("optimizer_key_unknown_slot", _extra_slot)

# the functional model
header_case("fun_inbound_out_of_range", _set(["config", "layers", 0, "inbound"], [5]), functional=True)
header_case("fun_inbound_forward", _set(["config", "layers", 1, "inbound"], [3]), functional=True)
header_case("fun_inbound_empty", _set(["config", "layers", 1, "inbound"], []), functional=True)
header_case("fun_inbound_string", _set(["config", "layers", 1, "inbound"], "0"), functional=True)
header_case("fun_inbound_missing", _set(["config", "layers", 1, "inbound"], DELETE), functional=True)
header_case("fun_two_inputs_to_dense", _set(["config", "layers", 0, "inbound"], [0, 0]), functional=True)
header_case("fun_merge_one_input", _set(["config", "layers", 2, "inbound"], [2]), functional=True)
header_case("fun_output_out_of_range", _set(["config", "output"], 99), functional=True)
header_case("fun_output_bool", _set(["config", "output"], True), functional=True)
header_case("fun_output_dangling", _set(["config", "output"], 3), functional=True)
header_case("fun_input_shape_strings", _set(["config", "input_shape"], [None, "4"]), functional=True)
header_case("fun_input_shape_huge", _set(["config", "input_shape"], [None, 1 << 62]), functional=True)
header_case("fun_wrapped_units_huge", _set(["config", "layers", 3, "config", "layer", "config", "units"], 1 << 20),
            functional=True)
header_case("fun_wrapped_layer_unknown", _set(["config", "layers", 3, "config", "layer", "class_name"], "os.system"),
            functional=True)
header_case("fun_rng_state_bad_generator", _set(["rng_states", "1"], {"bit_generator": "os.system"}), functional=True)
header_case("fun_rng_state_bad_values", _set(["rng_states", "1", "state"], {"state": "x", "inc": []}),
            functional=True)
header_case("fun_rng_state_list", _set(["rng_states", "1"], [1, 2]), functional=True)
header_case("fun_rng_state_huge_int", _set(["rng_states", "1", "state", "state"], 1 << 200), functional=True)
header_case("fun_dropout_rate_invalid", _set(["config", "layers", 1, "config", "rate"], 2.0), functional=True)


def _swap_layers(h, a):
    # two Dense layers' configs swapped: the order of layers no longer matches the stored arrays
    a, b = h["config"]["layers"][0], h["config"]["layers"][3]
    for key in ("class_name", "config"):
        a[key], b[key] = b[key], a[key]


header_case("fun_layers_swapped", _swap_layers, functional=True)


def test_catalogue_is_broad():
    assert len(CATALOGUE) >= 150


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_hostile_file_raises_model_file_error(name, good, tmp_path):
    raw = CATALOGUE[name](good)
    path = tmp_path / f"{name}.npz"
    path.write_bytes(raw)
    with pytest.raises(Exception) as info:
        normlab.load_model(path)
    assert type(info.value) is normlab.ModelFileError, (name, repr(info.value))
    assert str(path) in str(info.value), name
    assert isinstance(info.value, ValueError)


def test_messages_say_what_is_wrong(good, tmp_path):
    expected = {
        "layer_units_huge": "expects (5, 1000000000000)",
        "array_float64_overflow": "overflow float32",
        "array_nan": "NaN or inf",
        "extra_unreferenced_array": "does not refer to",
        "npy_declares_terabytes": "declares shape",
        "header_deep_nesting": "JSON values in",
        "header_deep_nesting_sparse": "nested more than",
        "config_nested_100_deep": "nested more than",
        "format_version_float": "format version 1.0",
        "layer_class_os.system": "Unknown layer 'os.system'",
        "duplicate_member": "appears twice",
        "overlapping_members": "overlaps the member before it",
        "directory_lies_about_count": "or more members",
        "encrypted_flag": "encrypted",
        "rng_states_for_plain_layer": "generator state",
        "fun_layers_swapped": "shape",
    }
    for name, text in expected.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(CATALOGUE[name](good))
        with pytest.raises(normlab.ModelFileError) as info:
            normlab.load_model(path)
        assert text in str(info.value), (name, str(info.value))


def test_good_files_load(good, tmp_path):
    # the catalogue's base files, and the same repacked as the cases repack them
    for raw in (good.raw, good.fraw, pack(*good.seq_parts()), zip_of(members_of(*good.seq_parts()))):
        p = tmp_path / "ok.npz"
        p.write_bytes(raw)
        normlab.load_model(p)


def test_compressed_file_within_its_size_loads(good, tmp_path):
    # deflated members are read, as long as they inflate to no more than MAX_INFLATION times the file
    for raw in (good.raw, good.fraw):  # trained models repacked with numpy.savez_compressed
        p = tmp_path / "c.npz"
        p.write_bytes(pack(*_unpack(raw), compress=True))
        normlab.load_model(p)
    header, arrays = good.seq_parts()
    arrays = {k: (np.random.default_rng(0).standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f" else v)
              for k, v in arrays.items()}
    header["arrays"]["optimizer"] = []
    header["compile"] = None
    arrays = {k: v for k, v in arrays.items() if not k.startswith("optimizer/")}
    p = tmp_path / "deflated.npz"
    p.write_bytes(zip_of(members_of(header, arrays), zipfile.ZIP_DEFLATED))
    m = normlab.load_model(p)
    np.testing.assert_array_equal(m.layers[0].params["kernel"], arrays["layers/0/params/kernel"])
    # zeros deflate a thousandfold: the file declares more than it holds
    header["config"]["input_shape"] = [None, 40000]
    zeros = {k: np.zeros((40000,) + v.shape[1:], v.dtype) if k == "layers/0/params/kernel" else v
             for k, v in arrays.items()}
    p.write_bytes(zip_of(members_of(header, zeros), zipfile.ZIP_DEFLATED))
    with pytest.raises(normlab.ModelFileError, match="uncompressed bytes"):
        normlab.load_model(p)
    # stored uncompressed, the same model loads
    p.write_bytes(zip_of(members_of(header, zeros)))
    assert normlab.load_model(p).layers[0].params["kernel"].shape == (40000, 6)


def test_fortran_order_and_big_endian_arrays_load(good, tmp_path):
    header, arrays = good.seq_parts()
    k = arrays["layers/0/params/kernel"]
    arrays["layers/0/params/kernel"] = np.asfortranarray(k)
    arrays["layers/3/params/kernel"] = arrays["layers/3/params/kernel"].astype(">f4")
    p = tmp_path / "f.npz"
    p.write_bytes(pack(header, arrays))
    m = normlab.load_model(p)
    np.testing.assert_array_equal(m.layers[0].params["kernel"], k)
    np.testing.assert_array_equal(m.layers[3].params["kernel"], good.seq.layers[3].params["kernel"])


def test_float64_arrays_within_float32_range_load(good, tmp_path):
    header, arrays = good.seq_parts()
    arrays["layers/0/params/kernel"] = arrays["layers/0/params/kernel"].astype(np.float64)
    p = tmp_path / "f64.npz"
    p.write_bytes(pack(header, arrays))
    m = normlab.load_model(p)
    assert m.layers[0].params["kernel"].dtype == np.float32
    np.testing.assert_array_equal(m.layers[0].params["kernel"], good.seq.layers[0].params["kernel"])


# ------------------------------------------------------------ not files
def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        normlab.load_model(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        normlab.load_model(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(normlab.ModelFileError, match="not a regular file"):
        normlab.load_model(fifo)


# --------------------------------------------------------- memory bounds
def _peak_while_loading(path) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(normlab.ModelFileError):
            normlab.load_model(path)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _bound(path) -> int:
    return 4 * os.path.getsize(path) + (2 << 20)


def test_memory_unreferenced_compressed_member(good, tmp_path):
    # 256 MiB of zeros deflate to about 0.26 MB; numpy.load used to inflate them on access (257 MiB)
    nbytes = 256 << 20
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members_of(*good.seq_parts()):
            zf.writestr(name, data)
        with zf.open("layers/7/params/junk.npy", "w", force_zip64=True) as w:  # streamed: no 256 MiB here
            w.write(npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (nbytes // 4,)}))
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                w.write(chunk)
    assert os.path.getsize(p) < 400_000
    peak = _peak_while_loading(p)
    assert peak < _bound(p), peak


def test_memory_huge_dense_config_with_tiny_arrays(good, tmp_path):
    header = {"format": "normlab-model", "format_version": 1, "normlab_version": "0", "model_class": "Sequential",
              "config": {"name": "s", "input_shape": [None, 4096],
                         "layers": [{"class_name": "Dense", "config": {"units": 4096, "name": "d"}}]},
              "compile": None, "arrays": {"layers": [{"params": ["kernel", "bias"], "buffers": []}], "optimizer": []},
              "rng_states": {}}
    arrays = {"layers/0/params/kernel": np.zeros((4, 4), np.float32),
              "layers/0/params/bias": np.zeros(4, np.float32)}
    p = tmp_path / "dense.npz"
    p.write_bytes(pack(header, arrays))
    assert os.path.getsize(p) < 3000
    peak = _peak_while_loading(p)
    assert peak < _bound(p), peak


def test_memory_huge_input_shape_without_weights(tmp_path):
    # a functional model whose input is 2^31 floats per sample and which has no weights
    header = {"format": "normlab-model", "format_version": 1, "normlab_version": "0", "model_class": "Model",
              "config": {"name": "m", "input_shape": [None, 1 << 16, 1 << 15],
                         "layers": [{"class_name": "GlobalAveragePooling1D", "config": {"name": "g"},
                                     "inbound": [0]},
                                    {"class_name": "Dense", "config": {"units": 1 << 16, "name": "d"},
                                     "inbound": [1]}],
                         "output": 2},
              "compile": None,
              "arrays": {"layers": [{"params": [], "buffers": []}, {"params": ["kernel"], "buffers": []}],
                         "optimizer": []},
              "rng_states": {}}
    p = tmp_path / "wide.npz"
    p.write_bytes(pack(header, {"layers/1/params/kernel": np.zeros((2, 2), np.float32)}))
    peak = _peak_while_loading(p)
    assert peak < _bound(p), peak


def test_memory_npy_header_declaring_terabytes(good, tmp_path):
    p = tmp_path / "tera.npz"
    p.write_bytes(CATALOGUE["npy_declares_terabytes"](good))
    assert _peak_while_loading(p) < _bound(p)
    p.write_bytes(CATALOGUE["npy_header_member_terabytes"](good))
    assert _peak_while_loading(p) < _bound(p)


def test_memory_zip_bomb_declared_small(good, tmp_path):
    p = tmp_path / "bomb.npz"
    p.write_bytes(CATALOGUE["zip_bomb_declared_small"](good))
    assert _peak_while_loading(p) < _bound(p)


def test_memory_deep_json(good, tmp_path):
    for name in ("header_deep_nesting", "header_deep_nesting_sparse", "header_deep_objects"):
        p = tmp_path / f"{name}.npz"
        p.write_bytes(CATALOGUE[name](good))
        assert _peak_while_loading(p) < _bound(p), name


def test_memory_header_of_a_million_values(good, tmp_path):
    # 1 MiB of "[],[],..." parses into 40 MiB of Python lists: refused before parsing
    p = tmp_path / "lists.npz"
    p.write_bytes(pack("[" + ",".join(["[]"] * ((saving.MAX_HEADER_BYTES - 2) // 3)) + "]", {}))
    assert _peak_while_loading(p) < _bound(p)
    # at the density allowed, a header as large as allowed parses within a bounded multiple of its size
    filler = "[" + ",".join(["[]  "] * ((saving.MAX_HEADER_BYTES - 2) // 5)) + "]"
    p.write_bytes(pack(filler, {}))
    assert _peak_while_loading(p) < 16 * os.path.getsize(p) + (2 << 20)


def test_memory_wrapped_layer_larger_than_stored(good, tmp_path):
    p = tmp_path / "wrapped.npz"
    p.write_bytes(CATALOGUE["fun_wrapped_units_huge"](good))
    assert _peak_while_loading(p) < _bound(p)


def test_memory_many_members(tmp_path):
    # thousands of members, each a tiny array the header does not refer to (zipfile's directory costs
    # about 3.5 bytes per byte of the file; at most MAX_MEMBERS entries are parsed)
    n = 4000
    buf = io.BytesIO()
    small = npy_bytes(np.zeros(0, np.float32))
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(HEADER + ".npy", npy_bytes(np.frombuffer(b"{}", np.uint8)))
        for i in range(n):
            zf.writestr(f"optimizer/s{i}.npy", small)
    p = tmp_path / "many.npz"
    p.write_bytes(buf.getvalue())
    peak = _peak_while_loading(p)
    assert peak < 8 * os.path.getsize(p) + (2 << 20), (peak, os.path.getsize(p))


def test_memory_directory_lying_about_its_count(tmp_path):
    # 20000 directory entries (1.3 MB) behind an end record declaring one: counted before zipfile
    # builds an object per entry (about 8 times the file's size)
    p = tmp_path / "lying.npz"
    p.write_bytes(lying_zip(20000, 1))
    assert _peak_while_loading(p) < 2 * os.path.getsize(p) + (1 << 20)


def test_memory_of_a_good_file_is_a_small_multiple_of_its_size(tmp_path):
    m = normlab.Sequential([Dense(256), BatchNormalization(), Dense(256), Dense(10, activation="softmax")])
    m.build((None, 256))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    m.fit(x, np.arange(8) % 10, epochs=1, verbose=0)
    p = tmp_path / "good.npz"
    m.save(p)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        back = normlab.load_model(p)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert back.count_params() == m.count_params()
    assert peak < 6 * os.path.getsize(p) + (2 << 20), (peak, os.path.getsize(p))


def _leaves(node, path=()):
    if isinstance(node, (dict, list)):
        for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
            yield from _leaves(v, path + (k,))
    if path:
        yield path


def test_every_header_value_replaced_by_hostile_values(tmp_path):
    # each of the ~220 values, objects and lists of a convolutional model's header (configs of seven
    # layer kinds, optimizer, loss, metrics, generator states, array index) replaced in turn: the file
    # loads, or raises ModelFileError (a wider run, 16 values in 3 models, 8000 loads, found nothing else)
    raw = Good._bytes(_convolutional())
    header, arrays = _unpack(raw)
    p = tmp_path / "v.npz"
    count = 0
    for path in _leaves(header):
        for value in (None, -1, 1 << 62, "os.system", [1 << 40] * 3):
            edited = json.loads(json.dumps(header))
            node = edited
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
            p.write_bytes(pack(edited, arrays))
            try:
                normlab.load_model(p)
            except normlab.ModelFileError:
                pass
            except Exception as exc:  # pragma: no cover - the failure message
                pytest.fail(f"{path} = {value!r}: {type(exc).__name__}: {exc}")
            count += 1
    assert count > 1000


def test_messages_stay_short_for_huge_values(good, tmp_path):
    big = "x" * 200_000
    edits = {
        "name": lambda h, a: (h["config"]["layers"][0]["config"].update(name=big, units=7)),
        "class": _set(["config", "layers", 0, "class_name"], big),
        "format": _set(["format"], big),
        "shape": _set(["config", "input_shape"], [None] + ["5"] * 20000),
        "units": _set(["config", "layers", 0, "config", "units"], big),
    }
    for what, edit in edits.items():
        header, arrays = good.seq_parts()
        edit(header, arrays)
        p = tmp_path / f"{what}.npz"
        p.write_bytes(pack(header, arrays))
        with pytest.raises(normlab.ModelFileError) as info:
            normlab.load_model(p)
        assert len(str(info.value)) < 2000, (what, len(str(info.value)))


def _load_outcome(p, what) -> str:
    """'loaded' or 'error' (a ModelFileError naming the file); any other exception fails the test."""
    try:
        normlab.load_model(p)
        return "loaded"
    except normlab.ModelFileError as exc:
        assert str(p) in str(exc)
        return "error"
    except Exception as exc:  # pragma: no cover - the failure message
        pytest.fail(f"{what}: {type(exc).__name__}: {exc}")


def test_random_corruptions_raise_model_file_error_or_load(good, tmp_path):
    # seeded random damage: bytes anywhere in the file (zip headers, directory, .npy headers, data), and
    # bytes of the JSON header repacked into a valid archive (so that the CRC does not catch them)
    rng = np.random.default_rng(21)
    p = tmp_path / "r.npz"
    header, arrays = good.fun_parts()
    text = json.dumps(header).encode()
    outcomes = {"error": 0, "loaded": 0}
    for trial in range(400):
        if trial % 2:
            raw = bytearray(good.fraw)
            for at in rng.integers(0, len(raw), rng.integers(1, 4)):
                raw[at] = rng.integers(0, 256)
            data = bytes(raw)
        else:
            t = bytearray(text)
            for at in rng.integers(0, len(t), rng.integers(1, 4)):
                t[at] = rng.choice(list(b'{}[]",:0123456789-.eEtrufalsn \\x\xff'))
            data = pack(bytes(t), arrays)
        p.write_bytes(data)
        outcomes[_load_outcome(p, f"trial {trial}")] += 1
    assert outcomes["error"] > 200


def test_random_npy_member_damage_behind_valid_checksums(good, tmp_path):
    # damage inside the .npy members (their headers above all), repacked into an archive whose CRCs
    # match the damaged bytes, so that only the loader's own checks stand between them and the model
    rng = np.random.default_rng(7)
    p = tmp_path / "r.npz"
    members = members_of(*good.seq_parts())
    outcomes = {"error": 0, "loaded": 0}
    for trial in range(300):
        k = int(rng.integers(0, len(members)))
        name, data = members[k]
        raw = bytearray(data)
        # mostly within the first 128 bytes: the magic, version, header length and the header's text
        for at in rng.integers(0, min(len(raw), 128), rng.integers(1, 4)):
            raw[at] = rng.integers(0, 256)
        if trial % 5 == 0:
            raw = raw[: int(rng.integers(0, len(raw)))]
        p.write_bytes(zip_of(members[:k] + [(name, bytes(raw))] + members[k + 1:]))
        outcomes[_load_outcome(p, f"trial {trial} ({name})")] += 1
    assert outcomes["error"] > 150
