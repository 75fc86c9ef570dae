"""Reading IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension,
then the data in C order::

    00 00 <dtype code> <ndim>  |  dim_0 ... dim_{ndim-1} (uint32, big-endian)  |  data

MNIST uses the unsigned-byte code ``0x08``, so image files start with
``00 00 08 03`` (0x00000803) and label files with ``00 00 08 01`` (0x00000801).
Files may be gzipped; compression is detected from the content, not the name.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

__all__ = ["read_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_IDX_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
# Signatures of files that are often found where an IDX file was expected.
_FOREIGN_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x80", "a Python pickle"),
    (b"\x93NUMPY", "a NumPy .npy file"),
)
# Text where an IDX file was expected, recognised after a byte-order mark and blank space.
_FOREIGN_TEXT = (
    (b"<", "an HTML or XML page (a failed download?)"),
    (b"version https://git-lfs", "a Git LFS pointer, not the file itself (run `git lfs pull`)"),
    (b"{", "a JSON document (an error response instead of the file?)"),
)


def _describe_foreign(head: bytes) -> str:
    for signature, what in _FOREIGN_SIGNATURES:
        if head.startswith(signature):
            return f"; it looks like {what}"
    text = head[:512]
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    text = text.lstrip(b" \t\r\n")
    for signature, what in _FOREIGN_TEXT:
        if text.startswith(signature):
            return f"; it looks like {what}"
    return ""


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise ValueError(
            f"{path}: the gzip stream is truncated ({exc}). The file is incomplete; "
            "delete it and download it again."
        ) from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(
            f"{path}: is not a valid gzip file ({exc}). Delete it and download it again."
        ) from None


def read_idx(path: str | os.PathLike, *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (plain or gzipped) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip compression is detected from its first two bytes.
    ndim : int
        The number of dimensions expected: 3 for image files (magic
        0x00000803), 1 for label files (magic 0x00000801).

    Returns
    -------
    numpy.ndarray
        A read-only ``uint8`` array with the shape declared in the header.

    Raises
    ------
    ValueError
        If the file is not an IDX file (wrong magic number, e.g. a PNG image or
        an HTML error page), stores another data type or number of dimensions,
        is truncated, or has bytes after the data. The message names the file.
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    expected_magic = f"00 00 08 {ndim:02x}"
    kind = "images" if ndim == 3 else "labels" if ndim == 1 else f"{ndim}-d data"
    if len(raw) < 4:
        raise ValueError(
            f"{path}: is only {len(raw)} bytes long, too short for an IDX file "
            f"(expected the magic number {expected_magic} for {kind}). The file is "
            "truncated or empty; delete it and download it again."
        )
    head = raw[:4]
    if head[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: is not an IDX file: it starts with {head.hex(' ')}, expected "
            f"the magic number {expected_magic} ({kind}){_describe_foreign(raw)}."
        )
    code, file_ndim = head[2], head[3]
    if code != _UBYTE:
        name = _IDX_TYPE_NAMES.get(code, "an unknown type")
        raise ValueError(
            f"{path}: has IDX data type code 0x{code:02X} ({name}); expected 0x08 "
            f"(unsigned byte), as in MNIST (magic number {expected_magic})."
        )
    if file_ndim != ndim:
        raise ValueError(
            f"{path}: is an IDX file with {file_ndim} dimension(s) (magic number "
            f"{head.hex(' ')}), expected {ndim} for {kind} (magic number "
            f"{expected_magic}). Are the image and label files swapped?"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"{path}: is truncated inside its header ({len(raw)} bytes, the header "
            f"of a {ndim}-d IDX file has {header_len}). Delete it and download it again."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    n_expected = 1
    for d in shape:  # Python ints: no overflow on a corrupt header
        n_expected *= d
    n_found = len(raw) - header_len
    dims = " x ".join(str(d) for d in shape)
    if n_found < n_expected:
        raise ValueError(
            f"{path}: is truncated: its header declares {dims} = {n_expected} data "
            f"bytes, but only {n_found} follow. Delete it and download it again."
        )
    if n_found > n_expected:
        raise ValueError(
            f"{path}: has {n_found - n_expected} unexpected bytes after the data "
            f"(header declares {dims} = {n_expected} data bytes, found {n_found}). "
            "The file is corrupt or not an MNIST-style IDX file."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)
