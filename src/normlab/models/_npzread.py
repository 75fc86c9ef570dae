"""Reading ``.npz`` archives from untrusted files with bounded memory.

``numpy.load`` trusts what an archive declares: a member's ``.npy`` header
that declares a terabyte-sized shape makes it allocate that much before it
reads a byte, and a deflated member inflates to whatever size it declares.
This module reads an archive the other way round:

1. the members are counted in the central directory itself (the count the
   end record declares may lie) before :mod:`zipfile` builds an object of
   about 500 bytes per entry: at most a limit, and one per 128 bytes of the
   file (what the smallest ``.npy`` member takes);
2. every member's declared sizes are checked against the file's size (the
   sum of the uncompressed sizes may not exceed a small multiple of it: a
   file cannot declare more than it holds), its flags (no encryption) and
   compression (stored or deflated);
3. members may not overlap one another or the directory (entries pointing
   at one compressed stream are a known zip bomb);
4. every member's ``.npy`` header is parsed on its own (a few hundred bytes)
   and must describe an array of an allowed dtype whose data fills the rest
   of the member exactly;
5. only then :func:`read_array` reads a member, into an array of the size
   just checked, in chunks (the zip layer stops at the declared size and
   checks the CRC).

So the memory a read takes is bounded by what the file holds, whatever it
declares. Every problem is an :class:`ArchiveError` with a message that
says what is wrong; the caller adds the file's name.
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.lib import format as _npformat

__all__ = ["ArchiveError", "Member", "open_archive", "read_array", "READ_ERRORS"]

#: end of central directory record: signature, 4 x uint16, 2 x uint32, comment length
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_CD_SIGNATURE = b"PK\x01\x02"
_CD_ENTRY_SIZE = 46  # central directory entry before its name, extra field and comment
#: fewest file bytes a member takes: local header (30) and directory entry (46) with the name in
#: each, and a .npy header (64 at least, 128 as numpy writes it)
MIN_MEMBER_BYTES = 128
_CHUNK = 1 << 20
#: what zipfile, zlib and numpy's header parser raise on malformed input
READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    SyntaxError,
    RecursionError,
    OverflowError,
    TypeError,
    KeyError,
)


class ArchiveError(ValueError):
    """The archive is malformed, or declares more than it holds."""


@dataclass(frozen=True)
class Member:
    """A checked member: its zip entry and what its ``.npy`` header declares."""

    name: str  # without ".npy"
    info: zipfile.ZipInfo
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    data_offset: int  # bytes of the .npy preamble and header

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _member_count(fh, file_size: int) -> tuple[int, int, int]:
    """The member count, directory offset and size the end-of-central-directory record declares."""
    if file_size < _EOCD.size:
        raise ArchiveError("not a zip archive (too short)")
    tail_len = min(file_size, _EOCD.size + 0xFFFF)
    fh.seek(file_size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ArchiveError("not a zip archive (no end of central directory record)")
    fields = _EOCD.unpack_from(tail, at)
    return fields[4], fields[6], fields[5]  # entries in the central directory (total), its offset, its size


def _directory_entries(fh, file_size: int, offset: int, size: int, limit: int) -> int:
    """Count the central directory's entries (up to ``limit + 1``) without building an object per entry.

    The count the end record declares may lie, and :mod:`zipfile` builds a
    ``ZipInfo`` (about 500 bytes) for every entry there is. Archives beyond
    the 32-bit fields (over 4 GiB) are left to zipfile.
    """
    if offset == 0xFFFFFFFF or size == 0xFFFFFFFF or offset + size > file_size:
        return 0
    fh.seek(offset)
    directory = fh.read(size)
    pos = count = 0
    while pos + _CD_ENTRY_SIZE <= len(directory) and directory[pos : pos + 4] == _CD_SIGNATURE:
        count += 1
        if count > limit:
            break
        name_len, extra_len, comment_len = struct.unpack_from("<3H", directory, pos + 28)
        pos += _CD_ENTRY_SIZE + name_len + extra_len + comment_len
    return count


def _cut(name: str, limit: int = 80) -> str:
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _npy_header(fh, max_header_size: int):
    version = _npformat.read_magic(fh)
    if version == (1, 0):
        read = _npformat.read_array_header_1_0
    elif version == (2, 0):
        read = _npformat.read_array_header_2_0
    else:
        raise ArchiveError(f"unsupported .npy format version {version}")
    try:
        shape, fortran, dtype = read(fh, max_header_size=max_header_size)
    except ValueError:
        raise
    except Exception as exc:
        # NumPy reads the header's dictionary with Python's tokenizer and
        # ``ast.literal_eval``: a damaged header can raise their errors
        # (``tokenize.TokenError``, ``TypeError``, ``RecursionError``), which
        # are not ValueErrors; the file is damaged all the same.
        raise ArchiveError(f"the .npy header is damaged ({type(exc).__name__}: {exc})") from None
    return shape, fortran, dtype, fh.tell()


def open_archive(fh, file_size: int, *, max_members: int, max_inflation: float, check_name, check,
                 max_header_size: int = 4096):
    """Check an archive's directory and every member's ``.npy`` header; return ``(ZipFile, members)``.

    Parameters
    ----------
    fh : binary file object
        Seekable, opened on a regular file of ``file_size`` bytes.
    max_members : int
        Refuse archives declaring more members.
    max_inflation : float
        Refuse archives whose members' uncompressed sizes sum to more than
        ``max_inflation * file_size`` (1: no member data beyond what the file holds).
    check_name : callable
        ``check_name(name) -> str | None`` for each member's name without ``.npy``,
        before anything of it is read.
    check : callable
        ``check(name, shape, dtype) -> str | None`` for each member (name without
        ``.npy``): None accepts it, a string says what is wrong.
    max_header_size : int
        Longest ``.npy`` header accepted (numpy writes about 128 bytes).

    ``members`` maps each member's name without ``.npy`` to its :class:`Member`.
    """
    count, directory_offset, directory_size = _member_count(fh, file_size)
    limit = min(max_members, file_size // MIN_MEMBER_BYTES)
    count = max(count, _directory_entries(fh, file_size, directory_offset, directory_size, limit))
    if count > limit:
        raise ArchiveError(
            f"the archive declares {count} or more members, more than the {limit} allowed "
            f"(at most {max_members}, and one per {MIN_MEMBER_BYTES} bytes of the file)"
        )
    fh.seek(0)
    zf = zipfile.ZipFile(fh)
    try:
        if directory_offset != 0xFFFFFFFF and zf.start_dir != directory_offset:
            # zipfile reads archives behind other data (self-extracting programs); a model file is only a zip
            raise ArchiveError(f"{zf.start_dir - directory_offset} bytes of other data precede the archive")
        infos = zf.infolist()
        if len(infos) > max_members:
            raise ArchiveError(f"the archive holds {len(infos)} members, more than the {max_members} allowed")
        total = 0
        seen = set()
        for info in infos:
            name = info.filename
            if name in seen:
                raise ArchiveError(f"member {_cut(name)} appears twice")
            seen.add(name)
            if not name.endswith(".npy") or info.is_dir():
                raise ArchiveError(f"member {_cut(name)} is not a .npy array")
            problem = check_name(name[: -len(".npy")])
            if problem is not None:
                raise ArchiveError(f"member {_cut(name)}: {problem}")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ArchiveError(f"member {name!r} uses an unsupported compression method ({info.compress_type})")
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise ArchiveError(
                    f"member {name!r} is stored uncompressed but declares {info.compress_size} stored and "
                    f"{info.file_size} uncompressed bytes"
                )
            if info.compress_size > file_size or info.header_offset + info.compress_size > file_size:
                raise ArchiveError(f"member {name!r} declares {info.compress_size} bytes beyond the file's end")
            total += info.file_size
            if total > max_inflation * file_size:
                raise ArchiveError(
                    f"the members declare {total} or more uncompressed bytes, more than {max_inflation:g} times "
                    f"the file's {file_size} (member {name!r}: {info.file_size} bytes from {info.compress_size})"
                )
        # members must not overlap (a "better zip bomb" points many entries at one compressed stream);
        # a local header takes 30 bytes and the name (ASCII: checked above) before the member's data
        end = None
        for info in sorted(infos, key=lambda i: i.header_offset):
            if end is None and info.header_offset != 0:
                raise ArchiveError("other data precede the archive's first member")
            if end is not None and info.header_offset < end:
                raise ArchiveError(f"member {_cut(info.filename)} overlaps the member before it")
            end = info.header_offset + 30 + len(info.filename) + info.compress_size
        if end is not None and end > zf.start_dir:
            raise ArchiveError("the last member overlaps the archive's directory")
        members = {}
        for info in infos:
            name = info.filename[: -len(".npy")]
            with zf.open(info) as f:
                shape, fortran, dtype, offset = _npy_header(f, max_header_size)
            if any(d < 0 for d in shape):
                raise ArchiveError(f"array {name!r} declares an invalid shape {shape}")
            problem = check(name, tuple(shape), dtype)
            if problem is not None:
                raise ArchiveError(f"member {info.filename!r}: {problem}")
            nbytes = math.prod(shape) * dtype.itemsize
            if offset + nbytes != info.file_size:
                raise ArchiveError(
                    f"array {name!r} declares shape {shape} of {dtype} ({nbytes} bytes) but its member "
                    f"holds {info.file_size - offset} bytes of data"
                )
            members[name] = Member(name, info, tuple(shape), dtype, bool(fortran), offset)
    except BaseException:
        zf.close()
        raise
    return zf, members


def read_array(zf: zipfile.ZipFile, member: Member) -> np.ndarray:
    """Read a checked member into a new array (its declared size, in 1 MiB chunks; CRC checked)."""
    out = np.empty(member.size, dtype=member.dtype)
    raw = out.view(np.uint8).reshape(-1)
    nbytes = raw.size
    with zf.open(member.info) as f:
        f.read(member.data_offset)
        pos = 0
        while pos < nbytes:
            data = f.read(min(_CHUNK, nbytes - pos))
            if not data:
                raise ArchiveError(f"array {member.name!r} is truncated ({pos} of {nbytes} bytes)")
            raw[pos : pos + len(data)] = np.frombuffer(data, dtype=np.uint8)
            pos += len(data)
        if f.read(1):  # also makes the zip layer check the CRC when the array is empty
            raise ArchiveError(f"array {member.name!r} has bytes after its data")
    if member.fortran_order:
        return out.reshape(member.shape[::-1]).T
    return out.reshape(member.shape)
