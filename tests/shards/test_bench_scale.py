"""The scale benchmark: its ImageNet-like tree is one the imagenet converter reads as ImageNet, and
``python -m shards bench --scale`` measures every step on a tiny size."""

from __future__ import annotations

import json
import random

import pytest

from shards import imagenet_like
from shards.bench_scale import mid_epoch_state, parse_sizes
from shards.imagenet import scan_imagenet
from shards.photos import available_photos


@pytest.fixture(scope="module")
def photos():
    found = available_photos()
    if not found:
        pytest.skip("no real photos installed (scripts/setup.sh)")
    return found[:6]


def test_sizes_follow_imagenet():
    rng = random.Random(0)
    sizes = [imagenet_like.imagenet_size(rng) for _ in range(4000)]
    long_500 = sum(max(s) == 500 for s in sizes) / len(sizes)
    landscape = sum(w > h for w, h in sizes) / len(sizes)
    assert 0.72 < long_500 < 0.78 and 0.7 < landscape < 0.85
    assert all(64 <= min(s) and max(s) <= 1200 for s in sizes)


def test_tree_reads_as_imagenet_with_devkit_labels(tmp_path, photos):
    pool, tree = tmp_path / "pool", tmp_path / "tree"
    imagenet_like.grow_pool(pool, 2, 5, photos, num_classes=4, workers=1)
    written = imagenet_like.grow_pool(pool, 2, 5, photos, num_classes=4, workers=1)
    assert written == 0  # the pool only grows: nothing is rewritten
    imagenet_like.grow_pool(pool, 3, 7, photos, num_classes=4, workers=1)
    imagenet_like.link_tree(pool, tree, 3, 7, num_classes=4)
    source = scan_imagenet(tree)
    assert source.classes == imagenet_like.wnids(4)
    train, val = source.splits["train"], source.splits["val"]
    assert len(train) == 12 and len(val) == 7 and not source.skipped
    # validation labels went through the devkit's ground truth and meta.mat back to the wnids drawn
    for item in val:
        k = int(item.key.rsplit("_", 1)[1])
        assert item.cls == imagenet_like.val_class(k, 4)
    sizes = [i.size for i in train + val]
    assert 20_000 < sum(sizes) / len(sizes) < 400_000  # real-photo JPEGs, not noise nor blanks


def test_mid_epoch_state_is_half_of_each_workers_share(tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    names = [f"train-{i:06d}.tar" for i in range(5)]
    for n in names:
        (out / n).write_bytes(b"")
    lengths = [100, 130, 90, 200, 64]
    info = {"splits": {"train": {"filenames": names, "shard_lengths": lengths, "num_samples": sum(lengths)}}}
    (out / "_info.json").write_text(json.dumps(info))
    state = mid_epoch_state(out, str(out / "train-*.tar"), workers=2, batch_size=16)
    assert sum(state["positions"]) <= sum(lengths) // 2
    assert all(p % 16 == 0 for p in state["positions"]) and state["batches"] == sum(p // 16 for p in state["positions"])
    assert state["num_workers"] == 2 and len(state["positions"]) == 2


def test_parse_sizes():
    assert parse_sizes("100k,10k,30k") == [10_000, 30_000, 100_000]
    with pytest.raises(Exception, match="not a list of sizes"):
        parse_sizes("ten")


def test_command_measures_every_step_on_a_tiny_size(tmp_path, photos, capsys):
    from shards.bench import main

    log = tmp_path / "scale.jsonl"
    argv = ["--scale", "20", "--classes", "10", "--tiny-shards", "10", "--tmp", str(tmp_path), "--json-out", str(log)]
    assert main([*argv, "--no-progress"]) == 0
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    size, tiny = rows
    assert size["size"] == 20 and size["images"] == size["kept"] == 21  # 20 train + 1 val, none skipped
    for key in ("convert_images_per_s", "convert_mb_per_s", "convert_user_us_per_image", "convert_peak_anon_mb", "verify_s"):
        assert size[key] > 0, key
    assert size["convert_peak_pss_mb"] > 0 and size["convert_peak_rss_largest_mb"] > 0
    assert size["first_batch_s"] > 0 and size["resume_first_batch_s"] > 0
    assert tiny["tiny_shards"] == 10 and tiny["first_batch_s"] > 0  # 20 train images, 2 per shard
    assert not list(tmp_path.glob("shards-scale-*"))  # scratch removed
