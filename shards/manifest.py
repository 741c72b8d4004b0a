"""``manifest.json``: what a shard directory holds, written once the last shard is complete.

Contents: per split the list of shards (name, index file, sample count, bytes, sha256), classes
(or COCO categories), totals, seed and options, the source, the tool version, every skipped
file with its reason, and ``content_hashes``: the name, algorithm and line count of ``hashes.txt``
beside it (:mod:`shards.content_hashes`). The same idea as timm's ``_info.json``; readers (the loaders, ``verify``)
take counts and class lists from here instead of scanning tars. The manifest holds no timestamp,
so a resumed conversion writes the same file as an uninterrupted one.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections import Counter
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = "densessl-shards"
FORMAT_VERSION = 1


def tool_version() -> str:
    """The installed densessl version (``0+unknown`` when it is not installed)."""
    try:
        return importlib.metadata.version("densessl")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def build_manifest(
    *,
    kind: str,
    source: dict,
    settings: dict,
    fingerprint: str,
    splits: dict[str, list[dict]],
    skipped: list[dict],
    classes: list[str] | None,
    extra: dict,
) -> dict:
    """Assemble the manifest from the per-shard records (in plan order) and plan-time skips."""
    out_splits: dict[str, dict] = {}
    formats: Counter = Counter()
    modes: Counter = Counter()
    notes: Counter = Counter()
    all_skipped = list(skipped)
    for split, records in splits.items():
        shards = [
            {"name": r["name"], "index": r["index"], "count": r["count"], "bytes": r["bytes"], "sha256": r["sha256"]}
            for r in records
            if r["count"]
        ]
        out_splits[split] = {"count": sum(s["count"] for s in shards), "bytes": sum(s["bytes"] for s in shards), "shards": shards}
        for r in records:
            formats.update(r["formats"])
            modes.update(r["modes"])
            notes.update(r["notes"])
            all_skipped.extend(r["skipped"])
    by_reason = Counter(s["reason"] for s in all_skipped)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": "densessl shards",
        "tool_version": tool_version(),
        "kind": kind,
        "source": source,
        "seed": settings["seed"],
        "settings": settings,
        "fingerprint": fingerprint,
        "classes": classes,
        **extra,
        "splits": out_splits,
        "totals": {
            "samples": sum(s["count"] for s in out_splits.values()),
            "bytes": sum(s["bytes"] for s in out_splits.values()),
            "shards": sum(len(s["shards"]) for s in out_splits.values()),
            "skipped": len(all_skipped),
            "skipped_by_reason": dict(sorted(by_reason.items())),
            "formats": dict(sorted(formats.items())),
            "modes": dict(sorted(modes.items())),
            "notes": dict(sorted(notes.items())),
        },
        "skipped": all_skipped,
    }


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` through a synced temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """Load and sanity-check ``OUT/manifest.json``; ValueError with a one-line reason otherwise."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"no {MANIFEST} in {out_dir} (conversion unfinished or wrong folder)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {manifest.get('format_version')}, this tool reads {FORMAT_VERSION}")
    return manifest


def human_bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units; whole bytes below 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def summary_line(manifest: dict, out_dir: str | os.PathLike) -> str:
    """One line: kept, skipped by reason, shards, bytes."""
    t = manifest["totals"]
    reasons = ", ".join(f"{k} {v}" for k, v in t["skipped_by_reason"].items())
    skipped = f"skipped {t['skipped']}" + (f" ({reasons})" if reasons else "")
    return f"shards: kept {t['samples']} images in {t['shards']} shards ({human_bytes(t['bytes'])}) -> {out_dir}; {skipped}"
