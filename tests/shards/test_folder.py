"""``shards folder`` and ``shards photos``: round trip, bad input, duplicates, classes."""

import json
from pathlib import Path

import pytest

from shards.convert import ConvertOptions, convert
from shards.folder import scan_folder
from shards.photos import available_photos
from tests.shards.builders import bad_inputs, manifest, read_all, run_cli, webdataset_count, write_files


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, small_jpegs, small_pngs):
    """SRC/<class>/... with every bad input, duplicate names and a few plain photos."""
    root = tmp_path_factory.mktemp("folder") / "src"
    cases = bad_inputs(small_jpegs[0], small_pngs[0])
    files = {f"odd/{name}": data for name, (data, _, _) in cases.items()}
    files.update(
        {
            "cats/dup.jpg": small_jpegs[1].read_bytes(),  # same name in two folders
            "dogs/dup.jpg": small_jpegs[2].read_bytes(),
            "dogs/same.jpg": small_jpegs[3].read_bytes(),  # same stem, two formats
            "dogs/same.png": small_pngs[1].read_bytes(),
            "dogs/deep/a.b.c.jpg": small_jpegs[4].read_bytes(),  # dots in the name
            "dogs/notes.txt": b"ignored: not an image name",
            "loose.jpg": small_jpegs[5].read_bytes(),  # no class folder
        }
    )
    write_files(root, files)
    expected = {f"odd/{name}": (ext, reason) for name, (_, ext, reason) in cases.items()}
    return root, files, expected


def test_bad_input_is_kept_or_skipped_and_counted(bad_folder, tmp_path):
    root, files, expected = bad_folder
    out = tmp_path / "out"
    m = convert(scan_folder(root, classes_from_dirs=True), out, ConvertOptions(max_count=3, workers=1, progress=False))
    samples = read_all(out, "train")
    by_source = {json.loads(s["json"])["source"]: s for s in samples.values()}
    skipped = {s["source"]: s["reason"] for s in m["skipped"]}
    for rel, (ext, reason) in expected.items():
        if reason is None:
            sample = by_source[rel]
            image_ext = [e for e in sample if e not in ("json", "cls")]
            assert image_ext == [ext], rel
            assert sample[ext] == files[rel], rel  # original bytes, never re-encoded
        else:
            assert rel not in by_source and skipped[rel] == reason, rel
    assert skipped["loose.jpg"] == "no-class"
    # duplicates by name are all kept, under distinct keys
    for rel in ("cats/dup.jpg", "dogs/dup.jpg", "dogs/same.jpg", "dogs/same.png", "dogs/deep/a.b.c.jpg"):
        assert by_source[rel][Path(rel).suffix[1:]] == files[rel]
    assert all("." not in key for key in samples)
    # classes = first folder below SRC, .cls matches the manifest's class list
    assert m["classes"] == ["cats", "dogs", "odd"]
    for s in samples.values():
        meta = json.loads(s["json"])
        assert m["classes"][int(s["cls"])] == meta["source"].split("/")[0] == meta["class"]
    # counts: manifest == what webdataset reads == kept files; skips counted by reason
    kept = sum(1 for _, reason in expected.values() if reason is None) + 5
    assert m["totals"]["samples"] == webdataset_count(out, "train") == len(samples) == kept
    n_skipped = sum(1 for _, reason in expected.values() if reason is not None) + 1
    assert m["totals"]["skipped"] == len(m["skipped"]) == n_skipped
    assert sum(m["totals"]["skipped_by_reason"].values()) == n_skipped
    assert m["source"]["ignored_files"] == 1
    assert m["totals"]["shards"] == len(list(out.glob("train-*.tar"))) > 2


def test_sample_json_records_size_format_and_mode(bad_folder, tmp_path):
    root, files, _ = bad_folder
    out = tmp_path / "out"
    convert(scan_folder(root), out, ConvertOptions(workers=1, progress=False))
    metas = {json.loads(s["json"])["source"]: json.loads(s["json"]) for s in read_all(out, "train").values()}
    assert metas["odd/cmyk.jpg"]["mode"] == "CMYK"
    assert metas["odd/gray.jpg"]["mode"] == "L"
    assert metas["odd/png_named.JPEG"]["format"] == "png"
    assert metas["odd/rotated.jpg"]["exif_orientation"] == 6
    assert (metas["odd/wide.jpg"]["width"], metas["odd/wide.jpg"]["height"]) == (20000, 20)


def test_cli_folder_prints_one_summary_line(bad_folder, tmp_path):
    root, _, _ = bad_folder
    out = tmp_path / "out"
    run = run_cli("folder", str(root), str(out), "--workers", "2", "--shard-size", "200k", "--no-progress")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shards: kept ")
    m = manifest(out)
    assert f"kept {m['totals']['samples']} images" in lines[0]
    for reason, n in m["totals"]["skipped_by_reason"].items():
        assert f"{reason} {n}" in lines[0]


def test_photos_command_builds_the_pretraining_pool_only(real_photos, tmp_path):
    out = tmp_path / "photos"
    run = run_cli("photos", str(out), "--workers", "1", "--no-decode-check", "--no-progress")
    assert run.returncode == 0, run.stderr
    m = manifest(out)
    pretrain = set(available_photos(pool="pretrain"))
    real_photos = [p for p in real_photos if p in pretrain]
    assert len(real_photos) < len(available_photos())  # the evaluation pool is left out
    assert m["totals"]["samples"] == len(real_photos) and m["totals"]["skipped"] == 0
    assert m["totals"]["shards"] > 1  # several shards so that loader workers all get data
    samples = read_all(out, "train")
    got = {json.loads(s["json"])["source"]: s for s in samples.values()}
    for path in real_photos:
        ext = "png" if path.suffix.lower() == ".png" else "jpg"
        assert got[str(path)][ext] == path.read_bytes()
