"""Content hashes of every stored image, beside the shards: what a leakage check compares.

Conversion hashes each kept image's bytes exactly as stored in the shard (the original file's
bytes: shards never re-encode) and writes ``OUT/hashes.txt``, one line per sample in shard order::

    <blake2b-128 hex of the image bytes> <split>/<key>

The manifest names the file, its algorithm and its line count (``manifest["content_hashes"]``).
The file sits beside the manifest rather than inside it because ImageNet's 1.28 M lines would
make every loader's manifest read slow. blake2b-128: shards already pay one sha256 over the
whole tar, and blake2b is the cheaper of the two per byte.

``python -m evaluation`` hashes its evaluation images the same way and counts how many a run
trained on (:func:`read_content_hashes` of the run's shards).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from shards.index import split_name
from shards.probe import IMAGE_EXTENSIONS

HASHES = "hashes.txt"
ALGORITHM = "blake2b-128 of the stored image bytes"


def content_hash(data: bytes) -> str:
    """Hex digest (32 characters) of one image's bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    """:func:`content_hash` of a file's bytes."""
    return content_hash(Path(path).read_bytes())


def hash_lines(split: str, pairs: list[tuple[str, str]]) -> list[str]:
    """``(key, hash)`` pairs of one shard -> the lines ``hashes.txt`` holds for them."""
    return [f"{digest} {split}/{key}" for key, digest in pairs]


def tar_hashes(tar: str | os.PathLike) -> list[tuple[str, str]]:
    """``(key, hash)`` of every image member of a finished shard, in tar order (to rebuild a lost file)."""
    out = []
    with tarfile.open(tar, "r:") as tf:
        for member in tf:
            key, ext = split_name(member.name)
            if member.isfile() and ext.lower() in IMAGE_EXTENSIONS:
                out.append((key, content_hash(tf.extractfile(member).read())))
    return out


def write_hashes(out: Path, lines: list[str]) -> dict:
    """Write ``out/hashes.txt`` atomically; returns its manifest entry."""
    tmp = out / f".{HASHES}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / HASHES)
    return {"file": HASHES, "algorithm": ALGORITHM, "count": len(lines)}


def read_content_hashes(shard_dir: str | os.PathLike) -> set[str]:
    """The content hashes of a converted shard folder; ValueError (one line) when it has none."""
    path = Path(shard_dir) / HASHES
    if not path.is_file():
        raise ValueError(
            f"{shard_dir} has no {HASHES} (converted before content hashes were recorded): "
            "convert it again with the same command to add them"
        )
    return {line.split(" ", 1)[0] for line in path.read_text().splitlines() if line}
