"""The conversion driver shared by every converter: plan, resume, write shards, manifest.

A converter (imagenet.py, coco.py, folder.py) only lists its sources as a :class:`Source`;
everything else happens here:

1. plan: shuffle each split with the seed and cut it into shards (:mod:`shards.plan`);
2. resume: a shard whose ``.tar`` exists with a matching record in ``OUT/.progress/`` is done;
   leftovers of a killed run (hidden ``*.tmp`` files) are removed, unfinished shards rewritten;
3. write the remaining shards in parallel, each by one worker, samples in plan order;
4. write ``hashes.txt`` (:mod:`shards.content_hashes`), timm's ``_info.json``
   (:mod:`shards.timm_info`) and ``manifest.json``, drop
   ``.progress/``, print the one-line summary;
5. a rerun of a finished conversion restores whatever went missing since: a deleted index is
   rebuilt from its tar, a deleted or resized shard rewritten (and checked against its recorded
   sha256), ``hashes.txt`` rebuilt from the tars, ``_info.json`` rewritten from the manifest.

Because the plan fixes which samples go into which shard and in which order, the result is the
same bytes whatever the worker count and however often the run was interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from shards import parallel
from shards.content_hashes import HASHES, content_hash, hash_lines, tar_hashes, write_hashes
from shards.index import format_index, group_samples, scan_tar
from shards.limits import check_limits, max_file_bytes
from shards.manifest import MANIFEST, build_manifest, read_manifest, summary_line, tool_version, write_json_atomic
from shards.plan import Item, ShardJob, Skip, assign, fingerprint
from shards.probe import UNREADABLE, ProbeOptions, probe
from shards.source_file import SourceFileError, read_source_file
from shards.timm_info import INFO, timm_info
from shards.writer import ShardWriter, is_tmp, tmp_name

PROGRESS = ".progress"
DEFAULT_SHARD_SIZE = 256 * 1024 * 1024
SHARD_FILE = re.compile(r"^[A-Za-z0-9_-]+-\d{6}\.(tar|idx)$")

log = logging.getLogger("shards")  # progress lines; `python -m shards` prints them to stdout


class ConversionError(RuntimeError):
    """A conversion that cannot proceed; the message is the one-line reason."""


@dataclass
class Source:
    """What a converter found: samples per split (deterministic order) and plan-time skips."""

    kind: str
    splits: dict[str, list[Item]]
    skipped: list[Skip] = field(default_factory=list)
    classes: list[str] | None = None
    info: dict = field(default_factory=dict)  # recorded as the manifest's "source"
    extra: dict = field(default_factory=dict)  # more top-level manifest fields (COCO categories)


@dataclass
class ConvertOptions:
    """How to convert: seed, shard size, sample cap, probe policy, workers, overwrite, progress.

    ValueError on limits a loader would refuse.
    """

    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    max_count: int | None = None
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    workers: int = 1
    overwrite: bool = False
    progress: bool = True
    pause_per_shard: float = 0.0  # testing aid: lets a test interrupt a run between shards

    def __post_init__(self) -> None:
        # never keep what a loader would refuse (ValueError with a one-line reason)
        check_limits(self.probe.min_side, self.probe.max_pixels)


def _sample_json(item: Item, width: int, height: int, fmt: str, mode: str, notes: dict) -> tuple[bytes, bool]:
    """The sample's ``.json``: the converter's metadata plus what the probe found.

    Returns the bytes and whether a size declared by the source disagrees with the stored image.
    """
    meta = dict(item.meta)
    mismatch = "width" in meta and (meta.get("width"), meta.get("height")) != (width, height)
    if mismatch:
        # e.g. COCO's declared size differs from the image bytes: keep both, say so
        meta["stored_size"] = [width, height]
    meta.setdefault("width", width)
    meta.setdefault("height", height)
    meta["format"], meta["mode"] = fmt, mode
    if "exif_orientation" in notes:
        meta["exif_orientation"] = notes["exif_orientation"]
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(), mismatch


def write_shard(job: ShardJob, out_dir: str, fp: str, options: ProbeOptions, pause: float = 0.0) -> dict:
    """Read, probe and write one shard (runs in a worker); returns its record."""
    out = Path(out_dir)
    writer = ShardWriter(out / job.name)
    skipped: list[dict] = []
    formats: Counter = Counter()
    modes: Counter = Counter()
    notes: Counter = Counter()
    hashes: list[tuple[str, str]] = []  # (key, content hash) per kept sample: OUT/hashes.txt
    max_bytes = max_file_bytes(options.max_pixels)  # no image within the limits is larger
    try:
        for item in job.items:
            source = item.meta.get("source") or item.meta.get("file_name") or item.path
            try:
                data = read_source_file(item.path, max_bytes)
            except SourceFileError as exc:
                skipped.append(Skip(source, exc.reason, exc.detail, job.split).as_dict())
                parallel.tick(0)
                continue
            except OSError as exc:
                skipped.append(Skip(source, UNREADABLE, exc.strerror or str(exc), job.split).as_dict())
                parallel.tick(0)
                continue
            verdict = probe(data, options)
            parallel.tick(len(data))
            if not verdict.kept:
                skipped.append(Skip(source, verdict.reason, verdict.detail, job.split).as_dict())
                continue
            payload, mismatch = _sample_json(item, verdict.width, verdict.height, verdict.format, verdict.mode, verdict.notes)
            members = [(verdict.ext, data)]
            if item.cls is not None:
                members.append(("cls", str(item.cls).encode()))
            members.append(("json", payload))
            writer.add(item.key, members)
            hashes.append((item.key, content_hash(data)))
            formats[verdict.format] += 1
            modes[verdict.mode] += 1
            notes.update(k for k in verdict.notes if k in ("exif_orientation", "progressive"))
            if mismatch:
                notes["size_mismatch"] += 1
        stats = writer.finish()
        record = {
            "fingerprint": fp,
            "split": job.split,
            "name": job.name,
            "index": writer.index_final.name,
            "count": stats.count,
            "bytes": stats.bytes,
            "sha256": stats.sha256,
            "skipped": skipped,
            "formats": dict(formats),
            "modes": dict(modes),
            "notes": dict(notes),
            "hashes": hashes,
        }
        # Record first, then index and tar: the tar's final name appears last and means "done".
        write_json_atomic(out / PROGRESS / f"{job.name}.json", record)
        if stats.count:
            writer.commit()
        else:
            writer.abort()  # every sample was skipped: no empty tar (DALI refuses those)
    except BaseException:
        writer.abort()
        raise
    if pause:
        time.sleep(pause)
    return record


def _is_done(out: Path, job: ShardJob, fp: str) -> dict | None:
    """The shard's record when it was completed under this plan, else None."""
    rec_path = out / PROGRESS / f"{job.name}.json"
    try:
        record = json.loads(rec_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != fp or "hashes" not in record:  # no hashes: written by an older version
        return None
    if record["count"] == 0:
        return record
    tar, idx = out / record["name"], out / record["index"]
    if tar.is_file() and idx.is_file() and tar.stat().st_size == record["bytes"]:
        return record
    return None


def _restore_missing(out: Path, manifest: dict, jobs: dict[str, ShardJob], fp: str, options: ConvertOptions) -> list[str]:
    """Bring a finished conversion back to what its manifest lists; returns the files rewritten.

    A missing (or resized) shard is rewritten from its sources, which the matching fingerprint
    says are unchanged, and must come out with the recorded sha256; a missing index is rebuilt
    from its tar; ``_info.json`` from the manifest.
    """
    restored: list[str] = []
    for p in out.iterdir():  # leftovers of a killed restore
        if is_tmp(p):
            p.unlink(missing_ok=True)
    for split in manifest["splits"].values():
        for entry in split["shards"]:
            tar, idx = out / entry["name"], out / entry["index"]
            if not tar.is_file() or tar.stat().st_size != entry["bytes"]:
                (out / PROGRESS).mkdir(exist_ok=True)
                rec = write_shard(jobs[entry["name"]], str(out), fp, options.probe)
                if (rec["count"], rec["bytes"], rec["sha256"]) != (entry["count"], entry["bytes"], entry["sha256"]):
                    raise ConversionError(
                        f"{tar} rewritten from its sources differs from the finished conversion "
                        "(sources changed in place?); pass --overwrite to rebuild everything"
                    )
                restored += [tar.name, idx.name]
            elif not idx.is_file():
                tmp = tmp_name(idx)
                tmp.write_text(format_index(group_samples(list(scan_tar(tar)))))
                os.replace(tmp, idx)
                restored.append(idx.name)
    if not (out / HASHES).is_file() or "content_hashes" not in manifest:  # lost, or converted before they existed
        lines = [
            line
            for split, entry in ((s, e) for s, info in manifest["splits"].items() for e in info["shards"])
            for line in hash_lines(split, tar_hashes(out / entry["name"]))
        ]
        manifest["content_hashes"] = write_hashes(out, lines)
        write_json_atomic(out / MANIFEST, manifest)
        restored.append(HASHES)
    info = timm_info(manifest)
    try:
        current = json.loads((out / INFO).read_text())
    except (OSError, json.JSONDecodeError):
        current = None
    if current != info:
        write_json_atomic(out / INFO, info)
        restored.append(INFO)
    shutil.rmtree(out / PROGRESS, ignore_errors=True)  # also what a kill right after the manifest left
    return restored


def _clear(out: Path) -> None:
    """Remove what a previous conversion wrote here (only our own file names)."""
    for p in out.iterdir():
        if p.is_file() and (SHARD_FILE.match(p.name) or p.name in (MANIFEST, INFO, HASHES) or is_tmp(p)):
            p.unlink()
    shutil.rmtree(out / PROGRESS, ignore_errors=True)


def _prepare(out: Path, fp: str, overwrite: bool) -> dict | None:
    """Check OUT against this plan. Returns the manifest when the work is already complete."""
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / PROGRESS / "plan.json"
    previous = None
    if (out / MANIFEST).is_file():
        try:
            previous = read_manifest(out).get("fingerprint")
        except ValueError:
            previous = "unreadable"
        if previous == fp and not overwrite:
            return read_manifest(out)  # finished: convert() restores what went missing since
    elif plan_file.is_file():
        try:
            previous = json.loads(plan_file.read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            previous = "unreadable"
    elif any(SHARD_FILE.match(p.name) for p in out.iterdir()):
        previous = "unknown"
    if previous not in (None, fp):
        if not overwrite:
            raise ConversionError(
                f"{out} already holds shards of a different conversion (other sources or "
                "options); pass --overwrite to replace them, or choose another OUT"
            )
        _clear(out)
    (out / PROGRESS).mkdir(exist_ok=True)
    for folder in (out, out / PROGRESS):  # leftovers of a killed run
        for p in folder.iterdir():
            if is_tmp(p):
                p.unlink(missing_ok=True)
    if not plan_file.is_file():
        write_json_atomic(plan_file, {"fingerprint": fp})
    return None


def convert(source: Source, out_dir: str | os.PathLike, options: ConvertOptions) -> dict:
    """Convert ``source`` into shards under ``out_dir``; returns the manifest (also written)."""
    out = Path(out_dir)
    if not any(source.splits.values()):
        raise ConversionError(
            f"no images found in {source.info.get('root', source.info)}"
            + (f" ({len(source.skipped)} skipped)" if source.skipped else "")
        )
    bad = [s for s in source.splits if not re.fullmatch(r"[A-Za-z0-9_-]+", s)]
    if bad:
        raise ConversionError(f"split name {bad[0]!r}: use letters, digits, '_' and '-' only")
    settings = {"seed": options.seed, "shard_size": options.shard_size, "max_count": options.max_count, **asdict(options.probe)}
    jobs = [
        job
        for split, items in source.splits.items()
        for job in assign(split, items, options.seed, options.shard_size, options.max_count)
    ]
    fp = fingerprint(
        jobs,
        {"kind": source.kind, "tool": tool_version(), "settings": settings, "classes": source.classes, "extra": source.extra},
    )
    finished = _prepare(out, fp, options.overwrite)
    if finished is not None:
        restored = _restore_missing(out, finished, {job.name: job for job in jobs}, fp, options)
        if restored:
            log.info(f"shards: restored {len(restored)} missing or damaged file(s): {', '.join(restored)}")
        log.info(f"shards: {out} is already complete for these sources and options")
        log.info(summary_line(finished, out))
        return finished

    records: dict[str, dict] = {}
    todo: list[ShardJob] = []
    for job in jobs:
        rec = _is_done(out, job, fp)
        if rec is None:
            todo.append(job)
        else:
            records[job.name] = rec
    if records:
        log.info(f"shards: resuming: {len(records)} of {len(jobs)} shards already done")
    fn = partial(write_shard, out_dir=str(out), fp=fp, options=options.probe, pause=options.pause_per_shard)
    total = sum(len(j.items) for j in todo)
    try:
        for rec in parallel.run_jobs(
            fn, todo, workers=options.workers, total=total, desc=f"{source.kind} -> {out.name}", progress=options.progress
        ):
            records[rec["name"]] = rec
    except OSError as exc:
        raise ConversionError(f"writing shards in {out}: {exc}") from None

    per_split: dict[str, list[dict]] = {split: [] for split in source.splits}
    for job in jobs:
        per_split[job.split].append(records[job.name])
    manifest = build_manifest(
        kind=source.kind,
        source=source.info,
        settings=settings,
        fingerprint=fp,
        splits=per_split,
        skipped=[s.as_dict() for s in source.skipped],
        classes=source.classes,
        extra=source.extra,
    )
    lines = [line for split, recs in per_split.items() for r in recs for line in hash_lines(split, r["hashes"])]
    manifest["content_hashes"] = write_hashes(out, lines)
    write_json_atomic(out / INFO, timm_info(manifest))  # before the manifest, which means "done"
    write_json_atomic(out / MANIFEST, manifest)
    shutil.rmtree(out / PROGRESS, ignore_errors=True)
    log.info(summary_line(manifest, out))
    return manifest
