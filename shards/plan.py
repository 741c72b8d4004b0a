"""From a list of source files to a fixed assignment of samples to shards.

The plan is computed before any image is read, from names and ``stat`` sizes only, and depends
only on the sources, the seed and the options. That is what makes a conversion resumable and
independent of the worker count: a rerun computes the same plan, keeps the shards that were
completed, and rewrites the others with exactly the samples they were meant to hold.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# Sample keys become tar member names ``{key}.{ext}`` and words of the DALI index (space
# separated, split at the first dot), so they are restricted to this alphabet, without dots.
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY_LEN = 80  # keeps every member name under ustar's 100 characters: one 512-byte header each
TAR_BLOCK = 512

# Reasons decided while listing sources (probe.py has the ones decided from the bytes).
MISSING = "missing"
DUPLICATE = "duplicate"
UNKNOWN_CLASS = "unknown-class"
UNLABELED = "unlabeled"
NO_CLASS = "no-class"


@dataclass(slots=True)  # one per source image: ImageNet holds 1.3 M of them
class Item:
    """One source image. ``meta`` goes into the sample's ``.json`` (probe results are added)."""

    key: str
    path: str
    size: int  # stat size, used to plan shard sizes
    cls: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Skip:
    """A source left out, with a reason code (see :mod:`shards.probe`) and a detail."""

    source: str
    reason: str
    detail: str
    split: str = ""

    def as_dict(self) -> dict:
        """The manifest's record of the skip: split, source, reason, detail."""
        return {"split": self.split, "source": self.source, "reason": self.reason, "detail": self.detail}


@dataclass
class ShardJob:
    """One shard to write: its split, number and samples in write order."""

    split: str
    index: int
    items: list[Item]

    @property
    def name(self) -> str:
        """The shard's tar file name, e.g. ``train-000003.tar``."""
        return shard_name(self.split, self.index)


def shard_name(split: str, index: int) -> str:
    """``("train", 3)`` -> ``train-000003.tar``."""
    return f"{split}-{index:06d}.tar"


def sanitize_key(text: str) -> str:
    """A key from any path-like text: safe characters only, no dots, bounded length."""
    key = _KEY_UNSAFE.sub("_", text).strip("_") or "sample"
    if len(key) > MAX_KEY_LEN:
        digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        key = f"{key[: MAX_KEY_LEN - 11]}-{digest}"
    return key


def dedupe_keys(items: list[Item]) -> None:
    """Make keys unique in list order: later duplicates get ``-1``, ``-2``... (in place).

    Different files can share a name (``a/img.jpg`` and ``b/img.jpg`` under a stem-based key,
    ``x.jpg`` and ``x.png``); both are kept under distinct keys.
    """
    seen: set[str] = {it.key for it in items}
    used: set[str] = set()
    for it in items:
        if it.key in used:
            n = 1
            while f"{it.key}-{n}" in seen or f"{it.key}-{n}" in used:
                n += 1
            it.key = f"{it.key}-{n}"
        used.add(it.key)


def estimated_bytes(item: Item) -> int:
    """Tar bytes one sample will take: headers, padded image, small ``.cls``/``.json`` members."""

    def padded(n: int) -> int:
        return -(-n // TAR_BLOCK) * TAR_BLOCK

    meta_len = len(json.dumps(item.meta, separators=(",", ":"))) + 96  # + probe fields
    members = TAR_BLOCK + padded(item.size) + TAR_BLOCK + padded(meta_len)
    if item.cls is not None:
        members += 2 * TAR_BLOCK
    return members


def assign(split: str, items: list[Item], seed: int, shard_size: int, max_count: int | None) -> list[ShardJob]:
    """Shuffle ``items`` with ``seed`` and cut them into consecutive shards.

    A shard closes before the sample that would take it past ``shard_size`` bytes (estimated) or
    when it holds ``max_count`` samples. Each split has its own random stream, so adding a split
    does not move the samples of another.
    """
    order = sorted(items, key=lambda it: it.key)  # independent of directory listing order
    random.Random(f"densessl-shards:{seed}:{split}").shuffle(order)
    jobs: list[ShardJob] = []
    current: list[Item] = []
    size = 0
    for it in order:
        est = estimated_bytes(it)
        full = max_count is not None and len(current) >= max_count
        if current and (full or size + est > shard_size):
            jobs.append(ShardJob(split, len(jobs), current))
            current, size = [], 0
        current.append(it)
        size += est
    if current:
        jobs.append(ShardJob(split, len(jobs), current))
    return jobs


def fingerprint(jobs: Iterable[ShardJob], settings: dict) -> str:
    """Hash of everything that decides the output bytes (plan + options), not of worker count."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for job in jobs:
        h.update(f"\n#{job.name}".encode())
        for it in job.items:
            h.update(
                json.dumps([it.key, it.path, it.size, it.cls, it.meta], sort_keys=True, default=str).encode(
                    "utf-8", "surrogateescape"
                )
            )
    return h.hexdigest()
