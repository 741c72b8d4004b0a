"""Photometric augmentation of uint8 views on the CPU, and the law its parameters follow.

:func:`draw_photometric` is the single place where the random parameters of a view's photometric
augmentation are drawn from its :class:`~pipeline.views.Photometric` spec and the per-sample RNG;
every backend uses it. The GPU backend turns drawn values into tensors with
:func:`params_to_tensors`; the float ops below (:func:`adjust_brightness` ... :func:`solarize`)
broadcast over a batch dimension, so they run on ``[N, 3, H, W]`` device tensors as well.

Semantics are torchvision's on float images (scaled to ``[0, 255]``), which the public CLoVE/GTSA
code runs through PIL (equal up to PIL's uint8 rounding between ops): ``ColorJitter`` (brightness,
contrast, saturation, hue in a random order, factors uniform in ``[max(0, 1 - s), 1 + s]``, hue
uniform in ``[-h, h]``, HSV hue rotation) with probability ``jitter_p``, ``RandomGrayscale``
(ITU-R 601 luma on three channels), Gaussian blur with ``sigma`` uniform in ``blur_sigma`` (the
MoCo-v2 blur, kernel radius ``ceil(3 sigma)``, reflected borders) and ``Solarize(128)``, in that
order. Values stay float between ops and are rounded to uint8 once.

Why torch float ops on one view at a time: measured on one core at 224 px, PIL's HSV hue path
costs ~1.5 ms and its blur ~1.3 ms per view, these ops ~0.4-0.7 ms and ~0.3 ms (a view fits in
cache; stacking many 224 px views made every op memory-bound and slower per view); Kornia on CPU
is slower still. torch's float->uint8 cast is not vectorised, so the last step goes through numpy.
A whole CLoVE image (2 x 224 + 6 x 96, full photometrics) costs ~5.3 ms on one core here, against
~16 ms for the per-sample PIL pipeline of the public code.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.views import Photometric

BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
SOLARIZE_THRESHOLD = 128


@dataclass(frozen=True)
class PhotometricParams:
    """Drawn photometric parameters of one view.

    ``jitter_order`` lists the colour-jitter ops to apply, in order (0 brightness, 1 contrast,
    2 saturation, 3 hue); empty when jitter is not applied. Factors of 1 (hue 0) are identities.
    ``blur_sigma`` is 0 when no blur is applied.
    """

    jitter_order: tuple[int, ...] = ()
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    gray: bool = False
    blur_sigma: float = 0.0
    solarize: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.jitter_order or self.gray or self.blur_sigma > 0 or self.solarize)


IDENTITY = PhotometricParams()


def _factor(strength: float, rng: random.Random) -> float:
    return rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength)


def draw_photometric(spec: Photometric | None, rng: random.Random) -> PhotometricParams:
    """Draw one view's parameters. ``spec=None`` (photometrics off) gives the identity.

    The RNG is always advanced by the same number of draws for a non-None spec, whatever the
    outcomes, so a change of probabilities does not shift the random stream of later views.
    """
    if spec is None:
        return IDENTITY
    b, c, s, h = spec.jitter
    do_jitter = rng.random() < spec.jitter_p
    order = list(range(4))
    rng.shuffle(order)
    factors = (_factor(b, rng), _factor(c, rng), _factor(s, rng), rng.uniform(-h, h))
    gray = rng.random() < spec.gray_p
    do_blur = rng.random() < spec.blur_p
    sigma = rng.uniform(*spec.blur_sigma)
    solarize = rng.random() < spec.solarize_p
    strengths = (b, c, s, h)
    # torchvision skips an op whose strength is 0 (its factor is None).
    jitter_order = tuple(i for i in order if strengths[i] > 0) if do_jitter else ()
    return PhotometricParams(
        jitter_order=jitter_order,
        brightness=factors[0] if do_jitter and b > 0 else 1.0,
        contrast=factors[1] if do_jitter and c > 0 else 1.0,
        saturation=factors[2] if do_jitter and s > 0 else 1.0,
        hue=factors[3] if do_jitter and h > 0 else 0.0,
        gray=gray,
        blur_sigma=sigma if do_blur else 0.0,
        solarize=solarize,
    )


def params_to_tensors(params: list[PhotometricParams], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Stack the parameters of ``B`` views for batched ops on a device.

    Returns float32 ``[B]`` tensors ``brightness, contrast, saturation, hue, blur_sigma`` and bool
    ``[B]`` ``jitter, gray, solarize``, plus ``order`` int64 ``[B, 4]``: the op applied at each step
    (-1 = none at that step), so a batched implementation loops over 4 steps.
    """
    order = torch.full((len(params), 4), -1, dtype=torch.int64)
    for i, p in enumerate(params):
        order[i, : len(p.jitter_order)] = torch.tensor(p.jitter_order, dtype=torch.int64)
    f = lambda name: torch.tensor([getattr(p, name) for p in params], dtype=torch.float32)  # noqa: E731
    out = {
        "brightness": f("brightness"), "contrast": f("contrast"), "saturation": f("saturation"),
        "hue": f("hue"), "blur_sigma": f("blur_sigma"),
        "jitter": torch.tensor([bool(p.jitter_order) for p in params]),
        "gray": torch.tensor([p.gray for p in params]),
        "solarize": torch.tensor([p.solarize for p in params]),
        "order": order,
    }
    return {k: v.to(device) for k, v in out.items()}


# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
MAX_VALUE = 255.0
# below this difference two channel values count as equal when finding the max channel (hue)
_EQUAL = 1e-6


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` float -> ``[..., 1, H, W]`` luma."""
    r, g, b = x.unbind(-3)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(-3)


def adjust_brightness(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """``x * factor`` clipped; ``factor`` a float or broadcastable tensor (e.g. ``[N, 1, 1, 1]``)."""
    return (x * factor).clamp_(0.0, MAX_VALUE)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    return (x * factor).add_(other * (1.0 - factor)).clamp_(0.0, MAX_VALUE)


def adjust_contrast(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Blend with the mean luma of each image (luma is linear: weighted channel means)."""
    means = x.mean(dim=(-2, -1), keepdim=True)  # [..., 3, 1, 1]
    r, g, b = means.unbind(-3)
    mean = (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(-3)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Blend with the luma image."""
    return _blend(x, to_grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: float | torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` turns (``[-0.5, 0.5]``), keeping HSV value and saturation.

    ``shift``: a float, or a tensor shaped like the other ops' factors (``[N, 1, 1, 1]``).

    Branch-free form of torchvision's rgb -> hsv -> rgb: with ``M``/``m`` the max/min channel and
    ``C = M - m``, hue ``h`` in sextants is ``(g - b)/C``, ``(b - r)/C + 2`` or ``(r - g)/C + 4``
    when the max is r, g or b; channel ``c`` of the result is ``M - C * clamp(min(k, 4 - k), 0, 1)``
    with ``k = (n_c + h + 6 shift) mod 6``, ``n = 5, 3, 1`` for r, g, b.
    """
    r, g, b = x.unbind(-3)
    top = torch.maximum(torch.maximum(r, g), b)
    chroma = top - torch.minimum(torch.minimum(r, g), b)
    # indicator masks by arithmetic (comparisons + casts measured slower on CPU)
    is_r = 1.0 - ((top - r) * (1.0 / _EQUAL)).clamp_(max=1.0)
    is_g = (1.0 - ((top - g) * (1.0 / _EQUAL)).clamp_(max=1.0)).mul_(1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    num = (g - b).mul_(is_r).add_((b - r).mul_(is_g)).add_((r - g).mul_(is_b))
    shift6 = shift * 6.0 + 6.0  # +6 keeps k positive before the mod
    if isinstance(shift6, torch.Tensor):
        shift6 = shift6.reshape(shift6.shape[:-3] + shift6.shape[-2:]) if shift6.dim() >= 3 else shift6
    hue = num.div_(chroma.clamp(min=_EQUAL)).add_(is_g * 2.0).add_(is_b * 4.0).add_(shift6)
    out = torch.empty_like(x)
    for c, n in enumerate((5.0, 3.0, 1.0)):
        k = hue + n
        k.sub_(torch.floor(k * (1.0 / 6.0)).mul_(6.0))
        w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.sub(top, w.mul_(chroma), out=out.select(-3, c))
    return out


def gaussian_kernel(sigma: float, max_radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, radius ``min(ceil(3 sigma), max_radius)``."""
    radius = max(1, min(math.ceil(3.0 * sigma), max_radius))
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2) / (2.0 * sigma * sigma))
    return (taps / taps.sum()).float()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[..., C, H, W]`` with reflected borders (torchvision's padding).

    A sum of shifted slices: the kernel is short (radius <= 6 for sigma <= 2), and this measured
    faster than ``conv2d`` and than PIL's box-blur approximation on one core.
    """
    h, w = x.shape[-2:]
    taps = gaussian_kernel(sigma, min(h, w) - 1).tolist()
    radius = len(taps) // 2
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    padded = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    rows = padded[..., 0:w] * taps[0]
    for i in range(1, len(taps)):
        rows.add_(padded[..., i : i + w], alpha=taps[i])
    padded = F.pad(rows, (0, 0, radius, radius), mode="reflect")
    out = padded[..., 0:h, :] * taps[0]
    for i in range(1, len(taps)):
        out.add_(padded[..., i : i + h, :], alpha=taps[i])
    return out.reshape(*lead, h, w)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """Invert values at or above ``threshold``.

    By arithmetic: ``torch.where`` on a data-dependent mask measured ~8x slower on CPU. Values
    within ``1e-6`` below the threshold are partly inverted, far below any uint8 rounding.
    """
    above = ((x - threshold) * (1.0 / _EQUAL) + 1.0).clamp_(0.0, 1.0)
    return x + (MAX_VALUE - 2.0 * x).mul_(above)


_JITTER_OPS = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast, SATURATION: adjust_saturation, HUE: adjust_hue}


def _factor_of(p: PhotometricParams, op: int) -> float:
    return (p.brightness, p.contrast, p.saturation, p.hue)[op]


def apply_photometric(view: torch.Tensor, p: PhotometricParams) -> torch.Tensor:
    """Apply drawn parameters to one view.

    Args:
        view: ``[3, S, S]`` uint8 RGB (CHW, any strides, e.g. a permuted channels-last view).
        p: parameters from :func:`draw_photometric`.

    Returns:
        ``[3, S, S]`` uint8 (``view`` itself when ``p`` is the identity, else a new tensor).
    """
    if p.is_identity:
        return view
    x = torch.empty(view.shape, dtype=torch.float32)
    x.copy_(view)
    for op in p.jitter_order:
        factor = _factor_of(p, op)
        if factor != (0.0 if op == HUE else 1.0):
            x = _JITTER_OPS[op](x, factor)
    if p.gray:
        x = to_grayscale(x)  # one channel from here on: blur and solarize cost a third
    if p.blur_sigma > 0:
        x = gaussian_blur(x, p.blur_sigma)
    if p.solarize:
        x = solarize(x)
    out = torch.from_numpy(x.round_().clamp_(0.0, MAX_VALUE).numpy().astype(np.uint8))
    return out.expand(3, -1, -1) if out.shape[0] == 1 else out
