"""``python -m shards``: convert ImageNet, COCO or an image folder into WebDataset shards.

Run ``python -m shards --help`` or ``python -m shards <command> --help``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from shards.convert import DEFAULT_SHARD_SIZE, ConversionError, ConvertOptions
from shards.limits import MAX_PIXELS, MIN_SIDE
from shards.parallel import default_workers
from shards.probe import ProbeOptions

EPILOG = """\
Every conversion writes, into OUT:
  {split}-{index:06d}.tar   shards of ~--shard-size bytes; samples shuffled across shards (--seed)
  {split}-{index:06d}.idx   DALI index of each shard (wds2idx text format)
  manifest.json             counts, bytes, sha256 per shard, classes, skipped files with reasons
  hashes.txt                a content hash (blake2b-128) of every stored image, for leakage checks
  _info.json                splits, shard names and lengths for timm's WebDataset reader
                            (timm.data.create_dataset("wds/NAME", root=OUT, split="train"))
Each sample is <key>.<jpg|png|webp> (the original bytes, extension from the real format),
<key>.json (metadata) and, when the dataset has classes, <key>.cls.
Interrupted (Ctrl-C, kill)? Run the same command again: finished shards are kept, the rest is
rewritten, and the result is identical to an uninterrupted run. A file deleted from a finished
OUT is restored the same way. Then: python -m shards verify OUT
"""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'256MB', '1.5G', '64MiB', '1000000' -> bytes (k/M/G are powers of 1024, as ``ls -h``)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 256MB, 1G, 500k)")
    unit = (m.group(2) or "").lower().replace("ib", "").replace("b", "")
    value = float(m.group(1)) * 1024 ** " kmgt".index(unit or " ")
    if value < 1:
        raise argparse.ArgumentTypeError("size must be positive")
    return int(value)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_common(p: argparse.ArgumentParser, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
    g = p.add_argument_group("sharding")
    g.add_argument(
        "--shard-size",
        type=parse_size,
        default=shard_size,
        metavar="SIZE",
        help=f"target bytes per shard, e.g. 256MB, 1G (default {shard_size >> 20}MB)",
    )
    g.add_argument(
        "--max-count", type=_positive, default=None, metavar="N", help="also close a shard after N samples (default: no limit)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the shuffle across shards; same seed, same shards (default 0)")
    g.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        metavar="N",
        help="processes reading, checking and writing shards; the output does not "
        "depend on it (default %(default)s; 1 = no subprocesses)",
    )
    g.add_argument("--overwrite", action="store_true", help="replace shards of a different conversion found in OUT")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--pause-per-shard", type=float, default=0.0, help=argparse.SUPPRESS)
    q = p.add_argument_group(
        "bad input (each file is kept with its real format, or skipped and listed with its reason in manifest.json)"
    )
    q.add_argument(
        "--min-side",
        type=int,
        default=ProbeOptions.min_side,
        metavar="PX",
        help=f"skip images with a side below PX (default %(default)s; at least {MIN_SIDE}, the loaders' limit)",
    )
    q.add_argument(
        "--max-pixels",
        type=int,
        default=ProbeOptions.max_pixels,
        metavar="N",
        help=f"skip images over N pixels, judged from the header without decoding "
        f"(default and maximum {MAX_PIXELS}, the loaders' limit; files too large "
        f"to hold such an image are skipped unread)",
    )
    q.add_argument(
        "--no-decode-check",
        action="store_true",
        help="trust headers and end markers instead of test-decoding every image at "
        "reduced scale (faster; corrupt data inside a file goes unnoticed)",
    )


def _options(args: argparse.Namespace) -> ConvertOptions:
    return ConvertOptions(
        seed=args.seed,
        shard_size=args.shard_size,
        max_count=args.max_count,
        probe=ProbeOptions(args.min_side, args.max_pixels, not args.no_decode_check),
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        pause_per_shard=args.pause_per_shard,
    )


# each command's one-line help, description and example (verify and bench are added on their own)
COMMANDS = {
    "imagenet": (
        "ILSVRC-2012 train/val -> shards",
        "Convert the ILSVRC-2012 layout: SRC/train/<wnid>/*.JPEG and SRC/val/ (per-class folders, or flat with the "
        "devkit ground truth or LOC_val_solution.csv). Splits 'train' and 'val'; class index = position of the sorted "
        "wnids; .json holds wnid, source path, width, height.",
        "example: python -m shards imagenet /data/ILSVRC2012 /data/shards/imagenet",
    ),
    "coco": (
        "COCO images + annotations -> shards",
        "Convert every image listed in a COCO annotation file, with or without annotations. .json holds id, "
        "file_name, width, height and the image's annotations as given (boxes, polygons/RLE, keypoints with "
        "--keypoints).",
        "example: python -m shards coco --images coco/train2017 --annotations "
        "coco/annotations/instances_train2017.json\n"
        "  --keypoints coco/annotations/person_keypoints_train2017.json /data/shards/coco",
    ),
    "folder": (
        "any image folder -> shards",
        "Convert every image under SRC, recursively (jpg/jpeg/png/webp kept; other image formats skipped and listed).",
        "example: python -m shards folder ~/pictures data/shards/pictures --classes-from-dirs",
    ),
    "photos": (
        "the pretraining pool of the real photos installed by scripts/setup.sh -> shards",
        "The photos of the pretraining pool (shards/photo_pools.tsv) as one folder dataset, split 'train' (the "
        "pretraining presets' data). The evaluation pool is never converted here.",
        None,
    ),
    "copy-paste": (
        "dense evaluation set: real cut-outs on real photos -> COCO shards",
        "Paste the real object cut-outs of tuxpaint-stamps-default (category = stamp folder) onto the real photos, "
        "3-6 objects per image with occlusion, seeded; write images, semantic masks and COCO instances (RLE) per "
        "split into OUT/source/, then convert them with the COCO converter into OUT/train-*.tar and OUT/test-*.tar. "
        "Train and test use disjoint stamps; test backgrounds come from the evaluation pool of the photos, train "
        "backgrounds from the pretraining pool. Same seed, same set; another seed, size or count needs --overwrite.",
        "example: python -m shards copy-paste data/shards/copy-paste\n"
        "then:    python -m evaluation --checkpoint random:resnet18 --data data/shards/copy-paste",
    ),
}
DESCRIPTION = (
    "Turn ImageNet, COCO or any image folder into WebDataset tar shards (with DALI index files and a manifest), and verify them."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m shards`` parser: one subcommand per converter, plus ``verify`` and ``bench``."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m shards", formatter_class=fmt, description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (short, description, example) in COMMANDS.items():
        sub.add_parser(name, formatter_class=fmt, help=short, description=description, epilog=example)

    p = sub.choices["imagenet"]
    p.add_argument("src", metavar="SRC", help="folder holding train/ and/or val/")
    p.add_argument("out", metavar="OUT", help="output folder for shards and manifest.json")
    p.add_argument(
        "--devkit", metavar="DIR", help="ILSVRC2012_devkit_t12 folder, for a flat val/ (found automatically inside or beside SRC)"
    )
    p.add_argument(
        "--val-labels", metavar="FILE", help="labels of a flat val/: Kaggle's LOC_val_solution.csv or lines '<file name> <wnid>'"
    )
    _add_common(p)

    p = sub.choices["coco"]
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the image files")
    p.add_argument("--annotations", required=True, metavar="FILE.json", help="instances_*.json (or image_info_*.json)")
    p.add_argument("--keypoints", metavar="FILE.json", help="person_keypoints_*.json to merge")
    p.add_argument("--split", help="split name in shard names (default: the images folder name)")
    p.add_argument("out", metavar="OUT", help="output folder for shards and manifest.json")
    _add_common(p)

    p = sub.choices["folder"]
    p.add_argument("src", metavar="SRC")
    p.add_argument("out", metavar="OUT")
    p.add_argument(
        "--classes-from-dirs",
        action="store_true",
        help="class = first folder below SRC (as torchvision's ImageFolder); adds .cls",
    )
    p.add_argument("--split", default="train", help="split name in shard names (default train)")
    _add_common(p)

    p = sub.choices["photos"]
    p.add_argument("out", metavar="OUT", nargs="?", default="data/shards/photos", help="output folder (default %(default)s)")
    _add_common(p, shard_size=2 << 20)

    p = sub.choices["copy-paste"]
    p.add_argument("out", metavar="OUT", help="output folder for shards, manifest.json and source/")
    p.add_argument("--train", type=int, default=1000, metavar="N", help="train images (default %(default)s)")
    p.add_argument("--test", type=int, default=1000, metavar="N", help="test images (default %(default)s)")
    p.add_argument("--size", type=int, default=192, metavar="PX", help="side of the square images (default %(default)s)")
    _add_common(p, shard_size=16 << 20)

    p = sub.add_parser(
        "verify",
        help="check shards against manifest and index files",
        description="Check every shard of OUT against manifest.json and its index: "
        "sizes, sha256, member offsets, sample counts, and that every image "
        "decodes. Exit 1 with a one-line reason on the first mismatch.",
    )
    p.add_argument("out", metavar="OUT")
    p.add_argument("--workers", type=int, default=default_workers(), metavar="N", help="processes (default %(default)s)")
    p.add_argument("--no-decode", action="store_true", help="skip the image decode check")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("bench", add_help=False, help="conversion throughput benchmark (python -m shards bench --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``python -m shards`` subcommand (default ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from shards.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    # the library reports through the "shards" logger; the command line prints its lines as they are
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("shards")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace) -> int:
    """The subcommand of the parsed ``args``; returns the exit code."""
    try:
        if args.command == "verify":
            from shards.verify import verify

            ok, message = verify(args.out, workers=args.workers, decode=not args.no_decode, progress=not args.no_progress)
            print(f"verify: {'OK' if ok else 'FAILED'}: {message}")
            return 0 if ok else 1
        options = _options(args)  # bad limits fail here, before a long scan
        if args.command == "copy-paste":
            from shards.copy_paste import build

            if args.size < 32:
                raise ValueError("--size must be at least 32 pixels")
            manifest = build(args.out, args.train, args.test, args.size, args.seed, options)
            for split, info in manifest["splits"].items():
                print(f"  {split}: {info['count']} images in {len(info['shards'])} shard(s)")
            print(f"  {len(manifest['categories'])} categories: " + ", ".join(c["name"] for c in manifest["categories"]))
            print(f"  sources (images, semantic masks, instances_*.json): {args.out}/source")
            return 0
        if args.command == "imagenet":
            from shards.imagenet import scan_imagenet

            source = scan_imagenet(args.src, devkit=args.devkit, val_labels=args.val_labels)
        elif args.command == "coco":
            from shards.coco import scan_coco

            source = scan_coco(args.images, args.annotations, args.keypoints, split=args.split)
        elif args.command == "folder":
            from shards.folder import scan_folder

            source = scan_folder(args.src, split=args.split, classes_from_dirs=args.classes_from_dirs)
        else:
            from shards.folder import scan_photos

            source = scan_photos()
        from shards.convert import convert

        convert(source, args.out, options)
        return 0
    except KeyboardInterrupt:
        print("\nshards: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ConversionError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"shards: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
