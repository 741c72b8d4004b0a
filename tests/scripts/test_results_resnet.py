"""``make results-resnet`` end to end at tiny size: shards, two methods trained, the table with
intervals, the metric-vs-step rows and the picture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shards.photos import TUXPAINT_STAMPS

REPO = Path(__file__).resolve().parents[2]


def test_results_resnet_runs_end_to_end_at_tiny_size(tmp_path, real_photos):
    if not TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed: run `bash scripts/setup.sh` as root")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "TINY": "1",
        "SEEDS": "0",
        "THREADS": "1",
        "PY": sys.executable,
        "OUT": str(out),
        "PHOTOS": str(tmp_path / "photos"),
        "EVAL_DATA": str(tmp_path / "cp"),
    }
    run = subprocess.run(["bash", "scripts/results_resnet.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = {r["model"]: r for r in map(json.loads, (out / "eval.jsonl").read_text().splitlines())}
    assert list(rows) == ["random [BN re-estimated]", "BYOL [BN re-estimated]", "CLoVE [BN re-estimated]"]
    assert rows["random [BN re-estimated]"]["replicates"]["corr/layer3"] == 3  # three init seeds
    assert set(rows["CLoVE [BN re-estimated]"]["differences"]) == {"random [BN re-estimated]", "BYOL [BN re-estimated]"}
    assert all(r["leakage"]["seen_in_pretraining"] == 0 for r in rows.values())  # pretraining pool only
    table = (out / "table.txt").read_text()
    assert "CLoVE [BN re-estimated] - BYOL [BN re-estimated]" in table and "no information" in table
    steps = [json.loads(line) for line in (out / "eval_steps.jsonl").read_text().splitlines()]
    assert [r["info"][0].get("method", "random") for r in steps] == ["random", "clove", "clove", "byol", "byol"]
    assert [r["info"][0].get("step", 0) for r in steps] == [0, 2, 4, 2, 4]
    assert (out / "curves.png").stat().st_size > 10_000
    # a second call trains nothing again
    again = subprocess.run(["bash", "scripts/results_resnet.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("is finished") == 2
