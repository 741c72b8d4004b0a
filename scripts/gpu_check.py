"""Measure every GPU figure the project promises, in one command (issue #14).

On a CUDA machine without network, from a fresh checkout:

    bash scripts/gpu_check.sh --wheels /tmp/densessl-transfer [TRIP_DIR] --copy-to "$OUT"

installs the wheels that came over (``--prepare`` made them), builds benchmark shards from the
photos that came with them, runs ``pytest -m gpu``, ``pipeline.bench`` (torch and DALI backends,
two-view and CLoVE recipes, with and without M, and against the reference), ``model.bench``
(CLoVE R50 bf16; GTSA ViT-S/16 once ``model.bench`` has ``--method``), 100-step training runs and
the time of M inside a step, each under a time cap; writes one JSON line per figure to
``OUT/figures.jsonl`` and prints the README's "Measured" table (also ``OUT/table.md``).

    bash scripts/gpu_check.sh --dry-run                  # the same plan on this CPU, tiny sizes
    bash scripts/gpu_check.sh --prepare .transfer        # where the registries are: wheels + photos in trips
    bash scripts/gpu_check.sh --stash .transfer/trips/trip-01   # on the GPU machine, per trip
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

from gpucheck.plan import DRY, GPU, Data, build_plan  # noqa: E402
from gpucheck.runner import FigureLog, context, run_capped, run_plan  # noqa: E402

STASH = Path("/tmp/densessl-transfer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``sys.argv[1:]`` when ``argv`` is None); ``--trip-mb`` below 1 is an error."""
    ap = argparse.ArgumentParser(
        prog="bash scripts/gpu_check.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = ap.add_argument_group("what to do (default: measure)")
    mode.add_argument("--dry-run", action="store_true", help="run the same plan on the CPU with tiny sizes")
    mode.add_argument("--list", action="store_true", help="print the plan (steps, caps, commands) and exit")
    mode.add_argument(
        "--prepare",
        type=Path,
        metavar="DIR",
        help="download the wheels and pack the photos into DIR/trips/trip-NN (needs the registries)",
    )
    mode.add_argument(
        "--stash",
        type=Path,
        nargs="+",
        metavar="TRIP",
        help=f"copy these trip folders' pieces into --stash-dir (default {STASH}) and exit",
    )
    run = ap.add_argument_group("measuring")
    run.add_argument(
        "--wheels",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="folders holding trips or stashed pieces: rebuild, verify and install them first",
    )
    run.add_argument(
        "--photos",
        type=Path,
        help="JPEG/PNG photos for the benchmark shards (default: those that came with --wheels, else the installed real photos)",
    )
    run.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/gpu-check, or runs/gpu-check-dry for --dry-run)"
    )
    run.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds for the whole run; later steps skip when it is spent (default 480; dry run 3600, "
        "its caps x5: the CPU steps are slow on a shared 2-core machine)",
    )
    run.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps (names as --list shows)")
    run.add_argument("--copy-to", type=Path, help="also copy figures.jsonl, table.md and logs.tar.gz here")
    prep = ap.add_argument_group("--prepare")
    prep.add_argument("--python-version", default="3.12", help="the GPU machine's Python (major.minor)")
    prep.add_argument("--glibc", default="2.39", help="the GPU machine's glibc (manylinux tags up to it)")
    prep.add_argument("--trip-mb", type=int, default=60, help="largest trip (and piece), in MB")
    prep.add_argument("--no-dali", action="store_true", help="leave DALI (~270 MB) out")
    ap.add_argument("--stash-dir", type=Path, default=STASH, help="where --stash collects pieces")
    args = ap.parse_args(argv)
    if args.trip_mb < 1:
        ap.error("--trip-mb must be at least 1")
    return args


def do_prepare(args: argparse.Namespace) -> int:
    """``--prepare``: download the wheels, pack them with the photos into trips and print the calls
    that bring them over; returns the exit status."""
    from gpucheck.prepare import prepare

    glibc_minor = int(args.glibc.split(".")[1])
    manifest = prepare(args.prepare, args.python_version, glibc_minor, args.photos, args.trip_mb, not args.no_dali)
    trips: dict[int, dict] = {}
    groups: dict[str, float] = {}
    for f in manifest["files"]:
        groups[f["group"]] = groups.get(f["group"], 0) + f["size"] / 1e6
        for p in f["pieces"]:
            t = trips.setdefault(p["trip"], {"bytes": 0, "groups": set()})
            t["bytes"] += p["size"]
            t["groups"].add(f["group"])
    trip_dir = args.prepare / "trips"
    print(
        f"{len(manifest['files'])} files in {manifest['trips']} trips under {trip_dir} ("
        + ", ".join(f"{g} {mb:.0f} MB" for g, mb in groups.items())
        + "):"
    )
    needed = [i for i, t in sorted(trips.items()) if t["groups"] - {"spare"}]
    for i, t in sorted(trips.items()):
        note = "" if i in needed else "   (spare only: the GPU image had these; bring it if pip says one is missing)"
        print(f"  trip-{i:02d}  {t['bytes'] / 1e6:6.1f} MB  {', '.join(sorted(t['groups']))}{note}")
    print(
        "\non the GPU machine: one call per trip, back to back so that it stays warm (carry the trip folder),\n"
        "the last one runs the check (about 8 minutes; run's timeout_s 600):"
    )
    for i in needed[:-1]:
        print(f"  bash scripts/gpu_check.sh --stash {trip_dir}/trip-{i:02d}")
    print(f'  bash scripts/gpu_check.sh --wheels {STASH} {trip_dir}/trip-{needed[-1]:02d} --copy-to "$OUT"')
    first = sorted(trips[needed[0]]["groups"])
    if "dali" in groups and {"base", "photos"} <= set(first):
        print(
            f"a short window, without DALI (its steps skip): bash scripts/gpu_check.sh --wheels {trip_dir}/trip-"
            f'{needed[0]:02d} --copy-to "$OUT"'
        )
    return 0


def model_bench_flags(py: list[str], env: dict) -> set[str]:
    """The options ``python -m model.bench --help`` lists (the plan adapts to them)."""
    r = subprocess.run([*py, "-m", "model.bench", "--help"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    return {tok.strip(",[]") for tok in r.stdout.split() if tok.startswith(("--", "[--"))} if r.returncode == 0 else set()


def build_shards(
    py: list[str], data: Data, out: Path, photos: Path | None, env: dict, say: Callable[[str], object]
) -> tuple[Path, str]:
    """Benchmark shards from the photos (reused when already built); returns (folder, status)."""
    shards = out / "shards"
    if (shards / "manifest.json").is_file():
        return shards, "ok"
    images = out / "bench-images"
    make = [*py, "scripts/make_bench_images.py", str(images), "--count", str(data.images)]
    make += ["--photos", str(photos)] if photos else []
    r = run_capped(make, out / "logs" / "setup.images.log", 180, env, ROOT)
    if r.status == "ok":
        r = run_capped(
            [
                *py,
                "-m",
                "shards",
                "folder",
                str(images),
                str(shards),
                "--shard-size",
                data.shard_size,
                "--workers",
                str(max(1, data.workers)),
                "--no-progress",
                "--overwrite",
            ],
            out / "logs" / "setup.shards.log",
            180,
            env,
            ROOT,
        )
    say(f"{r.status:<5} shards: {data.images} images -> {shards}" + (f" ({r.reason})" if r.reason else f" ({r.seconds:.0f} s)"))
    return shards, r.status


def copy_results(out: Path, dest: Path) -> None:
    """Copy ``figures.jsonl``, ``table.md`` and the logs (as ``logs.tar.gz``) from ``out`` to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("figures.jsonl", "table.md"):
        if (out / name).is_file():
            shutil.copyfile(out / name, dest / name)
    with tarfile.open(dest / "logs.tar.gz", "w:gz") as tar:
        tar.add(out / "logs", arcname="logs")


def measure(args: argparse.Namespace) -> int:
    """Install what came over, build the shards and run the plan, writing the figures and the table;
    returns the exit status."""
    from tqdm import tqdm

    from gpucheck.report import derived, table

    t_start = time.monotonic()
    sz = DRY if args.dry_run else GPU
    mode = "dry-run" if args.dry_run else "gpu"
    out = (args.out or ROOT / ("runs/gpu-check-dry" if args.dry_run else "runs/gpu-check")).resolve()
    budget = args.budget_s or (3600 if args.dry_run else 480)
    deadline = t_start + budget
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU plan, also on a machine with a GPU
    py = [sys.executable]
    say = tqdm.write

    if not args.dry_run and not args.list:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device here; run with --dry-run for the CPU plan", file=sys.stderr)
            return 2
    photos = args.photos
    if args.wheels:
        from gpucheck.install import install_transfer

        try:
            got = install_transfer(args.wheels, out / "transfer", dry_run=args.dry_run, say=print)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        photos = photos or got
    # the plan adapts to model.bench's options (GTSA joins with --method); not needed when --only leaves it out
    need_flags = not args.only or any(n.startswith("model.") for n in args.only)
    flags = model_bench_flags(py, env) if need_flags else set()
    shards = out / "shards"
    steps = build_plan(py, sz, out, shards, flags, ROOT)
    unknown = set(args.only or []) - {s.name for s in steps}
    if unknown:
        print(f"error: no step {', '.join(sorted(unknown))}; the steps are: {', '.join(s.name for s in steps)}", file=sys.stderr)
        return 2
    if args.list:
        for s in steps:
            print(f"{s.name:<22} cap {s.cap_s:>4.0f} s  {' '.join(s.argv[1:])}")
        return 0
    if need_flags and "--method" not in flags:
        print("skip  model.gtsa_vits16: `python -m model.bench --help` lists no --method yet (GTSA not merged)")

    figures = FigureLog(out / "figures.jsonl", {**context(mode)})
    shards, status = build_shards(py, sz.data, out, photos, env, say)
    figures.add(
        {
            "figure": "setup.shards",
            "status": status,
            "value": sz.data.images if status == "ok" else None,
            "unit": "images",
            "what": "benchmark shards",
            "command": "`scripts/make_bench_images.py` + `shards folder`",
        }
    )
    if status != "ok":
        for s in steps:
            if s.kind in ("bench", "train", "geometry"):
                s.blocked = "no benchmark shards (see logs/setup.*.log)"
    # a bar on a terminal; in a captured log (a GPU session's output) the per-step lines alone
    with tqdm(total=len(steps), unit="step", desc="gpu check", dynamic_ncols=True, disable=None) as bar:
        run_plan(steps, figures, out / "logs", env, ROOT, deadline, set(args.only) if args.only else None, say, bar)
    for rec in derived(figures.records):
        figures.add(rec)
    text = table(figures.records)
    (out / "table.md").write_text(text)
    print(
        f"\n{text}\nfigures: {out / 'figures.jsonl'} ({len(figures.records)} lines); logs: {out / 'logs'}; "
        f"{time.monotonic() - t_start:.0f} s"
    )
    if args.copy_to:
        copy_results(out, args.copy_to)
        print(f"copied figures.jsonl, table.md, logs.tar.gz to {args.copy_to}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``--prepare``, ``--stash`` or measure; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.prepare:
        return do_prepare(args)
    if args.stash:
        from gpucheck.transfer import stash

        n = stash(args.stash, args.stash_dir)
        print(f"stashed {n} pieces in {args.stash_dir}")
        return 0
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
