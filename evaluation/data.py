"""The dense evaluation set read back from shards: images, per-pixel labels, image labels.

Reads ``DIR/<split>-*.tar`` written by ``python -m shards copy-paste`` (or any COCO conversion
whose annotations carry RLE masks and whose images share one size), rebuilding each image's
semantic mask from its instance annotations.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.source import list_shards
from pipeline.tar_reader import TarReader
from shards.coco_masks import image_label, semantic_mask
from shards.content_hashes import content_hash


@dataclass
class DenseSplit:
    """One split in memory. ``images`` uint8 ``[N, 3, H, W]``, ``masks`` int64 ``[N, H, W]``
    (0 = background), ``labels`` int64 ``[N]`` (category of the largest object), ``keys``,
    ``backgrounds`` (the photo each image was pasted on, or its key when the set does not say),
    ``hashes`` (content hash of each stored image, :func:`shards.content_hashes.content_hash`)."""

    images: Tensor
    masks: Tensor
    labels: Tensor
    keys: list[str]
    backgrounds: list[str]
    hashes: list[str]

    def clusters(self) -> tuple[Tensor, list[str]]:
        """Cluster id per image ``[N]`` (one per background photo) and the photos in id order."""
        names = sorted(set(self.backgrounds))
        ids = {name: i for i, name in enumerate(names)}
        return torch.tensor([ids[b] for b in self.backgrounds]), names


def load_split(data_dir: str | Path, split: str, limit: int | None = None) -> DenseSplit:
    """Samples of ``split`` in key order (at most ``limit``), decoded, with masks from their RLE annotations."""
    samples = []
    for url in list_shards(str(Path(data_dir) / f"{split}-*.tar")):
        samples += list(_read_members(url))
    samples.sort(key=lambda s: s[0])
    samples = samples[:limit] if limit else samples
    if not samples:
        raise ValueError(f"no samples in the {split} shards of {data_dir}")
    images, masks, labels, keys, backgrounds, hashes = [], [], [], [], [], []
    for key, image_bytes, meta in samples:
        img = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
        if images and img.shape != images[0].shape:
            raise ValueError(
                f"{key}: image {img.shape[:2]} differs from {images[0].shape[:2]}; the evaluation set needs one image size"
            )
        anns = meta.get("annotations") or []
        images.append(img)
        masks.append(semantic_mask(anns, img.shape[0], img.shape[1]))
        labels.append(image_label(anns))
        keys.append(key)
        backgrounds.append(str(meta.get("background", key)))
        hashes.append(content_hash(image_bytes))
    return DenseSplit(
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(masks)).long(),
        torch.tensor(labels),
        keys,
        backgrounds,
        hashes,
    )


def _read_members(url: str) -> Iterator[tuple[str, bytes, dict]]:
    """``(key, image bytes, json meta)`` per sample; the json is read beside the image."""
    # read_shard hands out the image only, so read the tar directly for the metadata too.
    with open(url, "rb") as f:
        parts: dict[str, dict[str, bytes]] = {}
        reader = TarReader(f)
        for name in reader.members():
            stem, _, ext = Path(name).name.partition(".")
            parts.setdefault(stem, {})[ext.lower()] = reader.read()
    for key, p in parts.items():
        image = next((p[e] for e in ("jpg", "jpeg", "png", "webp") if e in p), None)
        if image is None or "json" not in p:
            raise ValueError(f"{url}: sample {key} lacks an image or its .json")
        yield key, image, json.loads(p["json"])
