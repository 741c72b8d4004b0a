"""Photometric augmentation batched on the device, with per-sample parameters.

The ops and their order follow the SimCLR/BYOL/CLoVE recipe (and torchvision's definitions, which
the tests use as the per-sample reference): colour jitter (brightness, contrast, saturation, hue
in a per-sample random order) -> grayscale -> Gaussian blur -> solarize. Images are float
``[N, 3, S, S]`` in ``[0, 255]`` (what :mod:`pipeline.backends.resample` produces); every op clamps to that
range as torchvision's do. The parameters are drawn by the shared law,
:func:`pipeline.photometric.draw_photometric`, in the workers. Values stay float between ops
(the cpu backend, :mod:`pipeline.backends.photometric_cpu`, rounds to uint8 after each op as PIL does).

Why hand-written rather than Kornia: Kornia's ``ColorJitter`` draws its own parameters (we must
use the shared law and the parameters drawn in the workers) and measured ~2.5x slower than the
fused colour jitter below on CPU tensors (64 x 224^2, best of 7: 244 vs 97 ms; the whole chain
with grayscale, blur and solarize took 119 ms); measure anywhere with
``python -m pipeline.bench_photometric torch --device cuda``.

Why a *plan*: the parameters are drawn on the CPU (in DataLoader workers), so which sample gets
which op at which step is known there. :func:`make_plan` turns it into index lists once, moves
them to the device in one non-blocking copy, and :func:`apply_plan` runs each op only on the
samples that need it (gather -> op -> scatter) without ever synchronising with the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.photometric import PhotometricParams, params_to_tensors

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
SOLARIZE_THRESHOLD = 128.0  # PIL ImageOps.solarize default, on the 0..255 scale
BOUND = 255.0


# ---------------------------------------------------------------------------------------------
# Single ops on a (sub)batch; factors are per sample, shape [n]
# ---------------------------------------------------------------------------------------------


def grayscale(x: Tensor) -> Tensor:
    """``[N, 3, H, W]`` -> ``[N, 1, H, W]`` luma."""
    return GRAY[0] * x[:, 0:1] + GRAY[1] * x[:, 1:2] + GRAY[2] * x[:, 2:3]


# Blends are written as lerp(other, x, f) = f * x + (1 - f) * other: one pass instead of three.


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    """``[N, 3, H, W]`` scaled by ``[N]`` factors ``f``, clamped to ``[0, 255]``."""
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, BOUND)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    """``[N, 3, H, W]`` blended with its mean luma by ``[N]`` factors ``f``, clamped to ``[0, 255]``."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return torch.lerp(mean.expand_as(x), x, f.view(-1, 1, 1, 1)).clamp_(0, BOUND)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    """``[N, 3, H, W]`` blended with its per-pixel luma by ``[N]`` factors ``f``, clamped to ``[0, 255]``."""
    return torch.lerp(grayscale(x).expand_as(x), x, f.view(-1, 1, 1, 1)).clamp_(0, BOUND)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` turns (torchvision's HSV definition), value and chroma kept.

    Hue in sixths of a turn is ``offset + (a - b) / chroma`` with (offset, a, b) = (0, g, b),
    (2, b, r) or (4, r, g) when the maximum is r, g or b; the result is rebuilt with the closed
    form ``c_n = V - C * clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6 H) mod 6``, ``n = 5, 3, 1`` for
    R, G, B. Far fewer passes than HSV -> piecewise RGB, which matters as the ops are memory bound.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    num = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    offset = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0)) + 6.0 * shift.view(-1, 1, 1, 1).to(x.dtype)
    # chroma 0 (grey) has num 0: any divisor works, 1 avoids 0/0
    h6 = torch.addcdiv(offset, num, torch.where(chroma > 0, chroma, 1.0))
    # n = 5, 3, 1 made on the device (a tensor from a Python list would be a synchronising copy)
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h6, 6.0)
    return torch.addcmul(maxc, chroma, torch.minimum(k, 4.0 - k).clamp_(0, 1), value=-1.0).clamp_(0, BOUND)


def gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """``[n]`` sigmas -> ``[n, 2 * radius + 1]`` normalised 1-D kernels (torchvision's sampling)."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable blur with one sigma per sample, reflect padding, as torchvision's gaussian_blur
    with ``kernel_size = 2 * radius + 1``. One grouped conv per direction for the whole batch."""
    n, c, h, w = x.shape
    radius = min(radius, h - 1, w - 1)  # reflect padding needs radius < size
    k = gaussian_kernels(sigma.to(x.dtype), radius).repeat_interleave(c, dim=0)  # [n*c, K]
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def solarize(x: Tensor) -> Tensor:
    """Values at or above the solarize threshold inverted (``255 - x``), same shape."""
    return torch.where(x >= SOLARIZE_THRESHOLD, BOUND - x, x)


JITTER_OPS = {"brightness": adjust_brightness, "contrast": adjust_contrast, "saturation": adjust_saturation, "hue": adjust_hue}
JITTER_NAMES = ("brightness", "contrast", "saturation", "hue")  # index = op id in ``order``


# ---------------------------------------------------------------------------------------------
# Plans: per-sample parameters -> index lists, built on the CPU
# ---------------------------------------------------------------------------------------------


@dataclass
class PhotometricArrays:
    """Per-sample photometric parameters of ``N`` views (CPU tensors).

    Attributes:
        jitter: ``[N]`` bool, colour jitter applied.
        factors: ``[N, 4]`` float, brightness / contrast / saturation factors and hue shift (turns).
        order: ``[N, 4]`` long, the op applied at each step (0 brightness, 1 contrast,
            2 saturation, 3 hue; -1 none), as :func:`pipeline.photometric.params_to_tensors`.
        gray: ``[N]`` bool.
        blur_sigma: ``[N]`` float, 0 where no blur.
        solarize: ``[N]`` bool.
    """

    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur_sigma: Tensor
    solarize: Tensor

    @staticmethod
    def identity(n: int) -> PhotometricArrays:
        """Parameters of ``n`` views that leave them unchanged."""
        return PhotometricArrays(
            torch.zeros(n, dtype=torch.bool),
            torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(n, 1),
            torch.arange(4).repeat(n, 1),
            torch.zeros(n, dtype=torch.bool),
            torch.zeros(n),
            torch.zeros(n, dtype=torch.bool),
        )

    @staticmethod
    def from_params(params: list[PhotometricParams]) -> PhotometricArrays:
        """From the drawn parameters of :mod:`pipeline.photometric` (the shared law)."""
        t = params_to_tensors(params)
        factors = torch.stack([t["brightness"], t["contrast"], t["saturation"], t["hue"]], dim=1)
        return PhotometricArrays(t["jitter"], factors, t["order"], t["gray"], t["blur_sigma"], t["solarize"])

    @staticmethod
    def cat(parts: list[PhotometricArrays]) -> PhotometricArrays:
        """``parts`` concatenated along the view axis, in order."""
        return PhotometricArrays(*(torch.cat([getattr(p, f) for p in parts]) for f in PhotometricArrays.FIELDS))

    FIELDS = ("jitter", "factors", "order", "gray", "blur_sigma", "solarize")


@dataclass
class PhotometricPlan:
    """Ops to run, each on the samples that need it, in order (tensors on the target device)."""

    steps: list[tuple[str, Tensor, Tensor | None]]  # (op, sample indices [n], per-sample factor [n])
    blur_radius: int


def make_plan(p: PhotometricArrays, device: torch.device | str, blur_radius: int | None = None) -> PhotometricPlan:
    """Index lists per op and step, moved to ``device`` in one (pinned, non-blocking) copy.

    ``blur_radius`` defaults to ``ceil(3 * max sigma)`` (the kernel covers +-3 sigma).
    """
    host: list[tuple[str, Tensor, Tensor | None]] = []
    for step in range(4):
        for op in range(4):
            sel = torch.nonzero(p.jitter & (p.order[:, step] == op)).flatten()
            if len(sel):
                host.append((JITTER_NAMES[op], sel, p.factors[sel, op].float()))
    for name, mask in (("gray", p.gray), ("blur", p.blur_sigma > 0), ("solarize", p.solarize)):
        sel = torch.nonzero(mask).flatten()
        if len(sel):
            host.append((name, sel, p.blur_sigma[sel].float() if name == "blur" else None))
    if blur_radius is None:
        smax = float(p.blur_sigma.max()) if len(p.blur_sigma) else 0.0
        blur_radius = max(1, math.ceil(3.0 * smax))
    if not host:
        return PhotometricPlan([], blur_radius)
    # One transfer: indices and factors packed as float64 (indices are exact in it).
    flat = torch.cat([torch.cat([i.double(), f.double() if f is not None else i.new_zeros(0).double()]) for _, i, f in host])
    if torch.device(device).type == "cuda":
        flat = flat.pin_memory()
    flat = flat.to(device, non_blocking=True)
    steps, pos = [], 0
    for name, idx, fac in host:
        n, m = len(idx), (len(fac) if fac is not None else 0)
        steps.append((name, flat[pos : pos + n].long(), flat[pos + n : pos + n + m].float() if m else None))
        pos += n + m
    return PhotometricPlan(steps, blur_radius)


def apply_plan(x: Tensor, plan: PhotometricPlan) -> Tensor:
    """Run ``plan`` on float ``[N, 3, S, S]`` in ``[0, 255]``; returns the augmented batch (in place)."""
    for name, idx, fac in plan.steps:
        sub = x.index_select(0, idx)
        if name in JITTER_OPS:
            sub = JITTER_OPS[name](sub, fac.to(x.dtype))
        elif name == "gray":
            sub = grayscale(sub).expand(-1, 3, -1, -1)
        elif name == "blur":
            sub = gaussian_blur(sub, fac, plan.blur_radius)
        elif name == "solarize":
            sub = solarize(sub)
        x.index_copy_(0, idx, sub)
    return x


def augment(x: Tensor, p: PhotometricArrays, blur_radius: int | None = None) -> Tensor:
    """``[N, 3, S, S]`` float in ``[0, 255]`` with per-sample parameters ``p`` -> augmented batch."""
    return apply_plan(x, make_plan(p, x.device, blur_radius))
