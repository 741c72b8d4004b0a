"""``scripts/gpu_check.py`` end to end on this CPU: the dry run, the arrival of trips, the install step."""

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from gpucheck.install import install_transfer
from gpucheck.plan import DRY, build_plan
from gpucheck.transfer import cut_into_trips

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def run_check(*args, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def read_figures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "figures.jsonl").read_text().splitlines()]


def test_dry_run_writes_a_line_for_every_step_and_the_table(real_photos, tmp_path):
    out = tmp_path / "check"
    r = run_check("--dry-run", "--only", "bench.torch.two-view", "--out", str(out), "--copy-to", str(tmp_path / "back"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    recs = read_figures(out)
    by = {x["figure"]: x for x in recs}
    assert by["setup.shards"]["status"] == "ok"
    assert by["bench.torch.two-view"]["status"] == "ok" and by["bench.torch.two-view"]["value"] > 0
    assert by["bench.torch.two-view"]["mode"] == "dry-run"
    plan = [s.name for s in build_plan([sys.executable], DRY, out, out / "shards", set(), ROOT)]
    for name in plan:
        if name != "bench.torch.two-view":
            assert by[name]["status"] == "skipped" and by[name]["reason"] == "not in --only"
    assert {x["figure"] for x in recs if x["figure"].startswith("goal.")} >= {"goal.dali_rate", "goal.m_share"}
    table = (out / "table.md").read_text()
    assert table.startswith("| what | command (above) | figure |") and table in r.stdout
    (row,) = table.split("\n\n")[0].splitlines()[2:]  # one row: the step that ran
    assert "--recipe two-view --batch-size 4 --decode cpu`" in row and "images/s" in row and "dry run" in row
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["figures.jsonl", "logs.tar.gz", "table.md"]


@pytest.mark.slow(reason="the whole plan on 2 CPU cores: a few minutes")
def test_the_whole_dry_run_measures_every_step(real_photos, tmp_path):
    r = run_check("--dry-run", "--out", str(tmp_path / "check"))
    assert r.returncode == 0, r.stderr[-2000:]
    recs = read_figures(tmp_path / "check")
    steps = [x for x in recs if not x["figure"].startswith(("goal.", "setup.")) and x["figure"] != "model.gtsa_vits16"]
    assert steps and all(x["status"] == "ok" for x in steps), [
        (x["figure"], x.get("reason")) for x in steps if x["status"] != "ok"
    ]
    assert all(x["value"] >= 0 for x in steps)
    assert any(x["figure"] == "train.torch.m_share" for x in recs)


def _fake_wheel(folder: Path) -> Path:
    """A minimal valid wheel of a project nothing requires (the install step must still rebuild it)."""
    w = folder / "gpucheck_probe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(w, "w") as z:
        z.writestr("gpucheck_probe/__init__.py", "")
        info = "gpucheck_probe-0.1.dist-info"
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gpucheck-probe\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("gpucheck_probe-0.1.dist-info/RECORD", "")
    return w


def test_trips_arrive_are_stashed_and_installed(real_jpegs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with tarfile.open(src / "photos.tar", "w") as t:
        for i, p in enumerate(real_jpegs[:2]):
            t.add(p, arcname=f"{i:03d}-{p.name}")
    m = cut_into_trips(
        [(_fake_wheel(src), "base"), (src / "photos.tar", "photos")],
        tmp_path / "trips",
        max(1, (src / "photos.tar").stat().st_size // 3),
    )
    trips = sorted((tmp_path / "trips").iterdir())
    assert len(trips) == m["trips"] >= 3
    stash_dir = tmp_path / "stash"
    for t in trips[:-1]:  # one call per trip on the GPU machine
        r = run_check("--stash", str(t), "--stash-dir", str(stash_dir), timeout=120)
        assert r.returncode == 0 and "stashed" in r.stdout, r.stderr
    lines: list[str] = []
    photos = install_transfer([stash_dir, trips[-1]], tmp_path / "work", dry_run=True, say=lines.append)
    assert "transfer: 2 of 2 files complete and verified" in lines[0]
    assert any(ln.startswith("install base: ok") for ln in lines), lines
    assert any(ln.startswith("install dali: skipped") for ln in lines)
    assert sorted(p.name for p in photos.iterdir()) == sorted(f"{i:03d}-{p.name}" for i, p in enumerate(real_jpegs[:2]))
