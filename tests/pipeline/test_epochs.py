"""Epochs with ``samples_per_epoch``: shards are cycled through per-epoch permutations, not drawn
with replacement.

Before: each worker drew shards uniformly with replacement, so an "epoch" skipped about a third of
the shards and read others twice.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest

from pipeline.backends.cpu_backend import build_cpu_loader
from pipeline.source import StreamPlan
from tests.pipeline.helpers import run_with_timeout, small_jpegs, tiny_config, write_shards

RANKS, WORKERS = 2, 2


def schedule(urls: tuple[str, ...], epoch: int, reads_per_stream: int) -> list[str]:
    """Every shard read of one epoch, all ranks and workers, in the order the streams reach them
    (k-th read of every stream before any (k+1)-th: streams advance at the same pace)."""
    per_stream = [
        list(
            islice(
                StreamPlan(
                    urls=urls, epoch=epoch, rank=r, world_size=RANKS, num_workers=WORKERS, batches_per_rank=1
                ).cycled_shards(w),
                reads_per_stream,
            )
        )
        for r in range(RANKS)
        for w in range(WORKERS)
    ]
    return [stream[k] for k in range(reads_per_stream) for stream in per_stream]


@pytest.mark.parametrize("n_shards", [8, 6, 3, 1])
def test_every_shard_is_read_once_before_any_is_read_twice(n_shards):
    urls = tuple(f"train-{i:06d}.tar" for i in range(n_shards))
    reads = schedule(urls, epoch=0, reads_per_stream=3 * n_shards)  # 12 passes' worth
    for start in range(0, len(reads) - n_shards + 1, n_shards):
        assert sorted(reads[start : start + n_shards]) == sorted(urls)  # each pass: a permutation
    passes = [tuple(reads[i : i + n_shards]) for i in range(0, len(reads), n_shards)]
    if n_shards > 2:
        assert len(set(passes)) > 1  # reshuffled per pass
        assert schedule(urls, 1, n_shards)[:n_shards] != reads[:n_shards]  # and per epoch


def test_one_epoch_of_the_loader_reads_every_sample_once(tmp_path, real_jpegs):
    """8 shards of 3 samples; 2 ranks x 2 workers, each worker 2 batches of 3: one dataset's worth."""
    keys = write_shards(tmp_path / "s", small_jpegs(real_jpegs, 24), n_shards=8)
    cfg = tiny_config(str(tmp_path / "s"), batch_size=3, samples_per_epoch=12, shuffle_buffer=1)
    for epoch in range(2):
        seen: list[str] = []
        for rank in range(RANKS):
            loader = build_cpu_loader(cfg, rank=rank, world_size=RANKS)
            loader.set_epoch(epoch)
            batches = run_with_timeout(lambda loader=loader: [b.keys for b in loader])
            assert len(batches) == 4 and all(len(b) == 3 for b in batches)  # equal batches per rank
            seen += [k for b in batches for k in b]
        assert Counter(seen) == Counter(keys), f"epoch {epoch}"
