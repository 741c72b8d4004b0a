"""A dense evaluation set from real pixels: real object cut-outs pasted onto real photos.

Objects are the PNG stamps of Debian's ``tuxpaint-stamps-default`` (photographs and drawings cut
out with an alpha channel); an object's category is its top-level folder (``animals``, ``food``,
``vehicles``, ...; ids 1..K in sorted order, 0 = background). Backgrounds are the real photos of
:func:`shards.photos.available_photos`. Everything is drawn from one seed, so a seed gives the
same images and annotations byte for byte.

Per image: a random square crop of a background photo resized to ``size``; then 3-6 objects
(``objects``), each scaled so its longer side is 20-55 % of the image (``scale``), flipped
horizontally with p=0.5, placed with its centre uniformly inside the image (it may be cut by the
border), alpha-blended over what is there. Later objects occlude earlier ones: a pixel belongs to
the last object whose alpha there is >= 0.5, or to the background. Annotations are the *visible*
masks (COCO compressed RLE via pycocotools), their boxes and areas; objects left with no visible
pixel are dropped (their blended edges stay in the picture, labelled background).

Train and test are disjoint in both stamps (per category, a seeded quarter of the stamps goes to
test; a category with one stamp only appears in train) and background photos: test backgrounds
come from the evaluation pool of :mod:`shards.photos`, train backgrounds from the pretraining
pool, so a probe must generalise to unseen objects on scenes no pretraining run saw.

The image-level label for kNN classification is the category of the largest visible object
(:func:`shards.coco_masks.image_label`).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from shards.coco_masks import encode_rle, mask_bbox
from shards.convert import ConvertOptions
from shards.photos import TUXPAINT_STAMPS, available_photos, pool_photos

RECIPE_FILE = "recipe.json"
RECIPE_KEYS = ("builder", "seed", "size", "counts")


@dataclass(frozen=True)
class Stamp:
    """One cut-out: its PNG file and its category (top-level stamp folder)."""

    path: Path
    category: str


@dataclass
class Composite:
    """One generated image with its visible instances, in paste order."""

    image: np.ndarray  # uint8 [S, S, 3]
    masks: list[np.ndarray] = field(default_factory=list)  # bool [S, S] visible mask per instance
    categories: list[int] = field(default_factory=list)  # category id per instance (1..K)
    stamps: list[str] = field(default_factory=list)  # stamp path per instance
    background: str = ""


def list_stamps(root: str | Path = TUXPAINT_STAMPS, min_side: int = 32) -> list[Stamp]:
    """Every PNG stamp under ``root/<category>/...`` with transparency and both sides >= ``min_side``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no stamps at {root}: install the Debian package tuxpaint-stamps-default (bash scripts/setup.sh as root)"
        )
    found = []
    for path in sorted(root.rglob("*.png")):
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA") or "transparency" in im.info
            if has_alpha and min(im.size) >= min_side:
                found.append(Stamp(path, path.relative_to(root).parts[0]))
    if not found:
        raise FileNotFoundError(f"no PNG stamps with an alpha channel under {root}")
    return found


def split_stamps(stamps: list[Stamp], seed: int, test_fraction: float = 0.25) -> dict[str, list[Stamp]]:
    """Disjoint train/test stamps: per category ``ceil(n * test_fraction)`` to test (none if n == 1)."""
    rng = random.Random(f"stamps-{seed}")
    out: dict[str, list[Stamp]] = {"train": [], "test": []}
    for cat in sorted({s.category for s in stamps}):
        group = sorted((s for s in stamps if s.category == cat), key=lambda s: str(s.path))
        rng.shuffle(group)
        n_test = math.ceil(len(group) * test_fraction) if len(group) > 1 else 0
        out["test"] += group[:n_test]
        out["train"] += group[n_test:]
    return out


def split_backgrounds(photos: list[Path]) -> dict[str, list[Path]]:
    """Test backgrounds from the evaluation pool, train backgrounds from the pretraining pool
    (``shards/photo_pools.tsv``): the probe is tested on scenes that pretraining never saw, and no
    scene group lies in both splits. Photos the pools file does not list (a caller's own) count as
    one scene each: every fourth in sorted order is a test background."""
    pool_of = {p.path: p.pool for p in pool_photos()}
    out: dict[str, list[Path]] = {"train": [], "test": []}
    for path in sorted(p for p in photos if p in pool_of):
        out["test" if pool_of[path] == "eval" else "train"].append(path)
    for i, path in enumerate(sorted(p for p in photos if p not in pool_of)):
        out["test" if i % 4 == 3 else "train"].append(path)
    return out


@cache
def _stamp_rgba(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGBA")


@cache
def _background(path: Path, short_side: int) -> Image.Image:
    """The photo as RGB with its short side reduced to ``short_side`` (decoding big JPEGs once)."""
    with Image.open(path) as im:
        im.draft("RGB", (short_side, short_side))  # JPEG: decode at reduced scale when possible
        im = im.convert("RGB")
    scale = short_side / min(im.size)
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    return im


def background_crop(path: Path, size: int, rng: random.Random) -> np.ndarray:
    """A random square crop (50-100 % of the short side) of the photo, resized to ``size``: uint8 ``[S, S, 3]``."""
    im = _background(path, 2 * size)
    side = rng.uniform(0.5, 1.0) * min(im.size)
    x0 = rng.uniform(0, im.width - side)
    y0 = rng.uniform(0, im.height - side)
    crop = im.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    return np.asarray(crop, dtype=np.uint8)


def compose(
    background: np.ndarray,
    stamps: list[Stamp],
    category_ids: dict[str, int],
    rng: random.Random,
    scale: tuple[float, float] = (0.2, 0.55),
) -> Composite:
    """Paste ``stamps`` in order onto ``background`` (uint8 ``[S, S, 3]``); returns image and visible masks."""
    size = background.shape[0]
    canvas = background.astype(np.float32)
    owner = np.full((size, size), -1, dtype=np.int32)  # index of the object seen at each pixel
    for index, stamp in enumerate(stamps):
        im = _stamp_rgba(stamp.path)
        longer = rng.uniform(*scale) * size
        factor = longer / max(im.size)
        w, h = max(1, round(im.width * factor)), max(1, round(im.height * factor))
        # Bilinear (antialiased when shrinking in Pillow): no ringing, so alpha stays 1 inside an object.
        im = im.resize((w, h), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(im, dtype=np.float32)
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        x0, y0 = round(cx - w / 2), round(cy - h / 2)
        # Intersection of the stamp rectangle with the canvas.
        ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
        if ax0 >= ax1 or ay0 >= ay1:
            continue
        part = arr[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
        alpha = part[..., 3:] / 255.0
        region = canvas[ay0:ay1, ax0:ax1]
        canvas[ay0:ay1, ax0:ax1] = region * (1 - alpha) + part[..., :3] * alpha
        owner[ay0:ay1, ax0:ax1][alpha[..., 0] >= 0.5] = index
    out = Composite(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    for index, stamp in enumerate(stamps):
        visible = owner == index
        if visible.any():
            out.masks.append(visible)
            out.categories.append(category_ids[stamp.category])
            out.stamps.append(str(stamp.path))
    return out


def iter_composites(
    split: str,
    count: int,
    stamps: list[Stamp],
    backgrounds: list[Path],
    category_ids: dict[str, int],
    size: int,
    seed: int,
    objects: tuple[int, int] = (3, 6),
) -> Iterator[Composite]:
    """``count`` composites of one split; image ``i`` depends only on ``(seed, split, i)``."""
    if not stamps or not backgrounds:
        raise ValueError(f"split {split}: no stamps or no background photos to draw from")
    for i in range(count):
        rng = random.Random(f"{seed}-{split}-{i}")
        bg = backgrounds[rng.randrange(len(backgrounds))]
        chosen = [stamps[rng.randrange(len(stamps))] for _ in range(rng.randint(*objects))]
        comp = compose(background_crop(bg, size, rng), chosen, category_ids, rng)
        comp.background = str(bg)
        yield comp


def coco_instances(composites: list[Composite], split: str, categories: list[str]) -> dict:
    """COCO instances dict (images, annotations with RLE visible masks, categories) for one split."""
    images, annotations = [], []
    for i, comp in enumerate(composites):
        h, w = comp.image.shape[:2]
        image_id = i + 1
        images.append(
            {"id": image_id, "file_name": f"{split}_{i:06d}.jpg", "width": w, "height": h, "background": comp.background}
        )
        for mask, cat, stamp in zip(comp.masks, comp.categories, comp.stamps):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": encode_rle(mask),
                    "area": int(mask.sum()),
                    "bbox": mask_bbox(mask),
                    "iscrowd": 0,
                    "stamp": stamp,
                }
            )
    return {
        "info": {"description": f"densessl copy-paste set, split {split}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "stamp"} for k, name in enumerate(categories)],
    }


def jpeg_bytes(image: np.ndarray, quality: int = 92) -> bytes:
    """uint8 ``[H, W, 3]`` -> JPEG bytes (deterministic for a given libjpeg)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_sources(
    work: str | Path,
    counts: dict[str, int],
    size: int = 192,
    seed: int = 0,
    stamp_root: str | Path = TUXPAINT_STAMPS,
    photos: list[Path] | None = None,
    progress: bool = True,
) -> dict[str, tuple[Path, Path]]:
    """Generate each split into ``work/<split>/*.jpg`` + ``work/instances_<split>.json`` and a
    semantic mask PNG per image in ``work/<split>_semantic/``. Returns ``{split: (image dir, json)}``."""
    from tqdm import tqdm

    stamps = list_stamps(stamp_root)
    categories = sorted({s.category for s in stamps})
    category_ids = {name: k + 1 for k, name in enumerate(categories)}
    stamp_split = split_stamps(stamps, seed)
    photo_split = split_backgrounds(available_photos() if photos is None else photos)
    work = Path(work)
    written = {}
    for split, count in counts.items():
        comps = list(
            tqdm(
                iter_composites(split, count, stamp_split[split], photo_split[split], category_ids, size, seed),
                total=count,
                desc=f"copy-paste {split}",
                disable=not progress,
            )
        )
        image_dir, mask_dir = work / split, work / f"{split}_semantic"
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        coco = coco_instances(comps, split, categories)
        for entry, comp in zip(coco["images"], comps):
            (image_dir / entry["file_name"]).write_bytes(jpeg_bytes(comp.image))
            semantic = np.zeros(comp.image.shape[:2], dtype=np.uint8)
            for mask, cat in zip(comp.masks, comp.categories):
                semantic[mask] = cat
            Image.fromarray(semantic).save(mask_dir / entry["file_name"].replace(".jpg", ".png"))
        ann_path = work / f"instances_{split}.json"
        ann_path.write_text(json.dumps(coco, sort_keys=True))
        written[split] = (image_dir, ann_path)
    return written


def _recorded_recipe(out: Path) -> dict | None:
    """What copy-paste set ``out`` holds: its manifest's recipe, else that of a finished ``source/``
    (an unfinished conversion), else ``{}`` for shards of unknown origin; None when ``out`` is new."""
    from shards.manifest import MANIFEST, read_manifest

    if (out / MANIFEST).is_file():
        recorded = read_manifest(out).get("source") or {}
        return {k: recorded.get(k) for k in RECIPE_KEYS}
    if (out / "source" / RECIPE_FILE).is_file():
        return json.loads((out / "source" / RECIPE_FILE).read_text())
    return {} if out.is_dir() and any(out.glob("*.tar")) else None


def build(
    out: str | Path,
    train: int = 1000,
    test: int = 1000,
    size: int = 192,
    seed: int = 0,
    options: ConvertOptions | None = None,
    stamp_root: str | Path = TUXPAINT_STAMPS,
    photos: list[Path] | None = None,
) -> dict:
    """Generate the set into ``out/source/`` and convert it with the COCO converter into
    ``out/train-*.tar`` and ``out/test-*.tar``; returns the shards' manifest.

    Nothing in ``out`` changes before the request is checked against what is there: another
    recipe (seed, size, counts) needs ``options.overwrite``. The sources are generated into a
    hidden folder and swapped in for ``out/source/`` only once complete."""
    from shards.coco import scan_coco
    from shards.convert import Source, convert

    if train < 0 or test < 0 or train + test == 0:
        raise ValueError(f"--train {train} --test {test}: counts must be >= 0, and not both 0")
    out = Path(out)
    options = options or ConvertOptions(seed=seed)
    counts = {split: n for split, n in (("train", train), ("test", test)) if n > 0}
    recipe = {"builder": "copy-paste", "seed": seed, "size": size, "counts": counts}
    recorded = _recorded_recipe(out)
    if recorded is not None and recorded != recipe and not options.overwrite:
        held = ", ".join(f"{k} {recorded[k]}" for k in RECIPE_KEYS[1:] if k in recorded) or "shards of unknown origin"
        raise ValueError(f"{out} holds another copy-paste set ({held}); pass --overwrite to replace it, or choose another OUT")
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".source.*"):  # of a killed run
        shutil.rmtree(leftover, ignore_errors=True)
    tmp, old, source = out / f".source.{os.getpid()}.tmp", out / f".source.{os.getpid()}.old", out / "source"
    write_sources(tmp, counts, size, seed, stamp_root, photos, options.progress)
    (tmp / RECIPE_FILE).write_text(json.dumps(recipe, sort_keys=True))
    if source.exists():
        os.replace(source, old)
    os.replace(tmp, source)
    shutil.rmtree(old, ignore_errors=True)
    sources = [scan_coco(source / split, source / f"instances_{split}.json", split=split) for split in counts]
    merged = Source("coco", {}, [], None, dict(recipe), sources[0].extra)
    for src in sources:
        merged.splits.update(src.splits)
        merged.skipped += src.skipped
        merged.info[next(iter(src.splits))] = src.info
    return convert(merged, out, options)
