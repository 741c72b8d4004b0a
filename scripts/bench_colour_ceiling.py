"""How close the cpu backend's recipe gets to decode-only with the cheapest colour ops we use.

Runs ``python -m pipeline.bench`` (every argument is passed on; add ``--decode-only`` for the ratio
measured side by side in one run) with the cpu backend's colour ops replaced, in its forked
workers, by DALI's: brightness and contrast as shipped, then saturation, hue and grayscale as ONE
3x3 colour matrix with the hue rotating the (I, Q) chroma of YIQ (``fn.color_twist``; the dali
backend's semantics, docs/extending.md). That folds three ops into one pass over the view. Blur
and solarize are unchanged.

Not a backend option: the cpu backend keeps torchvision's ops (the published recipe). This is a
measurement of what the ratio would be without them (docs/scale.md, "The CPU recipe")::

    .venv/bin/python scripts/bench_colour_ceiling.py --shards data/shards/bench --backend cpu \\
        --recipe clove --batch-size 64 --steps 20 --workers 2 --decode-only --no-normalize
"""

from __future__ import annotations

import math
import sys

import cv2
import numpy as np

from pipeline import bench
from pipeline.backends import cpu_backend, photometric_cpu
from pipeline.photometric import PhotometricParams

_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_TO_GRAY = np.tile(np.array(photometric_cpu.GRAY_WEIGHTS), (3, 1)).astype(np.float32)


def colour_twist_matrix(saturation: float, hue_turns: float) -> np.ndarray:
    """DALI's ``color_twist`` as a ``[3, 3]`` float32 RGB matrix: (I, Q) scaled by ``saturation``
    and rotated by ``hue_turns`` (a positive turn takes I towards -Q, as DALI does)."""
    a = 2.0 * math.pi * hue_turns
    c, s = saturation * math.cos(a), saturation * math.sin(a)
    chroma = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    return (_YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ).astype(np.float32)


def apply_dali_colour(view: np.ndarray, p: PhotometricParams) -> np.ndarray:
    """:func:`pipeline.backends.photometric_cpu.apply_photometric` with DALI's colour ops.

    ``view``: ``[S, S, 3]`` uint8 RGB; returns the same shape (``view`` itself for the identity).
    """
    if p.is_identity:
        return view
    x = view
    if p.brightness != 1.0:
        x = photometric_cpu.adjust_brightness(x, p.brightness)
    if p.contrast != 1.0:
        x = photometric_cpu.adjust_contrast(x, p.contrast)
    if p.gray:
        x = cv2.transform(x, _TO_GRAY)
    elif p.saturation != 1.0 or p.hue != 0.0:
        x = cv2.transform(x, colour_twist_matrix(p.saturation, p.hue))
    if p.blur_sigma > 0:
        x = photometric_cpu.gaussian_blur(x, p.blur_sigma)
    if p.solarize:
        x = photometric_cpu.solarize(x)
    return x


def main(argv: list[str] | None = None) -> int:
    """Patch the cpu backend (its workers fork from this process) and run the benchmark."""
    cpu_backend.apply_photometric = apply_dali_colour
    print("cpu backend colour ops: DALI's (one YIQ colour matrix), not torchvision's", flush=True)
    return bench.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
