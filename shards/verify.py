"""``python -m shards verify OUT``: prove a shard folder is what its manifest says.

For every shard listed in ``manifest.json``: the tar exists with the recorded size and sha256;
its index parses and lists exactly the tar's members (names, data offsets, sizes) grouped into
the recorded number of samples; every sample has one image (jpg/png/webp), a ``.json`` and a
``.cls`` exactly when the dataset has classes; every image decodes (reduced-scale check) in the
format its extension claims, at the size its ``.json`` records, within the limits every loader
applies (:mod:`shards.limits`); keys are unique per split; no unlisted shard lies beside them;
``_info.json`` (timm's reader) agrees with the manifest. The first problem is printed as one line and the exit code is 1.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from shards import parallel
from shards.convert import SHARD_FILE
from shards.index import read_index, scan_tar
from shards.limits import MAX_PIXELS, MIN_SIDE
from shards.manifest import MANIFEST, human_bytes, read_manifest
from shards.probe import EXTENSIONS, IMAGE_EXTENSIONS, ProbeOptions, probe
from shards.timm_info import INFO, timm_info

# Verify judges bytes that were already accepted: does it decode, within the limits every loader
# applies (a shard must not hold an image the loaders refuse), not the conversion's own policy.
_DECODE_ONLY = ProbeOptions(min_side=MIN_SIDE, max_pixels=MAX_PIXELS, check_decode=True)


@dataclass
class ShardCheck:
    """One shard to check (a worker's job): split, manifest entry, classes, whether to decode."""

    split: str
    entry: dict
    classes: list[str] | None
    decode: bool


def _check_sample(data: mmap.mmap, sample: list, check: ShardCheck) -> str | None:
    exts = [m.ext for m in sample]
    key = sample[0].key
    images = [e for e in exts if e in IMAGE_EXTENSIONS]
    want = sorted(images[:1] + ["json"] + (["cls"] if check.classes is not None else []))
    if len(images) != 1 or sorted(exts) != want:
        return f"sample {key}: members {exts}, expected {want}"
    parts = {m.ext: bytes(data[m.offset : m.offset + m.size]) for m in sample}
    try:
        meta = json.loads(parts["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"sample {key}: .json does not parse ({exc})"
    if check.classes is not None:
        try:
            cls = int(parts["cls"])
        except ValueError:
            return f"sample {key}: .cls is not an integer"
        if not 0 <= cls < len(check.classes):
            return f"sample {key}: class {cls} outside 0..{len(check.classes) - 1}"
        named = meta.get("wnid", meta.get("class"))
        if named is not None and check.classes[cls] != named:
            return f"sample {key}: .cls {cls} is {check.classes[cls]}, .json says {named}"
    if check.decode:
        verdict = probe(parts[images[0]], _DECODE_ONLY)
        if not verdict.kept:
            return f"sample {key}: {verdict.detail}"
        if EXTENSIONS[verdict.format] != images[0]:
            return f"sample {key}: stored as .{images[0]} but is {verdict.format}"
        size = meta.get("stored_size") or [meta.get("width"), meta.get("height")]
        if list(size) != [verdict.width, verdict.height]:
            return f"sample {key}: image is {verdict.width}x{verdict.height}, .json says {size}"
    return None


def check_shard(check: ShardCheck, out_dir: str) -> dict:
    """All checks of one shard (runs in a worker): {'problems': [...], 'keys': [...]}."""
    entry = check.entry
    tar_path, idx_path = Path(out_dir) / entry["name"], Path(out_dir) / entry["index"]
    result: dict = {"name": entry["name"], "problems": [], "keys": []}

    def fail(msg: str) -> dict:
        result["problems"].append(f"{entry['name']}: {msg}")
        return result

    if not tar_path.is_file():
        return fail("missing")
    if tar_path.stat().st_size != entry["bytes"]:
        return fail(f"{tar_path.stat().st_size} bytes, manifest says {entry['bytes']}")
    try:
        index = read_index(idx_path)
    except (OSError, ValueError) as exc:
        return fail(f"index: {exc}")
    if len(index) != entry["count"]:
        return fail(f"index lists {len(index)} samples, manifest says {entry['count']}")
    try:
        members = list(scan_tar(tar_path))
    except Exception as exc:  # tarfile raises several types on damaged archives
        return fail(f"unreadable tar ({exc})")
    flat = [m for sample in index for m in sample]
    if flat != members:
        bad = next((i for i, (a, b) in enumerate(zip(flat, members, strict=False)) if a != b), min(len(flat), len(members)))
        got = members[bad] if bad < len(members) else "end of tar"
        want = flat[bad] if bad < len(flat) else "end of index"
        return fail(f"member {bad}: tar has {got}, index has {want}")
    with open(tar_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return fail("sha256 differs from the manifest (file changed or damaged)")
        for sample in index:
            result["keys"].append(sample[0].key)
            problem = _check_sample(data, sample, check)
            parallel.tick(sum(m.size for m in sample))
            if problem:
                return fail(problem)
    return result


def verify(out_dir: str | os.PathLike, *, workers: int = 1, decode: bool = True, progress: bool = True) -> tuple[bool, str]:
    """Check ``out_dir``; returns (ok, one-line message)."""
    out = Path(out_dir)
    try:
        manifest = read_manifest(out)
    except ValueError as exc:
        return False, str(exc)
    classes = manifest.get("classes")
    checks = [ShardCheck(split, entry, classes, decode) for split, s in manifest["splits"].items() for entry in s["shards"]]
    listed = {c.entry["name"] for c in checks} | {c.entry["index"] for c in checks}
    stray = sorted(p.name for p in out.iterdir() if SHARD_FILE.match(p.name) and p.name not in listed)
    if stray:
        return False, f"{stray[0]}: shard file not listed in {MANIFEST}" + (
            f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        )
    for split, s in manifest["splits"].items():
        if s["count"] != sum(e["count"] for e in s["shards"]):
            return False, f"split {split}: count {s['count']} is not the sum of its shards"
    total = sum(c.entry["count"] for c in checks)
    if manifest["totals"]["samples"] != total:
        return False, f"totals say {manifest['totals']['samples']} samples, shards hold {total}"
    problems: list[str] = []
    keys: dict[str, set[str]] = {}
    by_name = {c.entry["name"]: c.split for c in checks}
    for res in parallel.run_jobs(
        partial(check_shard, out_dir=str(out)), checks, workers=workers, total=total, desc=f"verify {out.name}", progress=progress
    ):
        problems.extend(res["problems"])
        seen = keys.setdefault(by_name[res["name"]], set())
        dup = seen.intersection(res["keys"])
        if dup:
            problems.append(f"{res['name']}: key {sorted(dup)[0]} also in another shard")
        seen.update(res["keys"])
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        return False, sorted(problems)[0] + more
    try:
        info = json.loads((out / INFO).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return False, (
            f"{INFO} missing or unreadable ({type(exc).__name__}); run the same conversion command again to restore it"
        )
    if info != timm_info(manifest):
        return False, f"{INFO} disagrees with {MANIFEST}; run the same conversion command again"
    splits = ", ".join(f"{k} {v['count']} in {len(v['shards'])} shards" for k, v in manifest["splits"].items())
    return True, f"{splits}; {human_bytes(manifest['totals']['bytes'])}"
