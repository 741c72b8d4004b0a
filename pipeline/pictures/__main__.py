"""``python -m pipeline.pictures {matches,inverse-maps,aligned-grids,throughput}``: one PNG per command."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.views import RECIPES

EXAMPLES = """examples (shards from `python -m shards photos data/shards/photos`):
  python -m pipeline.pictures matches --recipe clove --out runs/pictures/matches_clove.png
  python -m pipeline.pictures matches --recipe gtsa --out runs/pictures/matches_gtsa.png
  python -m pipeline.pictures inverse-maps --recipe gtsa --out runs/pictures/inverse_maps.png
  python -m pipeline.pictures aligned-grids --recipe gtsa --out runs/pictures/aligned_grids.png
  python -m pipeline.pictures throughput --bench runs/bench.jsonl --out runs/pictures/throughput.png

The views are made by the cpu backend exactly as for training, with photometric augmentation off."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with every option's default, description and examples kept as written."""


def _batch_args(p: argparse.ArgumentParser, recipe: str, locals_shown: int) -> None:
    p.add_argument("--shards", default="data/shards/photos", help="shard directory, glob, brace pattern or URL")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=recipe, help="view recipe (docs/methods.md)")
    p.add_argument("--images", type=int, default=2, help="images drawn, one per row")
    p.add_argument("--locals", type=int, default=locals_shown, dest="locals_shown", help="local views drawn per image")
    p.add_argument("--seed", type=int, default=0, help="which images and which views (sampling seed)")
    p.add_argument("--global-size", type=int, default=224, help="global view side, px")
    p.add_argument("--local-size", type=int, default=96, help="local view side, px")


# each picture's one-line help and its description in --help
COMMANDS = {
    "matches": (
        "views side by side, lines joining the cells matched by M",
        "Per image: the teacher global view next to each other view, lines joining the cell centres that M "
        "(pipeline.geometry.correspondence_mask) matches.",
    ),
    "inverse-maps": (
        "each view next to its inverse coordinate map as colour",
        "Per image: each view next to its inverse coordinate map at stride 1, red = original x / W, green = "
        "original y / H, so a place has the same colour in every view.",
    ),
    "aligned-grids": (
        "GTSA's aligned grid on a student view and in the teacher view",
        "Per image and student view: the cells x cells grid over the region the student and the teacher global "
        "view share (pipeline.geometry.shared_region_points) on the student, and the same points mapped into the "
        "teacher view.",
    ),
    "throughput": (
        "images/s from runs/bench.jsonl",
        "Median images/s per recipe, run (backend, reference, decode-only), mode and device, from the JSON lines "
        "python -m pipeline.bench appends.",
    ),
}
DESCRIPTION = (
    "Draw what the pipeline does as PNG files: matched cells, inverse coordinate maps, GTSA's aligned grids, loader throughput."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: one subcommand per picture, with its options."""
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.pictures", description=DESCRIPTION, formatter_class=HelpFormatter, epilog=EXAMPLES
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (short, description) in COMMANDS.items():
        sub.add_parser(name, formatter_class=HelpFormatter, help=short, description=description)

    p = sub.choices["matches"]
    _batch_args(p, "clove", 3)
    p.add_argument(
        "--stride",
        type=float,
        help="feature stride in view pixels (default: the recipe's, pipeline.views.RECIPES: 32 for clove, 16 for gtsa)",
    )
    p.add_argument("--threshold", type=float, default=0.7, help="T_pos: match radius in cell diagonals")
    p.add_argument("--max-lines", type=int, default=30, help="lines drawn per pair at most (a random subset)")
    p.add_argument("--out", default="runs/pictures/matches_RECIPE.png", help="PNG path (RECIPE: the recipe's name)")

    p = sub.choices["inverse-maps"]
    _batch_args(p, "gtsa", 3)
    p.add_argument("--out", default="runs/pictures/inverse_maps.png", help="PNG path")

    p = sub.choices["aligned-grids"]
    _batch_args(p, "gtsa", 2)
    p.add_argument("--cells-global", type=int, default=10, help="grid side for a global student view")
    p.add_argument("--cells-local", type=int, default=4, help="grid side for a local student view")
    p.add_argument("--out", default="runs/pictures/aligned_grids.png", help="PNG path")

    p = sub.choices["throughput"]
    p.add_argument("--bench", default="runs/bench.jsonl", help="bench JSON-lines file")
    p.add_argument("--recipes", nargs="*", default=None, help="only these recipes (default: all)")
    p.add_argument("--title", default="", help="figure title (e.g. where it was measured)")
    p.add_argument("--out", default="runs/pictures/throughput.png", help="PNG path")

    for p in sub.choices.values():
        p.add_argument("--dpi", type=int, default=100, help="resolution of the PNG")
        p.add_argument("--palette", action="store_true", help="256-colour PNG, 3-5x smaller (for docs)")
    args = ap.parse_args(argv)
    for name in ("images", "max_lines", "cells_global", "cells_local", "dpi"):
        if getattr(args, name, 1) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "locals_shown", 0) < 0:
        ap.error("--locals must not be negative")
    if args.command == "matches":
        args.out = args.out.replace("RECIPE", args.recipe)
    return args


def _draw(args: argparse.Namespace):
    if args.command == "throughput":
        from pipeline.pictures.jsonl import read_jsonl
        from pipeline.pictures.throughput import throughput_figure, throughput_rows

        if not Path(args.bench).is_file():
            raise FileNotFoundError(f"{args.bench} not found: run `python -m pipeline.bench ...` first")
        return throughput_figure(throughput_rows(read_jsonl(args.bench), args.recipes), args.title)

    from pipeline.pictures import draw_views
    from pipeline.pictures.batch_source import picture_batch

    batch = picture_batch(
        args.shards, args.recipe, batch_size=args.images, seed=args.seed, global_size=args.global_size, local_size=args.local_size
    )
    common = dict(images=args.images, locals_shown=args.locals_shown)
    if args.command == "matches":
        stride = args.stride or RECIPES[args.recipe].feature_stride
        title = (
            f"{args.recipe} recipe: cells matched by M between the teacher global view and the others "
            f"(stride {stride:g}, threshold {args.threshold:g} × cell diagonal)"
        )
        return draw_views.matches_figure(batch, stride, args.threshold, max_lines=args.max_lines, title=title, **common)
    if args.command == "inverse-maps":
        return draw_views.inverse_maps_figure(
            batch, title=f"{args.recipe} recipe: views and their inverse coordinate maps (stride 1)", **common
        )
    return draw_views.aligned_grids_figure(batch, args.cells_global, args.cells_local, **common)


def main(argv: list[str] | None = None) -> int:
    """Draw the requested picture and save it; the exit status."""
    args = parse_args(argv)
    from pipeline.pictures.figure import write_figure_command

    return write_figure_command(lambda: _draw(args), args.out, dpi=args.dpi, palette=args.palette)


if __name__ == "__main__":
    raise SystemExit(main())
