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
import random
import sys
import tarfile
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

from pipeline.batch import ViewBatch
from pipeline.config import LoaderConfig
from pipeline.geometry import correspondence_mask
from pipeline.source import IMAGE_EXTS, RawSample, list_shards
from pipeline.stream_loader import StreamLoader
from pipeline.views import RECIPES, recipe_from_config

STRIDE = 32  # ResNet C5, CLoVE's correspondence stride
T_POS = 0.7  # CLoVE's threshold


@dataclass
class Measurement:
    """What one timed run consumed (counts) and took (seconds); every rate is a quotient of them."""

    label: str
    images: int  # images in the timed batches
    views: int  # views in the timed batches (images x views per image)
    bytes: float  # encoded image bytes read for them (see bytes_estimated)
    wall: float  # seconds
    cpu: float  # CPU seconds of this process and its workers
    bad_samples: int | None  # in the timed batches; None when the pipeline cannot count them
    recovered_samples: int | None = None  # damaged JPEGs decoded by the lenient fallback
    bytes_estimated: bool = False  # bytes = images x mean image size (the loader does not count them)
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """Images per second of wall time."""
        return self.images / self.wall

    def summary(self) -> dict:
        """Counts, seconds and rates as one JSON-ready dict, ``extra`` merged in."""
        return {
            "label": self.label,
            "images": self.images,
            "views": self.views,
            "bytes": round(self.bytes),
            "bytes_estimated": self.bytes_estimated,
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "images_per_s": self.images / self.wall,
            "views_per_s": self.views / self.wall,
            "mb_per_s": self.bytes / self.wall / 1e6,
            "cpu_cores_busy": self.cpu / self.wall,
            "bad_samples": self.bad_samples,
            "recovered_samples": self.recovered_samples,
            **self.extra,
        }


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of this process and its live children (DataLoader workers), user + system."""
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # a worker that just exited
            pass
    return total


def mean_image_bytes(shards: str, limit: int = 2000) -> float:
    """Mean compressed size of the image members of the shards (tar headers only, first ``limit``)."""
    sizes: list[int] = []
    for url in list_shards(shards):
        if "://" in url or url.startswith("pipe:"):
            continue
        with tarfile.open(url, "r|*") as tar:
            for m in tar:
                if m.isfile() and m.name.rsplit(".", 1)[-1].lower() in IMAGE_EXTS:
                    sizes.append(m.size)
                    if len(sizes) >= limit:
                        return sum(sizes) / len(sizes)
    return sum(sizes) / len(sizes) if sizes else float("nan")


def measure(
    label: str,
    batches: Iterator[tuple[int, object]],
    *,
    steps: int,
    warmup: int,
    device: torch.device,
    views_per_image: int,
    bytes_per_image: float,
    stats: Callable[[], dict[str, int]] | None = None,
    on_batch: Callable[[object], None] | None = None,
    on_end: Callable[[], dict] | None = None,
) -> Measurement:
    """Consume ``warmup`` then ``steps`` batches; time the latter (synchronising the device once).

    ``stats``: the loader's cumulative counters as of the last batch consumed; their change over
    the timed batches gives their bad/recovered samples and, when the loader counts
    ``image_bytes``, the exact bytes read (else ``images x bytes_per_image``, flagged estimated).
    """
    proc = psutil.Process()
    for _ in range(warmup):
        n, payload = next(batches)
        if on_batch:
            on_batch(payload)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    before = dict(stats()) if stats else {}
    cpu0, t0 = cpu_seconds(proc), time.perf_counter()
    images = 0
    for _ in range(steps):
        n, payload = next(batches)
        images += n
        if on_batch:
            on_batch(payload)
    extra = on_end() if on_end else {}  # may synchronise (e.g. reads the M counts)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(proc) - cpu0
    after = dict(stats()) if stats else {}

    def delta(key: str) -> int | None:
        return after[key] - before.get(key, 0) if key in after else None

    nbytes = delta("image_bytes")
    return Measurement(
        label,
        images,
        images * views_per_image,
        float(nbytes) if nbytes is not None else images * bytes_per_image,
        wall,
        cpu,
        delta("bad_samples"),
        delta("recovered_samples"),
        nbytes is None,
        extra,
    )


def endless(loader: Iterable[Any]) -> Iterator:
    """Iterate a loader across epochs (the bench never wants to run out)."""
    while True:
        yield from loader


class MaskCounter:
    """``--with-m``: CLoVE's correspondence masks (each global teacher view vs every other view) per
    batch on the device; counts accumulate on the device and are read once at the end."""

    def __init__(self, sizes: list[int], num_global: int, device: torch.device):
        self.pairs = [(s, t) for t in range(num_global) for s in range(len(sizes)) if s != t]
        self.grids = [(max(1, sz // STRIDE),) * 2 for sz in sizes]
        self.total = torch.zeros((), dtype=torch.int64, device=device)
        self.batches = 0

    def __call__(self, batch: ViewBatch) -> None:
        """Add the matches of every view pair of ``batch`` to the device total."""
        m = batch.matrices
        for s, t in self.pairs:
            mask = correspondence_mask(m[:, s], m[:, t], self.grids[s], STRIDE, self.grids[t], STRIDE, T_POS)
            self.total += mask.sum()
        self.batches += 1

    def result(self) -> dict:
        """View pairs per batch and mean matching cell pairs per batch (reads the device total once)."""
        return {"m_pairs_per_batch": len(self.pairs), "m_matches_per_batch": round(int(self.total) / max(1, self.batches), 1)}


# ---------------------------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------------------------


def timed_run(
    label: str,
    batches: Generator[tuple[int, object], None, None],
    args: argparse.Namespace,
    device: torch.device,
    views_per_image: int,
    bytes_per_image: float,
    **hooks: Any,
) -> Measurement:
    """:func:`measure` with the command line's ``--steps`` and ``--warmup``; ``batches`` is closed
    either way, which stops this run's workers before the next run is measured."""
    try:
        return measure(
            label,
            batches,
            steps=args.steps,
            warmup=args.warmup,
            device=device,
            views_per_image=views_per_image,
            bytes_per_image=bytes_per_image,
            **hooks,
        )
    finally:
        batches.close()


def run_backend(args: argparse.Namespace, cfg: LoaderConfig, device: torch.device, bytes_per_image: float) -> Measurement:
    """Time the configured backend's loader (only its workers' stream with ``--stream-only``)."""
    from pipeline.backends.torch_backend import build_torch_stream
    from pipeline.loader import build_loader

    recipe = recipe_from_config(cfg)
    counter = MaskCounter(recipe.sizes, recipe.num_global, device) if args.with_m else None
    label = f"{cfg.backend}" + (f"/decode={cfg.decode}" if cfg.backend == "torch" else "")
    if args.stream_only:  # the torch backend's workers -> main process, without the device step
        loader = build_torch_stream(cfg, gpu_decode=cfg.decode == "gpu", device=device)
        batches = ((len(raw.spans), raw) for raw in endless(loader))
        label += "/stream"
    else:
        loader = build_loader(cfg, device=device)
        batches = ((b.batch_size, b) for b in endless(loader))
    hooks = dict(stats=lambda: loader.stats, on_batch=counter, on_end=counter.result if counter else None)
    return timed_run(label, batches, args, device, len(recipe.views), bytes_per_image, **hooks)


def run_reference(args: argparse.Namespace, cfg: LoaderConfig, device: torch.device, bytes_per_image: float) -> Measurement:
    """Time the per-sample PIL reference pipeline (:mod:`pipeline.reference`) under the same conditions."""
    from pipeline.reference import build_reference_loader, iterate_reference

    recipe = recipe_from_config(cfg)
    loader = build_reference_loader(
        cfg.shards,
        recipe,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        seed=cfg.seed,
    )
    batches = iterate_reference(loader, device)
    return timed_run("reference", batches, args, device, len(recipe.views), bytes_per_image)


@dataclass
class DecodedCount:
    """What a decode-only worker ships: how many images it decoded (no pixels cross processes)."""

    batch_size: int
    stats: dict = field(default_factory=dict)


class DecodeOnly:
    """``process_batch`` that decodes every image at full size with libjpeg-turbo and drops it
    (counting what the loaders count: samples, bad and recovered samples, image bytes)."""

    def __call__(self, samples: list[RawSample], rngs: list[random.Random], counters: dict[str, int]) -> DecodedCount | None:
        """How many of ``samples`` decoded (None when none did); updates ``counters``."""
        from pipeline.decode import DecodeError, decode_image

        n = 0
        for s in samples:
            counters["image_bytes"] = counters.get("image_bytes", 0) + len(s.image or b"")
            try:
                if s.image is None:
                    raise DecodeError("no image")
                if decode_image(s.image, 8).recovered:
                    counters["recovered_samples"] = counters.get("recovered_samples", 0) + 1
                n += 1
            except DecodeError:
                counters["bad_samples"] = counters.get("bad_samples", 0) + 1
        counters["samples"] = counters.get("samples", 0) + n
        return DecodedCount(n) if n else None


def run_decode_only(args: argparse.Namespace, cfg: LoaderConfig, device: torch.device, bytes_per_image: float) -> Measurement:
    """Time full-size decoding of the same files with the same workers (:class:`DecodeOnly`)."""
    from pipeline.source import StreamPlan

    plan = StreamPlan(
        urls=tuple(list_shards(cfg.shards)),
        seed=cfg.seed,
        num_workers=max(1, cfg.num_workers),
        batch_size=cfg.batch_size,
        batches_per_rank=cfg.samples_per_epoch // cfg.batch_size,
        shuffle_buffer=cfg.shuffle_buffer,
    )
    loader = StreamLoader(plan, DecodeOnly(), lambda out: out, num_workers=cfg.num_workers)
    batches = ((b.batch_size, b) for b in endless(loader))
    return timed_run("decode-only", batches, args, torch.device("cpu"), 0, bytes_per_image, stats=lambda: loader.stats)


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
        help="also compute CLoVE's correspondence masks M (stride 32) per batch on the device (backend run only)",
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
