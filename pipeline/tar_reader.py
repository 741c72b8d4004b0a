"""A small, strict streaming tar reader (about 4x faster per sample than ``tarfile``).

Reads ustar, GNU and pax headers (long names included), verifies header checksums, and opens
gzip/bz2/xz-compressed shards by their magic bytes. :func:`pipeline.source.read_shard` groups its
members into samples.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
from collections.abc import Iterator
from typing import IO


class TarFormatError(ValueError):
    """The stream is not a (complete) tar archive."""


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_COMPRESSED = (  # magic bytes -> decompressing reader over a file object
    (b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", lambda f: bz2.BZ2File(f, mode="rb")),
    (b"\xfd7zXZ", lambda f: lzma.LZMAFile(f, mode="rb")),
)


class _Prepend(io.RawIOBase):
    """A read-only stream: ``head`` bytes, then ``rest`` (to sniff compression on pipes)."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    while len(data) < n:  # pipes and decompressors may return short reads
        more = stream.read(n - len(data))
        if not more:
            raise TarFormatError(f"truncated tar: {len(data)} of {n} bytes")
        data += more
    return data


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


class TarReader:
    """Regular files of a tar stream, in order, without Python's ``tarfile`` (which measured
    ~50 us per member; this ~10): ustar/GNU/pax headers (long names, pax ``path``/``size``),
    gzip/bz2/xz compression sniffed from the first bytes. Header checksums are verified, so a
    non-tar file fails at once. Use :meth:`members`, calling :meth:`read` for the members wanted.
    On an uncompressed regular file the data of members not read is seeked over, not read, and
    :attr:`member_offset` says where a member's data lies (to read it later).
    """

    def __init__(self, stream: IO[bytes]):
        head = stream.read(_BLOCK)
        compressed = False
        for magic, opener in _COMPRESSED:
            if head.startswith(magic):
                stream = opener(io.BufferedReader(_Prepend(head, stream)))
                head = stream.read(_BLOCK)
                compressed = True
                break
        self._stream, self._head = stream, head
        self._left = 0  # data (+ padding) bytes of the current member not read yet
        self._size = 0
        self._offset: int | None = None
        # An uncompressed regular file: skipped data is seeked over, and members have offsets.
        self._file_size = None if compressed else _regular_file_size(stream)

    @property
    def member_size(self) -> int:
        """Data bytes of the member :meth:`members` just yielded."""
        return self._size

    @property
    def member_offset(self) -> int | None:
        """File offset of the data of the member :meth:`members` just yielded; None on a stream
        that cannot seek (pipes, URLs, compressed shards)."""
        return self._offset

    def _header(self) -> bytes:
        if self._head is not None:
            hdr, self._head = self._head, None
        else:
            hdr = self._stream.read(_BLOCK)
        if 0 < len(hdr) < _BLOCK:
            hdr += _read_exact(self._stream, _BLOCK - len(hdr))
        return hdr

    def _skip(self) -> None:
        if self._left and self._file_size is not None:
            end = self._stream.tell() + self._left
            if end > self._file_size:  # what reading through would have found
                raise TarFormatError("truncated tar member")
            self._stream.seek(end)
            self._left = 0
            return
        while self._left:
            chunk = self._stream.read(min(self._left, 1 << 20))
            if not chunk:
                raise TarFormatError("truncated tar member")
            self._left -= len(chunk)

    def members(self) -> Iterator[str]:
        """Names of the regular files; the data of a member not :meth:`read` is skipped."""
        long_name, pax = None, {}
        while True:
            self._skip()
            hdr = self._header()
            if not hdr or hdr == _ZERO_BLOCK:
                return
            _check_header(hdr)
            name = hdr[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            if hdr[257:263] == b"ustar\0" and hdr[345] != 0:  # POSIX prefix (GNU uses these bytes otherwise)
                name = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
            size, kind = _number(hdr[124:136]), hdr[156:157]
            padded = -(-size // _BLOCK) * _BLOCK
            if kind in (b"L", b"x", b"g", b"K"):  # metadata about the next member
                data = _read_exact(self._stream, padded)[:size]
                if kind == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
                elif kind == b"x":
                    pax = _parse_pax(data)
                continue
            name = pax.get("path", long_name or name)
            if "size" in pax:
                size = int(pax["size"])
                padded = -(-size // _BLOCK) * _BLOCK
            long_name, pax = None, {}
            self._left, self._size = padded, size
            if kind in (b"0", b"\0", b"7"):
                self._offset = None if self._file_size is None else self._stream.tell()
                yield name

    def read(self) -> bytes:
        """The data of the member :meth:`members` just yielded."""
        data = _read_exact(self._stream, self._size)
        pad = self._left - self._size
        self._left = 0
        if pad:
            _read_exact(self._stream, pad)
        return data


def _regular_file_size(stream: IO[bytes]) -> int | None:
    """The size of a seekable regular file behind ``stream``, else None."""
    try:
        if not stream.seekable():
            return None
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # pipes, sockets, in-memory or wrapped streams
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _check_header(hdr: bytes) -> None:
    """Raise :class:`TarFormatError` unless ``hdr``'s checksum field matches its bytes.

    The checksum is the sum of the header's bytes with the checksum field counted as 8 spaces;
    some old tars summed signed bytes, which Python's ``tarfile`` and GNU tar also accept.
    """
    try:
        stored = _number(hdr[148:156])
    except ValueError:
        raise TarFormatError("bad tar header checksum field (not a tar, or a damaged header)") from None
    unsigned = sum(hdr) - sum(hdr[148:156]) + 8 * 32
    if stored == unsigned:
        return
    signed = unsigned - 256 * sum(1 for i, b in enumerate(hdr) if b >= 0x80 and not 148 <= i < 156)
    if stored != signed:
        raise TarFormatError(f"bad tar header checksum: stored {stored}, header sums to {unsigned}")


def _parse_pax(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out
