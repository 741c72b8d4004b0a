"""The two photo pools are disjoint by content and by scene group; conversions record content hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from shards.content_hashes import HASHES, read_content_hashes
from shards.copy_paste import build
from shards.photos import POOLS_FILE, available_photos, pool_photos
from tests.shards.builders import run_cli

TEMPLATES = Path("/usr/share/tuxpaint/templates")


def _blake(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def test_pools_are_disjoint_by_content_hash(real_photos):
    by_pool = {pool: {_blake(p) for p in available_photos(pool=pool)} for pool in ("pretrain", "eval")}
    assert by_pool["pretrain"] and by_pool["eval"]
    assert not by_pool["pretrain"] & by_pool["eval"]


def test_scene_groups_never_straddle_the_pools():
    pools_of_group: dict[str, set[str]] = {}
    for photo in pool_photos():
        pools_of_group.setdefault(photo.group, set()).add(photo.pool)
    straddling = {g: p for g, p in pools_of_group.items() if len(p) > 1}
    assert not straddling
    listed = [line.split("\t")[2] for line in POOLS_FILE.read_text().splitlines() if line and not line.startswith("#")]
    assert len(listed) == len(set(listed))  # each photo once
    # the near-duplicates the audit named share a group
    group = {p.path.name: p.group for p in pool_photos()}
    for a, b in (("left.jpg", "right.jpg"), ("aero1.jpg", "aero3.jpg"), ("text_defocus.jpg", "text_motion.jpg")):
        assert group[a] == group[b]


def test_tuxpaint_templates_are_never_pretrained_on():
    if not TEMPLATES.is_dir():
        pytest.skip("tuxpaint-data not installed: run `bash scripts/setup.sh` as root")
    templates = set(TEMPLATES.glob("*.jpg"))
    assert len(templates) == 19
    assert templates <= set(available_photos(pool="eval"))
    assert not templates & set(available_photos(pool="pretrain"))


def test_conversion_records_the_content_hash_of_every_stored_image(real_photos, tmp_path):
    out = tmp_path / "photos"
    assert run_cli("photos", str(out), "--workers", "2", "--no-decode-check", "--no-progress").returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    lines = (out / HASHES).read_text().splitlines()
    assert manifest["content_hashes"]["count"] == len(lines) == manifest["totals"]["samples"]
    pretrain = available_photos(pool="pretrain")
    assert read_content_hashes(out) == {_blake(p) for p in pretrain}  # the file bytes, hashed in this test
    assert not read_content_hashes(out) & {_blake(p) for p in available_photos(pool="eval")}
    (out / HASHES).unlink()  # lost: the same command rebuilds it from the tars
    assert run_cli("photos", str(out), "--workers", "1", "--no-decode-check", "--no-progress").returncode == 0
    assert (out / HASHES).read_text().splitlines() == lines


def test_copy_paste_refuses_another_recipe_before_writing_anything(tmp_path, real_stamps_or_skip):
    from shards.convert import ConvertOptions

    out = tmp_path / "cp"
    opts = ConvertOptions(workers=1, progress=False)
    build(out, train=3, test=2, size=48, options=opts, stamp_root=real_stamps_or_skip)
    before = {p: p.read_bytes() for p in sorted((out / "source").rglob("*")) if p.is_file()}
    for changed in ({"size": 64}, {"train": 4}, {"seed": 1}):
        args = {"train": 3, "test": 2, "size": 48, **changed}
        with pytest.raises(ValueError, match="--overwrite"):
            build(out, **args, options=opts, stamp_root=real_stamps_or_skip)
        assert {p: p.read_bytes() for p in sorted((out / "source").rglob("*")) if p.is_file()} == before
    assert not list(out.glob(".source.*"))
    build(out, train=3, test=2, size=48, options=opts, stamp_root=real_stamps_or_skip)  # the same recipe: fine
    for train, test in ((0, 0), (-5, 2)):
        with pytest.raises(ValueError, match="counts must be"):
            build(tmp_path / "bad", train=train, test=test, options=opts, stamp_root=real_stamps_or_skip)
    assert not (tmp_path / "bad").exists()


def test_copy_paste_cli_gives_one_line_for_bad_counts(tmp_path, real_stamps_or_skip):
    for counts in (["--train", "0", "--test", "0"], ["--train", "-5"]):
        run = run_cli("copy-paste", str(tmp_path / "x"), *counts, "--no-progress")
        assert run.returncode == 1 and run.stderr.strip().count("\n") == 0 and "counts must be" in run.stderr


@pytest.fixture
def real_stamps_or_skip() -> Path:
    from shards.photos import TUXPAINT_STAMPS

    if not TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed: run `bash scripts/setup.sh` as root")
    return TUXPAINT_STAMPS
