"""The loader over a :class:`~pipeline.source.BatchedStream`: DataLoader workers build whole
batches, the main process finishes them (e.g. on the device), tracks the data position exactly
and hands recycled batch buffers back to the workers (:mod:`pipeline.shared_buffers`). The cpu
and torch backends are this loader with their own batch makers and ``finish`` steps.

Epochs, order and resumption (see :mod:`pipeline.source` for the stream itself):

* With ``samples_per_epoch`` set, ``len(loader) == samples_per_epoch // batch_size`` batches per
  rank per epoch. A bad sample (corrupt or truncated bytes, missing image, tiny or huge image) is
  counted in ``stats['bad_samples']`` and its place in the batch is taken by another good sample
  of the same batch, re-augmented with the bad position's own random draws, so batch size and
  batch count never depend on data quality.
* With ``samples_per_epoch=None`` each epoch is one exact pass; bad samples are dropped (batches
  can be shorter) so that every good sample appears exactly once. ``len()`` is undefined.
* Iterating to the end of an epoch advances to the next epoch (``set_epoch`` may also be called,
  as with a DistributedSampler). ``state_dict()`` holds the epoch and, per worker, how many stream
  positions and batches the *consumer* has received; after ``load_state_dict`` (same seed, shards,
  batch size and ``num_workers``) the next ``__iter__`` skips those positions by reading without
  decoding and continues with exactly the batches an uninterrupted run would have yielded, in the
  same order. Breaking out of a loop mid-epoch and iterating again resumes the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader

from pipeline.batch import ViewBatch
from pipeline.data_issues import IssueSets
from pipeline.shared_buffers import NO_SLOT, STORAGE_LIFETIME_TRACKED, BufferPool
from pipeline.source import BatchedStream, StreamPlan, WorkerStart

STAT_KEYS = (
    "samples",
    "bad_samples",
    "bad_reads",
    "recovered_samples",
    "bad_shards",
    "empty_shards",
    "dropped_batches",
    "image_bytes",
    "overlap_violations",
)


def _private_generator(plan: StreamPlan) -> torch.Generator:
    """The DataLoader's own generator, seeded from ``(seed, epoch, rank)``. Without one, starting an
    iteration draws the workers' base seed from the *global* torch RNG at the first ``next()``, so a
    run resumed mid-epoch (RNG restored after ``iter()``) drew one number more than the original
    and every later global draw (e.g. a ViT's drop-path) differed. The samples themselves never
    depended on it (their RNG is :func:`pipeline.source.sample_rng`)."""
    digest = hashlib.sha256(f"dataloader/{plan.seed}/{plan.epoch}/{plan.rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class StreamLoader:
    """A :class:`~pipeline.loader.ViewLoader` over a :class:`BatchedStream`, for any backend whose
    workers build the batches (``finish`` turns a worker batch into the final :class:`ViewBatch` on
    the device, e.g. normalising it).

    ``pooled``: for workers that allocate their batches with :func:`pipeline.shared_buffers.allocate`,
    a function giving a tensor on that memory of a received batch, so the loader can hand the
    buffer back to its worker once the batch is gone (None: no recycling).
    """

    def __init__(
        self,
        plan: StreamPlan,
        process_batch: Callable,
        finish: Callable[[Any], ViewBatch],
        *,
        num_workers: int,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        pooled: Callable[[Any], torch.Tensor] | None = None,
    ):
        self.plan = plan
        self.process_batch = process_batch
        self.finish = finish
        self.pooled = pooled
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.epoch = plan.epoch
        self._reset_position()
        self._totals = {k: 0 for k in STAT_KEYS}
        self._current: dict[int, dict[str, int]] = {}
        self._active: Iterator[ViewBatch] | None = None
        self.issues = IssueSets()  # distinct bad samples and shards of this loader's life

    def _reset_position(self) -> None:
        self._starts = [WorkerStart() for _ in range(self.plan.num_workers)]
        self._consumed = 0
        self._next_worker = 0

    def __len__(self) -> int:
        if self.plan.batches_per_rank is None:
            raise TypeError("batches per epoch are data dependent in an exact pass (samples_per_epoch=None)")
        return self.plan.batches_per_rank

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` from its start (a no-op for the current epoch, keeping the position)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._reset_position()

    def state_dict(self) -> dict:
        """The data position: epoch, batches consumed, and per worker positions and batches received."""
        return {
            "epoch": self.epoch,
            "batches": self._consumed,
            "positions": [s.positions for s in self._starts],
            "worker_batches": [s.batches for s in self._starts],
            "next_worker": self._next_worker,
            "num_workers": self.plan.num_workers,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (ValueError for another ``num_workers``); the next ``__iter__`` resumes there."""
        if state["num_workers"] != self.plan.num_workers:
            raise ValueError(
                f"data position saved with num_workers={state['num_workers']}, loader has {self.plan.num_workers}: "
                "the per-worker streams differ, so the position cannot be restored"
            )
        self.epoch = int(state["epoch"])
        self._consumed = int(state["batches"])
        self._starts = [WorkerStart(int(p), int(b)) for p, b in zip(state["positions"], state["worker_batches"])]
        self._next_worker = int(state["next_worker"])

    @property
    def stats(self) -> dict[str, int]:
        """Counters of past iterations plus the latest ones each worker of this iteration reported."""
        out = dict(self._totals)
        for counters in self._current.values():
            for k, v in counters.items():
                out[k] = out.get(k, 0) + v
        out.update(self.issues.counts())  # distinct across workers and epochs, not summed per worker
        return out

    @property
    def shard_count(self) -> int:
        """How many shards the loader's spec names."""
        return len(self.plan.urls)

    def _fold_stats(self) -> None:
        self._totals = self.stats
        self._current = {}

    def __iter__(self) -> Iterator[ViewBatch]:
        if self._active is not None:
            self._active.close()  # shut down the workers of an abandoned iteration first
        self._active = self._iterate()
        return self._active

    def _iterate(self) -> Iterator[ViewBatch]:
        self._fold_stats()
        if self.plan.batches_per_rank is not None and self._consumed >= self.plan.batches_per_rank:
            # the consumer took every batch but never exhausted the iterator: that epoch is over
            self.epoch += 1
            self._reset_position()
        plan = replace(self.plan, epoch=self.epoch)
        workers = self.num_workers
        # batches in flight per worker: prefetch_factor queued + the one the consumer holds + one spare
        recycle = self.pooled is not None and workers > 0 and STORAGE_LIFETIME_TRACKED
        pool = BufferPool(workers, self.prefetch_factor + 2) if recycle else None
        dataset = BatchedStream(
            plan, self.process_batch, [WorkerStart(s.positions, s.batches) for s in self._starts], self._next_worker, pool
        )
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=False,
            generator=_private_generator(plan),  # never touch the global torch RNG
        )
        for out, meta in loader:
            worker = meta["worker"]
            self._starts[worker] = WorkerStart(meta["position"], meta["batches"])
            self._current[worker] = meta["counters"]
            self.issues.add(meta.get("issues", []))
            self._consumed += 1
            self._next_worker = (worker + 1) % plan.num_workers
            physical, slot = meta["buffer"]
            if pool is not None and slot != NO_SLOT:
                if self.pin_memory:  # the DataLoader already copied the batch into pinned memory
                    pool.release(physical, slot)
                else:
                    pool.release_when_freed(self.pooled(out).untyped_storage(), physical, slot)
            batch = self.finish(out)
            batch.stats = self.stats
            yield batch
        self._fold_stats()
        self.epoch += 1
        self._reset_position()
