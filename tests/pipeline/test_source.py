"""Streaming: shard lists, tar reading, rank/worker splits, epochs, reproducibility, no hangs.

Shards are written here with webdataset.TarWriter from small re-encoded real photos.
"""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset as wds

from pipeline import source
from pipeline.backends.cpu_backend import build_cpu_loader
from pipeline.source import StreamPlan, list_shards, load_deferred, read_shard
from pipeline.tar_reader import TarReader
from tests.pipeline.helpers import run_with_timeout, small_jpegs, tiny_config, write_shards


def epoch_keys(loader) -> list[list[str]]:
    return [b.keys for b in loader]


@pytest.fixture(scope="module")
def photo_bytes(real_jpegs) -> list[bytes]:
    return small_jpegs(real_jpegs, 30)


@pytest.fixture()
def shards(tmp_path, photo_bytes):
    keys = write_shards(tmp_path / "shards", photo_bytes, n_shards=5)
    return str(tmp_path / "shards"), keys


# --------------------------------------------------------------------------------------------
# Shard lists and tar reading
# --------------------------------------------------------------------------------------------


def test_list_shards_directory_glob_brace_and_errors(shards, tmp_path):
    directory, _ = shards
    expected = [f"{directory}/train-{i:06d}.tar" for i in range(5)]
    assert list_shards(directory) == expected
    assert list_shards(f"{directory}/train-*.tar") == expected
    assert list_shards(f"{directory}/train-{{000001..000003}}.tar") == expected[1:4]
    assert list_shards(f"pipe:cat {expected[0]}") == [f"pipe:cat {expected[0]}"]
    with pytest.raises(FileNotFoundError):
        list_shards(f"{directory}/val-*.tar")
    with pytest.raises(FileNotFoundError):
        list_shards(f"{directory}/train-{{000004..000009}}.tar")
    (Path(directory) / "val-000000.tar").write_bytes(Path(expected[0]).read_bytes())
    with pytest.raises(ValueError, match="several splits"):
        list_shards(directory)


def test_read_shard_groups_components_and_reads_pipes(shards):
    directory, keys = shards
    samples = list(read_shard(f"{directory}/train-000000.tar"))
    assert [s.key for s in samples] == [k for k in keys if k.startswith("s0_")]
    assert all(s.ext == "jpg" and s.image[:3] == b"\xff\xd8\xff" for s in samples)
    assert [s.label for s in samples] == [int(k.split("_")[1]) % 10 for k in keys if k.startswith("s0_")]
    piped = list(read_shard(f"pipe:cat {directory}/train-000000.tar"))
    assert [s.key for s in piped] == [s.key for s in samples]


@pytest.mark.parametrize(
    "fmt, compression",
    [(tarfile.USTAR_FORMAT, ""), (tarfile.GNU_FORMAT, "gz"), (tarfile.PAX_FORMAT, "xz"), (tarfile.GNU_FORMAT, "bz2")],
)
def test_tar_reader_formats_long_names_and_compression(tmp_path, fmt, compression):
    """Archives written by Python's tarfile (an independent writer) in every header format."""
    deep = "d" * 60 + "/" + "e" * 60 if fmt != tarfile.USTAR_FORMAT else "dir/sub"  # > 100 chars: GNU L / pax path
    files = [
        (f"{deep}/a.jpg", b"A" * 700),
        (f"{deep}/a.cls", b"7"),
        ("b.jpg", b"B" * 512),
        ("b.json", b"{}"),
        ("c.png", b""),
        ("n\u00e9.jpg", b"N" * 3),
    ]
    if fmt == tarfile.PAX_FORMAT:
        files.append(("x/" + "y" * 120 + ".jpg", b"Y" * 10))
    path = tmp_path / f"t-000000.tar{'.' + compression if compression else ''}"
    with tarfile.open(path, f"w:{compression}", format=fmt) as tar:
        directory = tarfile.TarInfo("emptydir")  # not a regular file: skipped
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        hidden = tarfile.TarInfo(".hidden.jpg")
        hidden.size = 1
        tar.addfile(hidden, io.BytesIO(b"h"))
    counters: dict[str, int] = {}
    got = {s.key: (s.image, s.label) for s in read_shard(str(path), counters)}
    expected = {name.rsplit(".", 1)[0]: data for name, data in files if not name.endswith((".cls", ".json"))}
    assert {k: v[0] for k, v in got.items()} == expected
    assert got[f"{deep}/a"][1] == 7 and counters.get("bad_shards", 0) == 0


def test_read_shard_counts_broken_shards_and_keeps_what_it_read(tmp_path, photo_bytes):
    path = tmp_path / "t-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(4):
            sink.write({"__key__": f"k{i}", "jpg": photo_bytes[i]})
        sink.write({"__key__": "only_label", "cls": "3"})  # missing image component
    data = path.read_bytes()
    counters: dict[str, int] = {}
    full = list(read_shard(str(path), counters))
    assert [s.key for s in full] == ["k0", "k1", "k2", "k3", "only_label"]
    assert full[-1].image is None and full[-1].label == 3
    assert counters.get("bad_shards", 0) == 0
    # cut inside the third image's data: the first two samples survive, the shard is counted
    offsets = []
    with tarfile.open(path) as tar:
        offsets = [m.offset_data for m in tar.getmembers()]
    truncated = tmp_path / "t-000001.tar"
    truncated.write_bytes(data[: offsets[2] + 100])
    counters = {}
    got = [s.key for s in read_shard(str(truncated), counters)]
    assert got == ["k0", "k1"] and counters["bad_shards"] == 1 and counters["bad_samples"] == 1
    counters = {}
    assert list(read_shard(str(tmp_path / "missing.tar"), counters)) == [] and counters["bad_shards"] == 1
    (tmp_path / "garbage.tar").write_bytes(b"not a tar archive at all " * 100)
    counters = {}
    assert list(read_shard(str(tmp_path / "garbage.tar"), counters)) == [] and counters["bad_shards"] == 1
    counters = {}
    assert list(read_shard(f"pipe:cat {tmp_path}/missing.tar 2>/dev/null", counters)) == []
    assert counters["bad_shards"] >= 1


def test_deferred_images_are_seeked_over_and_read_back_identical(tmp_path, photo_bytes):
    path = tmp_path / "t-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(5):
            sink.write({"__key__": f"k{i}", "jpg": photo_bytes[i], "cls": str(i)})
    eager = list(read_shard(str(path)))
    reads = []
    original_read = TarReader.read

    def counting_read(self):
        data = original_read(self)
        reads.append(len(data))
        return data

    TarReader.read = counting_read
    try:
        deferred = list(read_shard(str(path), defer=lambda: True))
    finally:
        TarReader.read = original_read
    assert all(s.image is None and s.deferred is not None for s in deferred)
    assert max(reads) < 8  # only the labels were read, never an image
    assert [s.label for s in deferred] == [s.label for s in eager] == list(range(5))
    assert [load_deferred(s) for s in deferred] == eager
    # pipes cannot seek: nothing is deferred there
    piped = list(read_shard(f"pipe:cat {path}", defer=lambda: True))
    assert [s.image for s in piped] == [s.image for s in eager]


def test_deferred_reading_of_a_truncated_shard_counts_what_reading_through_counts(tmp_path, photo_bytes):
    path = tmp_path / "t-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(4):
            sink.write({"__key__": f"k{i}", "jpg": photo_bytes[i]})
    with tarfile.open(path) as tar:
        offsets = [m.offset_data for m in tar.getmembers()]
    for cut in (offsets[2] + 100, offsets[3] - 300):  # inside an image's data, inside a header
        truncated = tmp_path / f"cut{cut}.tar"
        truncated.write_bytes(path.read_bytes()[:cut])
        results = []
        for defer in (None, lambda: True):
            counters: dict[str, int] = {}
            keys = [s.key for s in read_shard(str(truncated), counters, defer)]
            results.append((keys, counters.get("bad_shards"), counters.get("bad_samples")))
        assert results[0] == results[1]


def test_a_resumed_loader_defers_the_skipped_images_and_yields_the_same_batches(shards, monkeypatch):
    directory, _ = shards
    cfg = tiny_config(directory, samples_per_epoch=24, batch_size=4, num_workers=0, shuffle_buffer=6)
    whole = build_cpu_loader(cfg)
    batches = [b.keys for b in whole]
    interrupted = build_cpu_loader(cfg)
    it = iter(interrupted)
    for _ in range(3):
        next(it)
    state = interrupted.state_dict()
    loaded = []
    real_load = source.load_deferred

    def counting_load(sample):
        loaded.append(sample.deferred is not None)
        return real_load(sample)

    monkeypatch.setattr(source, "load_deferred", counting_load)
    resumed = build_cpu_loader(cfg)
    resumed.load_state_dict(state)
    assert [b.keys for b in resumed] == batches[3:]
    # the shuffle buffer's samples read while skipping got their bytes on the way out
    assert 0 < sum(loaded) <= cfg.shuffle_buffer


def test_stream_plan_quotas_and_shard_partition():
    urls = tuple(f"s{i}.tar" for i in range(7))
    for n, workers in [(10, 3), (2, 4), (9, 1)]:
        plan = StreamPlan(urls=urls, num_workers=workers, batches_per_rank=n)
        quotas = [plan.worker_quota(w) for w in range(workers)]
        assert sum(quotas) == n and max(quotas) - min(quotas) <= 1
    for world in (1, 2, 3):
        seen = []
        for rank in range(world):
            plan = StreamPlan(urls=urls, rank=rank, world_size=world, num_workers=2, epoch=3)
            seen += plan.worker_shards(0) + plan.worker_shards(1)
        assert sorted(seen) == sorted(urls)  # every shard read by exactly one (rank, worker)
    epoch0 = StreamPlan(urls=urls, epoch=0).worker_shards(0)
    epoch1 = StreamPlan(urls=urls, epoch=1).worker_shards(0)
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1  # reshuffled per epoch


# --------------------------------------------------------------------------------------------
# Epochs through the loader (cpu backend)
# --------------------------------------------------------------------------------------------


def test_every_sample_exactly_once_per_epoch_without_resampling(shards):
    directory, keys = shards
    loader = build_cpu_loader(tiny_config(directory))
    epochs = run_with_timeout(lambda: [epoch_keys(loader), epoch_keys(loader)])
    for batches in epochs:
        flat = [k for b in batches for k in b]
        assert Counter(flat) == Counter(keys)
    assert epochs[0] != epochs[1]  # the next epoch is reshuffled
    assert loader.stats["samples"] == 2 * len(keys) and loader.stats["bad_samples"] == 0


def test_exact_pass_splits_samples_between_ranks(shards):
    directory, keys = shards
    per_rank = []
    for rank in range(2):
        loader = build_cpu_loader(tiny_config(directory), rank=rank, world_size=2)
        per_rank.append([k for b in run_with_timeout(lambda loader=loader: epoch_keys(loader)) for k in b])
    assert not set(per_rank[0]) & set(per_rank[1])
    assert Counter(per_rank[0] + per_rank[1]) == Counter(keys)


def test_equal_batches_per_rank_with_resampling(shards):
    directory, _ = shards
    cfg = tiny_config(directory, samples_per_epoch=22)  # 5 batches of 4 per rank, 2 left over
    counts, firsts = [], []
    for rank in range(2):
        loader = build_cpu_loader(cfg, rank=rank, world_size=2)
        assert len(loader) == 5
        batches = run_with_timeout(lambda loader=loader: list(loader))
        counts.append(len(batches))
        assert all(b.batch_size == 4 for b in batches)
        firsts.append(batches[0].keys)
        assert run_with_timeout(lambda loader=loader: len(list(loader))) == 5  # the next epoch too
    assert counts == [5, 5]
    assert firsts[0] != firsts[1]  # ranks draw different data


def test_reproducible_order_and_views_for_a_seed(shards):
    directory, _ = shards
    runs = []
    for seed in (7, 7, 8):
        loader = build_cpu_loader(tiny_config(directory, samples_per_epoch=16, seed=seed))
        runs.append(run_with_timeout(lambda loader=loader: list(loader)))
    a, b, c = runs
    assert [x.keys for x in a] == [x.keys for x in b]
    for x, y in zip(a, b):
        assert all(torch.equal(u, v) for u, v in zip(x.views, y.views))
        assert torch.equal(x.matrices, y.matrices)
    assert [x.keys for x in a] != [x.keys for x in c]


@pytest.mark.parametrize("samples_per_epoch", [None, 12])
def test_fewer_shards_than_ranks_times_workers_does_not_hang(tmp_path, photo_bytes, samples_per_epoch):
    keys = write_shards(tmp_path / "one", photo_bytes[:9], n_shards=1)
    cfg = tiny_config(str(tmp_path / "one"), samples_per_epoch=samples_per_epoch)
    got = []
    for rank in range(2):  # 2 ranks x 2 workers, 1 shard
        loader = build_cpu_loader(cfg, rank=rank, world_size=2)
        got.append(run_with_timeout(lambda loader=loader: epoch_keys(loader)))
    if samples_per_epoch is None:
        # exact pass: the shard goes to rank 0 (one of its workers); rank 1 has nothing to read
        assert Counter(k for b in got[0] for k in b) == Counter(keys) and got[1] == []
    else:
        assert [len(g) for g in got] == [3, 3]
