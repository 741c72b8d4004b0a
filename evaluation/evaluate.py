"""Dense evaluation of frozen backbones: ``python -m evaluation --checkpoint SPEC --data DIR``.

For each model (a :class:`model.features.DenseFeatures`; see :mod:`evaluation.models` for the
``--checkpoint`` syntax) and each layer it reports:

- ``fg/<layer>``: foreground IoU of a class-balanced linear per-pixel probe, pasted object vs
  background photo, trained on the train split of the copy-paste set (``python -m shards
  copy-paste``), measured on its test split (:mod:`evaluation.segmentation`);
- ``bf/<layer>``: the boundary F-score of the same probe's masks;
- ``knn/<layer>``: cosine kNN top-1 on globally pooled features, label = category of the largest
  object (:mod:`evaluation.knn`);
- ``corr/<layer>``: nearest-neighbour matching of feature cells between real photos of the
  evaluation pool and their homography-warped, photometrically changed copies, correct within one
  cell, each layer at the resolution that gives it ``grid x grid`` cells (:mod:`evaluation.correspondence`).

A row averages its replicates (random init seeds with ``--seeds``, probe seeds, or several runs
given as ``NAME=SPEC,SPEC``) and shows mean ± SD; each row is compared with the baseline rows by a
paired bootstrap over the photos behind the test units (:mod:`evaluation.stats`). Beside the
rows: the no-information scores of every metric, and a leakage check of each run's pretraining
shards against the evaluation images (:mod:`evaluation.leakage`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from evaluation.correspondence import make_pairs, match_stats
from evaluation.data import DenseSplit, load_split
from evaluation.knn import knn_correct, majority_correct, pool
from evaluation.leakage import evaluation_hashes
from evaluation.segmentation import boundary_f, foreground_iou, probe_stats
from evaluation.stats import Metric, cluster_sums
from model.features import DenseFeatures
from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD


def _ratio(counts: Tensor) -> Tensor:
    return counts[..., 0] / counts[..., 1].clamp_min(1)


# metric -> (the counts it reads from a layer's probe/kNN/correspondence counts, value of those counts)
METRICS: dict[str, Metric] = {
    "fg": lambda c: foreground_iou(c[..., :3]),
    "bf": lambda c: boundary_f(c[..., 3:7]),
    "knn": _ratio,
    "corr": _ratio,
}


@dataclass
class EvalSettings:
    """Knobs of one evaluation; ``quick()`` gives a tiny version for tests."""

    pixels_per_image: int = 256
    probe_epochs: int = 20
    probe_seeds: int = 3
    knn_k: int = 10
    grid: int = 12  # correspondence cells per side, every layer
    pairs_per_photo: int = 3
    max_photos: int | None = None
    limit: int | None = None  # images per split (None: all)
    batch_size: int = 32
    seed: int = 0
    resamples: int = 2000
    boundary_tolerance: int = 2

    @classmethod
    def quick(cls) -> EvalSettings:
        """Tiny settings (24 images per split, 4 photos, 2 probe seeds of 3 epochs) for tests."""
        tiny = {"pixels_per_image": 64, "probe_epochs": 3, "probe_seeds": 2, "knn_k": 5, "grid": 6}
        return cls(**tiny, pairs_per_photo=2, max_photos=4, limit=24, resamples=200)


@dataclass
class EvalData:
    """Everything the evaluation reads, loaded once for all models; correspondence pairs are
    rendered per size on first use."""

    train: DenseSplit
    test: DenseSplit
    photos: list[Path]
    settings: EvalSettings
    data_dir: str
    _pairs: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=dict)

    def pairs(self, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A, B uint8 ``[P, 3, size, size]``, H ``[P, 3, 3]`` and photo id ``[P]`` at ``size`` px."""
        if size not in self._pairs:
            self._pairs[size] = make_pairs(self.photos, size, self.settings.pairs_per_photo, self.settings.seed)
        return self._pairs[size]

    def hashes(self) -> set[str]:
        """Content hashes of every evaluation image (for the leakage check)."""
        return evaluation_hashes(self.test.hashes, self.test.backgrounds, self.photos)

    def no_information(self) -> dict[str, float]:
        """Scores that need no features: foreground IoU of 'everything is object', the boundary
        F-score of 'no boundary', kNN of the commonest train label."""
        return {
            "fg": float((self.test.masks > 0).double().mean()),
            "bf": 0.0,
            "knn": float(majority_correct(self.train.labels, self.test.labels).double().mean()),
        }


def load_data(data_dir: str | Path, settings: EvalSettings, photos: list[Path] | None = None) -> EvalData:
    """Read both splits from shards; the correspondence photos are the evaluation pool's."""
    from shards.photos import MISSING_HINT, available_photos

    photos = sorted(available_photos(pool="eval") if photos is None else photos)[: settings.max_photos]
    if not photos:
        raise FileNotFoundError(MISSING_HINT)
    train, test = load_split(data_dir, "train", settings.limit), load_split(data_dir, "test", settings.limit)
    if test.backgrounds == test.keys:  # no background recorded: every image is its own cluster
        print(
            f"evaluation: warning: {data_dir} records no background photos (built before they were); intervals "
            "resample images, not photos; rebuild it: python -m shards copy-paste OUT --overwrite",
            file=sys.stderr,
        )
    return EvalData(train, test, photos, settings, str(data_dir))


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
    used); None when the backbone has no BatchNorm."""
    features = features.to(device)
    if not features.reestimate_batch_norm(normalised(data.train.images, batch_size, device)):
        return None
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


def correspondence_counts(features: DenseFeatures, data: EvalData, device: str, progress: bool) -> dict[str, Tensor]:
    """``{"corr/L": [1, photos, 4]}`` (:data:`evaluation.correspondence.STATS` summed per photo),
    each layer on pairs of ``grid x stride`` pixels."""
    out = {}
    settings = data.settings
    for stride in sorted(set(features.strides.values())):
        size = settings.grid * stride
        a, b, h, photo = data.pairs(size)
        fa = extract(features, a, settings.batch_size, device, f"{features.name}: pairs A {size}px", progress)
        fb = extract(features, b, settings.batch_size, device, f"{features.name}: pairs B {size}px", progress)
        for layer in (name for name, s in features.strides.items() if s == stride):
            with single_thread():  # many small ops: thread hand-offs cost more than the maths
                stats = torch.stack([match_stats(x, y, hp, stride, (size, size)) for x, y, hp in zip(fa[layer], fb[layer], h)])
            out[f"corr/{layer}"] = cluster_sums(stats, photo, len(data.photos))[None]
    return out


def probe_counts(features: DenseFeatures, data: EvalData, device: str, progress: bool) -> dict[str, Tensor]:
    """``{"fg/L" and "bf/L": [probe seeds, photos, 7], "knn/L": [1, photos, 2]}``: per test-background
    photo, the probe's foreground and boundary counts per probe seed, and kNN (correct, queries)."""
    settings = data.settings
    train_f = extract(features, data.train.images, settings.batch_size, device, f"{features.name}: train", progress)
    test_f = extract(features, data.test.images, settings.batch_size, device, f"{features.name}: test", progress)
    clusters, photos = data.test.clusters()
    out = {}
    for layer in tqdm(features.strides, desc=f"{features.name}: probes", disable=not progress, leave=False):
        with single_thread():  # thousands of tiny ops: thread hand-offs cost 10x the maths on a busy CPU
            per_seed = [
                probe_stats(
                    train_f[layer],
                    data.train.masks,
                    test_f[layer],
                    data.test.masks,
                    settings.pixels_per_image,
                    settings.probe_epochs,
                    settings.seed + k,
                    settings.boundary_tolerance,
                )
                for k in range(settings.probe_seeds)
            ]
            probe = cluster_sums(torch.stack(per_seed), clusters, len(photos))
            correct = knn_correct(
                pool(train_f[layer]), data.train.labels, pool(test_f[layer]), data.test.labels, _num_labels(data), settings.knn_k
            )
        out[f"fg/{layer}"] = out[f"bf/{layer}"] = probe
        hits = torch.stack([correct, torch.ones_like(correct)], 1).double()  # (correct, queries) per image
        out[f"knn/{layer}"] = cluster_sums(hits, clusters, len(photos))[None]
    return out


def _num_labels(data: EvalData) -> int:
    return int(max(data.train.labels.max(), data.test.labels.max())) + 1


def evaluate(
    features: DenseFeatures, data: EvalData, device: str = "cpu", progress: bool = True
) -> tuple[dict[str, Tensor], float]:
    """Counts of one model for every metric and layer (``{"fg/L", "bf/L", "knn/L", "corr/L": [R, C, K]}``,
    see :data:`METRICS`) and the seconds it took."""
    start = time.perf_counter()
    features = features.to(device)
    counts = probe_counts(features, data, device, progress)
    counts.update(correspondence_counts(features, data, device, progress))
    return counts, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Runs ``python -m evaluation``; returns the exit status."""
    from evaluation.cli import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
