"""Can a frozen backbone tell a quarter turn? ``python -m evaluation.rotation --checkpoint SPEC ...``

Every image of a copy-paste split is turned by 0, 1, 2 and 3 quarter turns (``torch.rot90``), the
last layer's feature map is read out two ways, and a linear classifier of the turn is trained on
the train split and scored on the test split:

- ``mean``: the mean over the map's cells, what GTSA's rotation head reads (docs/methods.md);
- ``quadrants``: the means of the map's four quadrants, concatenated (a readout that knows where
  each feature is, with 4x the inputs).

Chance is 25 %. A backbone whose features carry the turn only in their layout scores near chance
with ``mean`` and above it with ``quadrants``: the measurement behind "GTSA's rotation loss stays
at ln 4" (README, "Learning at a CPU budget").
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from evaluation.data import load_split
from evaluation.evaluate import normalised
from model.features import DenseFeatures

READOUTS = ("mean", "quadrants")


def readouts(maps: Tensor) -> dict[str, Tensor]:
    """``[N, C, h, w]`` -> ``{"mean": [N, C], "quadrants": [N, 4C]}`` (quadrant means, row-major)."""
    h, w = maps.shape[-2] // 2, maps.shape[-1] // 2
    quads = [maps[..., :h, :w], maps[..., :h, w:], maps[..., h:, :w], maps[..., h:, w:]]
    return {"mean": maps.mean(dim=(2, 3)), "quadrants": torch.cat([q.mean(dim=(2, 3)) for q in quads], dim=1)}


@torch.no_grad()
def turned_features(features: DenseFeatures, images: Tensor, size: int, batch_size: int = 64) -> tuple[dict[str, Tensor], Tensor]:
    """Readouts of the last layer for every image at every quarter turn: ``{readout: [4N, D]}`` and
    the turns ``[4N]`` (image-major); uint8 ``images [N, 3, H, W]`` are resized to ``size`` first."""
    layer = list(features.strides)[-1]
    small = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True).round().clamp(0, 255)
    turned = torch.stack([torch.rot90(small, k, dims=(-2, -1)) for k in range(4)], dim=1).flatten(0, 1).to(torch.uint8)
    outs: dict[str, list[Tensor]] = {}
    for x in normalised(turned, batch_size, "cpu"):
        for name, r in readouts(features(x)[layer].float()).items():
            outs.setdefault(name, []).append(r)
    return {k: torch.cat(v) for k, v in outs.items()}, torch.arange(4).repeat(len(images))


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, epochs: int = 300, seed: int = 0) -> float:
    """Top-1 accuracy of a linear softmax classifier (standardised inputs, AdamW, full batch)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(a.shape[1], 4, generator=gen) * 0.01).requires_grad_()
    bias = torch.zeros(4, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=1e-2, weight_decay=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(a @ weight + bias, train_y).backward()
        opt.step()
    with torch.no_grad():
        return float(((b @ weight + bias).argmax(1) == test_y).float().mean())


def main(argv: list[str] | None = None) -> int:
    """Print, per ``--checkpoint``, the rotation accuracy of each readout; returns the exit status."""
    from evaluation.models import expand_spec

    p = argparse.ArgumentParser(prog="python -m evaluation.rotation", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, metavar="SPEC", help="as python -m evaluation's")
    p.add_argument("--data", default="data/shards/copy-paste", help="copy-paste shards (train and test splits)")
    p.add_argument("--size", type=int, default=96, help="image side the backbone sees (default 96)")
    p.add_argument("--images", type=int, default=500, help="images per split (default 500)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        train, test = (load_split(args.data, split, args.images) for split in ("train", "test"))
        print(f"rotation accuracy, linear probe, {len(train.images)} + {len(test.images)} images x 4 turns at {args.size} px")
        print(f"{'model':<48}" + "".join(f"{r:>12}" for r in READOUTS) + "   (chance 25.0)")
        for spec in args.checkpoint:
            for label, build in expand_spec(spec):
                features = build().eval()
                (tr, ytr), (te, yte) = (turned_features(features, s.images, args.size) for s in (train, test))
                accs = [100 * probe_accuracy(tr[r], ytr, te[r], yte) for r in READOUTS]
                print(f"{label[:48]:<48}" + "".join(f"{a:>12.1f}" for a in accs))
    except (OSError, ValueError, KeyError) as e:
        print(f"evaluation.rotation: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
