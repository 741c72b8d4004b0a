"""Geometry must not follow the surrounding autocast: bf16 matmuls move cell centres by pixels."""

import random

import numpy as np
import torch

from pipeline.geometry import correspondence_mask, inverse_coordinate_map
from pipeline.views import named_recipe, sample_views


def _matrices(n: int) -> torch.Tensor:
    rng = random.Random(3)
    return torch.tensor(np.stack([sample_views(640, 480, named_recipe("clove"), rng).matrices for _ in range(n)])).float()


def test_mask_and_maps_identical_under_bf16_autocast():
    m = _matrices(16)
    ref = correspondence_mask(m[:, 0], m[:, 2], (7, 7), 32, (3, 3), 32, 0.7)
    ref_map = inverse_coordinate_map(m[:, 1], 7, 7, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = correspondence_mask(m[:, 0], m[:, 2], (7, 7), 32, (3, 3), 32, 0.7)
        got_map = inverse_coordinate_map(m[:, 1], 7, 7, 32)
    assert ref.any() and torch.equal(got, ref)
    assert got_map.dtype == torch.float32 and torch.equal(got_map, ref_map)


def test_bf16_matrices_give_float32_maps():
    m = _matrices(4)
    got = inverse_coordinate_map(m[:, 0].to(torch.bfloat16), 7, 7, 32)
    assert got.dtype == torch.float32
