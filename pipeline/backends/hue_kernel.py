"""torchvision's hue shift of uint8 RGB pixels as one compiled pass (numba), with no division.

torchvision's ``adjust_hue`` goes RGB -> HSV, adds the shift to H, and goes back. A hue shift
keeps V = max(r, g, b) and the chroma C = max - min, so the round trip reduces to a walk along the
colour hexagon measured in units of C, which needs no division by C or by V:

* the pixel's position on the hexagon, ``P = 6 H C`` in ``[0, 6C)``: ``g - b`` when r is the
  maximum, ``2C + b - r`` when g is, ``4C + r - g`` when b is (torchvision breaks ties in that
  order);
* the shifted position ``P' = P + 6 shift C``, wrapped into ``[0, 6C)``;
* each channel from torchvision's ``hsv2rgb``, rewritten in units of C: ``max - clip(min(K, 4C -
  K), 0, C)`` with ``K = (n C + P') mod 6C`` and ``n`` = 5, 3, 1 for r, g, b.

It is the same function of the pixel as torchvision's float op (the tests compare the two on every
hue sector, grey pixels and the whole circle of shifts, to rounding), and LLVM vectorises the loop
(AVX2 here): 55 us per 224 px view against 138 us for OpenCV's float HSV round trip on one core of
the development machine (``python -m pipeline.bench_photometric cpu``).

numba compiles the kernel on a process's first call (about half a second here). The cpu backend
compiles it in the main process before its DataLoader workers start (:func:`compile_kernel`), so
forked workers inherit the machine code; workers started by ``spawn`` compile it once each. There
is no on-disk cache (numba's ``cache=True``): its files are not safe for many processes writing
them at once on a shared filesystem, which is how multi-node jobs see an installed package.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# no NaN or infinity can occur (uint8 inputs): lets min/max and the selects vectorise; no reassociation
_FASTMATH = {"nnan", "ninf", "nsz"}


@njit(fastmath=_FASTMATH, nogil=True, inline="always")
def _channel(pos: float, chroma: float, turn: float, value: float, n: float) -> float:
    """One output channel from the shifted hexagon position (torchvision's hsv2rgb in units of C)."""
    k = pos + n * chroma
    k = k - turn if k >= turn else k
    t = min(k, min(np.float32(4.0) * chroma - k, chroma))
    return value - max(t, np.float32(0.0))


@njit(fastmath=_FASTMATH, nogil=True)
def _shift_hue(src: np.ndarray, dst: np.ndarray, shift: float) -> None:
    """``src``, ``dst``: flat interleaved RGB uint8 ``[3 N]``; ``shift`` in turns."""
    sextants = np.float32(6.0 * shift)
    half = np.float32(0.5)
    for i in range(src.shape[0] // 3):
        r = np.float32(src[3 * i])
        g = np.float32(src[3 * i + 1])
        b = np.float32(src[3 * i + 2])
        value = max(r, max(g, b))
        chroma = value - min(r, min(g, b))
        turn = np.float32(6.0) * chroma
        if r == value:
            pos = g - b
        elif g == value:
            pos = np.float32(2.0) * chroma + b - r
        else:
            pos = np.float32(4.0) * chroma + r - g
        pos = pos + sextants * chroma  # within (-1, 2) turns: one wrap each way suffices
        pos = pos + turn if pos < 0 else pos
        pos = pos - turn if pos >= turn else pos
        # outputs lie in [min, max] of the pixel: rounding, never clipping
        dst[3 * i] = np.uint8(_channel(pos, chroma, turn, value, np.float32(5.0)) + half)
        dst[3 * i + 1] = np.uint8(_channel(pos, chroma, turn, value, np.float32(3.0)) + half)
        dst[3 * i + 2] = np.uint8(_channel(pos, chroma, turn, value, np.float32(1.0)) + half)


def shift_hue(x: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the HSV hue of ``x`` by ``shift`` turns (``[-0.5, 0.5]``), value and saturation kept.

    Args:
        x: ``[H, W, 3]`` uint8 RGB, C-contiguous.
        shift: hue shift in turns, as torchvision's ``adjust_hue``.

    Returns:
        ``[H, W, 3]`` uint8, a new array: torchvision's float result, rounded.
    """
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"hue shift must be in [-0.5, 0.5] turns, got {shift}")
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _shift_hue(x.reshape(-1), out.reshape(-1), float(shift))  # one compiled signature: float64 shift
    return out


def compile_kernel() -> None:
    """Compile the kernel in this process now (about half a second), so that processes forked
    from it (DataLoader workers) inherit the machine code instead of each compiling it."""
    shift_hue(np.zeros((1, 1, 3), np.uint8), 0.0)
