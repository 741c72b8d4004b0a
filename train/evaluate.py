"""Dense evaluation of frozen backbones: ``python -m train.evaluate --checkpoint SPEC --data DIR``.

For each model (a :class:`model.features.DenseFeatures`; see :mod:`train.eval_models` for the
``--checkpoint`` syntax) and each layer it reports:

- ``miou/<layer>``: a linear per-pixel probe on the upsampled feature map, trained on the train
  split of the copy-paste set (``python -m shards copy-paste``), mIoU on its test split
  (:mod:`train.eval_segmentation`);
- ``fgbg/<layer>``: the same probe with two classes, pasted object vs background photo (mIoU of
  the two);
- ``knn/<layer>``: cosine kNN top-1 on globally pooled features, train split as memory, test
  split as queries, label = category of the largest object (:mod:`train.eval_knn`);
- ``corr/<layer>``: nearest-neighbour matching of feature cells between real photos and their
  homography-warped, photometrically changed copies, correct within one cell
  (:mod:`train.eval_correspondence`).

It prints a table and one JSON line per model (also appended to ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from model.features import DenseFeatures
from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD
from train.eval_correspondence import make_pairs, match_counts
from train.eval_data import DenseSplit, load_split, num_classes
from train.eval_knn import knn_top1, pool
from train.eval_segmentation import segmentation_miou


@dataclass
class EvalSettings:
    """Knobs of one evaluation; ``quick()`` gives a tiny version for tests."""

    pixels_per_image: int = 256
    probe_epochs: int = 20
    knn_k: int = 10
    pair_size: int = 224
    pairs_per_photo: int = 1
    max_photos: int | None = None
    limit: int | None = None  # images per split (None: all)
    batch_size: int = 32
    seed: int = 0

    @classmethod
    def quick(cls) -> EvalSettings:
        """Tiny settings (24 images per split, 4 photos, 3 probe epochs) for tests."""
        return cls(pixels_per_image=64, probe_epochs=3, knn_k=5, pair_size=96, max_photos=4, limit=24)


@dataclass
class EvalData:
    """Everything the evaluation reads, loaded once for all models."""

    train: DenseSplit
    test: DenseSplit
    num_classes: int
    pairs_a: Tensor  # uint8 [P, 3, S, S]
    pairs_b: Tensor
    homographies: Tensor  # float64 [P, 3, 3], A -> B
    data_dir: str


def load_data(data_dir: str | Path, settings: EvalSettings, photos: list[Path] | None = None) -> EvalData:
    """Read both splits from shards and build the correspondence pairs from the real photos."""
    from shards.photos import MISSING_HINT, available_photos

    photos = sorted(available_photos() if photos is None else photos)[: settings.max_photos]
    if not photos:
        raise FileNotFoundError(MISSING_HINT)
    a, b, h = make_pairs(photos, settings.pair_size, settings.pairs_per_photo, settings.seed)
    return EvalData(
        load_split(data_dir, "train", settings.limit),
        load_split(data_dir, "test", settings.limit),
        num_classes(data_dir),
        a,
        b,
        h,
        str(data_dir),
    )


def normalised(images: Tensor, batch_size: int, device: str, desc: str = "", progress: bool = False) -> Iterator[Tensor]:
    """uint8 ``[N, 3, H, W]`` images as ImageNet-normalised float batches ``[b, 3, H, W]`` on ``device``."""
    mean = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[:, None, None]
    for chunk in tqdm(images.split(batch_size), desc=desc, disable=not progress, leave=False):
        yield (chunk.to(device).float() / 255 - mean) / std


def extract(
    features: DenseFeatures, images: Tensor, batch_size: int, device: str, desc: str, progress: bool = True
) -> dict[str, Tensor]:
    """Feature maps of uint8 ``[N, 3, H, W]`` images: ``{layer: [N, C, h, w]}`` float32 on the CPU."""
    out: dict[str, list[Tensor]] = {}
    for x in normalised(images, batch_size, device, desc, progress):
        for layer, f in features(x).items():
            out.setdefault(layer, []).append(f.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def with_reestimated_bn(features: DenseFeatures, data: EvalData, batch_size: int, device: str) -> DenseFeatures | None:
    """``features`` with BatchNorm statistics re-estimated on the probe's train images (no labels
    used), renamed ``... [BN re-estimated]``; None when the backbone has no BatchNorm."""
    features = features.to(device)
    if not features.reestimate_batch_norm(normalised(data.train.images, batch_size, device)):
        return None
    features.name += " [BN re-estimated]"
    features.info["bn"] = f"re-estimated on the train split ({len(data.train.images)} images)"
    return features


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def layer_figures(
    layer: str, stride: int, train_f: Tensor, test_f: Tensor, a_f: Tensor, b_f: Tensor, data: EvalData, settings: EvalSettings
) -> dict[str, float]:
    """mIoU (categories; object vs background), kNN top-1 and correspondence accuracy of one layer
    from its feature maps ``[N, C, h, w]``."""
    probe = (settings.pixels_per_image, settings.probe_epochs, settings.seed)
    miou = segmentation_miou(train_f, data.train.masks, test_f, data.test.masks, data.num_classes, *probe)
    # objects vs background photo: the same probe with two classes, a dense task a small budget can learn
    fgbg = segmentation_miou(train_f, data.train.masks.clamp(max=1), test_f, data.test.masks.clamp(max=1), 2, *probe)
    knn = knn_top1(pool(train_f), data.train.labels, pool(test_f), data.test.labels, data.num_classes, settings.knn_k)
    correct = valid = 0
    for fa, fb, h in zip(a_f, b_f, data.homographies):
        c, v = match_counts(fa, fb, h, stride, tuple(data.pairs_b.shape[2:]))
        correct, valid = correct + c, valid + v
    return {
        f"miou/{layer}": miou,
        f"fgbg/{layer}": fgbg,
        f"knn/{layer}": knn,
        f"corr/{layer}": correct / valid if valid else float("nan"),
    }


def evaluate(
    features: DenseFeatures, data: EvalData, settings: EvalSettings | None = None, device: str = "cpu", progress: bool = True
) -> dict:
    """All figures for one model: ``{"model", "info", "figures": {"miou/L", "fgbg/L", "knn/L", "corr/L"}, "seconds"}``."""
    settings = settings or EvalSettings()
    start = time.perf_counter()
    features = features.to(device)
    name = features.name
    train_f = extract(features, data.train.images, settings.batch_size, device, f"{name}: train", progress)
    test_f = extract(features, data.test.images, settings.batch_size, device, f"{name}: test", progress)
    a_f = extract(features, data.pairs_a, settings.batch_size, device, f"{name}: pairs A", progress)
    b_f = extract(features, data.pairs_b, settings.batch_size, device, f"{name}: pairs B", progress)
    figures: dict[str, float] = {}
    for layer in tqdm(features.strides, desc=f"{name}: probes", disable=not progress, leave=False):
        with single_thread():  # thousands of tiny ops: thread hand-offs cost 10x the maths on a busy CPU
            figures.update(
                layer_figures(
                    layer, features.strides[layer], train_f[layer], test_f[layer], a_f[layer], b_f[layer], data, settings
                )
            )
    return {
        "model": name,
        "info": features.info,
        "figures": figures,
        "data": data.data_dir,
        "seconds": round(time.perf_counter() - start, 1),
    }


def format_table(rows: list[dict]) -> str:
    """Rows = models, columns = every figure (mIoU, kNN, correspondence per layer), in percent."""
    columns = []
    for row in rows:
        columns += [k for k in row["figures"] if k not in columns]
    order = {"miou": 0, "fgbg": 1, "knn": 2, "corr": 3}
    columns.sort(key=lambda k: (order.get(k.split("/")[0], 3), k))
    width = max([len("model")] + [len(r["model"]) for r in rows])
    lines = [f"{'model':<{width}}  " + "  ".join(f"{c:>12}" for c in columns) + f"  {'seconds':>7}"]
    for r in rows:
        cells = [f"{100 * r['figures'][c]:12.1f}" if c in r["figures"] else f"{'-':>12}" for c in columns]
        lines.append(f"{r['model']:<{width}}  " + "  ".join(cells) + f"  {r['seconds']:7.1f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m train.evaluate`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure the dense features of frozen backbones: linear per-pixel probe (mIoU), kNN top-1 on "
        "pooled features, and nearest-neighbour correspondence under known homographies, per layer. "
        "Prints a table (figures in percent) and one JSON line per model (figures as fractions).",
        epilog="--checkpoint SPEC (repeat it for a multi-row table):\n"
        "  random:ARCH        random init, the library's own, e.g. random:resnet18\n"
        "  random-zero:ARCH   random init with zeroed last norm per residual block (CLoVE's step 0)\n"
        "  DIR                a method export (holds backbone.json)\n"
        "  ckpt-*.pt          a training checkpoint (method rebuilt from its config, then exported)\n"
        "  RUN_DIR            a run's newest checkpoint; with --all-steps every checkpoint (one row per step)\n\n"
        "columns, per layer L: miou/L (linear per-pixel probe, test mIoU), fgbg/L (the same probe, object vs\n"
        "  background, mIoU of the two), knn/L (kNN top-1, pooled features),\n"
        "  corr/L (cells matched within one cell under known homographies)\n\n"
        "build the data first:  python -m shards copy-paste data/shards/copy-paste\n"
        "example:  python -m train.evaluate --checkpoint random:resnet18 --checkpoint random-zero:resnet18 \\\n"
        "              --data data/shards/copy-paste --out runs/eval.jsonl",
    )
    p.add_argument("--checkpoint", action="append", required=True, metavar="SPEC", help="model to evaluate (see below)")
    p.add_argument("--data", required=True, metavar="DIR", help="shards of python -m shards copy-paste")
    p.add_argument("--all-steps", action="store_true", help="with a run dir: every ckpt-*.pt, rows by step")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to evaluate (default: all the backbone reports)")
    p.add_argument(
        "--bn",
        choices=("exported", "reestimated", "both"),
        default="exported",
        help="BatchNorm statistics: as exported, re-estimated on the probe's train images (a random network's "
        "are its initial mean 0 / variance 1), or one row each (default %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    p.add_argument("--out", metavar="FILE.jsonl", help="append each model's JSON line to this file")
    p.add_argument("--seed", type=int, default=0, help="seed of random inits, probes and pairs (default %(default)s)")
    p.add_argument(
        "--pairs-per-photo", type=int, default=1, metavar="N", help="correspondence pairs per real photo (default %(default)s)"
    )
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


def main(argv: list[str] | None = None) -> int:
    """Runs ``python -m train.evaluate``: prints the table and JSON lines; returns the exit status."""
    args = build_parser().parse_args(argv)
    from train.eval_models import expand_spec

    settings = EvalSettings.quick() if args.quick else EvalSettings()
    settings.seed, settings.pairs_per_photo = args.seed, args.pairs_per_photo
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        models = [m for spec in args.checkpoint for m in expand_spec(spec, args.all_steps, args.seed)]
        data = load_data(args.data, settings)
        rows = []
        for label, build in tqdm(models, desc="models", disable=args.no_progress or len(models) == 1):
            # built once (a checkpoint is rebuilt and exported); --bn both re-estimates a copy
            features = build().select(args.layers)
            variants = [] if args.bn == "reestimated" else [features]
            if args.bn != "exported":
                target = copy.deepcopy(features) if args.bn == "both" else features
                recalibrated = with_reestimated_bn(target, data, settings.batch_size, args.device)
                if recalibrated is None:  # nothing to re-estimate: the model's one row is as exported
                    tqdm.write(f"{label}: no BatchNorm to re-estimate")
                    variants = [features]
                else:
                    variants.append(recalibrated)
            for features in variants:
                row = evaluate(features, data, settings, args.device, not args.no_progress)
                rows.append(row)
                tqdm.write(f"{row['model']}: done in {row['seconds']:.1f} s")
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"train.evaluate: error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    for row in rows:
        line = json.dumps(row, sort_keys=True)
        print(line)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
