"""Training curves as one PNG: ``python -m train.curves RUN_DIR [RUN_DIR ...] --out PNG``.

Reads each run's ``log.jsonl`` (:mod:`train.logging`: one line per logging window with ``step``,
``epoch``, the method's loss terms, ``lr``, ``wd``, ``momentum``, ``images_per_s``,
``data_wait``, ``bad_samples``, and the collapse monitor's ``emb_std``/``emb_rank`` when present;
plus event lines, which are skipped) and draws one panel per numeric field, every run overlaid.
``--eval EVAL.jsonl`` adds a panel per evaluation metric (lines such as ``{"model": ..., "step":
N, "miou_layer4": ...}``, one curve per model) against the training step.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from pipeline.pictures.figure import pyplot, write_figure_command
from pipeline.pictures.jsonl import read_jsonl

log = logging.getLogger(__name__)

Series = dict[str, list[tuple[float, float]]]  # field -> [(step, value)] sorted by step

NOT_PLOTTED = {"step", "epoch", "time", "bad_samples", "bad_shards", "empty_shards", "bad_reads", "samples", "nonfinite_steps"}
# panels in this order first (when present), then the method's other terms alphabetically
FIRST = ["loss"]
LAST = ["lr", "wd", "momentum", "images_per_s", "data_wait", "emb_std", "emb_rank"]
TITLES = {
    "lr": "learning rate",
    "wd": "weight decay",
    "momentum": "teacher EMA momentum",
    "images_per_s": "images/s",
    "data_wait": "share of time waiting for data",
    "emb_std": "embedding std (collapse monitor)",
    "emb_rank": "embedding rank (collapse monitor)",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def log_path(run: str | Path) -> Path:
    """``RUN_DIR/log.jsonl``, or the file itself when a file is given."""
    run = Path(run)
    return run if run.is_file() else run / "log.jsonl"


def run_series(records: list[dict[str, Any]]) -> Series:
    """Numeric fields of a run's step records against ``step``.

    Event lines (with an ``event`` key) and non-numeric fields are skipped. A step logged twice
    (a run resumed from an earlier checkpoint) keeps its last record: the trajectory that went on.
    """
    by_step: dict[float, dict[str, Any]] = {}
    for record in records:
        step = _number(record.get("step"))
        if "event" in record or step is None:
            continue
        by_step[step] = record
    series: Series = {}
    for step in sorted(by_step):
        for name, value in by_step[step].items():
            number = _number(value)
            if name not in NOT_PLOTTED and number is not None:
                series.setdefault(name, []).append((step, number))
    return series


def flatten_eval_record(record: dict[str, Any]) -> dict[str, Any]:
    """A ``python -m evaluation`` line (``{"model", "info": [{"method", "arch", "step"}, ...],
    "figures": {"corr/layer3": ...}}``; ``info`` lists the row's replicates, a dict in older lines)
    as a flat record ``{"model": "clove resnet18", "step": N, "corr/layer3": ...}`` (the model named
    without its step, so that one run is one curve); other lines pass unchanged."""
    if not isinstance(record.get("figures"), dict):
        return record
    info = record.get("info") or {}
    if isinstance(info, list):
        info = info[0] if info else {}
    model = " ".join(str(info[k]) for k in ("method", "arch") if k in info) or str(record.get("model", "model"))
    step = info.get("step", 0 if "init" in info else None)  # a random init is step 0
    if "init" in info:
        model = str(record.get("model", model))
    elif "bn" in info:  # BatchNorm re-estimated (python -m evaluation --bn): a curve of its own
        model += " [BN re-estimated]"
    return {"model": model, "step": step, **record["figures"]}


def eval_series(records: list[dict[str, Any]], metrics: list[str] | None = None) -> dict[str, Series]:
    """Evaluation lines -> ``{metric: {model: [(step, value)]}}``.

    ``metrics``: the fields to keep (default every numeric field but ``step``/``epoch``/``time``).
    Lines without a numeric ``step`` are skipped with a warning. A model is named by its ``model``
    field (else ``run``, else ``"model"``).
    """
    out: dict[str, Series] = {}
    skipped = 0
    for record in map(flatten_eval_record, records):
        step = _number(record.get("step"))
        if step is None:
            skipped += 1
            continue
        model = str(record.get("model", record.get("run", "model")))
        for name, value in record.items():
            number = _number(value)
            if number is None or name in NOT_PLOTTED or (metrics is not None and name not in metrics):
                continue
            out.setdefault(name, {}).setdefault(model, []).append((step, number))
    if skipped:
        log.warning("%d evaluation line(s) without a numeric step left out", skipped)
    for series in out.values():
        for points in series.values():
            points.sort()
    return out


def panel_order(names: set[str]) -> list[str]:
    """Loss first, then the method's terms alphabetically, then optimiser and throughput fields."""
    middle = sorted(n for n in names if n not in FIRST and n not in LAST)
    return [n for n in FIRST if n in names] + middle + [n for n in LAST if n in names]


def curves_figure(
    runs: dict[str, Series],
    evals: dict[str, Series] | None = None,
    fields: list[str] | None = None,
    columns: int = 3,
    title: str = "",
) -> Any:
    """One panel per field (every run overlaid) and per evaluation metric (every model), in a grid.

    Raises:
        ValueError: nothing to plot.
    """
    evals = evals or {}
    names = set().union(*(s.keys() for s in runs.values())) if runs else set()
    panels = [("run", n) for n in panel_order(names) if fields is None or n in fields]
    panels += [("eval", m) for m in sorted(evals)]
    if not panels:
        raise ValueError("nothing to plot: no numeric step records (check the run directories and --fields)")
    plt = pyplot()
    from matplotlib.lines import Line2D  # matplotlib is an extra: imported once pyplot() found it

    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    # one colour per evaluated model in every panel, so that one legend serves them all
    models = sorted(set().union(*(series.keys() for series in evals.values()))) if evals else []
    colours = {label: f"C{i % 10}" for i, label in enumerate(models)}
    for ax, (kind, name) in zip(axes.flat, panels):
        curves = runs.items() if kind == "run" else evals[name].items()
        for label, series in curves:
            points = series.get(name, []) if kind == "run" else series
            if points:
                steps, values = zip(*points)
                style = {"color": colours[label]} if kind == "eval" else {}
                ax.plot(steps, values, marker="." if len(points) < 30 else None, label=label, linewidth=1.2, **style)
        ax.set_title(TITLES.get(name, name) + (" (evaluation)" if kind == "eval" else ""), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if name == "lr" or (kind == "run" and name == "wd"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if kind == "run" and len(curves) > 1:
            ax.legend(fontsize=7)
    spare = list(axes.flat[len(panels) :])
    for ax in spare:
        ax.set_visible(False)
    fig.suptitle(title or "training curves: " + ", ".join(runs), fontsize=10)
    legend_height = 0.0  # share of the figure kept free below the panels
    if models:  # the evaluation panels' legend, in a spare cell of the grid or under it, not over the points
        handles = [Line2D([], [], color=colours[label], marker=".", linewidth=1.2) for label in models]
        if spare:
            spare[0].set_visible(True)
            spare[0].axis("off")
            spare[0].legend(handles, models, loc="center", fontsize=7, title="evaluated models", title_fontsize=8)
        else:
            fig.legend(handles, models, loc="lower center", ncol=min(3, len(models)), fontsize=7)
            legend_height = 0.04 * math.ceil(len(models) / 3)
    fig.tight_layout(rect=(0, legend_height, 1, 1))
    return fig


def _label(run: Path) -> str:
    run = Path(run)
    return run.parent.name if run.is_file() else run.name


def main(argv: list[str] | None = None) -> int:
    """Runs ``python -m train.curves``: plots the runs' curves into one PNG; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="python -m train.curves",
        description="Training curves (loss and its terms, lr, momentum, throughput, data wait, collapse monitor) "
        "of one or more runs as one PNG, optionally with evaluation metrics against the training step.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python -m train.curves runs/default --out runs/pictures/curves.png \\\n"
        "      [--eval runs/eval.jsonl --metrics corr/layer3 fg/layer4]",
    )
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run output directories (or their log.jsonl files)")
    ap.add_argument("--out", default="runs/pictures/curves.png", help="PNG path (default: %(default)s)")
    ap.add_argument("--fields", nargs="*", default=None, help="only these log fields (default: every numeric one)")
    ap.add_argument("--eval", default=None, metavar="EVAL.jsonl", help="evaluation JSON lines to plot against step")
    ap.add_argument(
        "--metrics", nargs="*", default=None, help="evaluation fields to plot (default: every numeric field but step/epoch/time)"
    )
    ap.add_argument("--columns", type=int, default=3, help="panels per row (default: %(default)s)")
    ap.add_argument("--title", default="", help="figure title (default: the runs' names)")
    ap.add_argument("--dpi", type=int, default=100, help="resolution of the PNG (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.columns < 1 or args.dpi < 1:
        ap.error("--columns and --dpi must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    def draw() -> Any:
        runs = {}
        for run in args.runs:
            label = _label(Path(run))
            while label in runs:  # two runs with the same folder name
                label += "'"
            runs[label] = run_series(read_jsonl(log_path(run)))
        evals = eval_series(read_jsonl(args.eval), args.metrics) if args.eval else None
        return curves_figure(runs, evals, args.fields, args.columns, args.title)

    return write_figure_command(draw, args.out, dpi=args.dpi)


if __name__ == "__main__":
    raise SystemExit(main())
