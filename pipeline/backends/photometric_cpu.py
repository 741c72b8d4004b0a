"""Photometric augmentation of one uint8 view on the CPU, with OpenCV.

Applies parameters drawn by :func:`pipeline.photometric.draw_photometric` to an ``[S, S, 3]`` uint8
RGB array (HWC, what the cpu backend's resize produces): colour jitter in the drawn order, then
grayscale, Gaussian blur, solarize — torchvision's definitions, with the result rounded to uint8
after every op, as the PIL pipeline of the public CLoVE/PixPro code does. Each op is within one
level of torchvision's float op; a whole chain within two levels of torchvision's ops rounded the
same way (tests/pipeline/test_cpu_backend.py).

How each op is done, and why:

* brightness, contrast: one saturating SIMD pass, ``cv2.convertScaleAbs`` / ``cv2.addWeighted``
  (``factor * x + offset``, rounded to nearest and clipped: a 256-entry ``cv2.LUT`` gives the
  same values at half the speed, as it does not vectorise); contrast once the mean luma is known;
* solarize: a 256-entry lookup table (``cv2.LUT``);
* saturation: the blend of the view with its luma is linear in RGB, so one 3x3 ``cv2.transform``
  (one saturating pass, 2x faster than computing the luma image and blending);
* hue: one compiled pass (numba, :mod:`pipeline.backends.hue_kernel`) of torchvision's HSV shift
  rewritten without division, 2.5x faster than OpenCV's float HSV round trip (``cv2.cvtColor``
  there and back, which keeps torchvision's float precision, where uint8 HSV would quantise hue to
  256 steps as PIL does);
* grayscale: ``cv2.cvtColor``; blur and solarize then run on one channel;
* blur: ``cv2.sepFilter2D`` with torchvision's kernel (``cv2.getGaussianKernel``: normalised
  samples of the Gaussian, radius ``ceil(3 sigma)``) and reflected borders (``BORDER_REFLECT_101``
  is torchvision's ``reflect`` padding); ``cv2.GaussianBlur`` computes the same in a bit-exact
  fixed-point path that is 2x slower here.

``python -m pipeline.bench_photometric cpu`` times each op next to the PIL op of the public code; on
one core of the 2-core development machine, a 224 px view (best of 50): hue 0.054 ms (PIL 1.45 ms;
OpenCV's float HSV round trip 0.14 ms, the torch float ops before it 1.7 ms), blur at sigma 2
0.15 ms (PIL 1.63 ms), brightness 0.02 ms, contrast 0.03 ms, the other ops 0.01-0.08 ms: 2-27x
faster than PIL's; Kornia on CPU is slower still.

OpenCV's thread pool is switched off when this module is imported: the ops are far too small to
gain from threads, DataLoader workers are one process per core already, and a pool started in the
main process deadlocks OpenCV in workers forked from it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.backends.hue_kernel import shift_hue
from pipeline.photometric import BRIGHTNESS, CONTRAST, HUE, SATURATION, SOLARIZE_THRESHOLD, PhotometricParams

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_LEVELS = np.arange(256, dtype=np.float64)
_TO_GRAY_RGB = np.asarray([GRAY_WEIGHTS] * 3, dtype=np.float32)  # every channel <- luma
_GRAY_TO_IDENTITY = np.eye(3, dtype=np.float32) - _TO_GRAY_RGB  # saturation f: _TO_GRAY_RGB + f * this
_SOLARIZE_LUT = np.where(_LEVELS >= SOLARIZE_THRESHOLD, 255 - _LEVELS, _LEVELS).astype(np.uint8)

cv2.setNumThreads(0)  # run every OpenCV call on the calling thread (see the module docstring)


def adjust_brightness(x: np.ndarray, factor: float) -> np.ndarray:
    """``x * factor``, rounded and clipped. ``x``: ``[H, W, C]`` uint8."""
    return cv2.convertScaleAbs(x, alpha=factor)  # factor >= 0, so "Abs" never acts


def mean_luma(x: np.ndarray) -> float:
    """Mean of the luma image (luma is linear: the weighted channel means)."""
    means = cv2.mean(x)
    return sum(w * m for w, m in zip(GRAY_WEIGHTS, means))


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's mean luma: ``factor * x + (1 - factor) * mean``, rounded and clipped."""
    return cv2.addWeighted(x, factor, x, 0.0, (1.0 - factor) * mean_luma(x))


def to_grayscale(x: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` -> ``[H, W]`` luma, uint8."""
    return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the luma image: ``factor * x + (1 - factor) * gray``, rounded and clipped."""
    # the blend is linear in RGB: one 3x3 colour transform, with the unrounded luma as torchvision's float op
    return cv2.transform(x, _TO_GRAY_RGB + np.float32(factor) * _GRAY_TO_IDENTITY)


def adjust_hue(x: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the HSV hue by ``shift`` turns (``[-0.5, 0.5]``), value and saturation kept."""
    return shift_hue(x, shift)  # one compiled pass (pipeline.backends.hue_kernel)


def blur_radius(sigma: float, height: int, width: int) -> int:
    """Kernel radius ``ceil(3 sigma)``, at least 1, below the view size (reflection needs it)."""
    return max(1, min(math.ceil(3.0 * sigma), height - 1, width - 1))


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian of ``sigma`` with reflected borders. ``x``: ``[H, W]`` or ``[H, W, C]``."""
    k = 2 * blur_radius(sigma, x.shape[0], x.shape[1]) + 1
    taps = cv2.getGaussianKernel(k, sigma, cv2.CV_32F)  # normalised exp(-d^2 / 2 sigma^2), torchvision's kernel
    # sepFilter2D with float taps: ~2x faster than GaussianBlur's bit-exact fixed-point uint8 path
    return cv2.sepFilter2D(x, -1, taps, taps, borderType=cv2.BORDER_REFLECT_101)


def solarize(x: np.ndarray) -> np.ndarray:
    """Invert values at or above 128."""
    return cv2.LUT(x, _SOLARIZE_LUT)


_JITTER_OPS = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast, SATURATION: adjust_saturation, HUE: adjust_hue}


def apply_photometric(view: np.ndarray, p: PhotometricParams) -> np.ndarray:
    """Apply drawn parameters to one view.

    Args:
        view: ``[S, S, 3]`` uint8 RGB, C-contiguous.
        p: parameters from :func:`pipeline.photometric.draw_photometric`.

    Returns:
        ``[S, S, 3]`` uint8 (``view`` itself when ``p`` is the identity, else a new array).
    """
    if p.is_identity:
        return view
    x = view
    for op in p.jitter_order:
        factor = (p.brightness, p.contrast, p.saturation, p.hue)[op]
        if factor != (0.0 if op == HUE else 1.0):
            x = _JITTER_OPS[op](x, factor)
    if p.gray:
        x = to_grayscale(x)  # one channel from here on: blur and solarize cost a third
    if p.blur_sigma > 0:
        x = gaussian_blur(x, p.blur_sigma)
    if p.solarize:
        x = solarize(x)
    return cv2.cvtColor(x, cv2.COLOR_GRAY2RGB) if x.ndim == 2 else x
