"""``make results-resnet`` and ``make results-vit`` end to end at tiny size: shards, two methods
trained, the table with intervals, the metric-vs-step rows and the picture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shards.photos import TUXPAINT_STAMPS

REPO = Path(__file__).resolve().parents[2]

# family -> (row names: random, baseline, dense method; methods in training order; a layer; BN protocol)
FAMILIES = {
    "resnet": (["random", "BYOL", "CLoVE"], ["clove", "byol"], "layer3", " [BN re-estimated]"),
    "vit": (["random", "DINO", "GTSA"], ["gtsa", "dino"], "block3", ""),  # no BatchNorm in a ViT: rows as exported
}


def _tiny_env(tmp_path: Path, out: Path) -> dict[str, str]:
    """The scripts' environment for their seconds-long version, every output under ``tmp_path``."""
    return {
        **os.environ,
        "TINY": "1",
        "SEEDS": "0",
        "THREADS": "1",
        "PY": sys.executable,
        "OUT": str(out),
        "PHOTOS": str(tmp_path / "photos"),
        "EVAL_DATA": str(tmp_path / "cp"),
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_results_run_end_to_end_at_tiny_size(family, tmp_path, real_photos):
    if not TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed: run `bash scripts/setup.sh` as root")
    pytest.importorskip("matplotlib")
    if family == "vit":
        pytest.importorskip("timm")
    names, methods, layer, bn = FAMILIES[family]
    out = tmp_path / "out"
    env = _tiny_env(tmp_path, out)
    command = ["bash", "scripts/results.sh", family]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = {r["model"]: r for r in map(json.loads, (out / "eval.jsonl").read_text().splitlines())}
    random, baseline, dense = (f"{name}{bn}" for name in names)
    assert list(rows) == [random, baseline, dense]
    assert rows[random]["replicates"][f"corr/{layer}"] == 3  # three init seeds
    assert set(rows[dense]["differences"]) == {random, baseline}
    assert all(r["leakage"]["seen_in_pretraining"] == 0 for r in rows.values())  # pretraining pool only
    for method in methods:  # the runs pretrained where the family says: photos or pasted scenes
        config = (out / f"{method}_s0" / "checkpoints" / "config.yaml").read_text()
        assert (str(tmp_path / "cp" / "train-*.tar") if family == "vit" else str(tmp_path / "photos")) in config
    table = (out / "table.txt").read_text()
    assert f"{dense} - {baseline}" in table and "no information" in table
    steps = [json.loads(line) for line in (out / "eval_steps.jsonl").read_text().splitlines()]
    assert [r["info"][0].get("method", "random") for r in steps] == ["random"] + [m for m in methods for _ in (2, 4)]
    assert [r["info"][0].get("step", 0) for r in steps] == [0, 2, 4, 2, 4]
    assert (out / "curves.png").stat().st_size > 10_000
    # a second call trains nothing again
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("is finished") == 2


def test_results_names_its_families():
    run = subprocess.run(["bash", "scripts/results.sh", "nope"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "resnet|vit" in run.stderr


def test_vit_ablation_runs_end_to_end_at_tiny_size(tmp_path, real_photos):
    """``make results-vit-ablation``: one arm per setting put back, all against the budget arm."""
    if not TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed: run `bash scripts/setup.sh` as root")
    pytest.importorskip("timm")
    out = tmp_path / "out"
    env = {**_tiny_env(tmp_path, out), "STEPS": "2", "RESULTS": str(tmp_path / "no-results")}
    run = subprocess.run(["bash", "scripts/ablate_vit.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = {r["model"]: r for r in map(json.loads, (out / "eval.jsonl").read_text().splitlines())}
    arms = ["budget", "photos", "views64", "lr_tiny", "batch8"]
    assert list(rows) == ["random", *arms]
    assert all(set(rows[arm]["differences"]) == {"budget"} for arm in arms[1:])
    assert all(rows[arm]["info"][0]["step"] == 2 for arm in arms)  # every arm stopped at STEPS
    configs = {arm: (out / f"{arm}_s0" / "checkpoints" / "config.yaml").read_text() for arm in arms}
    assert str(tmp_path / "photos") in configs["photos"] and str(tmp_path / "photos") not in configs["budget"]
    assert "base_lr: 0.00128" in configs["lr_tiny"] and "global_size: 48" in configs["views64"]
    assert "batch_size: 2" in configs["batch8"]
    table = (out / "table.txt").read_text()
    assert "photos - budget" in table and table.count("rotation accuracy, ") == len(arms)
