"""Did the evaluated run pretrain on the evaluation images? A content-hash check.

Conversion writes ``hashes.txt`` beside every shard folder (:mod:`shards.content_hashes`). The
evaluation hashes its own images the same way: the stored copy-paste test images, the background
photos they were pasted on, and the correspondence photos. A run's resolved config names the
shards it trained on (``data.shards``); an evaluation image whose hash is among theirs was seen in
pretraining. Byte-identical copies only: a re-encoded or resized copy is not caught.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.source import list_shards
from shards.content_hashes import HASHES, file_hash


@dataclass
class Leakage:
    """What one run's pretraining shared with the evaluation: ``seen`` of ``checked`` evaluation
    images; ``None`` counts when it cannot be told (``reason`` says why)."""

    checked: int
    seen: int | None
    reason: str = ""

    def as_dict(self) -> dict:
        """JSON form: ``{"checked", "seen_in_pretraining", "reason"}``."""
        return {"checked": self.checked, "seen_in_pretraining": self.seen, "reason": self.reason}

    def cell(self) -> str:
        """The table's column: ``0``, ``12 SEEN`` or ``?``."""
        if self.seen is None:
            return "?"
        return f"{self.seen} SEEN" if self.seen else "0"


def evaluation_hashes(test_hashes: list[str], backgrounds: list[str], photos: list[Path]) -> set[str]:
    """Hashes of every image the evaluation reads: stored test images, their background photos
    (those present on this machine) and the correspondence photos."""
    files = {Path(b) for b in backgrounds if os.path.isfile(b)} | set(photos)
    return set(test_hashes) | {file_hash(p) for p in files}


def training_hashes(shards_spec: str) -> set[str]:
    """Content hashes of the samples of the shards ``shards_spec`` names (a folder, glob, brace
    pattern or list, as ``data.shards``), only of their own splits. ValueError (one line) when a
    folder has no ``hashes.txt`` or the shards are remote."""
    by_folder: dict[Path, set[str]] = {}
    for url in list_shards(shards_spec):
        if "://" in url or url.startswith("pipe:"):
            raise ValueError(f"{url}: remote shards; copy their {HASHES} beside a local copy to check for leakage")
        path = Path(url)
        by_folder.setdefault(path.parent, set()).add(path.name.rsplit("-", 1)[0])
    found: set[str] = set()
    for folder, splits in by_folder.items():
        if not (folder / HASHES).is_file():
            raise ValueError(f"{folder} has no {HASHES} (converted before content hashes): convert it again to add them")
        for line in (folder / HASHES).read_text().splitlines():
            digest, _, name = line.partition(" ")
            if name.split("/", 1)[0] in splits:
                found.add(digest)
    return found


def check_leakage(evaluation: set[str], shards_spec: str | None) -> Leakage:
    """Count the evaluation images among the training shards'; ``shards_spec`` None: not a run."""
    if shards_spec is None:
        return Leakage(len(evaluation), None, "no training run (random init or an export without its config)")
    try:
        return Leakage(len(evaluation), len(evaluation & training_hashes(shards_spec)))
    except (ValueError, FileNotFoundError) as exc:
        return Leakage(len(evaluation), None, str(exc))
