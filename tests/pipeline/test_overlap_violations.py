"""Views kept although they break the overlap rule are counted and reported (issue 20, "Also").

Before: after 100 failed draws ``sample_views`` kept a window that broke the gtsa recipe's overlap
rule, and the pair was then dropped by the method without a trace in the stats."""

from __future__ import annotations

import random

from pipeline.config import AugmentConfig, LoaderConfig
from pipeline.loader import build_loader
from pipeline.views import overlap_area, overlap_violations, recipe_from_config, sample_views
from tests.train.helpers import write_photo_shards


def _impossible(shards: str = "x") -> LoaderConfig:
    # small locals that must share 95 % of the image with every global view: never possible
    augment = AugmentConfig(local_scale=(0.05, 0.1), global_scale=(0.3, 0.4), min_overlap=(0.0, 0.95))
    return LoaderConfig(
        shards=shards, recipe="gtsa", global_size=32, local_size=16, num_local=2, batch_size=4, num_workers=0,
        pin_memory=False, samples_per_epoch=8, shuffle_buffer=0, augment=augment,
    )  # fmt: skip


def test_sample_views_counts_a_kept_violation():
    recipe = recipe_from_config(_impossible())
    before = overlap_violations()
    params = sample_views(400, 300, recipe, random.Random(0))
    assert overlap_violations() - before == 2  # both local views
    g = [tuple(w) for w in params.windows[:2]]
    assert all(overlap_area(tuple(w), g[0]) <= 0.95 * 400 * 300 for w in params.windows[2:])


def test_the_loader_reports_them(tmp_path, real_jpegs):
    shards = write_photo_shards(real_jpegs, tmp_path / "shards", per_shard=4, count=8)
    loader = build_loader(_impossible(str(shards)))
    for _ in loader:
        pass
    assert loader.stats["overlap_violations"] == 16  # 8 samples x 2 local views
