"""What the loader benchmark measures (:mod:`pipeline.bench`): one :class:`Measurement` per run,
over ``steps`` batches after ``warmup`` ones: images, views, image bytes, bad and recovered samples,
wall and CPU seconds (process plus loader workers) and their quotients; the optional ``--with-m``
count of CLoVE's correspondence masks on the device."""

from __future__ import annotations

import argparse
import tarfile
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

from pipeline.batch import ViewBatch
from pipeline.geometry import correspondence_mask
from pipeline.source import list_shards
from pipeline.views import student_teacher_pairs
from shards.extensions import IMAGE_EXTS


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
    batch on the device, at feature ``stride`` and centre-distance ``threshold``; counts accumulate
    on the device and are read once at the end."""

    def __init__(self, sizes: list[int], num_global: int, device: torch.device, stride: int, threshold: float):
        self.pairs = student_teacher_pairs(num_global, len(sizes))
        self.stride, self.threshold = stride, threshold
        self.grids = [(max(1, sz // stride),) * 2 for sz in sizes]
        self.total = torch.zeros((), dtype=torch.int64, device=device)
        self.batches = 0

    def __call__(self, batch: ViewBatch) -> None:
        """Add the matches of every view pair of ``batch`` to the device total."""
        m = batch.matrices
        for s, t in self.pairs:
            mask = correspondence_mask(m[:, s], m[:, t], self.grids[s], self.stride, self.grids[t], self.stride, self.threshold)
            self.total += mask.sum()
        self.batches += 1

    def result(self) -> dict:
        """View pairs per batch and mean matching cell pairs per batch (reads the device total once)."""
        return {"m_pairs_per_batch": len(self.pairs), "m_matches_per_batch": round(int(self.total) / max(1, self.batches), 1)}


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
