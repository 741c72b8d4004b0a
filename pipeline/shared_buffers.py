"""Recycled shared-memory batch buffers for DataLoader workers.

Why: a worker hands a batch to the main process through shared memory (no copy), but a fresh
shared-memory buffer per batch costs a page fault and a zeroed page per 4 KiB in the worker, and
an unmap in the main process when the batch dies. Measured on the 2-core development machine:
2.5 us per page, i.e. 0.18 ms per two-view image in uint8 and 0.7 ms in float32 — 13 % and 25 %
of the loader's throughput (``python -m pipeline.bench --recipe two-view``). Recycling a few
buffers per worker removes that cost.

Protocol (one :class:`BufferPool` per DataLoader iteration, made by the main process before the
workers start):

* ``flags`` ``[num_workers, slots]`` int32 lives in shared memory; 1 = the main process may still
  use that slot's memory.
* A worker carves every view of a batch out of one slot whose flag is 0 (:func:`allocate`), sets
  the flag to 1 and ships the batch; the slot goes in the batch's metadata.
* The main process :meth:`~BufferPool.release`-s the slot once nothing there can read it any more:
  at once when the batch was copied out (pinned memory), else when the last tensor on that memory
  dies — a finalizer on the storage, which PyTorch keeps alive as long as any tensor, view or
  NumPy array of it lives (checked at import: :data:`STORAGE_LIFETIME_TRACKED`).
* A worker that finds no free slot allocates a fresh buffer, as if there were no pool: correctness
  never depends on the main process releasing anything, only speed does.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

ALIGN = 64  # bytes; every tensor carved from a buffer starts on a cache line
NO_SLOT = -1


def _storage_lifetime_tracked() -> bool:
    """Whether a finalizer on a storage waits for every tensor on it (PyTorch >= 2.1 keeps the
    storage's Python object alive with the storage); without that, pooling would be unsafe."""
    fired = []
    t = torch.zeros(8)
    weakref.finalize(t.untyped_storage(), fired.append, 1)
    view = t[2:4]
    del t  # reference counting frees at once: no cycles here, no need for the garbage collector
    early = bool(fired)
    del view
    return not early and bool(fired)


STORAGE_LIFETIME_TRACKED = _storage_lifetime_tracked()


class BufferPool:
    """Shared flags of ``slots`` recycled buffers per worker, plus each worker's own buffers.

    Made in the main process and handed to the workers inside the dataset; the buffers themselves
    are created lazily in each worker (:meth:`take`).
    """

    def __init__(self, num_workers: int, slots: int):
        self.flags = torch.zeros(num_workers, slots, dtype=torch.int32).share_memory_()
        self._buffers: dict[int, torch.UntypedStorage] = {}  # this worker's, filled in the worker

    def take(self, worker: int, nbytes: int) -> tuple[int, torch.UntypedStorage]:
        """In worker ``worker``: a free slot and its shared storage of at least ``nbytes``, marked
        in use; ``(NO_SLOT, fresh storage)`` when every slot is still in use."""
        flags = self.flags.numpy()[worker]
        for slot in range(flags.shape[0]):
            if flags[slot] == 0:
                buf = self._buffers.get(slot)
                if buf is None or buf.nbytes() < nbytes:
                    buf = self._buffers[slot] = _new_shared(nbytes)
                flags[slot] = 1
                return slot, buf
        return NO_SLOT, _new_shared(nbytes)

    def release(self, worker: int, slot: int) -> None:
        """In the main process: slot ``slot`` of ``worker`` may be written again."""
        if slot != NO_SLOT:
            self.flags.numpy()[worker, slot] = 0

    def release_when_freed(self, storage: torch.UntypedStorage, worker: int, slot: int) -> None:
        """In the main process: release the slot when ``storage`` (the batch's memory) dies."""
        if slot != NO_SLOT:
            weakref.finalize(storage, self.release, worker, slot).atexit = False  # nothing to hand back then


def _new_shared(nbytes: int) -> torch.UntypedStorage:
    return torch.UntypedStorage(max(1, nbytes)).share_memory_()


# What the code running in this worker allocates from: set by the stream in each worker.
_current: tuple[BufferPool, int] | None = None
_last_slot = NO_SLOT


def use_pool(pool: BufferPool | None, worker: int = 0) -> None:
    """Route :func:`allocate` in this process to ``pool``'s buffers of ``worker`` (None: plain
    memory, as in the main process)."""
    global _current
    _current = None if pool is None else (pool, worker)


def take_last_slot() -> int:
    """The slot of the last :func:`allocate` call (``NO_SLOT`` if none since), and forget it."""
    global _last_slot
    slot, _last_slot = _last_slot, NO_SLOT
    return slot


def allocate(shapes: Sequence[tuple[int, ...]], dtype: torch.dtype) -> list[torch.Tensor]:
    """Contiguous tensors of ``shapes``, all carved out of one buffer: a recycled shared one in a
    worker with a pool, fresh shared memory in a worker without one, plain memory elsewhere."""
    global _last_slot
    itemsize = torch.empty(0, dtype=dtype).element_size()
    offsets, nbytes = [], 0
    for shape in shapes:
        offsets.append(nbytes)
        nbytes += -(-int(np.prod(shape)) * itemsize // ALIGN) * ALIGN
    if _current is not None:
        pool, worker = _current
        _last_slot, storage = pool.take(worker, nbytes)
    elif get_worker_info() is not None:
        storage = _new_shared(nbytes)
    else:
        storage = torch.UntypedStorage(max(1, nbytes))
    out = []
    for shape, offset in zip(shapes, offsets):
        t = torch.empty(0, dtype=dtype)
        t.set_(storage, offset // itemsize, shape)
        out.append(t)
    return out
