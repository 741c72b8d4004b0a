"""The rotation probe behind the GTSA finding: readouts, turns and the linear probe, checked on
features whose answer is known."""

from __future__ import annotations

import torch

from evaluation.rotation import probe_accuracy, readouts, turned_features


class IdentityMaps:
    """A 'backbone' whose one feature map is the normalised image itself (stride 1)."""

    strides = {"pixels": 1}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixels": x}


def test_readouts_are_the_map_mean_and_its_quadrant_means():
    maps = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    r = readouts(maps)
    torch.testing.assert_close(r["mean"], maps.mean(dim=(2, 3)))
    assert r["quadrants"].shape == (2, 12)
    torch.testing.assert_close(r["quadrants"][:, 3:6], maps[..., :2, 3:].mean(dim=(2, 3)))  # top right, second


def test_a_layout_cue_is_read_by_the_quadrants_and_not_by_the_mean():
    """Images bright in their top-left corner only: a quarter turn moves the corner, so the quadrant
    means name the turn exactly, while the mean of a turned map is the mean of the map."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 40, (48, 3, 16, 16), generator=gen, dtype=torch.uint8)
    images[..., :6, :6] = 250
    (x, y) = turned_features(IdentityMaps(), images[:32], size=16)
    (xt, yt) = turned_features(IdentityMaps(), images[32:], size=16)
    assert y.tolist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]  # image-major, every turn of each image
    torch.testing.assert_close(x["mean"][0::4], x["mean"][1::4])  # turning does not change the mean
    assert probe_accuracy(x["quadrants"], y, xt["quadrants"], yt) == 1.0
    assert probe_accuracy(x["mean"], y, xt["mean"], yt) <= 0.4  # chance, 0.25, up to noise


def test_the_probe_is_at_chance_on_labels_that_carry_nothing():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(800, 8, generator=gen), torch.randint(0, 4, (800,), generator=gen)
    assert 0.15 <= probe_accuracy(x[:400], y[:400], x[400:], y[400:]) <= 0.35
