"""Dense correspondence under known homographies: do features find the same place again?

Pairs ``(A, B)``: ``A`` a real photo of the evaluation pool (short side resized to ``size``,
centre crop), ``B = warp(A)`` by a seeded random homography ``H`` (rotation up to 30 degrees,
scale 0.8-1.25, a perspective tilt, and a shift of 20-35 % of the side in a random direction,
about the centre) plus a photometric change (brightness, contrast, saturation, gamma, noise).
``H`` maps a point of A to the same point of B in continuous pixel coordinates with pixel centres
at ``j + 0.5`` (the project's geometry contract). Every warp parameter is relative to the image
side, so the same seed gives the same warp at every size.

Each layer is scored on pairs rendered at ``grid x stride`` pixels, so every layer sees the same
``grid x grid`` cells (ResNet layer3 at 192 px and layer4 at 384 px for the default 12).

Scoring rule, per layer with stride ``s``: every cell ``(i, j)`` of A's feature map has centre
``c = ((j + 0.5) s, (i + 0.5) s)``; it is *valid* when ``H c`` lies inside B (``[0, W) x [0, H)``).
For a valid cell, the predicted match is the cell of B's map with the highest cosine similarity;
it is *correct* when the Euclidean distance between that cell's centre and ``H c`` is at most
``s`` (one cell). Accuracy = correct / valid, summed over all pairs. Two no-information scores
use the same rule: *no movement* predicts the cell of B at A's own position; *chance* picks a
cell of B uniformly (its expected accuracy: the share of B's cells within ``s`` of ``H c``). The
shift keeps no movement at about 2 % (measured in the tests), so the metric counts cells that move.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def random_homography(
    rng: random.Random,
    size: int,
    max_rotation: float = 30.0,
    scale: tuple[float, float] = (0.8, 1.25),
    perspective: float = 0.15,
    shift: tuple[float, float] = (0.2, 0.35),
) -> np.ndarray:
    """``[3, 3]`` float64 map of A's pixel coordinates to B's (both ``size`` x ``size``): rotation
    by up to ``max_rotation`` degrees, isotropic scale in ``scale`` (log-uniform), a perspective
    tilt up to ``perspective`` (relative change of depth across the image), and a shift of
    ``shift`` x size (uniform in that range, uniform direction), all about the image centre."""
    c = size / 2
    theta = math.radians(rng.uniform(-max_rotation, max_rotation))
    s = math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    linear = np.array([[s * math.cos(theta), -s * math.sin(theta), 0], [s * math.sin(theta), s * math.cos(theta), 0], [0, 0, 1]])
    tilt = np.eye(3)
    tilt[2, :2] = [rng.uniform(-perspective, perspective) / size, rng.uniform(-perspective, perspective) / size]
    to_origin = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]])
    direction, length = rng.uniform(0, 2 * math.pi), rng.uniform(*shift) * size
    back = np.array([[1, 0, c + length * math.cos(direction)], [0, 1, c + length * math.sin(direction)], [0, 0, 1.0]])
    return back @ tilt @ linear @ to_origin


def apply_homography(h: np.ndarray | Tensor, points: Tensor) -> Tensor:
    """Points ``[N, 2]`` (x, y) -> ``[N, 2]`` through the 3x3 ``h``."""
    h = torch.as_tensor(h, dtype=torch.float64)
    p = torch.cat([points.double(), torch.ones(len(points), 1, dtype=torch.float64)], 1) @ h.T
    return p[:, :2] / p[:, 2:]


def warp_image(image: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``B[q] = A[h^-1 q]`` for uint8 ``[S, S, 3]`` ``image`` (bilinear; black outside A)."""
    # OpenCV puts pixel centres at integers: conjugate by a half-pixel shift.
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    h_cv = np.linalg.inv(half) @ h @ half
    size = image.shape[1], image.shape[0]
    return cv2.warpPerspective(image, h_cv, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def photometric_change(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Brightness/contrast/saturation x U(0.7, 1.3), gamma U(0.8, 1.25), Gaussian noise sigma 3 (uint8 in and out)."""
    x = image.astype(np.float32) / 255
    x = x * rng.uniform(0.7, 1.3)
    x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean()
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * rng.uniform(0.7, 1.3) + grey
    x = np.clip(x, 0, 1) ** rng.uniform(0.8, 1.25)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 3 / 255, x.shape)
    return (np.clip(x + noise, 0, 1) * 255).round().astype(np.uint8)


def square_photo(path: str | Path, size: int) -> np.ndarray:
    """The photo as RGB, short side resized to ``size``, centre crop: uint8 ``[S, S, 3]``."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
    side = min(im.size)
    x0, y0 = (im.width - side) / 2, (im.height - side) / 2
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side)))


def make_pairs(
    photos: list[Path], size: int = 224, pairs_per_photo: int = 3, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pairs from real photos: A, B uint8 ``[P, 3, S, S]``, ``H`` float64 ``[P, 3, 3]`` (A -> B) and
    the index of each pair's photo in ``sorted(photos)`` ``[P]`` (the bootstrap's cluster)."""
    a_list, b_list, h_list, photo = [], [], [], []
    for i, path in enumerate(sorted(photos)):
        a = square_photo(path, size)
        for k in range(pairs_per_photo):
            rng = random.Random(f"{seed}-{i}-{k}")
            h = random_homography(rng, size)
            a_list.append(a)
            b_list.append(photometric_change(warp_image(a, h), rng))
            h_list.append(h)
            photo.append(i)

    def to_t(xs: list[np.ndarray]) -> Tensor:
        return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()

    return to_t(a_list), to_t(b_list), torch.from_numpy(np.stack(h_list)), torch.tensor(photo)


def cell_centres(h: int, w: int, stride: float) -> Tensor:
    """Centres ``[h*w, 2]`` (x, y), row-major, of the cells of an ``h`` x ``w`` map at ``stride``."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([(xs.reshape(-1) + 0.5) * stride, (ys.reshape(-1) + 0.5) * stride], 1)


STATS = ("correct", "valid", "no_movement", "chance")


def match_stats(feat_a: Tensor, feat_b: Tensor, h: np.ndarray | Tensor, stride: float, image_size: tuple[int, int]) -> Tensor:
    """Counts of one pair, float64 ``[4]`` in :data:`STATS` order: cells matched correctly, valid
    cells, valid cells the no-movement guess gets right, and the chance guess's expected correct
    cells. ``feat_a`` ``[C, ha, wa]``, ``feat_b`` ``[C, hb, wb]``, ``h`` A -> B, ``image_size``
    (H, W) of B. Rule in the module docstring."""
    _, ha, wa = feat_a.shape
    _, hb, wb = feat_b.shape
    centres_a, centres_b = cell_centres(ha, wa, stride), cell_centres(hb, wb, stride)
    target = apply_homography(h, centres_a)
    valid = (target[:, 0] >= 0) & (target[:, 0] < image_size[1]) & (target[:, 1] >= 0) & (target[:, 1] < image_size[0])
    if not valid.any():
        return torch.zeros(len(STATS), dtype=torch.float64)
    tolerance = stride + 1e-9
    qa = F.normalize(feat_a.reshape(feat_a.shape[0], -1).T[valid].float(), dim=1)
    kb = F.normalize(feat_b.reshape(feat_b.shape[0], -1).T.float(), dim=1)
    predicted = centres_b[(qa @ kb.T).argmax(1)]
    correct = (predicted - target[valid]).norm(dim=1) <= tolerance
    no_movement = (centres_a[valid] - target[valid]).norm(dim=1) <= tolerance
    chance = (torch.cdist(target[valid], centres_b) <= tolerance).double().mean(1)
    return torch.stack([correct.sum().double(), valid.sum().double(), no_movement.sum().double(), chance.sum()])
