"""COCO instance masks as RLE, and what dense evaluation derives from them.

Pure functions over numpy arrays and COCO annotation dicts (pycocotools' compressed RLE, with
``counts`` as a str so that it survives JSON). Used by the copy-paste builder to write
annotations and by the evaluator to rebuild per-pixel labels from shards.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict:
    """Boolean ``[H, W]`` mask -> COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE, compressed (``counts`` str or bytes) or uncompressed (list) -> bool ``[H, W]``."""
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    elif isinstance(counts, str):
        rle = {"size": rle["size"], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO box ``[x, y, w, h]`` (pixel-edge coordinates) of a boolean ``[H, W]`` mask; zeros if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def semantic_mask(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """Per-pixel category ids ``[H, W]`` (int32; 0 = background) from RLE annotations.

    Annotations are painted in list order, so with overlapping masks the later one wins (the
    copy-paste set stores *visible* masks, which do not overlap).
    """
    out = np.zeros((height, width), dtype=np.int32)
    for ann in annotations:
        m = decode_rle(ann["segmentation"])
        if m.shape != (height, width):
            raise ValueError(f"annotation {ann.get('id')}: mask {m.shape} does not match image {(height, width)}")
        out[m] = int(ann["category_id"])
    return out


def image_label(annotations: list[dict]) -> int:
    """Image-level class: category of the annotation with the largest ``area`` (first on ties); 0 if none."""
    if not annotations:
        return 0
    best = max(annotations, key=lambda a: (float(a["area"]), -annotations.index(a)))
    return int(best["category_id"])
