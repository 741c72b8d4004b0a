"""Conversion throughput of the folder and COCO converters on real photos.

``python -m shards bench`` (or ``python -m shards.bench``) lays out a synthetic dataset of
``--images`` files in a temporary folder - names in class folders for ``folder``, plus a COCO
annotation file with boxes, polygons and keypoints for ``coco`` - whose files are symbolic links
to the real photos installed on this machine (so the sizes and formats are real and it costs no
disk), converts it with each converter and prints images/s and MB/s of source bytes. Sources sit
in the page cache after the first pass (that is a warm-up run's job), so the figures measure the
converter (read, check, write), not the source disk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shards.convert import ConvertOptions, Source, convert
from shards.parallel import default_workers
from shards.probe import ProbeOptions


def build_folder(photos: list[Path], root: Path, n: int, classes: int = 10) -> int:
    """``root/class_k/img_XXXXXX.<suffix>`` links cycling over the photos; returns source bytes."""
    total = 0
    for i in range(n):
        photo = photos[i % len(photos)]
        target = root / f"class_{i % classes:02d}" / f"img_{i:06d}{photo.suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(photo, target)
        total += photo.stat().st_size
    return total


def build_coco(photos: list[Path], root: Path, n: int, seed: int = 0) -> tuple[Path, Path, int]:
    """A COCO-style images folder and instances json (every 5th image without annotations)."""
    from PIL import Image

    images = root / "train2017"
    images.mkdir(parents=True)
    sizes = {}
    for p in photos:
        with Image.open(p) as im:
            sizes[p] = im.size
    rng = random.Random(seed)
    entries, anns = [], []
    total = 0
    for i in range(n):
        photo = photos[i % len(photos)]
        name = f"{i + 1:012d}{photo.suffix.lower()}"
        os.symlink(photo, images / name)
        total += photo.stat().st_size
        w, h = sizes[photo]
        entries.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for _ in range(0 if i % 5 == 0 else rng.randint(1, 6)):
            x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            bw, bh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": rng.randint(1, 3),
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                    "keypoints": [v for k in range(17) for v in (x + k, y + k, 2)],
                    "num_keypoints": 17,
                }
            )
    cats = [{"id": k, "name": f"thing{k}", "supercategory": "thing"} for k in (1, 2, 3)]
    ann_file = root / "instances_train2017.json"
    ann_file.write_text(json.dumps({"images": entries, "annotations": anns, "categories": cats}))
    return images, ann_file, total


def _timed(label: str, source_fn: Callable[[], Source], out: Path, options: ConvertOptions, n: int, nbytes: int) -> None:
    t0 = time.perf_counter()
    source = source_fn()
    with contextlib.redirect_stdout(io.StringIO()):  # keep the report to our own lines
        manifest = convert(source, out, options)
    dt = time.perf_counter() - t0
    kept = manifest["totals"]["samples"]
    print(
        f"{label:7s} {kept}/{n} images, {nbytes / 1e6:.0f} MB in {dt:.2f} s: "
        f"{n / dt:.0f} images/s, {nbytes / dt / 1e6:.1f} MB/s "
        f"({manifest['totals']['shards']} shards)"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m shards bench``: time both converters on linked datasets; returns the exit code.
    With ``--scale SIZES``: the growth benchmark of :mod:`shards.bench_scale` instead."""
    if any(a == "--scale" or a.startswith("--scale=") for a in (sys.argv[1:] if argv is None else argv)):
        from shards.bench_scale import main as scale_main

        return scale_main(argv)
    parser = argparse.ArgumentParser(
        prog="python -m shards bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="images per dataset (default %(default)s)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="converter processes (default %(default)s)")
    parser.add_argument("--shard-size", type=int, default=64, help="MB per shard (default 64)")
    parser.add_argument(
        "--no-decode-check", action="store_true", help="measure the converters without the reduced-scale decode check"
    )
    parser.add_argument("--which", choices=("folder", "coco", "both"), default="both")
    parser.add_argument("--tmp", default=None, help="scratch folder (default: system temp)")
    parser.add_argument(
        "--scale",
        metavar="SIZES",
        help="instead: how conversion, verify and loader start-up grow with the dataset, on ImageNet-like "
        "trees of these sizes, e.g. 10k,30k,100k (python -m shards bench --scale 10k --help)",
    )
    args = parser.parse_args(argv)

    from shards.coco import scan_coco
    from shards.folder import scan_folder
    from shards.photos import MISSING_HINT, available_photos

    photos = available_photos()
    if not photos:
        print(f"shards bench: {MISSING_HINT}")
        return 1
    options = ConvertOptions(
        shard_size=args.shard_size << 20,
        workers=args.workers,
        probe=ProbeOptions(check_decode=not args.no_decode_check),
        progress=False,
    )
    print(
        f"shards bench: {len(photos)} real photos cycled to {args.images} images, "
        f"workers={args.workers}, shard size {args.shard_size} MB, "
        f"decode check {'off' if args.no_decode_check else 'on'}, cpus={os.cpu_count()}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="shards-bench-", dir=args.tmp))
    try:
        for p in photos:  # warm the page cache: measure the converter, not the first disk read
            p.read_bytes()
        if args.which in ("folder", "both"):
            nbytes = build_folder(photos, scratch / "folder", args.images)
            _timed(
                "folder",
                lambda: scan_folder(scratch / "folder", classes_from_dirs=True),
                scratch / "out-folder",
                options,
                args.images,
                nbytes,
            )
        if args.which in ("coco", "both"):
            images, ann, nbytes = build_coco(photos, scratch / "coco", args.images)
            _timed("coco", lambda: scan_coco(images, ann), scratch / "out-coco", options, args.images, nbytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
