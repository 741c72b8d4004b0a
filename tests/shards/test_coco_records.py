"""The COCO converter on malformed files, escaping paths, polygons and invalid masks (issue 20, item 6).

Before: an annotation without ``id``, ``annotations`` given as a dict, or an image entry that is a
string ended in a traceback; ``file_name: ../../x.jpg`` was read from outside ``--images``;
polygons were stored as given (and crashed ``python -m evaluation``); invalid RLE and negative or
degenerate boxes were stored as given."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shards.coco_masks import decode_rle
from tests.shards.builders import manifest, pil_size, read_all, run_cli


@pytest.fixture()
def coco(tmp_path, small_jpegs):
    images = tmp_path / "imgs" / "val2017"
    images.mkdir(parents=True)
    entries = []
    for i, p in enumerate(small_jpegs[:3]):
        (images / f"{i}.jpg").write_bytes(p.read_bytes())
        w, h = pil_size(p.read_bytes())
        entries.append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h})
    (tmp_path / "imgs" / "secret.jpg").write_bytes(small_jpegs[3].read_bytes())  # beside, not inside, --images
    return tmp_path, images, entries


def _write(tmp_path, data) -> str:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return str(path)


def _run(tmp_path, images, data):
    ann = _write(tmp_path, data)
    return run_cli("coco", "--images", str(images), "--annotations", ann, str(tmp_path / "out"), "--no-progress")


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d["annotations"].append({"image_id": 0, "bbox": [1, 1, 2, 2]}), "annotations[1] (image_id 0) has no 'id'"),
        (lambda d: d.__setitem__("annotations", {"1": d["annotations"][0]}), "'annotations' is a dict"),
        (lambda d: d["images"].append("3.jpg"), "images[3] is a str"),
    ],
)
def test_malformed_records_are_one_line_naming_the_record(coco, mutate, words):
    tmp_path, images, entries = coco
    data = {"images": entries, "annotations": [{"id": 1, "image_id": 0, "bbox": [1, 1, 2, 2]}]}
    mutate(data)
    done = _run(tmp_path, images, data)
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0, done.stderr
    assert words in done.stderr


def test_file_names_leaving_the_images_folder_are_refused(coco):
    tmp_path, images, entries = coco
    escaping = [{"id": 10, "file_name": "../secret.jpg"}, {"id": 11, "file_name": str(tmp_path / "imgs" / "secret.jpg")}]
    done = _run(tmp_path, images, {"images": entries + escaping, "annotations": []})
    assert done.returncode == 0, done.stderr
    m = manifest(tmp_path / "out")
    outside = [s for s in m["skipped"] if s["reason"] == "outside-images"]
    assert sorted(s["source"] for s in outside) == sorted(e["file_name"] for e in escaping)
    assert len(read_all(tmp_path / "out", "val2017")) == 3


def test_polygons_become_rle_and_bad_masks_and_boxes_are_skipped_with_reasons(coco):
    tmp_path, images, entries = coco
    h, w = entries[0]["height"], entries[0]["width"]
    triangle = [10.0, 10.0, 40.0, 10.0, 10.0, 30.0]  # legs 30 and 20: area 300
    good = {"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 30, 20], "segmentation": [triangle]}
    bad = [
        {"id": 2, "image_id": 0, "bbox": [10, 10, 0, 5]},  # degenerate
        {"id": 3, "image_id": 0, "bbox": [-5, 10, 3, 5]},  # negative
        {"id": 4, "image_id": 0, "segmentation": {"size": [h, w], "counts": [3, 4]}},  # runs do not cover the image
        {"id": 5, "image_id": 0, "segmentation": {"size": [h, w], "counts": "!!!"}},  # not COCO's encoding
        {"id": 6, "image_id": 1, "segmentation": {"size": [h + 1, w], "counts": [(h + 1) * w]}},  # another size
    ]
    done = _run(tmp_path, images, {"images": entries, "annotations": [good, *bad]})
    assert done.returncode == 0, done.stderr
    metas = {json.loads(s["json"])["id"]: json.loads(s["json"]) for s in read_all(tmp_path / "out", "val2017").values()}
    (ann,) = metas[0]["annotations"]
    assert set(ann["segmentation"]) == {"size", "counts"} and isinstance(ann["segmentation"]["counts"], str)
    mask = decode_rle(ann["segmentation"])
    assert mask.shape == (h, w)
    ys, xs = np.nonzero(mask)
    assert abs(int(mask.sum()) - 300) <= 40  # the triangle's area, up to its rasterised edge
    assert (xs.min(), ys.min()) == (10, 10) and xs.max() <= 40 and ys.max() <= 30
    assert metas[1]["annotations"] == []
    source = manifest(tmp_path / "out")["source"]
    assert source["annotations_skipped"] == {"degenerate-box": 1, "invalid-rle": 3, "negative-box": 1}
    assert sorted(e["id"] for e in source["annotations_skipped_examples"]) == [2, 3, 4, 5, 6]
