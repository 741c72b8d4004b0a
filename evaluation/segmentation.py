"""Linear per-pixel probe on frozen features: objects vs background, scored per image.

The probe is ``softmax(W · standardise(f(p)) + b)`` where ``f(p)`` is the feature map bilinearly
upsampled to the image and read at pixel ``p`` (``F.interpolate(..., mode="bilinear",
align_corners=False)``, i.e. sampling at pixel centres). It is trained on a seeded random subset
of pixels of the train images; at test time the affine probe is applied on the feature grid and
its logits upsampled, which equals applying it to the upsampled features (bilinear weights sum to
one) at a fraction of the memory. Its loss weighs each class by the inverse of its share of the
sampled pixels (scikit-learn's "balanced"), so background, 78 % of the pixels, cannot carry it.

Scores are per test image sums, so a bootstrap can resample images (or the photos behind them):
foreground IoU (``TP / (TP + FP + FN)`` of the object class) and the boundary F-score (precision
and recall of mask boundary pixels within ``tolerance`` pixels, as DAVIS's F measure).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_image(masks: list[Tensor]) -> Tensor:
    """Pixel counts of bool ``[N, H, W]`` masks -> ``[N, len(masks)]`` float64."""
    return torch.stack([m.flatten(1).sum(1) for m in masks], 1).double()


def foreground_stats(pred: Tensor, target: Tensor) -> Tensor:
    """Per image ``[N, 3]`` float64 (TP, FP, FN) of the object class: ``pred``/``target`` bool ``[N, H, W]``."""
    pred, target = pred.bool(), target.bool()
    return _per_image([pred & target, pred & ~target, ~pred & target])


def foreground_iou(stats: Tensor) -> Tensor:
    """IoU from summed (TP, FP, FN) ``[..., 3]`` -> ``[...]``."""
    return stats[..., 0] / (stats[..., 0] + stats[..., 1] + stats[..., 2]).clamp_min(1)


def mask_boundary(mask: Tensor) -> Tensor:
    """Pixels of ``mask`` (bool ``[N, H, W]``) with a 4-neighbour outside it (the image border does not count)."""
    m = mask.float()[:, None]
    # erosion by the 4-neighbour cross: the minimum over the vertical and the horizontal triple
    up_down = -F.max_pool2d(-m, (3, 1), stride=1, padding=(1, 0))
    left_right = -F.max_pool2d(-m, (1, 3), stride=1, padding=(0, 1))
    cross = torch.minimum(up_down, left_right)
    return (m - cross)[:, 0].bool()


def boundary_stats(pred: Tensor, target: Tensor, tolerance: int = 2) -> Tensor:
    """Per image ``[N, 4]`` float64: predicted boundary pixels within ``tolerance`` (Chebyshev) of
    a true one, predicted boundary pixels, true boundary pixels within ``tolerance`` of a
    predicted one, true boundary pixels. ``pred``/``target`` bool ``[N, H, W]``."""
    bp, bt = mask_boundary(pred.bool()), mask_boundary(target.bool())
    k = 2 * tolerance + 1

    def near(b: Tensor) -> Tensor:
        return F.max_pool2d(b.float()[:, None], k, stride=1, padding=tolerance)[:, 0].bool()

    return _per_image([bp & near(bt), bp, bt & near(bp), bt])


def boundary_f(stats: Tensor) -> Tensor:
    """F-score from summed boundary stats ``[..., 4]`` -> ``[...]`` (0 where nothing is predicted)."""
    precision = stats[..., 0] / stats[..., 1].clamp_min(1)
    recall = stats[..., 2] / stats[..., 3].clamp_min(1)
    return 2 * precision * recall / (precision + recall).clamp_min(1e-12)


def sample_at_pixels(features: Tensor, image_size: tuple[int, int], ys: Tensor, xs: Tensor) -> Tensor:
    """Features of the bilinearly upsampled map at integer pixels: ``features`` ``[N, C, h, w]``,
    ``ys``/``xs`` ``[N, P]`` pixel rows/columns of images of ``image_size`` (H, W) -> ``[N, P, C]``."""
    h_img, w_img = image_size
    # Pixel centre (x + 0.5) in normalised coordinates; align_corners=False and border padding
    # reproduce F.interpolate(bilinear, align_corners=False) exactly.
    gx = (xs.float() + 0.5) / w_img * 2 - 1
    gy = (ys.float() + 0.5) / h_img * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[:, None]  # [N, 1, P, 2]
    out = F.grid_sample(features.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)


@dataclass
class LinearProbe:
    """Affine per-pixel classifier on standardised features: ``W`` ``[K, C]``, ``b`` ``[K]``,
    feature ``mean``/``std`` ``[C]``."""

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor

    def logits_map(self, features: Tensor) -> Tensor:
        """``[N, C, h, w]`` -> ``[N, K, h, w]``."""
        x = (features.float() - self.mean[:, None, None]) / self.std[:, None, None]
        return torch.einsum("nchw,kc->nkhw", x, self.weight) + self.bias[:, None, None]

    def predict(self, features: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Class per pixel ``[N, H, W]`` from feature maps ``[N, C, h, w]``."""
        logits = F.interpolate(self.logits_map(features), size=image_size, mode="bilinear", align_corners=False)
        return logits.argmax(1)


def train_linear_probe(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 1024,
    weight_decay: float = 1e-4,
    seed: int = 0,
    balanced: bool = True,
) -> LinearProbe:
    """Fit the probe with Adam on samples ``x`` ``[M, C]``, labels ``y`` ``[M]`` (cross-entropy,
    each class weighted by ``M / (K * count)`` when ``balanced``; absent classes weigh 0)."""
    gen = torch.Generator().manual_seed(seed)
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    class_weight = None
    if balanced:
        counts = torch.bincount(y, minlength=num_classes).float()
        class_weight = torch.where(counts > 0, len(y) / (num_classes * counts.clamp_min(1)), torch.zeros(()))
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(xs), generator=gen).split(batch_size):
                loss = F.cross_entropy(xs[idx] @ weight.T + bias, y[idx], weight=class_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return LinearProbe(weight.detach(), bias.detach(), mean, std)


def pixel_training_set(features: Tensor, masks: Tensor, pixels_per_image: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded uniform random pixels of each image: features ``[N*P, C]`` and their labels ``[N*P]``."""
    n, h_img, w_img = masks.shape
    gen = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, h_img, (n, pixels_per_image), generator=gen)
    xs = torch.randint(0, w_img, (n, pixels_per_image), generator=gen)
    feats = sample_at_pixels(features, (h_img, w_img), ys, xs)
    labels = masks[torch.arange(n)[:, None], ys, xs]
    return feats.reshape(-1, feats.shape[-1]), labels.reshape(-1)


def probe_stats(
    train_features: Tensor,
    train_masks: Tensor,
    test_features: Tensor,
    test_masks: Tensor,
    pixels_per_image: int = 256,
    epochs: int = 20,
    seed: int = 0,
    tolerance: int = 2,
) -> Tensor:
    """Train the object-vs-background probe on the train split's features ``[N, C, h, w]`` and
    masks ``[N, H, W]`` (0 = background, anything else = object); per test image ``[M, 7]``
    float64: :func:`foreground_stats` then :func:`boundary_stats`."""
    x, y = pixel_training_set(train_features, train_masks.clamp(max=1), pixels_per_image, seed)
    probe = train_linear_probe(x, y, 2, epochs=epochs, seed=seed)
    out = []
    for f, t in zip(test_features.split(32), test_masks.split(32)):
        pred, target = probe.predict(f, tuple(t.shape[1:])) == 1, t > 0
        out.append(torch.cat([foreground_stats(pred, target), boundary_stats(pred, target, tolerance)], 1))
    return torch.cat(out)
