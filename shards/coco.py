"""Source for ``python -m shards coco``: COCO images with their annotations as given.

Every image listed in the annotation file becomes a sample, with or without annotations (dense
self-supervised pretraining uses all of COCO; ``image_info_*.json`` files with no annotations at
all work too). The sample's ``.json`` holds the image's ``id``, ``file_name``, ``width``,
``height`` and its ``annotations`` as in the file, except that polygon segmentations are converted
to compressed RLE, and annotations with invalid RLE or polygons or a negative or degenerate box are
dropped and counted in the manifest (:mod:`shards.coco_records`). A ``file_name`` leaving
``--images`` is refused (skipped, reason ``outside-images``); a malformed record stops the
conversion with one line naming it.
With ``--keypoints person_keypoints_*.json`` the person annotations carry their keypoints: an
annotation present in both files (same id) is taken from the keypoints file, which holds the same
fields plus ``keypoints``/``num_keypoints``. Categories (with keypoint names and skeleton) go into
the manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shards.coco_records import OUTSIDE, AnnotationSkips, check_structure, clean_annotation, leaves_root
from shards.convert import Source
from shards.folder import stat_item
from shards.plan import DUPLICATE, Item, Skip, dedupe_keys, sanitize_key


def load_coco(path: Path) -> dict:
    """The parsed annotation file; ValueError when it is unreadable or has no ``images`` list."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read COCO annotations ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO annotation file (no 'images' list)")
    return data


def _merge_categories(base: list[dict], more: list[dict]) -> list[dict]:
    by_id = {c["id"]: dict(c) for c in base}
    for c in more:
        by_id[c["id"]] = {**by_id.get(c["id"], {}), **c}
    return [by_id[k] for k in sorted(by_id)]


def scan_coco(
    images: str | os.PathLike,
    annotations: str | os.PathLike,
    keypoints: str | os.PathLike | None = None,
    *,
    split: str | None = None,
) -> Source:
    """List the images of a COCO annotation file; the split defaults to the images folder name."""
    image_dir = Path(images).resolve()
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{images} is not a folder")
    split = split or sanitize_key(image_dir.name)
    data = load_coco(Path(annotations))
    check_structure(data, Path(annotations))
    anns: dict[int, dict] = {}  # annotation id -> annotation, in file order
    for a in data.get("annotations") or []:
        anns[a["id"]] = a
    categories = data.get("categories") or []
    info = {"images": str(image_dir), "annotations": str(Path(annotations).resolve())}
    if keypoints is not None:
        kp = load_coco(Path(keypoints))
        check_structure(kp, Path(keypoints))
        for a in kp.get("annotations") or []:
            anns[a["id"]] = a  # same annotation with keypoints added, or a new one
        categories = _merge_categories(categories, kp.get("categories") or [])
        info["keypoints"] = str(Path(keypoints).resolve())

    sizes = {
        img.get("id"): (img["height"], img["width"])
        for img in data["images"]
        if isinstance(img.get("width"), int) and isinstance(img.get("height"), int) and img["width"] > 0 and img["height"] > 0
    }
    listed = {img.get("id") for img in data["images"]}
    dropped = AnnotationSkips()
    per_image: dict[int, list[dict]] = {}
    for given in anns.values():
        a = given
        if given["image_id"] in listed:  # annotations of unlisted images are only counted, below
            a, reason, detail = clean_annotation(given, sizes.get(given["image_id"]))
            if a is None:
                dropped.add(given, reason, detail)
                continue
        per_image.setdefault(a["image_id"], []).append(a)
    skipped: list[Skip] = []
    items: list[Item] = []
    seen_ids: set = set()
    seen_files: set[str] = set()
    for img in sorted(data["images"], key=lambda im: (str(im.get("file_name")), str(im.get("id")))):
        name = str(img.get("file_name", ""))
        if leaves_root(name):
            skipped.append(Skip(name, OUTSIDE, f"file_name leaves --images {image_dir}; not read", split))
            continue
        if img.get("id") in seen_ids or name in seen_files:
            what = "image id" if img.get("id") in seen_ids else "file_name"
            skipped.append(Skip(name, DUPLICATE, f"{what} listed twice in the annotations", split))
            continue
        seen_ids.add(img.get("id"))
        seen_files.add(name)
        meta = {"id": img.get("id"), "file_name": name, "annotations": per_image.get(img.get("id"), [])}
        if "background" in img:  # the copy-paste set's background photo: evaluation clusters by it
            meta["background"] = img["background"]
        if img.get("width") and img.get("height"):  # declared size, checked against the bytes
            meta["width"], meta["height"] = img["width"], img["height"]
        key = sanitize_key(Path(name).with_suffix("").as_posix().replace("/", "__"))
        item = stat_item(image_dir / name, key, split, skipped, meta=meta, source=name)
        if item is not None:
            items.append(item)
    dedupe_keys(items)
    info["images_listed"] = len(data["images"])
    info["images_with_annotations"] = sum(1 for it in items if it.meta["annotations"])
    info["annotations_without_image"] = sum(len(v) for k, v in per_image.items() if k not in seen_ids)
    info.update(dropped.record())
    return Source("coco", {split: items}, skipped, None, info, {"categories": categories})
