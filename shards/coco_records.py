"""COCO annotation records checked before conversion: structure, paths, boxes, masks.

- A file whose structure is wrong (``annotations`` not a list, an image entry that is not an
  object, an annotation without ``id`` or ``image_id``) stops the conversion with one line naming
  the record (:func:`check_structure`).
- A ``file_name`` that leaves the images folder (``../x.jpg``, an absolute path) is refused:
  :func:`leaves_root` (the image is skipped with reason ``outside-images``).
- Each annotation is cleaned (:func:`clean_annotation`): polygon segmentations are converted to
  compressed RLE with pycocotools (the evaluator and every reader then see one format); invalid
  RLE, invalid polygons and negative or degenerate boxes drop the annotation, counted by reason
  in the manifest's ``source.annotations_skipped`` (with the first examples).
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from pathlib import Path
from typing import Any

OUTSIDE = "outside-images"
MAX_EXAMPLES = 20


def _what(value: Any) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text[:60]}{'...' if len(text) > 60 else ''})"


def check_structure(data: dict, path: Path) -> None:
    """One-line ValueError naming the first record whose structure is not COCO's."""
    for section in ("annotations", "categories"):
        if data.get(section) is not None and not isinstance(data[section], list):
            raise ValueError(f"{path}: '{section}' is {_what(data[section])}, expected a list of objects")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise ValueError(f"{path}: images[{i}] is {_what(img)}, expected an object with 'id' and 'file_name'")
    for i, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict):
            raise ValueError(f"{path}: annotations[{i}] is {_what(ann)}, expected an object")
        for key in ("id", "image_id"):
            if key not in ann:
                other = "image_id" if key == "id" else "id"
                raise ValueError(f"{path}: annotations[{i}] ({other} {ann.get(other)!r}) has no '{key}'")
    for i, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat:
            raise ValueError(f"{path}: categories[{i}] is {_what(cat)}, expected an object with an 'id'")


def leaves_root(file_name: str) -> bool:
    """Whether ``file_name`` points outside the images folder (absolute, or ``..`` above it)."""
    name = file_name.replace("\\", "/")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return True
    norm = posixpath.normpath(name)
    return norm == ".." or norm.startswith("../")


def _finite_numbers(values: Any) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def rle_string_counts(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``); None when malformed."""
    out: list[int] = []
    p, data = 0, counts.encode("ascii", "replace")
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                return None
            c = data[p] - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _rle_problem(seg: dict, size: tuple[int, int] | None) -> str | None:
    rle_size = seg.get("size")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(isinstance(s, int) and s > 0 for s in rle_size)):
        return f"size {rle_size!r} is not [height, width]"
    if size is not None and tuple(rle_size) != size:
        return f"size {rle_size} differs from the image's {list(size)}"
    counts = seg.get("counts")
    if isinstance(counts, list):
        runs = counts if all(isinstance(c, int) and not isinstance(c, bool) for c in counts) else None
    elif isinstance(counts, str):
        runs = rle_string_counts(counts)
    else:
        runs = None
    if runs is None or any(c < 0 for c in runs):
        return "counts are not run lengths"
    if sum(runs) != rle_size[0] * rle_size[1]:
        return f"run lengths sum to {sum(runs)}, not {rle_size[0]}x{rle_size[1]}"
    return None


def _polygons_to_rle(polygons: list, size: tuple[int, int]) -> dict:
    from pycocotools import mask as mask_utils

    h, w = size
    rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polygons], h, w))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def clean_annotation(ann: dict, size: tuple[int, int] | None) -> tuple[dict | None, str, str]:
    """``(annotation, "", "")`` -- polygons converted to RLE -- or ``(None, reason, detail)``.

    ``size``: the image's declared ``(height, width)``, None when the file does not say."""
    bbox = ann.get("bbox")
    if bbox is not None:
        if not (_finite_numbers(bbox) and len(bbox) == 4):
            return None, "invalid-box", f"bbox {bbox!r} is not 4 finite numbers"
        x, y, w, h = bbox
        if x < 0 or y < 0:
            return None, "negative-box", f"bbox {bbox} starts outside the image"
        if w <= 0 or h <= 0:
            return None, "degenerate-box", f"bbox {bbox} has no area"
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        problem = _rle_problem(seg, size)
        if problem:
            return None, "invalid-rle", problem
    elif isinstance(seg, list) and seg:
        if not all(_finite_numbers(p) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
            return None, "invalid-polygon", "a polygon is not an even list of at least 6 finite numbers"
        if size is None:
            return None, "polygon-without-size", "the image entry has no width/height to rasterise the polygon"
        ann = {**ann, "segmentation": _polygons_to_rle(seg, size)}
    elif seg is not None and seg != []:
        return None, "invalid-segmentation", f"segmentation is {_what(seg)}"
    return ann, "", ""


class AnnotationSkips:
    """Counts of dropped annotations by reason, with the first examples, for the manifest."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: list[dict] = []

    def add(self, ann: dict, reason: str, detail: str) -> None:
        """Count one dropped annotation."""
        self.counts[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"id": ann.get("id"), "image_id": ann.get("image_id"), "reason": reason, "detail": detail})

    def record(self) -> dict:
        """``{"annotations_skipped": {reason: n}, "annotations_skipped_examples": [...]}``."""
        return {"annotations_skipped": dict(sorted(self.counts.items())), "annotations_skipped_examples": self.examples}
