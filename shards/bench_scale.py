"""How conversion and loading grow with the dataset: ``python -m shards bench --scale 10k,30k,100k``.

For each size N (training images; the validation split adds ImageNet's 3.9 %), it lays out an
ImageNet-layout tree of real-photo crops (:mod:`shards.imagenet_like`: ~110 kB JPEGs at
ImageNet's sizes, 1,000 class folders, a flat ``val/`` labelled by the devkit's files), then
measures, each step in its own process:

- ``python -m shards imagenet TREE OUT``: seconds, images/s and MB/s of source bytes, user and
  system CPU time per image (all its processes), peak memory: PSS summed over the converter and
  its workers (pages the forked workers share count once), its anonymous part (what they own,
  not file pages they map), and the RSS of the largest process;
- ``python -m shards verify OUT``: seconds and peak PSS (it maps the shards it checks, so file
  pages of up to one shard per worker count there) and its anonymous part;
- the cpu loader (CLoVE recipe, batch 64, 2 workers): seconds from building it to the first batch
  over the train shards, and the same after ``load_state_dict`` of a position half-way through the
  epoch (a resume reads the skipped samples' bytes without decoding them); each the median of 3
  fresh processes.

Once, it also converts the smallest tree into 2,000 tiny shards (``--max-count``) and measures
the loader's start-up over them.

The tree's files are generated once into a pool that only grows (30 k reuses the first 10 k) and
linked into each tree, so they cost disk once. Each size needs its shards' bytes (about the
tree's) free on top; a size that does not fit is skipped with the figures it would need. The
source tree was just written, so conversion reads it from the page cache as long as it fits in
memory: the figures are the converter's cost, not a disk's.

Every measured row is printed and appended as a JSON line to ``--json-out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from shards.imagenet_like import NUM_CLASSES, VAL_FRACTION, grow_pool, link_tree

BYTES_PER_IMAGE = 112_000  # what shards.imagenet_like writes on average (for the disk check)
TINY_SHARDS = 2000
POLL_S = 0.1


def parse_sizes(text: str) -> list[int]:
    """``'10k,30k,100k'`` -> ``[10000, 30000, 100000]``."""
    try:
        sizes = [int(float(w.strip()[:-1]) * 1000) if w.strip().lower().endswith("k") else int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes: {text!r} (example: 10k,30k,100k)") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sorted(sizes)


def _pss(pid: int) -> tuple[int, int] | None:
    """``(PSS, anonymous PSS)`` of ``pid`` in bytes from ``/proc/PID/smaps_rollup`` (one cheap
    read; psutil's ``memory_full_info`` parses every mapping, which cost a quarter of a core here).
    The anonymous part is the memory the process owns; the rest is file pages it maps (``verify``
    maps the shards it checks), which the kernel reclaims at will."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                name, _, rest = line.partition(b":")
                if name in (b"Pss", b"Pss_Anon"):
                    fields[name] = int(rest.split()[0]) * 1024
    except OSError:
        return None
    return (fields[b"Pss"], fields.get(b"Pss_Anon", fields[b"Pss"])) if b"Pss" in fields else None


def _tree_memory(proc: psutil.Process) -> tuple[int, int, int]:
    """``(PSS, anonymous PSS, both summed over the process tree; RSS of its largest process)`` in
    bytes. PSS splits pages shared by forked workers among them, so the sum counts them once."""
    pss = anon = largest = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue  # ended between listing and reading
        share = _pss(p.pid) or (rss, rss)
        pss, anon, largest = pss + share[0], anon + share[1], max(largest, rss)
    return pss, anon, largest


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall seconds, user and system CPU seconds (all its processes) and peak
    memory in MB, sampled every 100 ms (see :func:`_tree_memory`). RuntimeError with the output's
    tail when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = {"pss": 0, "anon": 0, "largest": 0}
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            for name, value in zip(peak, _tree_memory(proc)):
                peak[name] = max(peak[name], value)
            time.sleep(POLL_S)
        seconds = time.perf_counter() - t0
        log.seek(0)
        output = log.read().decode(errors="replace")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes the workers it waited for
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {output[-2000:]}")
    return {
        "seconds": seconds,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        **{f"peak_{name}_mb": value / 2**20 for name, value in peak.items()},
        "output": output,
    }


def mid_epoch_state(out: Path, spec: str, workers: int, batch_size: int, seed: int = 0) -> dict:
    """A loader position half-way through each worker's share of an exact pass (``state_dict`` form)."""
    from pipeline.source import StreamPlan, list_shards

    info = json.loads((out / "_info.json").read_text())["splits"]["train"]
    lengths = dict(zip(info["filenames"], info["shard_lengths"]))
    plan = StreamPlan(urls=tuple(list_shards(spec)), seed=seed, num_workers=workers, batch_size=batch_size)
    positions = []
    for w in range(workers):
        share = sum(lengths[Path(u).name] for u in plan.worker_shards(w))
        positions.append(share // 2 // batch_size * batch_size)
    batches = [p // batch_size for p in positions]
    return {
        "epoch": 0,
        "batches": sum(batches),
        "positions": positions,
        "worker_batches": batches,
        "next_worker": 0,
        "num_workers": workers,
    }


def first_batch(spec: str, workers: int, batch_size: int, state: dict | None) -> dict:
    """Seconds from building the cpu loader (CLoVE recipe) to its first batch, resumed at ``state``."""
    import torch

    from pipeline.config import LoaderConfig
    from pipeline.loader import build_loader

    torch.set_num_threads(1)
    cfg = LoaderConfig(shards=spec, backend="cpu", recipe="clove", batch_size=batch_size, num_workers=workers)
    t0 = time.perf_counter()
    loader = build_loader(cfg)
    if state is not None:
        loader.load_state_dict(state)
    batch = next(iter(loader))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "batch": int(batch.views[0].shape[0]), "shards": loader.shard_count}


def measure_first_batch(spec: str, workers: int, batch_size: int, state: dict | None = None, repeats: int = 3) -> float:
    """:func:`first_batch` in fresh processes (no warm workers or imports); the median seconds of ``repeats``."""
    cmd = [sys.executable, "-m", "shards.bench_scale", "--first-batch", spec, "--workers", str(workers)]
    cmd += ["--batch-size", str(batch_size)]
    if state is not None:
        cmd += ["--state", json.dumps(state)]
    runs = [json.loads(run_measured(cmd)["output"].strip().splitlines()[-1])["seconds"] for _ in range(repeats)]
    return statistics.median(runs)


def convert_cmd(tree: Path, out: Path, workers: int, extra: tuple[str, ...] = ()) -> list[str]:
    """The ``python -m shards imagenet`` command line of one conversion."""
    return [sys.executable, "-m", "shards", "imagenet", str(tree), str(out), "--workers", str(workers), "--no-progress", *extra]


def report(row: dict, json_out: Path | None) -> None:
    """Print one measured row and append it to the JSON-lines log."""
    print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        with json_out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def bench_size(scratch: Path, pool: Path, n: int, args: argparse.Namespace, photos: list[Path]) -> dict | None:
    """Measure one size; None when it does not fit on the disk."""
    per_class, n_val = n // args.classes, round(n * VAL_FRACTION)
    images = n + n_val
    have = sum(1 for _ in pool.glob("train/*/*.JPEG")) + sum(1 for _ in pool.glob("val/*.JPEG")) if pool.exists() else 0
    need = (images - min(have, images)) * BYTES_PER_IMAGE + images * BYTES_PER_IMAGE * 1.05 + (1 << 30)
    free = shutil.disk_usage(scratch).free
    if need > free:
        print(f"{n}: skipped, needs {need / 1e9:.1f} GB free (pool + shards), {free / 1e9:.1f} GB free", flush=True)
        return None
    print(f"{n} train + {n_val} val images: generating the pool ...", flush=True)
    from tqdm import tqdm

    missing = max(0, images - have)
    with tqdm(total=missing, unit="img", disable=args.no_progress or not missing) as bar:
        grow_pool(pool, per_class, n_val, photos, num_classes=args.classes, workers=args.workers, progress=bar.update)
    tree, out = scratch / f"tree-{n}", scratch / f"shards-{n}"
    for stale in (tree, out, scratch / "tiny-shards"):  # left by an interrupted run: never resume it
        shutil.rmtree(stale, ignore_errors=True)
    source_bytes = link_tree(pool, tree, per_class, n_val, num_classes=args.classes)
    conv = run_measured(convert_cmd(tree, out, args.workers))
    convert_s = conv["seconds"] - args.startup_s  # the converter's work, not Python's start-up
    verify = run_measured([sys.executable, "-m", "shards", "verify", str(out), "--workers", str(args.workers), "--no-progress"])
    manifest = json.loads((out / "manifest.json").read_text())
    spec = str(out / "train-*.tar")
    start = measure_first_batch(spec, args.workers, args.batch_size)
    state = mid_epoch_state(out, spec, args.workers, args.batch_size)
    resume = measure_first_batch(spec, args.workers, args.batch_size, state)
    row = {
        "size": n,
        "images": images,
        "kept": manifest["totals"]["samples"],
        "source_gb": source_bytes / 1e9,
        "shards": manifest["totals"]["shards"],
        "convert_s": convert_s,
        "convert_images_per_s": images / convert_s,
        "convert_mb_per_s": source_bytes / 1e6 / convert_s,
        "convert_us_per_image": 1e6 * convert_s / images,
        "convert_user_us_per_image": 1e6 * conv["user_s"] / images,
        "convert_sys_us_per_image": 1e6 * conv["sys_s"] / images,
        "convert_peak_pss_mb": conv["peak_pss_mb"],
        "convert_peak_anon_mb": conv["peak_anon_mb"],
        "convert_peak_rss_largest_mb": conv["peak_largest_mb"],
        "verify_s": verify["seconds"] - args.startup_s,
        "verify_us_per_image": 1e6 * (verify["seconds"] - args.startup_s) / images,
        "verify_peak_pss_mb": verify["peak_pss_mb"],
        "verify_peak_anon_mb": verify["peak_anon_mb"],
        "first_batch_s": start,
        "resume_skipped_samples": sum(state["positions"]),
        "resume_first_batch_s": resume,
        "workers": args.workers,
    }
    report(row, args.json_out)
    if n == min(args.scale):
        tiny = scratch / "tiny-shards"
        per_shard = max(1, images // args.tiny_shards)
        run_measured(convert_cmd(tree, tiny, args.workers, ("--max-count", str(per_shard), "--shard-size", "1G")))
        tiny_spec = str(tiny / "train-*.tar")
        count = len(list(tiny.glob("train-*.tar")))
        seconds = measure_first_batch(tiny_spec, args.workers, args.batch_size)
        report({"tiny_shards": count, "first_batch_s": seconds}, args.json_out)
        shutil.rmtree(tiny, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)  # the next size needs the disk
    shutil.rmtree(tree, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    """``python -m shards bench --scale SIZES`` (see the module docstring); returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m shards bench --scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=parse_sizes, default=parse_sizes("10k,30k,100k"), help="sizes, e.g. 10k,30k,100k")
    ap.add_argument("--workers", type=int, default=2, help="converter, verify and loader workers (default 2)")
    ap.add_argument("--batch-size", type=int, default=64, help="loader batch (default 64)")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system temp)")
    ap.add_argument("--keep-pool", action="store_true", help="keep the generated images (TMP/shards-scale/pool) for the next run")
    ap.add_argument("--json-out", type=Path, default=Path("runs/bench_scale.jsonl"), help="JSON-lines log")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--classes", type=int, default=NUM_CLASSES, help=argparse.SUPPRESS)  # tests: fewer folders
    ap.add_argument("--tiny-shards", type=int, default=TINY_SHARDS, help=argparse.SUPPRESS)
    ap.add_argument("--first-batch", default=None, help=argparse.SUPPRESS)  # internal: one loader start-up
    ap.add_argument("--state", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if any(n % args.classes for n in args.scale):
        ap.error(f"--scale: use multiples of {args.classes}, so that every class folder holds the same count")
    if args.first_batch is not None:
        state = json.loads(args.state) if args.state else None
        print(json.dumps(first_batch(args.first_batch, args.workers, args.batch_size, state)))
        return 0

    from shards.photos import MISSING_HINT, available_photos

    photos = available_photos()
    if not photos:
        print(f"shards bench --scale: {MISSING_HINT}")
        return 1
    base = args.tmp or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    # a kept pool lives at a fixed place, so the next run finds it
    scratch = base / "shards-scale" if args.keep_pool else Path(tempfile.mkdtemp(prefix="shards-scale-", dir=base))
    scratch.mkdir(exist_ok=True)
    # what starting `python -m shards` costs, taken off the converter's and verify's seconds
    args.startup_s = min(run_measured([sys.executable, "-m", "shards", "--help"])["seconds"] for _ in range(3))
    print(
        f"shards bench --scale: sizes {', '.join(map(str, args.scale))}, {len(photos)} real photos, "
        f"workers {args.workers}, cpus {os.cpu_count()}, scratch {scratch}, process start-up {args.startup_s:.2f} s "
        "(taken off convert and verify)",
        flush=True,
    )
    try:
        for n in args.scale:
            bench_size(scratch, scratch / "pool", n, args, photos)
    finally:
        if not args.keep_pool:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
