"""Samples out of WebDataset tar shards: which shards a rank and a worker read, in which order, and
how they are cut into batches of stream positions.

Shards: a directory (every ``*.tar``/``*.tar.gz``/``*.tgz`` in it), a glob, a brace pattern
(``train-{000000..000146}.tar``, ``::`` joins several), or any URL WebDataset's ``gopen`` opens
(``pipe:aws s3 cp s3://b/x.tar -``, ``http://...``). A sample is the consecutive tar members that
share a key (path up to the first dot of the basename): ``<key>.jpg`` (any image extension),
optional ``<key>.cls`` (an int as text) and ``<key>.json``.

Epochs (one stream per *logical* DataLoader worker ``w`` of rank ``r``; ``W`` workers per rank):

* ``batches_per_rank=None`` — one exact pass: the shard list is shuffled with ``(seed, epoch)``
  (identically on every rank), rank ``r`` takes shards ``r::world_size``, worker ``w`` takes
  ``w::W`` of those, reads them through a shuffle buffer, and yields every sample once. Ranks and
  workers without a shard yield nothing (no hang), so the number of batches a rank yields is
  ``sum over its workers of ceil(samples of the worker / batch_size)`` (minus batches whose every
  sample was bad): well defined, but data dependent and possibly different across ranks — use it
  for evaluation, not for distributed training.
* ``batches_per_rank=n`` — cycled shards: the epoch's shard schedule is an endless sequence of
  permutations of *all* shards (a fresh one per cycle, from ``(seed, epoch, cycle)``, identical on
  every rank), dealt round robin to the ``world_size x W`` streams: stream ``r * W + w`` reads
  entries ``r * W + w``, ``+ world_size * W``, ... So every shard is read once before any is read
  twice (streams advance at the same pace: equal quotas, similar shards), an epoch of one
  dataset's worth of samples is a pass over it, and any number of shards serves any number of
  ranks x workers. Worker ``w`` yields exactly ``n // W + (w < n % W)`` batches, so every rank
  yields exactly ``n`` batches and none waits for another.

A batch is the next ``batch_size`` *positions* of a worker's stream (the last one of an exact pass
may be shorter); the per-sample RNG is derived from ``(seed, epoch, rank, w, position)``
(:func:`sample_rng`). Order and augmentation are therefore reproducible, and a resume skips the
first ``p`` positions of each worker without decoding them: on local uncompressed shards it reads
only their tar headers and small members and seeks over their images (the samples left in the
shuffle buffer are read when they come out); ``pipe:``/URL and compressed shards are read through,
so there a resume costs reading that share of the epoch's tar bytes once. The shuffle buffer
holds ``shuffle_buffer`` undecoded samples per worker (~110 MB at ImageNet's ~110 KB per JPEG for
the default 1000). Unreadable shards and tar members are skipped and counted (``bad_shards``); a
sample whose image is missing is still a position, and the backend counts it as bad.
"""

from __future__ import annotations

import glob
import os
import posixpath
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info
from webdataset import gopen
from webdataset.shardlists import expand_urls

from pipeline.config import LoaderConfig
from pipeline.data_issues import note_bad_sample, note_bad_shard, numeric, take_new
from pipeline.shared_buffers import BufferPool, take_last_slot, use_pool
from pipeline.tar_reader import TarReader
from shards.extensions import IMAGE_EXTS, LABEL_EXTS

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_SPLIT_NAME = re.compile(r"^(?P<split>.+)-\d+\.(tar|tar\.gz|tgz)$")
# A resampled stream over shards that never yield a sample would loop forever: give up after this
# many consecutive empty shards (times the shard count).
MAX_EMPTY_SHARD_ROUNDS = 4


@dataclass
class RawSample:
    """One undecoded sample. ``image`` is None when the sample has no image component, or while
    its bytes are ``deferred``: ``(offset, size)`` in the local shard ``url``, read by
    :func:`load_deferred` (a resume skips samples without reading their images)."""

    key: str
    image: bytes | None
    ext: str | None
    label: int = -1
    url: str = ""
    deferred: tuple[int, int] | None = None


def load_deferred(sample: RawSample) -> RawSample:
    """``sample`` with its deferred image bytes read from its shard (itself when none are deferred).
    A shard changed since it was read leaves the image None: the backend counts a bad sample."""
    if sample.deferred is None:
        return sample
    offset, size = sample.deferred
    try:
        with open(sample.url, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError:
        data = b""
    return replace(sample, image=data if len(data) == size else None, deferred=None)


def list_shards(spec: str) -> list[str]:
    """Expand a shard spec (directory, glob, brace pattern or URL) into a list of shard URLs.

    Raises:
        FileNotFoundError: a local spec that matches no shard.
        ValueError: a directory that holds shards of several splits (name one with a glob).
    """
    spec = str(spec)
    if os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if n.endswith(SHARD_SUFFIXES))
        if not names:
            raise FileNotFoundError(f"no shards (*.tar) in directory {spec}")
        splits = {m.group("split") for n in names if (m := _SPLIT_NAME.match(n))}
        if len(splits) > 1:
            raise ValueError(
                f"{spec} holds shards of several splits ({', '.join(sorted(splits))}); "
                f"name one, e.g. {os.path.join(spec, sorted(splits)[0] + '-*.tar')}"
            )
        return [os.path.join(spec, n) for n in names]
    if "://" not in spec and not spec.startswith("pipe:") and any(c in spec for c in "*?["):
        urls = sorted(glob.glob(spec))
        if not urls:
            raise FileNotFoundError(f"no shards match {spec}")
        return urls
    urls = expand_urls(spec)
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards not found, e.g. {missing[0]}")
    return urls


def split_by_rank(urls: list[str], rank: int, world_size: int) -> list[str]:
    """Shards of one rank (round robin). Ranks beyond the shard count get none."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return urls[rank::world_size]


def split_by_worker(urls: list[str], worker: int, num_workers: int) -> list[str]:
    """Shards of one DataLoader worker of a rank (round robin)."""
    return urls[worker::num_workers]


def _parse_label(data: bytes) -> int:
    try:
        return int(data.decode("utf-8").strip())
    except (UnicodeDecodeError, ValueError):
        return -1


def _make_sample(key: str, parts: dict[str, bytes | tuple[int, int]], url: str) -> RawSample:
    ext = next((e for e in IMAGE_EXTS if e in parts), None)
    label = next((_parse_label(parts[e]) for e in LABEL_EXTS if e in parts), -1)
    image = parts[ext] if ext else None
    if isinstance(image, tuple):  # (offset, size): not read (see read_shard's ``defer``)
        return RawSample(key=key, image=None, ext=ext, label=label, url=url, deferred=image)
    return RawSample(key=key, image=image, ext=ext, label=label, url=url)


def read_shard(url: str, counters: dict[str, int] | None = None, defer: Callable[[], bool] | None = None) -> Iterator[RawSample]:
    """Samples of one tar shard, in file order.

    While ``defer()`` is true, image bytes of a local uncompressed shard are not read but
    seeked over, and the sample carries ``deferred=(offset, size)`` instead (a resume's skip
    reads only tar headers and the small members; :func:`load_deferred` reads an image later).

    A shard that cannot be opened or read (truncated, not a tar, failing ``pipe:``) or that holds
    no sample (a zero-length file) is counted in ``counters['bad_shards']`` (empty ones also in
    ``counters['empty_shards']``); the samples read before the error are kept, the one being
    assembled is counted in ``counters['bad_samples']`` (each shard and sample once:
    :mod:`pipeline.data_issues`).
    """
    counters = {} if counters is None else counters
    try:
        stream = gopen(url, "rb")
    except Exception:  # gopen raises whatever its scheme handler raises
        note_bad_shard(counters, url)
        return
    key, parts, got = None, {}, False
    try:
        tar = TarReader(stream)
        for name in tar.members():
            dirname, base = posixpath.split(name)
            if base.startswith((".", "_")):  # hidden files and WebDataset's __key__-style meta
                continue
            stem, _, ext = base.partition(".")
            member_key = posixpath.join(dirname, stem)
            if member_key != key:
                if key is not None:  # complete: hand it out before reading further
                    got = True
                    yield _make_sample(key, parts, url)
                key, parts = member_key, {}
            ext = ext.lower()
            if defer is not None and ext in IMAGE_EXTS and tar.member_offset is not None and defer():
                parts[ext] = (tar.member_offset, tar.member_size)  # seeked over by the next member
            else:
                parts[ext] = tar.read()
        if key is not None:
            got = True
            yield _make_sample(key, parts, url)
        elif not got:  # a zero-length file, a tar without one sample
            note_bad_shard(counters, url, empty=True)
    except Exception:  # TarFormatError, OSError, zlib/lzma errors, ...: skip the rest of the shard
        note_bad_shard(counters, url)
        if key is not None:
            note_bad_sample(counters, url, key)
    finally:
        try:
            stream.close()
        except Exception:  # a pipe: whose command failed reports it on close
            note_bad_shard(counters, url)


def shuffled(items: Iterator[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle a stream through a buffer of ``buffer_size`` items (held in memory, undecoded)."""
    if buffer_size <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        i = rng.randrange(buffer_size)
        yield buf[i]
        buf[i] = item
    rng.shuffle(buf)
    yield from buf


def sample_rng(seed: int, epoch: int, rank: int, worker: int, position: int) -> random.Random:
    """The RNG of one stream position: a pure function of its coordinates (reproducible, and a
    resume needs no RNG state). String seeds are hashed with SHA-512, independent of PYTHONHASHSEED."""
    return random.Random(f"sample/{seed}/{epoch}/{rank}/{worker}/{position}")


@dataclass(frozen=True)
class StreamPlan:
    """What one rank reads in one epoch (see the module docstring for the two modes)."""

    urls: tuple[str, ...]
    seed: int = 0
    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    num_workers: int = 1  # logical workers per rank (1 when the DataLoader has 0 workers)
    batch_size: int = 64
    batches_per_rank: int | None = None  # None: one exact pass
    shuffle_buffer: int = 1000

    @property
    def resampled(self) -> bool:
        """Whether workers resample the shards endlessly (``batches_per_rank`` set) rather than make one exact pass."""
        return self.batches_per_rank is not None

    def worker_quota(self, worker: int) -> int | None:
        """Batches logical ``worker`` yields per epoch (None for an exact pass)."""
        if self.batches_per_rank is None:
            return None
        n, w = self.batches_per_rank, self.num_workers
        return n // w + (worker < n % w)

    def worker_shards(self, worker: int) -> list[str]:
        """Shards of logical ``worker`` in an exact pass, in reading order."""
        urls = list(self.urls)
        random.Random(f"shards/{self.seed}/{self.epoch}").shuffle(urls)
        return split_by_worker(split_by_rank(urls, self.rank, self.world_size), worker, self.num_workers)

    def cycled_shards(self, worker: int) -> Iterator[str]:
        """Shards of logical ``worker`` when resampled, in reading order (endless): its share of
        the epoch's schedule of cycled permutations (module docstring)."""
        urls, streams = list(self.urls), self.world_size * self.num_workers
        entry = self.rank * self.num_workers + worker  # position in the epoch's schedule
        cycle, order = -1, urls
        while True:
            c, i = divmod(entry, len(urls))
            if c != cycle:
                cycle, order = c, list(urls)
                random.Random(f"cycle/{self.seed}/{self.epoch}/{c}").shuffle(order)
            yield order[i]
            entry += streams

    def samples(self, worker: int, counters: dict[str, int], defer: Callable[[], bool] | None = None) -> Iterator[RawSample]:
        """The shuffled sample stream of logical ``worker`` (infinite when resampled); ``defer``
        as in :func:`read_shard` (the shuffle moves samples without looking at their bytes)."""
        tag = f"{self.seed}/{self.epoch}/{self.rank}/{worker}"
        if self.resampled:
            raw = self._resampled(self.cycled_shards(worker), counters, defer)
        else:
            raw = (s for url in self.worker_shards(worker) for s in read_shard(url, counters, defer))
        return shuffled(raw, self.shuffle_buffer, random.Random(f"shuffle/{tag}"))

    def _resampled(
        self, shards: Iterator[str], counters: dict[str, int], defer: Callable[[], bool] | None
    ) -> Iterator[RawSample]:
        empty = 0
        while True:
            got = False
            for sample in read_shard(next(shards), counters, defer):
                got = True
                yield sample
            empty = 0 if got else empty + 1
            if empty > MAX_EMPTY_SHARD_ROUNDS * len(self.urls):
                raise RuntimeError(f"no readable sample in {empty} shards drawn in a row from {self.urls[0]} ...")


def plan_from_config(cfg: LoaderConfig, rank: int, world_size: int) -> StreamPlan:
    """This rank's :class:`StreamPlan` for a loader config (shared by the cpu and torch backends)."""
    if cfg.samples_per_epoch is not None and cfg.samples_per_epoch < cfg.batch_size:
        raise ValueError(f"samples_per_epoch ({cfg.samples_per_epoch}) must be at least batch_size ({cfg.batch_size})")
    return StreamPlan(
        urls=tuple(list_shards(cfg.shards)),
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        num_workers=max(1, cfg.num_workers),
        batch_size=cfg.batch_size,
        batches_per_rank=None if cfg.samples_per_epoch is None else cfg.samples_per_epoch // cfg.batch_size,
        shuffle_buffer=cfg.shuffle_buffer,
    )


@dataclass
class WorkerStart:
    """Where a logical worker starts: stream positions already consumed, batches already yielded."""

    positions: int = 0
    batches: int = 0


# process_batch(samples, rngs, counters) -> backend batch, or None when no sample was usable.
ProcessBatch = Callable[[list[RawSample], list[random.Random], dict[str, int]], Any]
MAX_DROPPED_IN_A_ROW = 1000


@dataclass
class BatchedStream(IterableDataset):
    """An IterableDataset that yields ``(batch, meta)``, batches formed inside each worker.

    ``meta`` = ``{"worker": logical worker, "position": positions consumed, "batches": batches
    yielded so far, "counters": {...}, "buffer": (physical worker, pool slot)}`` lets the main
    process track the data position exactly and recycle the batch's buffer.
    Physical DataLoader worker ``p`` plays logical worker ``(p + offset) % W``; a resumed epoch sets
    ``offset`` to the worker that was next, so the DataLoader's round robin continues the
    interrupted order. The loader sets ``epoch``, ``starts`` and ``offset`` before each iteration
    (workers receive a copy of this object when the DataLoader iterator starts).
    """

    plan: StreamPlan
    process_batch: ProcessBatch
    starts: list[WorkerStart] = field(default_factory=list)
    offset: int = 0
    pool: BufferPool | None = None  # recycled batch buffers (pipeline.shared_buffers), workers only

    def __iter__(self) -> Iterator[tuple[Any, dict]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        use_pool(self.pool if info is not None else None, physical)
        plan = self.plan
        worker = (physical + self.offset) % plan.num_workers
        start = self.starts[worker] if self.starts else WorkerStart()
        quota = plan.worker_quota(worker)
        counters: dict[str, Any] = {"samples": 0, "bad_samples": 0, "bad_shards": 0}
        skipping = start.positions > 0
        stream = plan.samples(worker, counters, defer=lambda: skipping)
        position, produced = start.positions, start.batches
        if quota is not None and produced >= quota:
            return
        if skipping:
            # a resume: the skipped positions' images are seeked over, never read or decoded; the
            # shuffle buffer's samples read while skipping get their bytes when they come out
            skipped = sum(1 for _ in islice(stream, start.positions))
            if skipped < start.positions:
                return
            skipping = False
            stream = map(load_deferred, stream)
        dropped_in_a_row = 0
        while quota is None or produced < quota:
            chunk = list(islice(stream, plan.batch_size))
            if not chunk:
                return
            rngs = [sample_rng(plan.seed, plan.epoch, plan.rank, worker, position + i) for i in range(len(chunk))]
            position += len(chunk)
            out = self.process_batch(chunk, rngs, counters)
            slot = take_last_slot()
            if out is None:
                if self.pool is not None:
                    self.pool.release(physical, slot)  # nothing was shipped from it
                counters["dropped_batches"] = counters.get("dropped_batches", 0) + 1
                dropped_in_a_row += 1
                if dropped_in_a_row > MAX_DROPPED_IN_A_ROW:
                    raise RuntimeError(f"{dropped_in_a_row} batches in a row without one decodable sample; check the shards")
                continue
            dropped_in_a_row = 0
            produced += 1
            yield (
                out,
                {
                    "worker": worker,
                    "position": position,
                    "batches": produced,
                    "counters": numeric(counters),
                    "issues": take_new(counters),  # newly seen bad samples and shards (pipeline.data_issues)
                    "buffer": (physical, slot),
                },
            )
