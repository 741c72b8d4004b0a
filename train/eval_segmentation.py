"""Linear per-pixel probe on frozen features, scored by mean IoU.

The probe is ``softmax(W · standardise(f(p)) + b)`` where ``f(p)`` is the feature map bilinearly
upsampled to the image and read at pixel ``p`` (``F.interpolate(..., mode="bilinear",
align_corners=False)``, i.e. sampling at pixel centres). It is trained on a seeded random subset
of pixels of the train images; at test time the affine probe is applied on the feature grid and
its logits upsampled, which equals applying it to the upsampled features (bilinear weights sum to
one) at a fraction of the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``[K, K]`` int64 counts, rows = target class, columns = predicted class (pixels with
    ``target == ignore_index`` left out)."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> float:
    """Standard mIoU: per class ``TP / (TP + FP + FN)``, averaged over the classes that occur in
    the prediction or the target (others are undefined and skipped)."""
    cm = confusion_matrix(pred, target, num_classes, ignore_index).double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


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
) -> LinearProbe:
    """Fit the probe with Adam on samples ``x`` ``[M, C]``, labels ``y`` ``[M]`` (cross-entropy)."""
    gen = torch.Generator().manual_seed(seed)
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(xs), generator=gen).split(batch_size):
                loss = F.cross_entropy(xs[idx] @ weight.T + bias, y[idx])
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


def segmentation_miou(
    train_features: Tensor,
    train_masks: Tensor,
    test_features: Tensor,
    test_masks: Tensor,
    num_classes: int,
    pixels_per_image: int = 256,
    epochs: int = 20,
    seed: int = 0,
) -> float:
    """Train the probe on the train split's features ``[N, C, h, w]`` / masks ``[N, H, W]``, return
    the test split's mIoU."""
    x, y = pixel_training_set(train_features, train_masks, pixels_per_image, seed)
    probe = train_linear_probe(x, y, num_classes, epochs=epochs, seed=seed)
    preds = torch.cat([probe.predict(f, tuple(test_masks.shape[1:])) for f in test_features.split(32)])
    return mean_iou(preds, test_masks, num_classes)
