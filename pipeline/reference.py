"""The baseline the benchmark compares against: a loader written the way the public CLoVE / PixPro
code is (their ``RandomResizedCropCoord`` / ``RandomHorizontalFlipCoord`` + torchvision transforms
on PIL images), reading the same shards.

Per sample, in DataLoader workers: WebDataset reads the tar, PIL decodes the full image, then each
view runs a torchvision ``RandomResizedCrop``-style crop that also returns its box (normalised
``x0, y0, x1, y1`` as in PixPro), a horizontal flip that flips the box, quarter turns for recipes
that have them, ``RandomApply(ColorJitter)``, ``RandomGrayscale``, the MoCo-v2 PIL Gaussian blur,
PIL solarize, ``ToTensor`` and ``Normalize``; the default collate stacks float tensors. Nothing
is deliberately slowed down: it is the honest per-sample PIL pipeline those repositories train
with (they read ImageFolder/zip files; shards are, if anything, faster to read).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
import webdataset as wds
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader

from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD
from pipeline.source import list_shards
from pipeline.views import Photometric, Recipe, ViewSpec

INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


class RandomResizedCropCoord(T.RandomResizedCrop):
    """torchvision's RandomResizedCrop that also returns the crop box, normalised by the image size."""

    def forward(self, img: Image.Image) -> tuple[Image.Image, torch.Tensor]:
        """The resized crop and its box ``[4]`` as ``(x0, y0, x1, y1)`` fractions of the image."""
        i, j, h, w = self.get_params(img, self.scale, self.ratio)
        width, height = img.size
        coord = torch.tensor([j / width, i / height, (j + w) / width, (i + h) / height])
        return TF.resized_crop(img, i, j, h, w, self.size, self.interpolation), coord


class RandomHorizontalFlipCoord(torch.nn.Module):
    """Horizontal flip with probability ``p`` that also swaps the box's x coordinates."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, img: Image.Image, coord: torch.Tensor) -> tuple[Image.Image, torch.Tensor, bool]:
        """The image and box, both flipped or both as they were, and whether they were flipped."""
        if torch.rand(1) < self.p:
            coord = coord.clone()
            coord[0], coord[2] = coord[2].item(), coord[0].item()
            return TF.hflip(img), coord, True
        return img, coord, False


class GaussianBlur:
    """MoCo v2's blur (SimCLR), copied by CLoVE/PixPro: PIL GaussianBlur with a random radius."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x: Image.Image) -> Image.Image:
        """``x`` blurred with a radius drawn uniformly from ``sigma`` (Python's global RNG)."""
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class Solarize:
    """PIL's solarize at its default threshold (128)."""

    def __call__(self, x: Image.Image) -> Image.Image:
        """``x`` with every value at or above 128 inverted."""
        return ImageOps.solarize(x)


def photometric_transform(p: Photometric | None) -> T.Compose:
    """The public code's colour ops for ``p`` (none for None), then ToTensor and ImageNet normalisation."""
    ops: list = []
    if p is not None:
        if p.jitter_p > 0:
            ops.append(T.RandomApply([T.ColorJitter(*p.jitter)], p=p.jitter_p))
        if p.gray_p > 0:
            ops.append(T.RandomGrayscale(p=p.gray_p))
        if p.blur_p > 0:
            ops.append(T.RandomApply([GaussianBlur(p.blur_sigma)], p=p.blur_p))
        if p.solarize_p > 0:
            ops.append(T.RandomApply([Solarize()], p=p.solarize_p))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


class ViewTransform:
    """One view: crop with box, flip (box flipped), quarter turns, photometric, tensor."""

    def __init__(self, spec: ViewSpec):
        self.crop = RandomResizedCropCoord(spec.size, spec.scale, spec.ratio, INTERP[spec.interpolation])
        self.flip = RandomHorizontalFlipCoord(spec.flip_p)
        self.rotate = spec.rotate
        self.post = photometric_transform(spec.photometric)

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor, bool, int]:
        """Normalised view ``[3, S, S]``, its box ``[4]`` (see :class:`RandomResizedCropCoord`), flipped, quarter turns."""
        view, coord = self.crop(img)
        view, coord, flipped = self.flip(view, coord)
        turns = random.randrange(4) if self.rotate else 0
        if turns:
            view = view.rotate(90 * turns)  # counter-clockwise, square views keep their size
        return self.post(view), coord, flipped, turns


class MultiViewTransform:
    """All views of a recipe; returns ``(views, coords [V, 4], flips [V], turns [V])``."""

    def __init__(self, recipe: Recipe):
        self.views = [ViewTransform(spec) for spec in recipe.views]

    def __call__(self, img: Image.Image):
        """Every view of ``img``, as the class docstring gives the tuple."""
        out = [t(img) for t in self.views]
        return (
            [o[0] for o in out],
            torch.stack([o[1] for o in out]),
            torch.tensor([o[2] for o in out]),
            torch.tensor([o[3] for o in out]),
        )


def _decode(sample: dict) -> Image.Image:
    data = next(sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample)
    return Image.open(io.BytesIO(data)).convert("RGB")


def build_reference_loader(
    shards: str, recipe: Recipe, *, batch_size: int, num_workers: int, pin_memory: bool = False, seed: int = 0
) -> DataLoader:
    """An infinite DataLoader of ``(views, coords, flips, turns)`` batches over ``shards``.

    ``views`` is a list of ``[B, 3, S, S]`` normalised float tensors, ``coords`` ``[B, V, 4]``.
    Undecodable samples are skipped (WebDataset's ``warn_and_continue``), as the public code would
    crash on them instead.
    """
    urls = list_shards(shards)
    transform = MultiViewTransform(recipe)
    random.seed(seed)
    torch.manual_seed(seed)
    dataset = (
        wds.WebDataset(
            urls, resampled=True, shardshuffle=False, handler=wds.warn_and_continue, nodesplitter=None, empty_check=False
        )
        .map(_decode, handler=wds.warn_and_continue)
        .map(transform, handler=wds.warn_and_continue)
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def iterate_reference(loader: DataLoader, device: torch.device | str = "cpu") -> Iterator[tuple[int, list[torch.Tensor]]]:
    """``(batch size, views on device)`` per batch, as a training loop would consume them."""
    device = torch.device(device)
    for views, *_geometry in loader:
        if device.type != "cpu":
            views = [v.to(device, non_blocking=True) for v in views]
        yield views[0].shape[0], views
