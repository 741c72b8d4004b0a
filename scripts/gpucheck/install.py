"""On the GPU machine: rebuild the files of the trips that arrived, install them with pip from
that folder alone (no index), unpack the photos. A group whose wheels did not all arrive is
reported in one line; the plan's steps that need it then skip."""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from gpucheck.requirements import base_requirements, dali_requirements, requirement_name
from gpucheck.transfer import find_manifest, reassemble

log = logging.getLogger(__name__)


def pip_install(reqs: list[str], find_links: Path, dry_run: bool = False) -> tuple[bool, str]:
    """``pip install --no-index --find-links`` (already satisfied requirements are kept as they are)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--find-links",
        str(find_links),
        "--no-cache-dir",
        "--disable-pip-version-check",
        *(["--dry-run"] if dry_run else []),
        *reqs,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    last = [ln for ln in (r.stdout + r.stderr).strip().splitlines() if ln.strip()]
    return r.returncode == 0, (last[-1] if last else "")


def install_group(name: str, reqs: list[str], find_links: Path, dry_run: bool, say: Callable[[str], None]) -> bool:
    """Install ``reqs`` at once; when that fails, one by one, and say which could not be installed."""
    ok, msg = pip_install(reqs, find_links, dry_run)
    if ok:
        say(f"install {name}: ok ({', '.join(requirement_name(r) for r in reqs)})")
        return True
    failed = [r for r in reqs if not pip_install([r], find_links, dry_run)[0]]
    say(f"install {name}: could not install {', '.join(failed) or 'the set together'} from {find_links} ({msg})")
    return not failed


def install_transfer(
    folders: list[Path], work: Path, dry_run: bool = False, say: Callable[[str], None] = log.info
) -> Path | None:
    """Rebuild, check and install what arrived in ``folders``; returns the photo folder when the
    photos arrived (else None)."""
    files = work / "files"
    manifest = find_manifest(folders)
    status = reassemble(folders, files, manifest)
    group = {f["name"]: f["group"] for f in manifest["files"]}
    arrived = sorted(n for n, s in status.items() if s == "ok")
    say(f"transfer: {len(arrived)} of {len(status)} files complete and verified in {files}")
    spare = [n for n, s in status.items() if s != "ok" and group[n] == "spare"]
    if spare:
        say(f"transfer: {len(spare)} spare files did not come (the GPU image had them; pip says if one is needed)")
    for n, s in sorted(status.items()):
        if s != "ok" and group[n] != "spare":
            say(f"transfer: {n} ({group[n]}): {s}; bring its trip to use it")
    install_group("base", base_requirements(), files, dry_run, say)
    dali = dali_requirements()
    if any(requirement_name(n.split("-")[0]) in {requirement_name(r) for r in dali} for n in arrived):
        install_group("dali", dali, files, dry_run, say)
    else:
        say("install dali: skipped, its wheel did not arrive (the DALI steps will skip)")
    tar = files / "photos.tar"
    if tar.is_file():
        photos = work / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as t:
            t.extractall(photos, filter="data")
        return photos
    return None
