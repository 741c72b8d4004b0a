"""Augmentation as configuration: the recipes hold docs/methods.md's values, every ``data.augment`` key
reaches the views it names, and the overrides reach the pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.config import AugmentConfig, LoaderConfig
from pipeline.loader import build_loader
from pipeline.views import RECIPES, Photometric, ViewSpec, recipe_from_config
from tests.pipeline.helpers import small_jpegs, write_shards


def _views(recipe: str = "clove", num_local: int | None = 2, **augment) -> tuple[ViewSpec, ...]:
    cfg = LoaderConfig(recipe=recipe, global_size=64, local_size=32, num_local=num_local, augment=AugmentConfig(**augment))
    return recipe_from_config(cfg).views


def test_clove_and_gtsa_recipes_are_the_values_of_methods_md():
    # CLoVE: 2 x 224 (scale 0.2-1.0) and 6 x 96 (0.08-0.3), bicubic, flip p=0.5; jitter (0.4, 0.4, 0.2, 0.1)
    # p=0.8; grayscale p=0.2; blur sigma in [0.1, 2] with p = 1.0 / 0.1 / 0.5; solarize 0.2 on global 2 only
    clove = recipe_from_config(LoaderConfig(recipe="clove")).views
    assert [v.size for v in clove] == [224] * 2 + [96] * 6
    assert [v.scale for v in clove] == [(0.2, 1.0)] * 2 + [(0.08, 0.3)] * 6
    assert {(v.interpolation, v.flip_p, v.rotate, v.ratio) for v in clove} == {("bicubic", 0.5, False, (3 / 4, 4 / 3))}
    assert [(v.photometric.blur_p, v.photometric.solarize_p) for v in clove] == [(1.0, 0.0), (0.1, 0.2)] + [(0.5, 0.0)] * 6
    assert {(v.photometric.jitter, v.photometric.jitter_p, v.photometric.gray_p, v.photometric.blur_sigma) for v in clove} == {
        ((0.4, 0.4, 0.2, 0.1), 0.8, 0.2, (0.1, 2.0))
    }
    # GTSA: 2 x 224 (0.3-1.0) and 8 x 96 (0.1-0.3), bilinear, no flip, quarter turns; jitter
    # (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale 0.2, blur 0.2; overlap > 2 % / > 1 % of the image
    gtsa = recipe_from_config(LoaderConfig(recipe="gtsa"))
    assert [v.scale for v in gtsa.views] == [(0.3, 1.0)] * 2 + [(0.1, 0.3)] * 8
    assert {(v.interpolation, v.flip_p, v.rotate) for v in gtsa.views} == {("bilinear", 0.0, True)}
    assert {v.photometric for v in gtsa.views} == {Photometric((0.8, 0.8, 0.8, 0.2), 0.8, 0.2, 0.2, (0.1, 2.0), 0.0)}
    assert (gtsa.min_overlap_global, gtsa.min_overlap_local) == (0.02, 0.01)
    two = recipe_from_config(LoaderConfig(recipe="two-view")).views
    assert len(two) == 2 and {v.photometric for v in two} == {None}  # geometry only


# key, override, what view v (0: first global, 1: second global, 2: a local) then holds
PER_VIEW = {
    "flip_p": lambda v: v.flip_p,
    "jitter_p": lambda v: v.photometric.jitter_p,
    "gray_p": lambda v: v.photometric.gray_p,
    "blur_p": lambda v: v.photometric.blur_p,
    "solarize_p": lambda v: v.photometric.solarize_p,
}


@pytest.mark.parametrize("key", sorted(PER_VIEW))
@pytest.mark.parametrize("recipe", ["clove", "gtsa"])
def test_each_probability_is_one_value_or_one_per_view_kind(recipe, key):
    views = _views(recipe, **{key: (0.25, 0.5, 0.75)})
    assert [PER_VIEW[key](v) for v in views] == [0.25, 0.5, 0.75, 0.75]
    assert {PER_VIEW[key](v) for v in _views(recipe, **{key: 0.375})} == {0.375}


@pytest.mark.parametrize("recipe", ["clove", "gtsa", "two-view"])
def test_every_other_key_reaches_every_view(recipe):
    new = dict(
        global_scale=(0.5, 0.6),
        local_scale=(0.05, 0.07),
        ratio=(0.9, 1.1),
        interpolation="bilinear" if RECIPES[recipe].augment.interpolation == "bicubic" else "bicubic",
        rotate=not RECIPES[recipe].augment.rotate,
        jitter=(0.1, 0.2, 0.3, 0.4),
        blur_sigma=(0.5, 0.7),
        jitter_p=1.0,
    )
    missing = {f.name for f in dataclasses.fields(AugmentConfig)} - set(new) - set(PER_VIEW) - {"min_overlap"}
    assert not missing, f"untested data.augment keys: {missing}"
    views = _views(recipe, **new)
    for v in views:
        assert v.scale == (new["global_scale"] if v.is_global else new["local_scale"])
        assert (v.ratio, v.interpolation, v.rotate) == (new["ratio"], new["interpolation"], new["rotate"])
        assert (v.photometric.jitter, v.photometric.blur_sigma) == (new["jitter"], new["blur_sigma"])
    cfg = LoaderConfig(recipe=recipe, augment=AugmentConfig(min_overlap=(0.3, 0.2)))
    assert (recipe_from_config(cfg).min_overlap_global, recipe_from_config(cfg).min_overlap_local) == (0.3, 0.2)
    # unset keys keep the recipe's values; data.photometric=false still switches every op off
    assert _views(recipe) == _views(recipe, **{k: None for k in new})
    off = LoaderConfig(recipe=recipe, photometric=False, augment=AugmentConfig(gray_p=1.0))
    assert {v.photometric for v in recipe_from_config(off).views} == {None}


def test_overrides_reach_the_pixels(tmp_path, real_jpegs):
    """Full-image crops, always flipped, always grey: every matrix maps x=0 to the view's right edge,
    and every view of real colour photos has R = G = B (and does not without the override)."""
    photos = small_jpegs(real_jpegs, 8)
    write_shards(tmp_path, photos, n_shards=1)

    def batch(**augment):
        cfg = LoaderConfig(
            shards=str(tmp_path),
            recipe="clove",
            global_size=48,
            local_size=24,
            num_local=1,
            batch_size=8,
            num_workers=0,
            samples_per_epoch=8,
            normalize=False,
            augment=AugmentConfig(**augment),
        )
        return next(iter(build_loader(cfg)))

    full = dict(global_scale=(1.0, 1.0), local_scale=(1.0, 1.0), ratio=(0.01, 100.0), flip_p=1.0, gray_p=1.0)
    b = batch(**full)
    w = b.image_size[:, 0].double()
    sizes = torch.tensor([48, 48, 24], dtype=torch.float64)
    left = b.matrices.double() @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # x = 0 of the original
    right = b.matrices.double() @ torch.stack([w, torch.zeros_like(w), torch.ones_like(w)], 1)[:, None, :, None]
    assert torch.allclose(left[..., 0], sizes.expand(8, 3), atol=1e-3)  # flipped: the left edge lands on the right
    assert torch.allclose(right[..., 0, 0], torch.zeros(8, 3, dtype=torch.float64), atol=1e-3)
    for v in b.views:
        assert torch.equal(v[:, 0], v[:, 1]) and torch.equal(v[:, 1], v[:, 2])
    colour = batch(**{**full, "gray_p": 0.0, "jitter_p": 0.0})
    assert any(not torch.equal(v[:, 0], v[:, 1]) for v in colour.views)
    assert np.isfinite(colour.matrices.numpy()).all()
