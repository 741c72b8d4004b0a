"""The compiled hue shift against torchvision's float ``adjust_hue`` (the definition we promise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from pipeline.backends.hue_kernel import shift_hue

# rounding only: the kernel rounds the same real number torchvision computes in float32
ROUNDING = 0.5 + 1e-3


def _torchvision(x: np.ndarray, shift: float) -> np.ndarray:
    """torchvision's float result in levels (unrounded), ``[..., 3]``."""
    f = torch.from_numpy(x.reshape(-1, 1, 3).astype(np.float32) / 255).permute(2, 0, 1)
    return (TF.adjust_hue(f, shift).permute(1, 2, 0).numpy() * 255).reshape(x.shape)


def _colour_cube(step: int) -> np.ndarray:
    """Every RGB triple on a grid of ``step`` levels (with 255): all hue sectors, greys, ties, as ``[N, 1, 3]``."""
    levels = np.unique(np.r_[np.arange(0, 256, step), 255]).astype(np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=-1)[:, None, :].copy()


@pytest.mark.parametrize("shift", [-0.5, -0.37, -0.1, -1 / 6, -0.02, 0.0, 1e-4, 0.05, 1 / 3, 0.1, 0.49, 0.5])
def test_every_colour_shifts_as_torchvision_to_rounding(shift):
    """The whole colour cube on a 15-level grid (5,832 colours: every sector, every tie between
    channels, the greys), across the hue circle in both directions, including exact sextants."""
    x = _colour_cube(15)
    out = shift_hue(x, shift)
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert np.abs(out.astype(np.float64) - _torchvision(x, shift)).max() <= ROUNDING


def test_random_colours_and_shifts_match_torchvision():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    for shift in rng.uniform(-0.5, 0.5, size=20):
        assert np.abs(shift_hue(x, shift).astype(np.float64) - _torchvision(x, shift)).max() <= ROUNDING, shift


def test_greys_and_value_and_chroma_are_kept():
    """A hue shift keeps max and min of every pixel: greys do not move, no pixel leaves its [min, max]."""
    grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)
    assert np.array_equal(shift_hue(grey, 0.3), grey)
    x = _colour_cube(17)
    out = shift_hue(x, 0.23).astype(np.int64)
    assert np.array_equal(out.max(-1), x.max(-1)) and np.array_equal(out.min(-1), x.min(-1))


def test_primaries_turn_by_a_third():
    """Red -> green -> blue -> red at a third of a turn (a hand-checked point of the definition)."""
    red, green, blue = ([255, 0, 0], [0, 255, 0], [0, 0, 255])
    x = np.array([[red, green, blue]], dtype=np.uint8)
    assert shift_hue(x, 1 / 3).tolist() == [[green, blue, red]]
    assert shift_hue(x, -1 / 3).tolist() == [[blue, red, green]]


def test_strided_input_and_bad_shift():
    x = _colour_cube(51).reshape(-1, 6, 3)[:, ::2]  # not contiguous
    assert np.array_equal(shift_hue(x, 0.1), shift_hue(np.ascontiguousarray(x), 0.1))
    with pytest.raises(ValueError, match="turns"):
        shift_hue(x, 0.7)
