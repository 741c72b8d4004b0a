"""pipeline.geometry against definitions written here (numpy float64, brute-force loops).

The reference for every check is the contract in docs/geometry.md: ``A_v`` maps original -> view, pixel
centres at ``j + 0.5``, the cells of a stride-``s`` map centred at ``((j + 0.5) s, (i + 0.5) s)``,
and M(a, b) = pairs of cells whose original-image centres are closer than
``T * max(diag_a, diag_b)`` with ``diag`` the cell diagonal measured in original pixels.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.geometry import correspondence_mask, hflip_matrix, inverse_coordinate_map, rot90_matrix, sampling_grid, view_to_view
from pipeline.views import named_recipe, sample_views


def _sampled(recipe, n_images: int, seed: int):
    """Views of ``n_images`` random image sizes: list of (width, height, ViewParams)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_images):
        w, h = rng.randint(120, 900), rng.randint(120, 900)
        out.append((w, h, sample_views(w, h, recipe, rng)))
    return out


def _to_original(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points ``[N, 2]`` of a view mapped to the original image with numpy's own inverse."""
    inv = np.linalg.inv(matrix)
    return points @ inv[:2, :2].T + inv[:2, 2]


def _centres(grid_h: int, grid_w: int, stride: float) -> np.ndarray:
    """Cell centres ``((j + 0.5) s, (i + 0.5) s)``, row-major, ``[h * w, 2]``."""
    jj, ii = np.meshgrid(np.arange(grid_w), np.arange(grid_h))
    return np.stack([(jj.ravel() + 0.5) * stride, (ii.ravel() + 0.5) * stride], axis=1)


@pytest.mark.parametrize("recipe", [named_recipe("clove"), named_recipe("gtsa")], ids=["clove", "gtsa"])
def test_correspondence_mask_equals_brute_force(recipe):
    threshold = 0.7
    sampled = _sampled(recipe, 6, seed=1)
    mats = torch.tensor(np.stack([p.matrices for _, _, p in sampled]))  # [B, V, 3, 3] float64
    pairs = [(0, 1), (1, 0), (0, 2), (1, 5)]
    for a, b in pairs:
        size_a, size_b = recipe.views[a].size, recipe.views[b].size
        stride_a, stride_b = 32, 32
        grid_a, grid_b = (size_a // stride_a,) * 2, (size_b // stride_b,) * 2
        mask = correspondence_mask(mats[:, a], mats[:, b], grid_a, stride_a, grid_b, stride_b, threshold)
        assert mask.shape == (len(sampled), grid_a[0] * grid_a[1], grid_b[0] * grid_b[1])
        for n, (_, _, p) in enumerate(sampled):
            ma, mb = p.matrices[a], p.matrices[b]
            # Cell diagonal in original pixels: the distance between the original-image images of
            # two opposite corners of one cell.
            diag_a = np.linalg.norm(np.diff(_to_original(ma, np.array([[0.0, 0.0], [stride_a, stride_a]])), axis=0))
            diag_b = np.linalg.norm(np.diff(_to_original(mb, np.array([[0.0, 0.0], [stride_b, stride_b]])), axis=0))
            radius = threshold * max(diag_a, diag_b)
            ca = _to_original(ma, _centres(*grid_a, stride_a))
            cb = _to_original(mb, _centres(*grid_b, stride_b))
            for i in range(len(ca)):
                for j in range(len(cb)):
                    d = math.dist(ca[i], cb[j])
                    if abs(d - radius) < 1e-6 * radius:
                        continue  # on the threshold itself: either answer is right
                    assert bool(mask[n, i, j]) == (d < radius), (a, b, n, i, j, d, radius)


def test_correspondence_mask_finds_matches():
    """Guard against a vacuous comparison: a view against itself matches every cell with itself
    and never with its diagonal neighbours (one full diagonal away > 0.7 diagonal)."""
    m = torch.tensor(sample_views(400, 300, named_recipe("clove"), random.Random(0)).matrices[:1])
    mask = correspondence_mask(m, m, (7, 7), 32, (7, 7), 32, 0.7)[0]
    assert mask.diagonal().all()
    assert torch.equal(mask, mask.T)

    def cell(i, j):
        return i * 7 + j

    assert not any(mask[cell(i, j), cell(i + 1, j + 1)] for i in range(6) for j in range(6))


@pytest.mark.parametrize("recipe", [named_recipe("clove"), named_recipe("gtsa")], ids=["clove", "gtsa"])
def test_cell_centres_lie_inside_their_crop(recipe):
    for _, _, p in _sampled(recipe, 8, seed=2):
        for v, spec in enumerate(recipe.views):
            for stride in (1, 16, spec.size // 3):
                grid = spec.size // stride
                mat = torch.tensor(p.matrices[v][None])
                pts = inverse_coordinate_map(mat, grid, grid, stride)[0].reshape(2, -1).T.numpy()
                np.testing.assert_allclose(pts, _to_original(p.matrices[v], _centres(grid, grid, stride)), atol=1e-9)
                x0, y0, w, h = p.windows[v]
                assert (pts[:, 0] > x0).all() and (pts[:, 0] < x0 + w).all()
                assert (pts[:, 1] > y0).all() and (pts[:, 1] < y0 + h).all()


def test_flip_twice_and_four_quarter_turns_are_identities():
    for width, height in [(224, 224), (96, 96), (200, 120)]:
        np.testing.assert_allclose(hflip_matrix(width) @ hflip_matrix(width), np.eye(3), atol=1e-12)
        np.testing.assert_allclose(rot90_matrix(4, width, height), np.eye(3), atol=1e-12)
        # one turn at a time, each on the image the previous turn produced
        m, w, h = np.eye(3), width, height
        for _ in range(4):
            m = rot90_matrix(1, w, h) @ m
            w, h = h, w
        np.testing.assert_allclose(m, np.eye(3), atol=1e-12)
        for k in range(4):
            np.testing.assert_allclose(rot90_matrix(k + 4, width, height), rot90_matrix(k, width, height), atol=1e-12)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_flip_and_rot90_matrices_follow_the_pixels(turns, flip):
    """Where torch.flip / torch.rot90 put a pixel is where the matrix sends its centre."""
    height, width = 5, 7
    index = torch.arange(height * width).reshape(height, width)  # pixel value = its own index
    img, m = index, np.eye(3)
    if flip:
        img, m = img.flip(-1), hflip_matrix(width) @ m
    img, m = torch.rot90(img, turns, dims=(-2, -1)), rot90_matrix(turns, width, height) @ m
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            src = int(img[i, j])
            x, y = src % width + 0.5, src // width + 0.5
            u, v, _ = m @ np.array([x, y, 1.0])
            assert (u, v) == pytest.approx((j + 0.5, i + 0.5))


def test_view_to_view_maps_compose():
    recipe = named_recipe("gtsa")
    sampled = _sampled(recipe, 5, seed=3)
    mats = torch.tensor(np.stack([p.matrices for _, _, p in sampled]))
    a, b, c = mats[:, 0], mats[:, 3], mats[:, 1]
    ab, bc, ac = view_to_view(a, b), view_to_view(b, c), view_to_view(a, c)
    torch.testing.assert_close(bc @ ab, ac, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(view_to_view(a, a), torch.eye(3, dtype=a.dtype).expand_as(a), rtol=0, atol=1e-9)
    # against the definition: a point of view a, to the original, then into view b
    pts = np.array([[0.5, 0.5], [100.0, 37.25], [223.5, 10.0]])
    for n, (_, _, p) in enumerate(sampled):
        orig = _to_original(p.matrices[0], pts)
        expected = orig @ p.matrices[3][:2, :2].T + p.matrices[3][:2, 2]
        got = pts @ ab[n, :2, :2].numpy().T + ab[n, :2, 2].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("map_stride", [1, 16])
def test_sampling_grid_reads_the_right_places(map_stride):
    """Sample a map of the src view whose values are its own view coordinates (cell centres) at
    dst cell centres: the values read back are the dst centres mapped into src by the definition."""
    recipe = named_recipe("gtsa")
    sampled = _sampled(recipe, 4, seed=4)
    mats = torch.tensor(np.stack([p.matrices for _, _, p in sampled]))
    src, dst = 0, 1  # two globals overlap by > 2% (GTSA rule)
    size = recipe.views[src].size
    cells = size // map_stride
    centre = (torch.arange(cells, dtype=torch.float64) + 0.5) * map_stride
    coord_map = torch.stack(torch.meshgrid(centre, centre, indexing="xy"))  # [2, cells, cells]: x, y
    coord_map = coord_map.unsqueeze(0).expand(len(sampled), -1, -1, -1)
    points = torch.tensor(_centres(14, 14, 16.0))  # dst cells of a stride-16 map
    grid = sampling_grid(mats[:, src], mats[:, dst], points, (size, size))
    read = F.grid_sample(coord_map, grid, mode="bilinear", align_corners=False)[..., 0]  # [B, 2, N]
    checked = 0
    for n, (_, _, p) in enumerate(sampled):
        expected = _to_original(p.matrices[dst], points.numpy())
        expected = expected @ p.matrices[src][:2, :2].T + p.matrices[src][:2, 2]
        # bilinear interpolation of a linear map is exact between the outermost cell centres
        inside = ((expected >= map_stride / 2) & (expected <= size - map_stride / 2)).all(axis=1)
        np.testing.assert_allclose(read[n].T.numpy()[inside], expected[inside], atol=1e-6)
        checked += int(inside.sum())
    assert checked > 50
