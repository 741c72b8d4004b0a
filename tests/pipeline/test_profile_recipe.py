"""``python -m pipeline.profile_recipe``: it times the cpu backend's own steps, and leaves them as they were."""

from __future__ import annotations

import glob
import random
from collections import Counter

import numpy as np
import pytest

from pipeline import profile_recipe
from pipeline.backends import cpu_backend, photometric_cpu
from pipeline.source import read_shard
from pipeline.views import named_recipe
from tests.pipeline.helpers import small_jpegs, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory, real_jpegs) -> str:
    root = tmp_path_factory.mktemp("profile-shards")
    write_shards(root, small_jpegs(real_jpegs, 12, max_side=160), n_shards=1)
    return str(root)


def test_timers_see_every_step_per_view_size_and_change_no_output(shards):
    samples = list(read_shard(sorted(glob.glob(f"{shards}/*.tar"))[0]))
    recipe = named_recipe("clove", 64, 32)
    plain = [cpu_backend.make_views(s, recipe, random.Random(i)) for i, s in enumerate(samples)]
    totals: Counter = Counter()
    with profile_recipe.timed_steps(totals):
        timed = [cpu_backend.make_views(s, recipe, random.Random(i)) for i, s in enumerate(samples)]
    for a, b in zip(plain, timed):
        assert all(np.array_equal(x, y) for x, y in zip(a.views, b.views))
        assert np.array_equal(a.matrices, b.matrices)
    steps = {step for step, _ in totals}
    assert {"draw", "decode", "resize", "blur"} <= steps
    # every view is resized once per sample; the rows split by view size
    assert {size for step, size in totals if step == "resize"} == {"64", "32"}
    assert all(seconds > 0 for seconds in totals.values())
    # the wrappers are gone afterwards
    assert cpu_backend.resize_crop.__module__ == "pipeline.backends.cpu_backend"
    assert all(not hasattr(fn, "__wrapped__") for fn in photometric_cpu._JITTER_OPS.values())


def test_command_prints_a_table_whose_rows_add_up(shards, capsys):
    assert profile_recipe.main(["--shards", shards, "--images", "8", "--global-size", "64", "--local-size", "32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    timed = float(lines[0].split(",")[-1].split()[0])
    rows = {tuple(line.split()[:2]) for line in lines[2:]}
    assert ("resize", "64") in rows and ("resize", "32") in rows
    shares = [float(line.split()[-1].rstrip("%")) for line in lines[2:]]
    assert sum(shares) == pytest.approx(100.0, abs=0.5)  # "other" is what the steps leave
    assert timed > 0
