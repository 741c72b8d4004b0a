"""The ``python -m evaluation`` command line: rows from ``--checkpoint`` specs, BatchNorm
protocols, baselines, the table and the JSON lines."""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch
from tqdm import tqdm

from evaluation.leakage import Leakage, check_leakage
from evaluation.report import Row, differences, format_table, json_row
from train.writable import check_output_writable

EPILOG = """\
--checkpoint SPEC (repeat it for a multi-row table; NAME=SPEC,SPEC,... makes one row of several
replicates, e.g. two training runs):
  random:ARCH        random init, the library's own, e.g. random:resnet18 (--seeds N: N init seeds)
  random-zero:ARCH   random init with zeroed last norm per residual block (CLoVE's step 0)
  random:CONFIG.yaml the backbone of the config's method at its own init (an architecture no name gives)
  DIR                a method export (holds backbone.json)
  ckpt-*.pt          a training checkpoint (method rebuilt from its config, then exported)
  RUN_DIR            a run's newest checkpoint; with --all-steps every checkpoint (one row per step)

columns, per layer L (percent, mean ± SD over the row's replicates and probe seeds):
  fg/L    foreground IoU of a class-balanced linear per-pixel probe, object vs background
  bf/L    boundary F-score of that probe's masks (2 px tolerance)
  knn/L   kNN top-1 on pooled features (the image's largest object)
  corr/L  cells matched within one cell under known homographies, at grid x stride pixels
  seen    evaluation images found in the run's pretraining shards (content hashes)
Under the rows: the no-information score of each metric and, for every row, its paired 95 %
bootstrap interval against each --baseline row (resampling photos, not cells).

build the data first:  python -m shards copy-paste data/shards/copy-paste
example:  python -m evaluation --checkpoint random:resnet18 --seeds 3 \\
              --checkpoint CLoVE=runs/clove_budget --bn reestimated \\
              --data data/shards/copy-paste --out runs/eval.jsonl"""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m evaluation`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m evaluation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure the dense features of frozen backbones per layer: an object/background probe "
        "(foreground IoU, boundary F), kNN on pooled features, and correspondence under known homographies; "
        "rows with mean ± SD, no-information scores, paired bootstrap intervals against baselines, and a "
        "leakage check. Prints a table (percent) and one JSON line per row (fractions).",
        epilog=EPILOG,
    )
    p.add_argument("--checkpoint", action="append", required=True, metavar="SPEC", help="a row (see below)")
    p.add_argument("--data", required=True, metavar="DIR", help="shards of python -m shards copy-paste")
    p.add_argument("--seeds", type=_positive, default=1, metavar="N", help="init seeds per random:ARCH row (default 1)")
    p.add_argument(
        "--baseline",
        action="append",
        metavar="NAME",
        help="row to compare every other row with (repeatable; default: the first --checkpoint)",
    )
    p.add_argument("--all-steps", action="store_true", help="with a run dir: every ckpt-*.pt, rows by step")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to evaluate (default: all the backbone reports)")
    p.add_argument(
        "--bn",
        choices=("exported", "reestimated", "both"),
        default="exported",
        help="BatchNorm statistics: as exported, re-estimated on the probe's train images (a random network's "
        "are its initial mean 0 / variance 1), or one row each (default %(default)s)",
    )
    p.add_argument("--probe-seeds", type=_positive, default=3, metavar="N", help="probe seeds per model (default 3)")
    p.add_argument("--pairs-per-photo", type=_positive, default=3, metavar="N", help="correspondence pairs per photo (default 3)")
    p.add_argument(
        "--grid", type=_positive, default=12, metavar="N", help="correspondence cells per side, every layer (default 12)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    p.add_argument("--out", metavar="FILE.jsonl", help="append each row's JSON line to this file")
    p.add_argument("--seed", type=int, default=0, help="first seed of random inits, probes, pairs and bootstrap (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="torch intra-op threads for the forward passes (default: torch's choice); on a CPU "
        "shared with other jobs, 1 is often faster",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (24 images per split, 4 photos): for tests")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def split_row_spec(text: str) -> tuple[str | None, list[str]]:
    """``NAME=SPEC,SPEC`` -> (NAME, [SPEC, SPEC]); a plain SPEC -> (None, [SPEC])."""
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name:
        return name, [s for s in rest.split(",") if s]
    return None, [text]


def _leakage(info: dict, evaluation: set[str]) -> Leakage:
    if "init" in info:  # a random network saw nothing
        return Leakage(len(evaluation), 0, "random init")
    return check_leakage(evaluation, info.get("trained_on"))


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv``, evaluate every row, print the table and JSON lines; returns the exit status."""
    from evaluation.evaluate import METRICS, EvalSettings, evaluate, load_data, with_reestimated_bn
    from evaluation.models import expand_spec

    args = build_parser().parse_args(argv)
    settings = EvalSettings.quick() if args.quick else EvalSettings()
    settings.seed = args.seed
    if not args.quick:
        settings.probe_seeds, settings.pairs_per_photo, settings.grid = args.probe_seeds, args.pairs_per_photo, args.grid
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    variants = {"exported": ["exported"], "reestimated": ["re-estimated"], "both": ["exported", "re-estimated"]}[args.bn]
    try:
        if args.out:
            check_output_writable(args.out)  # before minutes of work, not after
        plan = []  # (row group, [(label, builder)]) in table order
        for text in args.checkpoint:
            name, specs = split_row_spec(text)
            models = []
            for spec in specs:
                seeds = range(args.seed, args.seed + args.seeds) if spec.startswith("random") else [args.seed]
                models += [m for s in seeds for m in expand_spec(spec, args.all_steps, s)]
            if args.all_steps and not name:
                plan += [(label, [(label, build)]) for label, build in models]
            else:
                plan.append((name or (f"{specs[0]} ({args.seeds} seeds)" if args.seeds > 1 else specs[0]), models))
        baselines = args.baseline or [plan[0][0]]
        unknown = [b for b in baselines if b not in {group for group, _ in plan}]
        if unknown:
            raise ValueError(f"--baseline {unknown[0]!r} is no row; rows: {[group for group, _ in plan]}")
        data = load_data(args.data, settings)
        evaluation_hashes = data.hashes()
        rows: list[Row] = []
        for group, models in tqdm(plan, desc="rows", disable=not progress or len(plan) == 1):
            per_bn: dict[str, Row] = {}
            for label, build in models:
                features = build().select(args.layers)
                leak = _leakage(features.info, evaluation_hashes)
                for bn in variants:
                    target = features
                    if bn == "re-estimated":
                        target = with_reestimated_bn(copy.deepcopy(features), data, settings.batch_size, args.device)
                        if target is None:  # no BatchNorm (a ViT): the model's one row is as exported
                            if "exported" in variants:
                                continue
                            bn, target = "exported", features
                    counts, seconds = evaluate(target, data, args.device, progress)
                    per_bn.setdefault(bn, Row(group, bn)).add(counts, target.info, leak, seconds)
                    tqdm.write(f"{label} [{bn}]: done in {seconds:.1f} s")
            rows += list(per_bn.values())
    except (OSError, ValueError, KeyError) as e:
        print(f"evaluation: error: {e}", file=sys.stderr)
        return 2
    diffs = differences(rows, baselines, METRICS, settings.resamples, settings.seed)
    scores = data.no_information()
    clusters = {"probe and kNN (test backgrounds)": len(data.test.clusters()[1]), "corr": len(data.photos)}
    print(format_table(rows, METRICS, scores, diffs, clusters))
    for row in rows:
        line = json.dumps(json_row(row, METRICS, scores, diffs, data.data_dir), sort_keys=True)
        print(line)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0
