"""Per-rank throughput of a 2-process CPU launch against one process: ``python -m train.bench_ranks --help``.

Runs the same training config twice, one after the other, for ``--steps`` steps each:

1. one process: ``python -m train --config CONFIG train.cpu=true ...``;
2. two processes: ``accelerate launch --multi_gpu --num_processes 2 -m train ... train.cpu=true``
   (``--cpu --num_processes 2`` would start one process: see the README's multi-machine notes).

Both get the same threads per rank (``--threads``), the same batch per rank (``data.batch_size``
is per rank) and the same loader workers per rank. The rate of each run is the mean of its log's
``images_per_s`` windows after ``--warmup-steps`` (global images: a rank's share is that over
the process count). On a machine with fewer cores than ranks x (threads + workers) the ranks share
cores, and the ratio says so; on 2 cores, ``--threads 1 --workers 0`` gives each rank one core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def train_command(processes: int, config: str, out: Path, overrides: list[str]) -> list[str]:
    """The launch command of one run (plain ``python -m train`` for one process)."""
    if processes == 1:
        head = [sys.executable, "-m", "train"]
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        head = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
        head += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train"]
    return [*head, "--config", config, f"output_dir={out}", *overrides]


def window_rates(log: Path, warmup_steps: int) -> list[float]:
    """``images_per_s`` of the log windows that end after ``warmup_steps``."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r["images_per_s"] for r in rows if "images_per_s" in r and r.get("step", 0) > warmup_steps]


def run(processes: int, args: argparse.Namespace, scratch: Path) -> dict:
    """One run; its processes and mean global images/s after warm-up. RuntimeError when it fails."""
    out = scratch / f"p{processes}"
    overrides = [
        "train.cpu=true",
        f"train.threads={args.threads}",
        f"data.num_workers={args.workers}",
        f"train.max_steps={args.steps}",
        f"log.every_steps={args.log_every}",
        f"checkpoint.every_steps={10 * args.steps}",  # no checkpoint writes inside the timed window
        *args.overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    cmd = train_command(processes, args.config, out, overrides)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{processes}-process run failed ({done.returncode}): {done.stderr[-3000:]}")
    rates = window_rates(out / "log.jsonl", args.warmup_steps)
    if not rates:
        raise RuntimeError(f"{processes}-process run logged no window after step {args.warmup_steps}: raise --steps")
    return {"processes": processes, "images_per_s": sum(rates) / len(rates), "windows": len(rates)}


def main(argv: list[str] | None = None) -> int:
    """Run both launches and print per-rank images/s and their ratio; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m train.bench_ranks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="configs/default.yaml", help="training config (default %(default)s)")
    ap.add_argument("--steps", type=int, default=60, help="steps per run (default %(default)s)")
    ap.add_argument("--warmup-steps", type=int, default=20, help="steps left out of the rate (default %(default)s)")
    ap.add_argument("--log-every", type=int, default=5, help="steps per logged window (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank (default %(default)s)")
    ap.add_argument("--workers", type=int, default=0, help="loader workers per rank (default %(default)s)")
    ap.add_argument("--json-out", type=Path, default=Path("runs/bench_ranks.jsonl"), help="JSON-lines log")
    ap.add_argument("overrides", nargs="*", help="more config overrides, key=value")
    args = ap.parse_args(argv)
    if args.steps <= args.warmup_steps:
        ap.error("--steps must exceed --warmup-steps")
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        one = run(1, args, Path(tmp))
        two = run(2, args, Path(tmp))
    per_rank = two["images_per_s"] / 2
    ratio = per_rank / one["images_per_s"]
    print(
        f"{args.config}, {args.threads} thread(s) and {args.workers} loader worker(s) per rank, cpus {os.cpu_count()}:\n"
        f"  1 process : {one['images_per_s']:.1f} images/s\n"
        f"  2 processes: {two['images_per_s']:.1f} images/s in all, {per_rank:.1f} per rank\n"
        f"  per-rank ratio 2 -> 1: {ratio:.2f}; speed-up of the launch {two['images_per_s'] / one['images_per_s']:.2f}x"
    )
    row = {"config": args.config, "threads": args.threads, "workers": args.workers, "cpus": os.cpu_count()}
    row.update(one_images_per_s=one["images_per_s"], two_images_per_s=two["images_per_s"], per_rank_ratio=ratio)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    with args.json_out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
