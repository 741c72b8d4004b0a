"""The runs the loader benchmark times side by side (:mod:`pipeline.bench`): the configured backend,
the per-sample PIL reference pipeline of the public code, and decode-only (full-size libjpeg-turbo
decoding of the same files with the same workers, the ceiling of a geometry-only loader)."""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field

import torch

from pipeline.bench_measure import MaskCounter, Measurement, endless, timed_run
from pipeline.config import LoaderConfig
from pipeline.source import RawSample, list_shards
from pipeline.stream_loader import StreamLoader
from pipeline.views import RECIPES, recipe_from_config


def run_backend(args: argparse.Namespace, cfg: LoaderConfig, device: torch.device, bytes_per_image: float) -> Measurement:
    """Time the configured backend's loader (only its workers' stream with ``--stream-only``)."""
    from pipeline.backends.torch_backend import build_torch_stream
    from pipeline.loader import build_loader

    recipe = recipe_from_config(cfg)
    stride = RECIPES[cfg.recipe].feature_stride
    counter = MaskCounter(recipe.sizes, recipe.num_global, device, stride, args.m_threshold) if args.with_m else None
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
