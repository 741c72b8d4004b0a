"""``shards verify``: passes on a good conversion, fails with one line on each kind of damage."""

import json
import shutil
from pathlib import Path

import pytest

from shards.verify import verify
from tests.shards.builders import convert_class_folders, run_cli, two_class_files


@pytest.fixture(scope="module")
def good(tmp_path_factory, small_jpegs, small_pngs):
    root = tmp_path_factory.mktemp("verify")
    convert_class_folders(root, {**two_class_files(small_jpegs[:8]), "c1/photo.png": small_pngs[0].read_bytes()}, max_count=3)
    return root / "out"


def _damaged(good: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(good, out)
    return out


def test_verify_passes_on_a_fresh_conversion(good):
    run = run_cli("verify", str(good), "--workers", "2", "--no-progress")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("verify: OK: train 9 in 3 shards")


def _flip_image_byte(out: Path) -> None:
    tar = out / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    data[512 + 700] ^= 0x55  # inside the first image
    tar.write_bytes(bytes(data))


def _shift_index(out: Path) -> None:
    idx = out / "train-000001.idx"
    lines = idx.read_text().splitlines()
    words = lines[1].split()
    words[1] = str(int(words[1]) + 512)
    idx.write_text("\n".join([lines[0], " ".join(words), *lines[2:]]) + "\n")


def _edit_manifest(out: Path, fn) -> None:
    m = json.loads((out / "manifest.json").read_text())
    fn(m)
    (out / "manifest.json").write_text(json.dumps(m))


def _rewrite_shard_with_bad_image(out: Path) -> None:
    """A consistent tar/index/manifest whose image data does not decode: only decoding sees it."""
    from shards.index import read_index
    from shards.writer import ShardWriter

    name = "train-000002.tar"
    samples = read_index(out / name.replace(".tar", ".idx"))
    raw = (out / name).read_bytes()
    writer = ShardWriter(out / name)
    for sample in samples:
        parts = [(m.ext, raw[m.offset : m.offset + m.size]) for m in sample]
        ext, image = parts[0]
        parts[0] = (ext, image[: len(image) // 2])  # cut short
        writer.add(sample[0].key, parts)
    stats = writer.finish()
    writer.commit()

    def fix(m):
        entry = m["splits"]["train"]["shards"][2]
        entry["bytes"], entry["sha256"] = stats.bytes, stats.sha256

    _edit_manifest(out, fix)


def _claim_99(m: dict) -> None:
    m["splits"]["train"]["shards"][0]["count"] = 99
    m["splits"]["train"]["count"] += 96
    m["totals"]["samples"] += 96


DAMAGE = {
    "flipped byte": (_flip_image_byte, "train-000000.tar: sha256 differs"),
    "missing shard": (lambda o: (o / "train-000001.tar").unlink(), "train-000001.tar: missing"),
    "index offset": (_shift_index, "train-000001.tar: member 0"),
    "stray shard": (
        lambda o: shutil.copy(o / "train-000000.tar", o / "train-000009.tar"),
        "train-000009.tar: shard file not listed",
    ),
    "shard count": (
        lambda o: _edit_manifest(o, lambda m: m["splits"]["train"]["shards"][0].update(count=99)),
        "split train: count 9 is not the sum of its shards",
    ),
    "consistent counts": (lambda o: _edit_manifest(o, _claim_99), "train-000000.tar: index lists 3 samples, manifest says 99"),
    "undecodable image": (_rewrite_shard_with_bad_image, "train-000002.tar: sample"),
    "no manifest": (lambda o: (o / "manifest.json").unlink(), "no manifest.json"),
    "no _info.json": (lambda o: (o / "_info.json").unlink(), "_info.json missing"),
    "stale _info.json": (lambda o: (o / "_info.json").write_text('{"splits": {}}'), "_info.json disagrees"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_verify_reports_damage_in_one_line(damage, good, tmp_path):
    out = _damaged(good, tmp_path)
    apply, expected = DAMAGE[damage]
    apply(out)
    ok, message = verify(out, workers=1, progress=False)
    assert not ok and expected in message and "\n" not in message, message
    run = run_cli("verify", str(out), "--workers", "1", "--no-progress")
    assert run.returncode == 1 and run.stdout.count("\n") == 1
    assert run.stdout.startswith("verify: FAILED: ")
