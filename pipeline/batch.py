"""The batch every backend returns (docs/batch.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ViewBatch:
    """Augmented views of ``B`` images with the exact geometry of every view.

    Attributes:
        views: ``V`` tensors ``[B, 3, S_k, S_k]``, globals first. uint8 as workers ship them,
            float normalised once :func:`normalize_views` ran on the training device.
        matrices: ``[B, V, 3, 3]`` float32, original -> view (pipeline.geometry contract).
        image_size: ``[B, 2]`` int64, original ``(W, H)``.
        rotation: ``[B, V]`` int64, counter-clockwise quarter turns applied to each view.
        labels: ``[B]`` int64 class id (-1 where the shard has none), or None.
        keys: sample keys, or None.
        stats: loader counters at the time this batch was made (e.g. ``{"bad_samples": 3}``).
    """

    views: list[Tensor]
    matrices: Tensor
    image_size: Tensor
    rotation: Tensor
    labels: Tensor | None = None
    keys: list[str] | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """``B``, images in the batch."""
        return self.matrices.shape[0]

    @property
    def num_views(self) -> int:
        """``V``, views per image."""
        return self.matrices.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = True) -> ViewBatch:
        """A copy with every tensor on ``device`` (keys and a copy of the stats carried over)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return ViewBatch(
            views=[v.to(device, non_blocking=non_blocking) for v in self.views],
            matrices=move(self.matrices),
            image_size=move(self.image_size),
            rotation=move(self.rotation),
            labels=move(self.labels),
            keys=self.keys,
            stats=dict(self.stats),
        )

    def pin_memory(self) -> ViewBatch:
        """Called by DataLoader(pin_memory=True) on custom batch types."""

        def pin(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.pin_memory()

        return ViewBatch(
            [v.pin_memory() for v in self.views],
            pin(self.matrices),
            pin(self.image_size),
            pin(self.rotation),
            pin(self.labels),
            self.keys,
            self.stats,
        )


def normalize_views(
    views: list[Tensor],
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> list[Tensor]:
    """uint8 ``[B, 3, S, S]`` -> normalised float on the views' device (timm's prefetcher idea)."""
    out = []
    for v in views:
        m = torch.tensor(mean, device=v.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
        s = torch.tensor(std, device=v.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
        x = v.to(dtype, copy=True).sub_(m).div_(s)  # one allocation per view instead of three
        out.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return out
