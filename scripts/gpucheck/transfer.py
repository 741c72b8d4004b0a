"""Cut files into pieces that fit one trip to a machine, and put them back together there.

A transfer folder holds ``trip-01/``, ``trip-02/``, ... Each trip folder is at most ``trip_bytes``
and carries a copy of ``manifest.json``, which lists every whole file (size, sha256, group) and
its pieces (name, size, sha256, trip). Files are packed in the order given (most needed first),
so the first trips hold what most of the plan needs and the last ones what only one part needs.
Reassembly searches any number of folders for pieces, checks each piece's hash and then the
whole file's, and reports a missing or damaged file instead of installing it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
PIECE_SUFFIX = ".part"
MB = 1_000_000
READ_CHUNK = 4 * 1024 * 1024


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_range(src: Path, dst: Path, start: int, length: int) -> str:
    """Copy ``length`` bytes of ``src`` from ``start`` into ``dst``; returns their sha256."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fi.seek(start)
        left = length
        while left:
            chunk = fi.read(min(READ_CHUNK, left))
            if not chunk:
                raise OSError(f"{src} ended early while cutting it; was it changed meanwhile?")
            h.update(chunk)
            fo.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


@dataclass
class _Trip:
    index: int
    used: int = 0


def cut_into_trips(files: Iterable[tuple[Path, str]], out: Path, trip_bytes: int = 60 * MB) -> dict:
    """Cut ``(path, group)`` files into pieces of at most ``trip_bytes`` and pack them into
    ``out/trip-NN/`` folders of at most ``trip_bytes`` each (first fit, in the given order).

    Returns the manifest, also written into every trip folder. File names must be unique.
    """
    if trip_bytes < 1:
        raise ValueError(f"trip_bytes must be positive, got {trip_bytes}")
    out.mkdir(parents=True, exist_ok=True)
    trips: list[_Trip] = []
    entries = []
    seen: set[str] = set()
    for path, group in files:
        path = Path(path)
        if path.name in seen:
            raise ValueError(f"two files are named {path.name}: rename one before cutting")
        seen.add(path.name)
        size = path.stat().st_size
        entry = {"name": path.name, "group": group, "size": size, "sha256": sha256_of(path), "pieces": []}
        starts = range(0, max(size, 1), trip_bytes)  # an empty file is one empty piece
        for i, start in enumerate(starts):
            length = min(trip_bytes, size - start)
            trip = next((t for t in trips if t.used + length <= trip_bytes), None)
            if trip is None:
                trip = _Trip(len(trips) + 1)
                trips.append(trip)
            trip.used += length
            name = f"{path.name}{PIECE_SUFFIX}{i:03d}"
            folder = out / f"trip-{trip.index:02d}"
            folder.mkdir(exist_ok=True)
            digest = _copy_range(path, folder / name, start, length)
            entry["pieces"].append({"name": name, "size": length, "sha256": digest, "trip": trip.index})
        entries.append(entry)
    manifest = {"trip_bytes": trip_bytes, "trips": len(trips), "files": entries}
    for t in trips:
        (out / f"trip-{t.index:02d}" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def find_manifest(folders: Iterable[Path]) -> dict | None:
    """The first ``manifest.json`` found in (or below) ``folders``; None when there is none."""
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for m in sorted(folder.rglob(MANIFEST)):
            return json.loads(m.read_text())
    return None


def _index_pieces(folders: Iterable[Path]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            for p in folder.rglob(f"*{PIECE_SUFFIX}[0-9][0-9][0-9]"):
                found.setdefault(p.name, []).append(p)
    return found


def reassemble(folders: Iterable[Path], out: Path, manifest: dict | None = None) -> dict[str, str]:
    """Rebuild every file of the manifest whose pieces are all in ``folders`` with the right hash.

    Returns ``{file name: status}`` with status ``ok`` (written to ``out`` and its sha256 checked),
    ``missing or damaged pieces N/M`` (a piece whose sha256 differs counts as missing) or ``bad hash``.
    A file already in ``out`` with the right hash is kept.
    """
    folders = [Path(f) for f in folders]
    manifest = manifest or find_manifest(folders)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST} in {', '.join(map(str, folders))}: pass the transfer folder(s)")
    pieces = _index_pieces(folders)
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    for entry in manifest["files"]:
        target = out / entry["name"]
        if target.is_file() and target.stat().st_size == entry["size"] and sha256_of(target) == entry["sha256"]:
            status[entry["name"]] = "ok"
            continue
        chosen: list[Path] = []
        for piece in entry["pieces"]:
            good = [
                p for p in pieces.get(piece["name"], []) if p.stat().st_size == piece["size"] and sha256_of(p) == piece["sha256"]
            ]
            if good:
                chosen.append(good[0])
        if len(chosen) < len(entry["pieces"]):
            status[entry["name"]] = f"missing or damaged pieces {len(entry['pieces']) - len(chosen)}/{len(entry['pieces'])}"
            continue
        partial = target.with_name(target.name + ".partial")
        with open(partial, "wb") as fo:
            for p in chosen:
                with open(p, "rb") as fi:
                    shutil.copyfileobj(fi, fo, READ_CHUNK)
        if sha256_of(partial) != entry["sha256"]:
            partial.unlink()
            status[entry["name"]] = "bad hash"
            continue
        partial.replace(target)
        status[entry["name"]] = "ok"
    return status


def stash(sources: Iterable[Path], dest: Path) -> int:
    """Copy every piece and the manifest found in ``sources`` into ``dest`` (one trip's arrival on a
    machine that keeps ``dest`` between trips). Returns the number of pieces copied."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for src in sources:
        src = Path(src)
        if not src.is_dir():
            raise FileNotFoundError(f"{src} is not a folder: pass a trip folder made by --prepare")
        for p in src.rglob("*"):
            if p.is_file() and (p.name == MANIFEST or PIECE_SUFFIX in p.name):
                shutil.copyfile(p, dest / p.name)
                n += p.name != MANIFEST
    return n
