"""``shards imagenet`` on mini ILSVRC-2012 trees built from real photos."""

import json
from pathlib import Path

import numpy as np
import pytest

from shards.convert import ConvertOptions, convert
from shards.imagenet import scan_imagenet
from tests.shards.builders import manifest, read_all, run_cli, webdataset_count, write_files

WNIDS = ["n01440764", "n02102040", "n03000134"]


def _tree(root: Path, jpegs: list[Path], png: Path, val: str) -> dict[str, tuple[bytes, str]]:
    """A mini ILSVRC tree; returns rel path -> (bytes, wnid). ``val``: per-class | flat."""
    files: dict[str, tuple[bytes, str]] = {}
    for c, wnid in enumerate(WNIDS):
        for i in range(2):
            files[f"train/{wnid}/{wnid}_{100 + i}.JPEG"] = (jpegs[2 * c + i].read_bytes(), wnid)
    # ImageNet really holds a PNG under .JPEG (n02105855_2933): stored as .png
    files[f"train/{WNIDS[1]}/{WNIDS[1]}_2933.JPEG"] = (png.read_bytes(), WNIDS[1])
    val_wnids = [WNIDS[2], WNIDS[0], WNIDS[1], WNIDS[0]]
    for n, wnid in enumerate(val_wnids, start=1):
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        rel = f"val/{wnid}/{name}" if val == "per-class" else f"val/{name}"
        files[rel] = (jpegs[6 + n].read_bytes(), wnid)
    write_files(root, {rel: data for rel, (data, _) in files.items()})
    return files


def _check_round_trip(out: Path, files: dict[str, tuple[bytes, str]], m: dict) -> None:
    assert m["classes"] == WNIDS  # class index = position of the sorted wnids
    for split in ("train", "val"):
        samples = read_all(out, split)
        expected = {rel: v for rel, v in files.items() if rel.startswith(split + "/")}
        assert len(samples) == len(expected) == m["splits"][split]["count"]
        assert webdataset_count(out, split) == len(expected)
        for key, s in samples.items():
            meta = json.loads(s["json"])
            data, wnid = expected[meta["source"]]
            ext = "png" if data.startswith(b"\x89PNG") else "jpg"
            assert s[ext] == data
            assert key == Path(meta["source"]).stem
            assert meta["wnid"] == wnid and int(s["cls"]) == WNIDS.index(wnid)
            assert meta["width"] > 0 and meta["height"] > 0


@pytest.mark.parametrize("val", ["per-class", "flat-devkit", "flat-csv"])
def test_imagenet_round_trip(val, tmp_path, small_jpegs, small_pngs):
    src = tmp_path / "ILSVRC2012"
    files = _tree(src, small_jpegs, small_pngs[0], "per-class" if val == "per-class" else "flat")
    val_truth = [wnid for rel, (_, wnid) in sorted(files.items()) if rel.startswith("val/")]
    if val == "flat-devkit":
        scipy_io = pytest.importorskip("scipy.io", reason="the devkit's meta.mat needs scipy")
        # ILSVRC2012_IDs deliberately not in wnid order: labels must go through meta.mat
        ids = {WNIDS[0]: 3, WNIDS[1]: 1, WNIDS[2]: 2}
        dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
        synsets = np.array([(ids[w], w, f"words {w}", 0) for w in WNIDS], dtype=dt)
        data = src / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        scipy_io.savemat(str(data / "meta.mat"), {"synsets": synsets})
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in val_truth))
    elif val == "flat-csv":
        rows = [f"ILSVRC2012_val_{n:08d},{w} 10 20 30 40" for n, w in enumerate(val_truth, 1)]
        (src / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows))
    out = tmp_path / "out"
    m = convert(scan_imagenet(src), out, ConvertOptions(max_count=2, workers=1, progress=False))
    _check_round_trip(out, files, m)
    assert m["totals"]["formats"] == {"jpeg": 10, "png": 1}


def test_flat_val_without_labels_is_a_clear_error(tmp_path, small_jpegs, small_pngs):
    src = tmp_path / "ILSVRC2012"
    _tree(src, small_jpegs, small_pngs[0], "flat")
    run = run_cli("imagenet", str(src), str(tmp_path / "out"))
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "--devkit" in run.stderr


def test_val_image_of_unknown_class_is_skipped(tmp_path, small_jpegs, small_pngs):
    src = tmp_path / "ILSVRC2012"
    _tree(src, small_jpegs, small_pngs[0], "per-class")
    write_files(src, {"val/n09999999/ILSVRC2012_val_00000099.JPEG": small_jpegs[0].read_bytes()})
    out = tmp_path / "out"
    run = run_cli("imagenet", str(src), str(out), "--workers", "1", "--no-progress")
    assert run.returncode == 0, run.stderr
    m = manifest(out)
    assert m["skipped"] == [
        {
            "split": "val",
            "source": "val/n09999999/ILSVRC2012_val_00000099.JPEG",
            "reason": "unknown-class",
            "detail": "wnid n09999999 is not a train class",
        }
    ]
    assert m["splits"]["val"]["count"] == 4 and "unknown-class 1" in run.stdout
