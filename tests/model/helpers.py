"""Helpers shared by the model tests."""

from __future__ import annotations

import random

import numpy as np
import torch

from pipeline.batch import ViewBatch
from pipeline.views import Recipe, sample_views

# model.bench's cheapest timing, for tests that read what it prints: one timed step, no warm-up, one round
QUICK_BENCH = ("--steps", "1", "--warmup", "0", "--rounds", "1")


def make_batch(recipe: Recipe, b: int, seed: int = 0, size: tuple[int, int] = (160, 120)) -> ViewBatch:
    """Random images with real view geometry from the shared sampler."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    mats = np.stack([sample_views(*size, recipe, rng).matrices for _ in range(b)])
    views = [torch.randn(b, 3, s, s, generator=gen) for s in recipe.sizes]
    v = len(recipe.views)
    return ViewBatch(
        views, torch.tensor(mats, dtype=torch.float32), torch.tensor([size] * b), torch.zeros(b, v, dtype=torch.long)
    )


def perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics, so that a wrong mapping cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                if "running_var" in name:
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
