"""``shards coco`` on a mini COCO built from real photos: boxes, polygons, RLE, keypoints."""

import json
from pathlib import Path

import pytest

from tests.shards.builders import manifest, pil_size, read_all, run_cli, webdataset_count

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 18, "name": "dog", "supercategory": "animal"}]
KP_NAMES = ["nose", "left_eye", "right_eye"]


@pytest.fixture(scope="module")
def mini_coco(tmp_path_factory, small_jpegs, small_pngs):
    root = tmp_path_factory.mktemp("coco")
    images = root / "val2017"
    images.mkdir()
    photos = small_jpegs[:6]
    entries = []
    for i, p in enumerate(photos):
        name = f"{1000 + i:012d}.jpg"
        (images / name).write_bytes(p.read_bytes())
        w, h = pil_size(p.read_bytes())
        entries.append({"id": 1000 + i, "file_name": name, "width": w, "height": h, "license": 1})
    (images / "000000009999.jpg").write_bytes(small_pngs[0].read_bytes())  # PNG under .jpg
    w, h = pil_size(small_pngs[0].read_bytes())
    entries.append({"id": 9999, "file_name": "000000009999.jpg", "width": w, "height": h})
    # listed but not on disk
    entries.append({"id": 5000, "file_name": "000000005000.jpg", "width": 10, "height": 10})
    entries.append(dict(entries[0], id=7777))  # a second entry for the same file
    person = {
        "id": 1,
        "image_id": 1000,
        "category_id": 1,
        "bbox": [10.0, 20.0, 30.5, 40.0],
        "area": 1220.0,
        "iscrowd": 0,
        "segmentation": [[10.0, 20.0, 40.5, 20.0, 40.5, 60.0, 10.0, 60.0]],
    }
    dog = {
        "id": 2,
        "image_id": 1000,
        "category_id": 18,
        "bbox": [1.0, 2.0, 3.0, 4.0],
        "area": 12.0,
        "iscrowd": 0,
        "segmentation": [[1, 2, 4, 2, 4, 6], [1, 1, 2, 2, 1, 2]],
    }
    hc, wc = entries[1]["height"], entries[1]["width"]
    crowd = {
        "id": 3,
        "image_id": 1001,
        "category_id": 1,
        "bbox": [0, 0, 5, 5],
        "area": 25,
        "iscrowd": 1,
        # valid: the runs cover image 1001
        "segmentation": {"counts": [0, 5, 20, 5, hc * wc - 30], "size": [hc, wc]},
    }
    orphan = {
        "id": 4,
        "image_id": 424242,
        "category_id": 18,
        "bbox": [0, 0, 1, 1],
        "area": 1,
        "iscrowd": 0,
        "segmentation": [[0, 0, 1, 0, 1, 1]],
    }
    instances = {"images": entries, "annotations": [person, dog, crowd, orphan], "categories": CATEGORIES}
    person_kp = dict(person, keypoints=[12, 22, 2, 14, 24, 1, 0, 0, 0], num_keypoints=2)
    keypoints = {
        "images": entries,
        "annotations": [person_kp],
        "categories": [dict(CATEGORIES[0], keypoints=KP_NAMES, skeleton=[[1, 2], [1, 3]])],
    }
    ann = root / "instances_val2017.json"
    ann.write_text(json.dumps(instances))
    kp = root / "person_keypoints_val2017.json"
    kp.write_text(json.dumps(keypoints))
    return images, ann, kp, instances, person_kp, crowd, dog


def _without_segmentation(ann: dict) -> dict:
    return {k: v for k, v in ann.items() if k != "segmentation"}


def _convert(images, ann, out, *extra):
    source = ("--images", str(images), "--annotations", str(ann))
    run = run_cli("coco", *source, str(out), "--max-count", "2", "--workers", "2", "--no-progress", *extra)
    assert run.returncode == 0, run.stderr
    return run


def test_coco_round_trip_with_keypoints(mini_coco, tmp_path):
    images, ann, kp, instances, person_kp, crowd, dog = mini_coco
    out = tmp_path / "out"
    _convert(images, ann, out, "--keypoints", str(kp))
    m = manifest(out)
    samples = read_all(out, "val2017")
    assert len(samples) == m["splits"]["val2017"]["count"] == webdataset_count(out, "val2017") == 7
    by_id = {}
    for key, s in samples.items():
        meta = json.loads(s["json"])
        by_id[meta["id"]] = meta
        assert "cls" not in s  # COCO is multi-label: no .cls
        ext = "png" if meta["id"] == 9999 else "jpg"
        assert s[ext] == (images / meta["file_name"]).read_bytes()
        assert key == Path(meta["file_name"]).stem
        entry = next(e for e in instances["images"] if e["id"] == meta["id"])
        assert (meta["width"], meta["height"]) == (entry["width"], entry["height"])
        assert "stored_size" not in meta
    # annotations as given, polygons as RLE; the person one carries its keypoints
    assert [_without_segmentation(a) for a in by_id[1000]["annotations"]] == [
        _without_segmentation(person_kp),
        _without_segmentation(dog),
    ]
    assert all(set(a["segmentation"]) == {"size", "counts"} for a in by_id[1000]["annotations"])
    assert by_id[1001]["annotations"] == [crowd]
    # images without annotations are kept, with an empty list
    assert [by_id[i]["annotations"] for i in (1002, 1003, 1004, 1005, 9999)] == [[]] * 5
    person_cat = next(c for c in m["categories"] if c["id"] == 1)
    assert person_cat["keypoints"] == KP_NAMES and person_cat["skeleton"] == [[1, 2], [1, 3]]
    assert {s["reason"] for s in m["skipped"]} == {"missing", "duplicate"}
    assert m["source"]["annotations_without_image"] == 1
    assert m["classes"] is None


def test_coco_without_keypoints_file_keeps_instances_as_given(mini_coco, tmp_path):
    images, ann, _, instances, _, _, _ = mini_coco
    out = tmp_path / "out"
    _convert(images, ann, out, "--split", "val")
    samples = read_all(out, "val")
    metas = {json.loads(s["json"])["id"]: json.loads(s["json"]) for s in samples.values()}
    given = [a for a in instances["annotations"] if a["image_id"] == 1000]
    kept = metas[1000]["annotations"]
    assert [_without_segmentation(a) for a in kept] == [_without_segmentation(a) for a in given]
    assert "keypoints" not in kept[0]
    assert manifest(out)["categories"] == CATEGORIES
