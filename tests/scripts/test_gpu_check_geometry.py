"""The M timing of the GPU check times exactly what CLoVE computes (scripts/gpucheck/geometry_share.py)."""

import numpy as np
import pytest
import torch

from gpucheck.geometry_share import CLoVEGeometry, feature_grid, mean_matches
from model.backbones import build_backbone
from model.bench import synthetic_batch
from model.registry import METHODS


def slow_mask(a_s: np.ndarray, a_t: np.ndarray, grid_s: int, size_s: int, grid_t: int, size_t: int, t_pos: float):
    """M from docs/geometry.md: cell centres ((j+.5)s, (i+.5)s) pushed through A^-1, matched when closer than
    t_pos x the larger cell diagonal in original-image pixels."""

    def centres_and_diag(a, grid, size):
        stride = size / grid
        inv = np.linalg.inv(a.astype(np.float64))
        pts = []
        for i in range(grid):
            for j in range(grid):
                p = inv @ np.array([(j + 0.5) * stride, (i + 0.5) * stride, 1.0])
                pts.append(p[:2] / p[2])
        # the cell's two sides mapped to the original image (perpendicular for crops, flips, turns)
        side_x, side_y = inv[:2, :2] @ np.array([stride, 0.0]), inv[:2, :2] @ np.array([0.0, stride])
        diag = np.sqrt((side_x**2).sum() + (side_y**2).sum())
        return np.array(pts), diag

    ps, ds = centres_and_diag(a_s, grid_s, size_s)
    pt, dt = centres_and_diag(a_t, grid_t, size_t)
    dist = np.linalg.norm(ps[:, None, :] - pt[None, :, :], axis=-1)
    return dist < t_pos * max(ds, dt)


def test_feature_grid_is_the_resnet_c5_size():
    trunk = build_backbone("resnet18").eval()
    for size in (32, 64, 96, 100, 224):
        with torch.no_grad():
            out = trunk(torch.zeros(1, 3, size, size))
        assert out.shape[-1] == out.shape[-2] == feature_grid(size), size


def test_masks_follow_the_definition_pair_by_pair():
    g, loc, n_local, b = 96, 64, 2, 3
    batch = synthetic_batch(b, g, loc, n_local, "cpu")
    sizes = [g, g] + [loc] * n_local
    geo = CLoVEGeometry(sizes, 2, 0.7, torch.device("cpu"))
    masks = geo(batch.matrices)
    mats = batch.matrices.numpy()
    # rows are pair-major within each group of same-size student views, as CLoVE stacks them
    expected_pairs = {g: [(1, 0), (0, 1)], loc: [(2, 0), (3, 0), (2, 1), (3, 1)]}
    assert [m.shape[0] for m in masks] == [len(expected_pairs[g]) * b, len(expected_pairs[loc]) * b]
    for mask, size in zip(masks, (g, loc)):
        for r, (s, t) in enumerate(expected_pairs[size]):
            for i in range(b):
                want = slow_mask(mats[i, s], mats[i, t], feature_grid(size), size, feature_grid(g), g, 0.7)
                assert np.array_equal(mask[r * b + i].numpy(), want), (s, t, i)
    assert sum(int(m.sum()) for m in masks) > 0  # the recipe's crops overlap somewhere


def test_mean_matches_equal_what_clove_reports():
    batch = synthetic_batch(2, 64, 32, 2, "cpu")
    torch.manual_seed(0)
    model = METHODS["clove"]({"backbone": "resnet18", "proj_hidden": 32, "proj_dim": 16, "heads": 2}).train()
    with torch.no_grad():
        reported = model(batch)["matches"].item()
    geo = CLoVEGeometry([64, 64, 32, 32], 2, model.t_pos, torch.device("cpu"))
    assert reported > 0  # else the comparison says little
    assert mean_matches(geo(batch.matrices)) == pytest.approx(reported, rel=1e-6)
