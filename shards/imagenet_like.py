"""An ImageNet-layout tree of real-photo crops, for measuring conversion and loading at scale.

:func:`grow_pool` writes JPEGs into ``POOL/train/<wnid>/<wnid>_<i>.JPEG`` (1,000 class folders,
filled round-robin, so any prefix of the rounds has the same count in every class) and
``POOL/val/ILSVRC2012_val_<k>.JPEG`` (flat, numbered from 1). Each image is a random crop of one of
the installed real photos (30-100 % of its area), resized to a size drawn from ImageNet's
distribution and encoded with 4:2:0 chroma at quality 98 or 99: about 110 kB, as ImageNet's
training images are on average (these photos are smoother than ImageNet's, so it takes that
quality to reach its bytes per image; 90 gives 54 kB). The pool only grows: asking for 30 k after
10 k writes the next 20 k.

:func:`link_tree` then lays out a tree of one size the way ImageNet ships: the first ``per_class``
images of every class under ``train/``, the first ``n_val`` validation images under ``val/``, and
the devkit's ``ILSVRC2012_devkit_t12/data/`` with ``ILSVRC2012_validation_ground_truth.txt`` (one
ILSVRC2012_ID per validation image) and ``meta.mat`` (the synsets, whose ILSVRC2012_IDs are
deliberately not in wnid order, as in the real devkit). Files are hard links into the pool, so a
tree costs no disk.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from shards.imagenet import DEVKIT

NUM_CLASSES = 1000
VAL_FRACTION = 50_000 / 1_281_167  # ImageNet-1k's validation images per training image
SOURCE_MAX_SIDE = 1600  # real photos are shrunk to this once per process (the crops are smaller)

# ImageNet-1k train: about three in four images have a long side of exactly 500 px, in landscape
# 4:3 or 3:2 or portrait; the rest spread from ~200 to ~1,200 px.
_ASPECTS = ((4 / 3, 0.55), (3 / 2, 0.2), (1.0, 0.1), (16 / 9, 0.05), (5 / 4, 0.1))


def wnids(n: int = NUM_CLASSES) -> list[str]:
    """``n`` wnid-shaped class names (``n00000001`` ...), sorted."""
    return [f"n{i:08d}" for i in range(1, n + 1)]


def imagenet_size(rng: random.Random) -> tuple[int, int]:
    """An image size ``(W, H)`` drawn from ImageNet-1k's distribution (see the module docstring)."""
    aspect = rng.choices([a for a, _ in _ASPECTS], [w for _, w in _ASPECTS])[0]
    long_side = 500 if rng.random() < 0.75 else rng.randint(200, 1200)
    short_side = max(64, round(long_side / aspect))
    return (long_side, short_side) if rng.random() < 0.8 else (short_side, long_side)


_sources: list[np.ndarray] = []


def load_sources(paths: list[Path]) -> None:
    """Decode every real photo once per process, shrunk to :data:`SOURCE_MAX_SIDE`."""
    _sources.clear()
    for p in paths:
        with Image.open(p) as im:
            im.draft("RGB", (SOURCE_MAX_SIDE, SOURCE_MAX_SIDE))  # JPEG DCT scaling for the big ones
            im = im.convert("RGB")
            im.thumbnail((SOURCE_MAX_SIDE, SOURCE_MAX_SIDE))
            _sources.append(np.asarray(im))


def render(seed: str) -> bytes:
    """One JPEG: a random crop of a random source photo at an ImageNet-like size (``seed`` fixes it)."""
    rng = random.Random(seed)
    src = _sources[rng.randrange(len(_sources))]
    h, w = src.shape[:2]
    width, height = imagenet_size(rng)
    area = rng.uniform(0.3, 1.0) * w * h
    cw = min(w, round((area * width / height) ** 0.5))
    ch = min(h, round(cw * height / width))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = Image.fromarray(src[y0 : y0 + ch, x0 : x0 + cw]).resize((width, height), Image.BILINEAR, reducing_gap=2.0)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    out = io.BytesIO()
    crop.save(out, "JPEG", quality=rng.choice((98, 99)), subsampling=2)
    return out.getvalue()


def _write(job: tuple[str, str]) -> int:
    path, seed = job
    data = render(seed)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # a pool interrupted mid-write never holds a partial JPEG
    return len(data)


def pool_paths(pool: Path, per_class: int, n_val: int, num_classes: int = NUM_CLASSES) -> tuple[list[Path], list[Path]]:
    """The train files (round-robin over classes) and val files of a pool of that size."""
    classes = wnids(num_classes)
    train = [pool / "train" / w / f"{w}_{i:05d}.JPEG" for i in range(per_class) for w in classes]
    val = [pool / "val" / f"ILSVRC2012_val_{k:08d}.JPEG" for k in range(1, n_val + 1)]
    return train, val


def val_class(k: int, num_classes: int = NUM_CLASSES, seed: int = 0) -> int:
    """The class index of validation image ``k`` (fixed per ``k``, so every tree size agrees)."""
    return random.Random(f"val/{seed}/{k}").randrange(num_classes)


def grow_pool(
    pool: Path,
    per_class: int,
    n_val: int,
    photos: list[Path],
    *,
    num_classes: int = NUM_CLASSES,
    workers: int = 2,
    seed: int = 0,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Write the pool's missing files up to ``per_class`` per class and ``n_val`` validation images.

    Returns the bytes written. ``progress``: a callable taking the number of files just written.
    """
    train, val = pool_paths(pool, per_class, n_val, num_classes)
    jobs = [(str(p), f"{seed}/{p.name}") for p in train + val if not p.exists()]
    for w in wnids(num_classes):
        (pool / "train" / w).mkdir(parents=True, exist_ok=True)
    (pool / "val").mkdir(parents=True, exist_ok=True)
    written = 0
    if not jobs:
        return 0
    ctx = get_context("fork")
    with ctx.Pool(max(1, workers), initializer=load_sources, initargs=(photos,)) as procs:
        for n in procs.imap_unordered(_write, jobs, chunksize=64):
            written += n
            if progress is not None:
                progress(1)
    return written


def link_tree(pool: Path, dest: Path, per_class: int, n_val: int, *, num_classes: int = NUM_CLASSES, seed: int = 0) -> int:
    """Lay out an ImageNet tree of ``per_class`` images per class and ``n_val`` validation images
    at ``dest`` (hard links into ``pool``, plus the devkit's label files); returns its image bytes."""
    from scipy.io import savemat  # the devkit's meta.mat is a MATLAB file

    train, val = pool_paths(pool, per_class, n_val, num_classes)
    total = 0
    for src in train + val:
        target = dest / src.relative_to(pool)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(src, target)
        total += src.stat().st_size
    classes = wnids(num_classes)
    # the devkit numbers synsets in its own order, not by wnid: a fixed shuffle stands for it
    ids = list(range(1, num_classes + 1))
    random.Random(f"devkit/{seed}").shuffle(ids)
    data = dest / DEVKIT / "data"
    data.mkdir(parents=True, exist_ok=True)
    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array([(ids[i], w, f"class {w}", 0) for i, w in enumerate(classes)], dtype=dt)
    savemat(str(data / "meta.mat"), {"synsets": synsets})
    truth = "".join(f"{ids[val_class(k, num_classes, seed)]}\n" for k in range(1, n_val + 1))
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)
    return total
