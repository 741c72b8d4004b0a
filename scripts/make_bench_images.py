"""Make an ImageNet-like folder of JPEGs from the installed real photos, for benchmarks.

Each output is a random crop of a real photo (30-100 % of its area), resized so that its shorter
side is 333-500 px like ImageNet's typical images, and encoded at quality 95 (ImageNet averages ~110 KB; these
come out near 75-85 KB, printed at the end). Deterministic for a seed.

With ``--imagenet-sizes`` the sizes follow ImageNet-1k's distribution instead (most images 500 px
on the long side, the rest 200-1,200 px) at quality 98-99, about 115 kB each: the images of the
scale benchmark's ImageNet trees (:mod:`shards.imagenet_like`). Decoding costs more per image
there, so the recipe's ratio to decode-only is higher than on the default images (docs/scale.md).

    .venv/bin/python scripts/make_bench_images.py data/bench-images --count 2000 [--imagenet-sizes]
    .venv/bin/python -m shards folder data/bench-images data/shards/bench
"""

from __future__ import annotations

import argparse
import functools
import io
import random
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from shards import imagenet_like
from shards.photos import MISSING_HINT, available_photos


def _short_side_333_500(sources: list[Image.Image], rng: random.Random, quality: int, i: int) -> bytes:
    """JPEG ``i``: a 30-100 % crop of photo ``i`` (cycling), its shorter side resized to 333-500 px."""
    src = sources[i % len(sources)]
    w, h = src.size
    frac = rng.uniform(0.3, 1.0) ** 0.5
    cw, ch = max(16, int(w * frac)), max(16, int(h * frac))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    short = rng.randint(333, 500)
    s = short / min(cw, ch)
    img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _imagenet_sized(seed: int, i: int) -> bytes:
    """JPEG ``i`` at ImageNet's sizes and bytes (:func:`shards.imagenet_like.render`)."""
    return imagenet_like.render(f"{seed}/{i}")


def main() -> None:
    """Write ``--count`` JPEGs cropped and resized from the photos into ``out`` (see module doc)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--count", type=int, default=2000, help="number of JPEGs to write (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", type=int, default=95)
    ap.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="take the JPEG/PNG photos under this folder instead of the installed ones (a machine "
        "without the Debian photo packages, e.g. the photos that scripts/gpu_check.py --prepare packs)",
    )
    ap.add_argument(
        "--imagenet-sizes",
        action="store_true",
        help="draw sizes from ImageNet-1k's distribution (3 in 4 with a 500 px long side) and encode "
        "at quality 98-99 for its ~110 kB per image, as the scale benchmark's trees do "
        "(shards.imagenet_like); --quality is then ignored",
    )
    args = ap.parse_args()

    if args.photos is not None:
        candidates = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    else:
        candidates = available_photos()
    photos = [p for p in candidates if Image.open(p).mode in ("RGB", "RGBA", "P")]
    if not photos:
        raise SystemExit(f"no photos under {args.photos}" if args.photos is not None else MISSING_HINT)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.imagenet_sizes:
        imagenet_like.load_sources(photos)
        render = functools.partial(_imagenet_sized, args.seed)
    else:
        render = functools.partial(
            _short_side_333_500, [Image.open(p).convert("RGB") for p in photos], random.Random(args.seed), args.quality
        )
    total = 0
    for i in tqdm(range(args.count), desc="bench images", unit="img"):
        data = render(i)
        (args.out / f"img{i:06d}.jpg").write_bytes(data)
        total += len(data)
    print(f"wrote {args.count} JPEGs to {args.out}, {total / args.count / 1024:.0f} KB average")


if __name__ == "__main__":
    main()
