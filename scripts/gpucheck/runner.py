"""Run the plan: each step a subprocess under its time cap and the whole run's budget; one JSON line
per figure (also for a step skipped or failed, with the reason) in ``figures.jsonl``."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpucheck import figures as F
from gpucheck.plan import Step

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)
MIN_USEFUL_S = 20  # a step given less than this would only measure start-up: skip it


@dataclass
class Outcome:
    """How a capped subprocess ended: status, time taken, why (when not ok), output and exit code."""

    status: str  # ok | failed | timeout | skipped
    seconds: float
    reason: str = ""
    stdout: str = ""
    returncode: int | None = None


def missing_modules(names: list[str]) -> list[str]:
    """The modules of ``names`` that cannot be imported here."""
    out = []
    for n in names:
        try:
            if importlib.util.find_spec(n) is None:
                out.append(n)
        except (ImportError, ValueError):
            out.append(n)
    return out


def run_capped(argv: list[str], log_path: Path, cap_s: float, env: dict, cwd: Path) -> Outcome:
    """Run ``argv`` (output to ``log_path``) for at most ``cap_s`` seconds; on timeout its whole
    process group (DataLoader workers included) is stopped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as logf:
        logf.write("$ " + " ".join(argv) + "\n")
        logf.flush()
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc, status = None, "timeout"
    text = log_path.read_text(errors="replace")
    reason = ""
    if status == "failed":
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        reason = f"exit {rc}: {last[0][:300]}"
    elif status == "timeout":
        reason = f"stopped at its {cap_s:.0f} s cap"
    return Outcome(status, time.perf_counter() - t0, reason, text, rc)


def clear_output(step: Step) -> None:
    """Remove what an earlier run of the step left (the entry points append to their logs)."""
    if step.output is None:
        return
    if step.kind == "train":
        shutil.rmtree(step.output.parent, ignore_errors=True)  # its output_dir: log, checkpoints
    else:
        step.output.unlink(missing_ok=True)


def parse(step: Step, outcome: Outcome) -> list[dict]:
    """The figures of a finished step (raises ValueError when its output lacks them)."""
    if step.kind == "bench":
        return F.bench_figures(step.name, step.output)
    if step.kind == "model":
        return F.model_bench_figures(step.name, outcome.stdout)
    if step.kind == "train":
        return F.train_figures(step.name, step.output, step.batch)
    if step.kind == "geometry":
        return F.geometry_figures(step.name, step.output)
    if step.kind == "pytest":
        return F.pytest_figures(step.name, step.output)
    raise ValueError(f"unknown step kind {step.kind!r}")


def context(mode: str) -> dict:
    """What every figure record says about where it was measured."""
    import torch

    ctx = {
        "mode": mode,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        ctx["gpu"] = torch.cuda.get_device_name(0)
    return ctx


class FigureLog:
    """``figures.jsonl``: one line per figure, written as soon as it is known."""

    def __init__(self, path: Path, ctx: dict) -> None:
        self.path, self.ctx, self.records = path, ctx, []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def add(self, record: dict) -> None:
        """Append ``record``, stamped with the context and the time, to the records and the file."""
        record = {**record, **self.ctx, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def run_plan(
    steps: list[Step],
    figures: FigureLog,
    logs: Path,
    env: dict,
    cwd: Path,
    deadline: float,
    only: set[str] | None = None,
    on_line: Callable[[str], None] = log.info,
    progress: tqdm | None = None,
) -> None:
    """Run every step (or those named in ``only``) in order, within the ``deadline`` (a
    ``time.monotonic()`` value), turning each into figure records."""
    for step in steps:
        if progress is not None:
            progress.set_description(step.name)
        left = deadline - time.monotonic()
        base = {"figure": step.name, "what": step.what, "command": step.readme_cmd, "argv": step.argv}
        missing = missing_modules(step.needs)
        reason = ""
        if step.blocked:
            reason = step.blocked
        elif only is not None and step.name not in only:
            reason = "not in --only"
        elif missing:
            reason = f"needs {', '.join(missing)} (its wheels were not installed)"
        elif left < min(MIN_USEFUL_S, step.cap_s):
            reason = f"only {max(left, 0):.0f} s left of the budget"
        if reason:
            figures.add({**base, "status": "skipped", "reason": reason})
            if reason != "not in --only":
                on_line(f"skip  {step.name}: {reason}")
        else:
            clear_output(step)
            out = run_capped(step.argv, logs / f"{step.name}.log", min(step.cap_s, left), env, cwd)
            recs: list[dict] = []
            if out.status == "ok" or (step.kind == "pytest" and out.status == "failed"):  # failures are its figure
                try:
                    recs = parse(step, out)
                except (ValueError, KeyError, OSError) as e:
                    out.status, out.reason = "failed", f"output unreadable: {e}"
            if not recs:
                figures.add({**base, "status": out.status, "reason": out.reason, "seconds": round(out.seconds, 1)})
                on_line(f"{out.status:<5} {step.name}: {out.reason} (log: {logs / (step.name + '.log')})")
            for r in recs:
                figures.add({**base, **r, "status": "ok", "seconds": round(out.seconds, 1)})
            if recs:
                on_line(
                    f"ok    {step.name} ({out.seconds:.0f} s): "
                    + ", ".join(f"{r['figure']} = {r['value']} {r['unit']}" for r in recs)
                )
        if progress is not None:
            progress.update(1)
