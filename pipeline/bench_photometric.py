"""Per-op timings of the two photometric implementations, each next to what it replaced:
``python -m pipeline.bench_photometric cpu`` (the cpu backend's OpenCV uint8 ops against the PIL ops
of the public CLoVE/PixPro pipeline, on a real photo) and ``python -m pipeline.bench_photometric
torch`` (the torch backend's fused batched ops against Kornia's ColorJitter)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pipeline.backends import photometric_cpu as pc
from pipeline.backends import photometric_gpu as pg


def cpu_main(argv: list[str] | None = None) -> None:
    """Time each op on a real photo against the PIL op the public code runs (ms per view)."""
    import torchvision.transforms.functional as TF
    from PIL import Image, ImageFilter

    from shards.photos import MISSING_HINT, available_photos

    ap = argparse.ArgumentParser(
        prog="python -m pipeline.bench_photometric cpu",
        description="Per-op cost of the cpu backend's photometric ops (OpenCV, uint8) next to the PIL ops "
        "of the public CLoVE/PixPro pipeline, on a real photo, one core, ms per view (best of --repeats).",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 96], help="view sides in pixels")
    ap.add_argument("--repeats", type=int, default=50, help="timed repetitions per op")
    args = ap.parse_args(argv)
    photos = available_photos((".jpg", ".jpeg"))
    if not photos:
        raise SystemExit(MISSING_HINT)

    def best_ms(fn: Callable[[], object]) -> float:
        fn()
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best * 1e3

    ops = [  # name, ours, PIL (through torchvision's functional API, as the public code calls it)
        ("brightness 1.3", lambda x: pc.adjust_brightness(x, 1.3), lambda im: TF.adjust_brightness(im, 1.3)),
        ("contrast 0.7", lambda x: pc.adjust_contrast(x, 0.7), lambda im: TF.adjust_contrast(im, 0.7)),
        ("saturation 1.2", lambda x: pc.adjust_saturation(x, 1.2), lambda im: TF.adjust_saturation(im, 1.2)),
        ("hue 0.08", lambda x: pc.adjust_hue(x, 0.08), lambda im: TF.adjust_hue(im, 0.08)),
        ("grayscale", pc.to_grayscale, lambda im: TF.rgb_to_grayscale(im, 3)),
        ("blur sigma 1.0", lambda x: pc.gaussian_blur(x, 1.0), lambda im: im.filter(ImageFilter.GaussianBlur(1.0))),
        ("blur sigma 2.0", lambda x: pc.gaussian_blur(x, 2.0), lambda im: im.filter(ImageFilter.GaussianBlur(2.0))),
        ("solarize", pc.solarize, lambda im: TF.solarize(im, 128)),
    ]
    photo = Image.open(photos[0]).convert("RGB")
    print(f"{photos[0].name}, one thread; ms per view, best of {args.repeats}")
    for size in args.sizes:
        im = photo.resize((size, size), Image.BILINEAR)
        x = np.ascontiguousarray(np.asarray(im))
        print(f"{size} px: {'op':<16}{'ours':>8}{'PIL':>8}{'PIL/ours':>10}")
        for name, ours, pil in ops:
            a, b = best_ms(lambda op=ours, x=x: op(x)), best_ms(lambda op=pil, im=im: op(im))
            print(f"{'':8}{name:<16}{a:>8.3f}{b:>8.3f}{b / a:>9.1f}x")


def _draw_clove_like(n: int, gen: torch.Generator) -> pg.PhotometricArrays:
    """Random parameters with CLoVE's global-view law, for the measurement below only."""

    def u(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    factors = torch.stack([u(0.6, 1.4), u(0.6, 1.4), u(0.8, 1.2), u(-0.1, 0.1)], dim=1)
    order = torch.argsort(torch.rand(n, 4, generator=gen), dim=1)
    blur = torch.where(torch.rand(n, generator=gen) < 0.5, u(0.1, 2.0), torch.zeros(n))
    return pg.PhotometricArrays(
        torch.rand(n, generator=gen) < 0.8,
        factors,
        order,
        torch.rand(n, generator=gen) < 0.2,
        blur,
        torch.rand(n, generator=gen) < 0.2,
    )


def torch_main(argv: list[str] | None = None) -> None:
    """Time the fused ops against Kornia's ColorJitter on the same batch (prints ms per batch)."""
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.bench_photometric torch",
        description="Measure the batched photometric ops (jitter only, and the full chain) against "
        "kornia.augmentation.ColorJitter on one random batch.",
    )
    ap.add_argument("--batch", type=int, default=64, help="views per batch (default 64)")
    ap.add_argument("--size", type=int, default=224, help="view side in pixels (default 224)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions (default 5)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen).mul_(255).to(dev)
    p = _draw_clove_like(args.batch, gen)
    off = torch.zeros_like
    jitter_only = pg.PhotometricArrays(p.jitter, p.factors, p.order, off(p.gray), torch.zeros(args.batch), off(p.solarize))

    def timed(fn: Callable[[], object]) -> float:
        """Best of ``repeats`` (robust to other load on the machine), in ms."""
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best * 1000

    print(f"batch {args.batch} x 3 x {args.size}^2 on {dev}, ms per batch (best of {args.repeats}):")
    print(f"  fused colour jitter (p=0.8, random order): {timed(lambda: pg.augment(x.clone(), jitter_only)):8.1f}")
    print(f"  fused full chain (jitter, gray, blur, solarize): {timed(lambda: pg.augment(x.clone(), p)):8.1f}")
    try:
        import kornia.augmentation as K
    except ImportError:
        print("  kornia not installed (an optional extra: pip install 'densessl[kornia]'): no comparison")
        return
    kj = K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8).to(dev)
    xs = x / 255
    print(f"  kornia ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8): {timed(lambda: kj(xs)):8.1f}")


def main(argv: list[str] | None = None) -> None:
    """``cpu ...`` or ``torch ...``: the named implementation's timings."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"cpu": cpu_main, "torch": torch_main}
    if not argv or argv[0] not in commands:
        raise SystemExit("usage: python -m pipeline.bench_photometric cpu|torch [--help]")
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
