"""Reading the entry points' outputs into figures, the goals and the README table
(scripts/gpucheck/figures.py, report.py)."""

import json
import subprocess
import sys

import pytest

from gpucheck.figures import model_bench_figures, pytest_figures, train_figures
from gpucheck.report import derived, table
from tests.model.helpers import QUICK_BENCH


def test_train_figures_leave_the_first_window_out_and_weight_by_time(tmp_path):
    batch = 8
    windows = [(10, 50.0, 0.9), (20, 100.0, 0.10), (30, 300.0, 0.02), (35, 200.0, 0.0)]  # step, images/s, data_wait
    log = tmp_path / "log.jsonl"
    with log.open("w") as f:
        f.write(json.dumps({"event": "start", "step": 0}) + "\n")
        for step, ips, wait in windows:
            f.write(json.dumps({"step": step, "loss": 1.0, "images_per_s": ips, "data_wait": wait}) + "\n")
        f.write(json.dumps({"event": "end", "step": 35}) + "\n")
    figs = {r["figure"]: r["value"] for r in train_figures("train.x", log, batch)}
    images = seconds = waiting = 0.0
    for (prev, _, _), (step, ips, wait) in zip(windows, windows[1:]):
        n = (step - prev) * batch
        images, seconds, waiting = images + n, seconds + n / ips, waiting + wait * n / ips
    assert figs["train.x.images_per_s"] == pytest.approx(images / seconds, abs=0.05)
    assert figs["train.x.data_wait"] == pytest.approx(waiting / seconds, abs=1e-4)
    assert figs["train.x.step_ms"] == pytest.approx(1e3 * seconds / (images / batch), rel=1e-3)


def test_train_figures_need_a_window_after_start_up(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 1, "images_per_s": 3.0, "data_wait": 0.1}) + "\n")
    with pytest.raises(ValueError, match="need 2"):
        train_figures("train.x", log, 4)


def test_pytest_figures_count_a_real_run(tmp_path):
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "def test_b(): pass\n"
        "def test_c(): assert 1 == 2\n"
        "@pytest.mark.skip(reason='x')\n"
        "def test_d(): pass\n"
    )
    xml = tmp_path / "out.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            f"--junitxml={xml}",
            str(tmp_path / "test_probe.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
    )
    (rec,) = pytest_figures("pytest.gpu", xml)
    assert rec["value"] == 1
    assert {k: rec["details"][k] for k in ("passed", "failed", "skipped")} == {"passed": 2, "failed": 1, "skipped": 1}


def test_model_bench_figures_read_its_real_table(capsys):
    from model.bench import main

    sizes = ["--global-size", "32", "--local-size", "32", "--num-local", "1", "--proj-hidden", "16"]
    main(["--device", "cpu", "--backbone", "resnet18", "--batch-size", "2", *QUICK_BENCH, *sizes, "--variants", "batched"])
    (rec,) = model_bench_figures("model.x", capsys.readouterr().out)
    assert rec["unit"] == "images/s" and rec["details"]["variant"] == "batched"
    # the two columns it read agree with each other: images/s = batch / step time (printed to 0.1)
    assert rec["value"] == pytest.approx(2 / (rec["details"]["ms_per_step"] / 1e3), rel=0.01, abs=0.051)
    with pytest.raises(ValueError, match="no images/s"):
        model_bench_figures("model.x", "Traceback ...\nRuntimeError: CUDA out of memory")


def _ok(fig, value, unit="images/s", **kw):
    return {"figure": fig, "value": value, "unit": unit, "status": "ok", "details": {}, "what": fig, "command": "`c`", **kw}


def test_goals_follow_the_issue_thresholds():
    records = [
        _ok("bench.dali.clove.m", 12_000.0),
        _ok("bench.torch.clove.m", 9_000.0),
        _ok("model.clove_r50", 5_000.0),
        _ok("train.torch.images_per_s", 1000.0),
        _ok("train.torch.data_wait", 0.04, "fraction of step time"),
        _ok("train.torch.step_ms", 128.0, "ms"),
        _ok("geometry.clove", 1.6, "ms"),
        {"figure": "train.dali", "status": "skipped", "reason": "needs nvidia.dali"},
    ]
    goals = {r["figure"]: r for r in derived(records)}
    assert goals["train.torch.m_share"]["value"] == pytest.approx(1.6 / 128.0)
    assert goals["goal.dali_rate"]["met"] is True  # 12,000 >= 10,000
    assert goals["goal.dali_over_step"]["value"] == pytest.approx(12_000 / 5_000) and goals["goal.dali_over_step"]["met"]
    assert goals["goal.torch_vs_dali"]["value"] == pytest.approx(0.75) and goals["goal.torch_vs_dali"]["met"] is False
    assert goals["goal.m_share"]["met"] is (1.6 / 128.0 < 0.01)
    assert goals["goal.data_wait.torch"]["met"] is True
    assert goals["goal.data_wait.dali"]["met"] is None and goals["goal.data_wait.dali"]["status"] == "skipped"


def test_table_has_one_row_per_step_and_says_why_one_is_missing():
    records = [
        _ok("bench.torch.clove", 900.0),
        _ok("bench.torch.clove.reference", 300.0),
        _ok("bench.torch.clove.vs_reference", 3.0, "x"),
        _ok("train.torch.images_per_s", 1000.0),
        _ok("train.torch.data_wait", 0.04, "fraction of step time"),
        _ok("train.torch.step_ms", 128.0, "ms"),
        {"figure": "train.dali", "status": "skipped", "reason": "needs nvidia.dali", "what": "dali run", "command": "`t`"},
    ]
    text = table(records + derived(records))
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith(("| what", "| goal"))]
    steps = [r for r in rows if "%" in r or "images/s" in r or "not measured" in r]
    assert text.startswith("| what | command (above) | figure |")
    assert any("900 vs 300 images/s: 3.00×" in r for r in rows)
    assert any("1,000 images/s, 4.00 % of step time waiting for data" in r for r in rows)
    assert any(r.startswith("| dali run |") and "not measured: skipped (needs nvidia.dali)" in r for r in rows)
    assert len([r for r in steps if "goal" not in r]) >= 3
