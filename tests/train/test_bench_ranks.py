"""``python -m train.bench_ranks``: the two launches it compares, and the rate it reads from their logs."""

from __future__ import annotations

import json
import sys

import pytest

from tests.train.helpers import tiny_overrides
from train import bench_ranks


def test_launch_commands_differ_only_in_the_process_count_and_output(tmp_path):
    one = bench_ranks.train_command(1, "c.yaml", tmp_path / "a", ["train.cpu=true"])
    two = bench_ranks.train_command(2, "c.yaml", tmp_path / "b", ["train.cpu=true"])
    assert one[:3] == [sys.executable, "-m", "train"]
    # --multi_gpu, not --cpu: `accelerate launch --cpu --num_processes 2` starts a single process
    assert "--multi_gpu" in two and "--cpu" not in two and two[two.index("--num_processes") + 1] == "2"
    for cmd, out in ((one, "a"), (two, "b")):  # same config and overrides, each its own output dir
        assert cmd[cmd.index("--config") :] == ["--config", "c.yaml", f"output_dir={tmp_path / out}", "train.cpu=true"]


def test_rate_is_the_mean_of_windows_after_warm_up(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"event": "start"}, {"step": 5, "images_per_s": 1.0}, {"step": 10, "images_per_s": 4.0}]
    rows += [{"step": 15, "images_per_s": 6.0}, {"step": 15, "loss": 1.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench_ranks.window_rates(log, 5) == [4.0, 6.0]


@pytest.mark.slow(reason="two training launches, one of them through accelerate: about a minute")
def test_both_launches_run_and_the_ratio_is_logged(photo_shards, tmp_path, capsys):
    overrides = [o for o in tiny_overrides(photo_shards, tmp_path / "unused") if not o.startswith("output_dir=")]
    log = tmp_path / "ranks.jsonl"
    argv = ["--config", "/dev/null", "--steps", "4", "--warmup-steps", "1", "--log-every", "1", "--json-out", str(log)]
    assert bench_ranks.main([*argv, *overrides]) == 0
    row = json.loads(log.read_text())
    assert row["one_images_per_s"] > 0 and row["two_images_per_s"] > 0
    assert row["per_rank_ratio"] == pytest.approx(row["two_images_per_s"] / 2 / row["one_images_per_s"])
    assert "per rank" in capsys.readouterr().out
