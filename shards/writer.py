"""Write one shard: a plain ustar file, byte-for-byte reproducible, committed atomically.

Every header field that could vary between runs (mtime, owner, mode) is fixed, so the same
samples in the same order give the same bytes. The tar and its DALI index are written under
hidden temporary names (with the writer's pid, so a leftover of a killed run never collides with
a rerun), flushed to disk, and renamed into place only when complete: a file named
``{split}-{index:06d}.tar`` is always a finished shard.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from shards.index import BLOCK, Member, format_index, index_path_for

FIXED_MTIME = 946684800  # 2000-01-01: a constant, so rewritten shards are identical
RECORD = 20 * BLOCK  # GNU/Python tar pad archives to whole 10 KiB records


@dataclass
class ShardStats:
    """A finished shard: samples, bytes and sha256 of the tar."""

    count: int
    bytes: int
    sha256: str


def tmp_name(final: Path) -> Path:
    """The hidden path ``final`` is written under: ``.{name}.{pid}.tmp`` beside it."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def is_tmp(path: Path) -> bool:
    """Whether ``path`` is named like a :func:`tmp_name` leftover."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, FIXED_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # ustar only: every member is exactly one 512-byte header (keys are short, see plan.py),
    # which keeps offsets trivial for the index and for GNU tar's --block-number.
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


class ShardWriter:
    """Append samples to ``final`` (a ``.tar`` path); ``commit()`` makes it visible."""

    def __init__(self, final: str | os.PathLike):
        self.final = Path(final)
        self.index_final = index_path_for(self.final)
        self.tmp = tmp_name(self.final)
        self.index_tmp = tmp_name(self.index_final)
        self._f = open(self.tmp, "wb")
        self._hash = hashlib.sha256()
        self._pos = 0
        self.samples: list[list[Member]] = []

    def _write(self, data: bytes) -> None:
        self._f.write(data)
        self._hash.update(data)
        self._pos += len(data)

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        """One sample: ``members`` is a list of (extension, payload), written in that order."""
        if not key or "." in key or "/" in key or " " in key:
            raise ValueError(f"invalid sample key {key!r}")
        sample = []
        for ext, payload in members:
            name = f"{key}.{ext}"
            self._write(_header(name, len(payload)))
            sample.append(Member(name, self._pos, len(payload)))
            self._write(payload)
            pad = -len(payload) % BLOCK
            if pad:
                self._write(b"\0" * pad)
        self.samples.append(sample)

    @property
    def count(self) -> int:
        """Samples added so far."""
        return len(self.samples)

    def finish(self) -> ShardStats:
        """Close the archive and write the index, both still under temporary names."""
        self._write(b"\0" * (2 * BLOCK))
        pad = -self._pos % RECORD
        if pad:
            self._write(b"\0" * pad)
        self._f.flush()
        os.fsync(self._f.fileno())  # a renamed shard must survive a crash, not only a kill
        self._f.close()
        with open(self.index_tmp, "w") as f:
            f.write(format_index(self.samples))
            f.flush()
            os.fsync(f.fileno())
        return ShardStats(self.count, self._pos, self._hash.hexdigest())

    def commit(self) -> None:
        """Rename index then tar into place; the tar appearing is the completion signal."""
        os.replace(self.index_tmp, self.index_final)
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        """Close the file and remove both temporary files (the final paths are left alone)."""
        if not self._f.closed:
            self._f.close()
        for p in (self.tmp, self.index_tmp):
            p.unlink(missing_ok=True)
