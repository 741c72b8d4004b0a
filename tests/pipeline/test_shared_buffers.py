"""Recycled shared-memory batch buffers: a held batch is never overwritten, slots are reused."""

from __future__ import annotations

import gc
from collections import Counter

import torch

from pipeline import stream_loader
from pipeline.config import plain_config
from pipeline.loader import build_loader
from pipeline.shared_buffers import ALIGN, NO_SLOT, STORAGE_LIFETIME_TRACKED, BufferPool, allocate, take_last_slot, use_pool
from tests.pipeline.helpers import small_jpegs, write_shards


def test_storage_lifetime_is_tracked_by_this_torch():
    assert STORAGE_LIFETIME_TRACKED  # otherwise the loader silently runs without a pool


def test_take_and_release():
    pool = BufferPool(num_workers=2, slots=2)
    a_slot, a = pool.take(1, 1000)
    b_slot, b = pool.take(1, 500)
    assert (a_slot, b_slot) == (0, 1) and pool.flags[1].tolist() == [1, 1] and pool.flags[0].tolist() == [0, 0]
    c_slot, c = pool.take(1, 100)  # every slot in use: a fresh buffer, no slot
    assert c_slot == NO_SLOT and c.data_ptr() not in (a.data_ptr(), b.data_ptr())
    pool.release(1, 0)
    again_slot, again = pool.take(1, 800)  # fits: the same memory again
    assert again_slot == 0 and again.data_ptr() == a.data_ptr()
    pool.release(1, 1)
    bigger_slot, bigger = pool.take(1, 5000)  # too small: replaced
    assert bigger_slot == 1 and bigger.nbytes() >= 5000


def test_release_waits_for_every_tensor_on_the_memory():
    pool = BufferPool(num_workers=1, slots=1)
    slot, _ = pool.take(0, 64)  # in a worker
    received = torch.UntypedStorage(64)  # stands for the main process's own mapping of that memory
    t = torch.empty(0, dtype=torch.uint8).set_(received, 0, (64,))
    pool.release_when_freed(t.untyped_storage(), 0, slot)
    del received
    part = t[8:16].numpy()  # a NumPy view keeps the memory too
    del t
    gc.collect()
    assert pool.flags[0, 0] == 1
    del part
    gc.collect()
    assert pool.flags[0, 0] == 0


def test_allocate_carves_aligned_disjoint_tensors_and_records_the_slot():
    pool = BufferPool(num_workers=1, slots=1)
    use_pool(pool, 0)
    try:
        a, b = allocate([(3, 5, 7), (2, 9)], torch.float32)
        assert take_last_slot() == 0 and take_last_slot() == NO_SLOT
    finally:
        use_pool(None)
    assert a.shape == (3, 5, 7) and b.shape == (2, 9) and a.is_contiguous() and b.is_contiguous()
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    assert b.data_ptr() % ALIGN == 0 and b.data_ptr() - a.data_ptr() >= a.numel() * 4
    a.fill_(1.0)
    b.fill_(2.0)
    assert bool((a == 1).all()) and bool((b == 2).all())


def test_batches_held_by_the_consumer_are_never_overwritten(tmp_path, real_jpegs, monkeypatch):
    """Hold every third batch while the workers go on: each must keep the pixels it arrived with,
    and the slots of the batches that were dropped must be used again."""
    used: Counter = Counter()
    release_when_freed = BufferPool.release_when_freed

    def spy(self, storage, worker, slot):
        used[(worker, slot)] += 1
        return release_when_freed(self, storage, worker, slot)

    monkeypatch.setattr(stream_loader.BufferPool, "release_when_freed", spy)
    write_shards(tmp_path, small_jpegs(real_jpegs, 24), n_shards=3)
    cfg = plain_config(str(tmp_path), recipe="two-view", global_size=64, batch_size=4, num_workers=2, samples_per_epoch=4 * 24)
    held = []
    for i, batch in enumerate(build_loader(cfg, device="cpu")):
        if i % 3 == 0:
            held.append((batch, [v.clone() for v in batch.views]))
    assert len(held) == 8
    for batch, copies in held:
        for view, copy in zip(batch.views, copies):
            assert torch.equal(view, copy)
    assert max(used.values()) > 1  # recycled
