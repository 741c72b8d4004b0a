"""Running the plan under caps and a budget (scripts/gpucheck/runner.py)."""

import os
import sys
import time
from pathlib import Path

from gpucheck.plan import Step
from gpucheck.runner import FigureLog, clear_output, run_capped, run_plan

ENV = dict(os.environ)


def test_a_step_past_its_cap_is_stopped_with_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    t0 = time.monotonic()
    out = run_capped([sys.executable, "-c", code], tmp_path / "log", 3, ENV, tmp_path)
    assert out.status == "timeout" and "3 s cap" in out.reason and time.monotonic() - t0 < 30
    child = int(pidfile.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_a_failing_step_says_its_exit_code_and_last_line(tmp_path):
    out = run_capped(
        [sys.executable, "-c", "import sys; print('first'); sys.exit('no CUDA device here')"], tmp_path / "log", 30, ENV, tmp_path
    )
    assert out.status == "failed" and out.reason == "exit 1: no CUDA device here"


def test_steps_skip_with_one_reason_each(tmp_path):
    ok = Step("pytest.x", "w", "`c`", [sys.executable, "-c", "print(1)"], 8, "pytest", output=tmp_path / "none.xml")
    dali = Step("bench.dali.x", "w", "`c`", [sys.executable, "-c", "print(1)"], 30, "bench", ["no_such_module_xyz"])
    late = Step("bench.torch.x", "w", "`c`", [sys.executable, "-c", "print(1)"], 30, "bench")
    figs = FigureLog(tmp_path / "f.jsonl", {"mode": "test"})
    lines = []
    # 10 s left: enough for the 8 s step; then less than the 20 s a 30 s step needs at least
    run_plan([dali, ok, late], figs, tmp_path / "logs", ENV, tmp_path, time.monotonic() + 10, on_line=lines.append)
    by = {r["figure"]: r for r in figs.records}
    assert by["bench.dali.x"]["status"] == "skipped" and "no_such_module_xyz" in by["bench.dali.x"]["reason"]
    assert by["pytest.x"]["status"] == "failed" and "none.xml was not written" in by["pytest.x"]["reason"]
    assert by["bench.torch.x"]["status"] == "skipped" and "left of the budget" in by["bench.torch.x"]["reason"]
    assert len(lines) == 3 and (tmp_path / "f.jsonl").read_text().count("\n") == 3


def test_a_rerun_starts_from_clean_outputs(tmp_path):
    bench_out = tmp_path / "bench" / "b.jsonl"
    bench_out.parent.mkdir()
    bench_out.write_text('{"images_per_s": 1}\n')
    run_dir = tmp_path / "train-torch"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "log.jsonl").write_text("{}\n")
    clear_output(Step("bench.x", "w", "c", [], 1, "bench", output=bench_out))
    clear_output(Step("train.x", "w", "c", [], 1, "train", output=run_dir / "log.jsonl"))
    assert not bench_out.exists() and not run_dir.exists() and bench_out.parent.exists()
