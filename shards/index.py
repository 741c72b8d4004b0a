"""DALI's WebDataset index files (the ``wds2idx`` text format, version v1.2), without DALI.

Format, one text file per tar::

    v1.2 <number of samples>
    <ext> <data offset> <size> <member name> [<ext> <offset> <size> <name> ...]  # per sample

Offsets are byte positions of the member *data* (after its 512-byte header). A sample is a run of
consecutive members sharing the key, the member name up to its first dot. ``fn.readers.webdataset``
reads these with ``index_paths=``; :mod:`shards.verify` and the DALI backend read them back with
:func:`read_index`.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INDEX_VERSION = "v1.2"
BLOCK = 512


@dataclass(frozen=True)
class Member:
    """One regular file inside a tar: name, data offset and size in bytes."""

    name: str
    offset: int
    size: int

    @property
    def key(self) -> str:
        """The sample key: the name up to the first dot of its last path part."""
        return split_name(self.name)[0]

    @property
    def ext(self) -> str:
        """The extension after that dot (``""`` when there is none)."""
        return split_name(self.name)[1]


def split_name(name: str) -> tuple[str, str]:
    """``dir/key.ext.more`` -> (``dir/key``, ``ext.more``), as WebDataset and DALI split names."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def group_samples(members: list[Member]) -> list[list[Member]]:
    """Consecutive members with the same key form one sample."""
    samples: list[list[Member]] = []
    last = None
    for m in members:
        if m.key != last:
            samples.append([])
            last = m.key
        samples[-1].append(m)
    return samples


def format_index(samples: list[list[Member]]) -> str:
    """The ``v1.2`` index text of ``samples``: a header line, then one line per sample."""
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    for sample in samples:
        lines.append(" ".join(f"{m.ext} {m.offset} {m.size} {m.name}" for m in sample))
    return "\n".join(lines) + "\n"


def write_index_file(samples: list[list[Member]], index_path: str | os.PathLike) -> None:
    """Write an index for already-known members (the shard writer's path: no tar re-read)."""
    Path(index_path).write_text(format_index(samples))


def scan_tar(tar_path: str | os.PathLike) -> Iterator[Member]:
    """Regular-file members of a tar with their data offsets, reading only the headers."""
    with tarfile.open(tar_path, "r:") as tar:
        for info in tar:
            if info.isreg():
                yield Member(info.name, info.offset_data, info.size)


def write_index(tar_path: str | os.PathLike, index_path: str | os.PathLike) -> int:
    """Build the index of any WebDataset tar (ours or not); returns the number of samples."""
    samples = group_samples([m for m in scan_tar(tar_path) if not _hidden(m.name)])
    write_index_file(samples, index_path)
    return len(samples)


def _hidden(name: str) -> bool:
    # wds2idx drops members whose key is empty or a directory (names starting with a dot)
    key = split_name(name)[0]
    return not key or key.endswith("/")


def read_index(index_path: str | os.PathLike) -> list[list[Member]]:
    """Parse an index file; raises ValueError with a one-line reason when it is malformed."""
    text = Path(index_path).read_text()
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{index_path}: empty index")
    head = lines[0].split()
    if len(head) != 2 or head[0] != INDEX_VERSION or not head[1].isdigit():
        raise ValueError(f"{index_path}: bad header {lines[0]!r} (expected '{INDEX_VERSION} N')")
    samples: list[list[Member]] = []
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words or len(words) % 4:
            raise ValueError(f"{index_path}:{number}: expected groups of 'ext offset size name'")
        sample = []
        for i in range(0, len(words), 4):
            ext, offset, size, name = words[i : i + 4]
            if not (offset.isdigit() and size.isdigit()) or split_name(name)[1] != ext:
                entry = " ".join(words[i : i + 4])
                raise ValueError(f"{index_path}:{number}: malformed entry {entry!r}")
            sample.append(Member(name, int(offset), int(size)))
        samples.append(sample)
    if len(samples) != int(head[1]):
        raise ValueError(f"{index_path}: header says {head[1]} samples, found {len(samples)}")
    return samples


def sample_extensions(index_path: str | os.PathLike) -> list[set[str]]:
    """The lower-cased member extensions of each sample of an index, checking only its header.

    :func:`read_index` validates every entry but builds an object per member (~15 s for ImageNet's
    1.28 M samples); a loader that needs only the extensions reads them at ~1 us per sample here.
    ValueError in one line for a malformed header or a sample count that disagrees with it.
    """
    lines = Path(index_path).read_text().splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != INDEX_VERSION or head[1] != str(len(lines) - 1):
        raise ValueError(f"{index_path}: malformed DALI index (header {lines[:1]}, {len(lines) - 1} samples)")
    return [{e.lower() for e in line.split()[0::4]} for line in lines[1:]]


def index_path_for(tar_path: str | os.PathLike) -> Path:
    """``train-000001.tar`` -> ``train-000001.idx`` (beside it)."""
    p = Path(tar_path)
    return p.with_suffix(".idx")
