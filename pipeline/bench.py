"""Loader throughput benchmark: ``python -m pipeline.bench --help``.

Measures, over ``--steps`` batches after ``--warmup`` batches (worker start-up excluded): the
images, views and compressed image bytes those batches hold, their bad samples and recovered
samples (damaged JPEGs decoded by the lenient fallback), wall and CPU seconds (process plus
DataLoader workers), and the rates that are their quotients: images/s, views/s, MB/s, cores busy. Every run appends one JSON line
to ``--json-out``. ``--vs reference`` runs the per-sample PIL pipeline of the public CLoVE/PixPro
code (:mod:`pipeline.reference`) under the same conditions and prints the ratio;
``--decode-only`` measures plain full-size libjpeg-turbo decoding of the same files with the same
workers (the ceiling a geometry-only loader is compared with).

Examples::

    python -m pipeline.bench --shards data/shards/photos --backend cpu --recipe clove \\
        --batch-size 64 --steps 20 --workers 2 --vs reference
    python -m pipeline.bench --shards data/shards/photos --backend cpu --recipe two-view --decode-only
    python -m pipeline.bench --shards DIR --backend torch --device cuda --batch-size 256 --with-m
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from pipeline.bench_measure import mean_image_bytes
from pipeline.bench_runners import run_backend, run_decode_only, run_reference
from pipeline.config import LoaderConfig
from pipeline.source import list_shards
from pipeline.views import RECIPES

# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


DESCRIPTION = (
    "Measure loader throughput (images/s, views/s, MB/s, bad samples, CPU use) on WebDataset shards, optionally "
    "against the public-code-style reference pipeline or plain decoding."
)
EXAMPLES = """examples:
  # CLoVE recipe, cpu backend against the public-code-style reference, same shards/workers/batch
  python -m pipeline.bench --shards data/shards/photos --backend cpu --recipe clove \\
      --batch-size 64 --steps 20 --workers 2 --vs reference
  # geometry only (two views, no photometric) against plain full-size decoding of the same files
  python -m pipeline.bench --shards data/shards/photos --backend cpu --recipe two-view --decode-only
  # the torch backend on a GPU: nvJPEG decode, batched resampling, M on the device
  python -m pipeline.bench --shards DIR --backend torch --decode gpu --device cuda \\
      --batch-size 256 --steps 50 --workers 8 --with-m

Results are printed and appended as JSON lines to --json-out (one line per measured run)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with every option's default, description and examples kept as written."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's command line (argparse error for a value or combination it cannot run)."""
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.bench", description=DESCRIPTION, formatter_class=HelpFormatter, epilog=EXAMPLES
    )
    ap.add_argument("--shards", required=True, help="shard directory, glob, brace pattern or URL")
    ap.add_argument("--backend", choices=["cpu", "torch", "dali"], default="cpu", help="loader backend to measure")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="clove", help="view recipe")
    ap.add_argument("--batch-size", type=int, default=64, help="images per batch")
    ap.add_argument("--steps", type=int, default=20, help="timed batches")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches first (worker start-up, caches)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    ap.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where batches end up (and where the torch backend computes)",
    )
    ap.add_argument(
        "--decode",
        choices=["auto", "gpu", "cpu"],
        default="auto",
        help="torch backend: nvJPEG on the device (gpu) or libjpeg-turbo in workers (cpu)",
    )
    ap.add_argument(
        "--vs",
        choices=["reference"],
        default=None,
        help="also run the reference pipeline under the same conditions and print the ratio",
    )
    ap.add_argument(
        "--decode-only", action="store_true", help="also measure full-size decoding of the same files with the same workers"
    )
    ap.add_argument(
        "--with-m",
        action="store_true",
        help="also compute CLoVE's correspondence masks M (at the recipe's feature stride) per batch on the device "
        "(backend run only)",
    )
    ap.add_argument(
        "--m-threshold", type=float, default=0.7, help="M's centre-distance threshold in cell diagonals (CLoVE's t_pos)"
    )
    ap.add_argument(
        "--stream-only",
        action="store_true",
        help="torch backend: measure only what the workers hand the main process (raw batches: JPEG "
        "bytes with --decode gpu, pixels with --decode cpu), i.e. how fast the CPU side can feed the "
        "device step; runs without a GPU",
    )
    ap.add_argument("--no-photometric", action="store_true", help="geometry only (photometric augmentation off)")
    ap.add_argument(
        "--no-normalize",
        action="store_true",
        help="keep uint8 views (skip the float normalisation on --device; the reference always normalises)",
    )
    ap.add_argument("--json-out", default="runs/bench.jsonl", help="JSON-lines log; one line per run is appended")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = ap.parse_args(argv)
    for name in ("batch_size", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.workers < 0:
        ap.error("--warmup and --workers must not be negative")
    if args.stream_only and (args.backend != "torch" or args.with_m):
        ap.error("--stream-only measures the torch backend's workers: use it with --backend torch, without --with-m")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, print and log the requested measurements; the exit status (2 for a usage or setup error)."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    try:
        list_shards(args.shards)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = (args.steps + args.warmup) * args.batch_size
    cfg = LoaderConfig(
        shards=args.shards,
        backend=args.backend,
        recipe=args.recipe,
        batch_size=args.batch_size,
        num_workers=args.workers,
        samples_per_epoch=max(total, args.batch_size),
        seed=args.seed,
        photometric=not args.no_photometric,
        decode=args.decode,
        normalize=not args.no_normalize,
        pin_memory=device.type == "cuda",
    )
    bytes_per_image = mean_image_bytes(args.shards)
    context = {
        "shards": args.shards,
        "recipe": args.recipe,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "workers": args.workers,
        "device": str(device),
        "photometric": not args.no_photometric,
        "normalize": not args.no_normalize,
        "decode": args.decode,
        "with_m": args.with_m,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if device.type == "cuda":
        context["gpu"] = torch.cuda.get_device_name(device)

    try:
        runs = [run_backend(args, cfg, device, bytes_per_image)]
        if args.vs == "reference":
            runs.append(run_reference(args, cfg, device, bytes_per_image))
        if args.decode_only:
            runs.append(run_decode_only(args, cfg, device, bytes_per_image))
    except (ValueError, ImportError) as e:  # configuration errors (e.g. decode=gpu without CUDA, no DALI)
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2

    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    main_rate = runs[0].images_per_s
    print(
        f"{args.recipe}, batch {args.batch_size}, {args.steps} steps after {args.warmup} warm-up, "
        f"{args.workers} workers, device {device}, {bytes_per_image / 1e3:.1f} kB/image"
    )
    print(
        f"{'run':<22}{'images':>7}{'images/s':>10}{'views/s':>10}{'MB/s':>8}{'cores':>7}{'bad':>6}"
        f"{'recov':>6}  vs {runs[0].label}"
    )
    with out.open("a") as f:
        for r in runs:
            s = r.summary()
            s["first_run_speedup"] = main_rate / r.images_per_s if r.images_per_s else None
            bad = "-" if s["bad_samples"] is None else s["bad_samples"]
            recovered = "-" if s["recovered_samples"] is None else s["recovered_samples"]
            ratio = f"{r.images_per_s / main_rate:.2f}x" if r is not runs[0] else "1.00x"
            mb = f"{s['mb_per_s']:.1f}" + ("~" if r.bytes_estimated else "")
            print(
                f"{r.label:<22}{s['images']:>7}{s['images_per_s']:>10.1f}{s['views_per_s']:>10.1f}{mb:>8}"
                f"{s['cpu_cores_busy']:>7.2f}{bad!s:>6}{recovered!s:>6}  {ratio}"
            )
            f.write(json.dumps({**context, "backend": args.backend, **s}) + "\n")
    for r in runs[1:]:
        ratio = main_rate / r.images_per_s
        note = f" ({100 * ratio:.0f}% of decode-only)" if r.label == "decode-only" else ""
        print(f"images/s ratio {runs[0].label} / {r.label} = {ratio:.2f}{note}")
    if args.with_m and "m_matches_per_batch" in runs[0].extra:
        print(
            f"M: {runs[0].extra['m_pairs_per_batch']} view pairs per batch, "
            f"{runs[0].extra['m_matches_per_batch']} matching cell pairs per batch on average"
        )
    if any(r.bytes_estimated for r in runs):
        print("~: MB/s from the mean image size of the shards (that loader does not count the bytes it reads)")
    print(f"appended {len(runs)} line(s) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
