"""The law of photometric augmentation: which parameters a view's colour augmentation gets.

:func:`draw_photometric` is the single place where the random parameters of a view's photometric
augmentation are drawn from its :class:`~pipeline.views.Photometric` spec and the per-sample RNG;
every backend uses it (the cpu backend applies them with :mod:`pipeline.backends.photometric_cpu`, the torch
backend turns them into tensors with :func:`params_to_tensors` for :mod:`pipeline.backends.photometric_gpu`).

Semantics are torchvision's ``ColorJitter`` (brightness, contrast, saturation, hue in a random
order, factors uniform in ``[max(0, 1 - s), 1 + s]``, hue uniform in ``[-h, h]`` turns) with
probability ``jitter_p``, ``RandomGrayscale`` (ITU-R 601 luma), Gaussian blur with ``sigma``
uniform in ``blur_sigma`` (kernel radius ``ceil(3 sigma)``, reflected borders) and
``Solarize(128)``, in that order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

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
        """Whether applying these parameters leaves the view unchanged."""
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

    def f(name: str) -> torch.Tensor:
        return torch.tensor([getattr(p, name) for p in params], dtype=torch.float32)

    out = {
        "brightness": f("brightness"),
        "contrast": f("contrast"),
        "saturation": f("saturation"),
        "hue": f("hue"),
        "blur_sigma": f("blur_sigma"),
        "jitter": torch.tensor([bool(p.jitter_order) for p in params]),
        "gray": torch.tensor([p.gray for p in params]),
        "solarize": torch.tensor([p.solarize for p in params]),
        "order": order,
    }
    return {k: v.to(device) for k, v in out.items()}
