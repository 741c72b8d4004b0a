"""The evaluation maths against slow versions written here from the definitions."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.correspondence import apply_homography, make_pairs, match_stats, random_homography, warp_image
from evaluation.knn import knn_predict, majority_correct
from evaluation.segmentation import (
    LinearProbe,
    boundary_f,
    boundary_stats,
    foreground_iou,
    foreground_stats,
    pixel_training_set,
    sample_at_pixels,
    train_linear_probe,
)

# --------------------------------------------------------------------------------------------
# linear probe on upsampled features
# --------------------------------------------------------------------------------------------


def test_pixel_sampling_reads_the_bilinearly_upsampled_map():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 5, 4, 6, generator=gen)
    up = F.interpolate(feats, size=(32, 48), mode="bilinear", align_corners=False)
    ys = torch.randint(0, 32, (2, 50), generator=gen)
    xs = torch.randint(0, 48, (2, 50), generator=gen)
    got = sample_at_pixels(feats, (32, 48), ys, xs)
    for n in range(2):
        torch.testing.assert_close(got[n], up[n][:, ys[n], xs[n]].T, atol=1e-5, rtol=1e-5)
    masks = torch.randint(0, 3, (2, 32, 48), generator=gen)
    x, y = pixel_training_set(feats, masks, 40, seed=0)
    assert x.shape == (80, 5) and y.shape == (80,)


def test_probe_on_the_grid_equals_probe_on_upsampled_features():
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 6, 5, 5, generator=gen)
    probe = LinearProbe(
        torch.randn(4, 6, generator=gen),
        torch.randn(4, generator=gen),
        torch.randn(6, generator=gen),
        torch.rand(6, generator=gen) + 0.5,
    )
    up = F.interpolate(feats, size=(40, 40), mode="bilinear", align_corners=False)
    slow = torch.einsum("nchw,kc->nkhw", (up - probe.mean[:, None, None]) / probe.std[:, None, None], probe.weight)
    slow = (slow + probe.bias[:, None, None]).argmax(1)
    assert (probe.predict(feats, (40, 40)) == slow).float().mean() > 0.999  # float ties only


# --------------------------------------------------------------------------------------------
# kNN
# --------------------------------------------------------------------------------------------


def test_knn_matches_a_slow_vote():
    rng = np.random.default_rng(5)
    memory, labels = rng.normal(size=(40, 8)), rng.integers(0, 4, 40)
    queries = rng.normal(size=(15, 8))
    got = knn_predict(torch.tensor(memory), torch.tensor(labels), torch.tensor(queries), 4, k=7, temperature=0.1)
    for q, pred in zip(queries, got.tolist()):
        sims = memory @ q / (np.linalg.norm(memory, axis=1) * np.linalg.norm(q))
        votes = np.zeros(4)
        for i in np.argsort(-sims)[:7]:
            votes[labels[i]] += math.exp(sims[i] / 0.1)
        assert pred == int(np.argmax(votes))


# --------------------------------------------------------------------------------------------
# correspondence
# --------------------------------------------------------------------------------------------


def _slow_counts(fa: np.ndarray, fb: np.ndarray, h: np.ndarray, stride: float, size: int) -> tuple[int, int]:
    """The docstring's rule, cell by cell: (correct, valid)."""
    return _slow_stats(fa, fb, h, stride, size)[:2]


def _slow_stats(fa: np.ndarray, fb: np.ndarray, h: np.ndarray, stride: float, size: int) -> tuple[float, ...]:
    """(correct, valid, no movement, chance) by the docstring's rules, cell by cell."""
    c, ha, wa = fa.shape
    correct = valid = no_movement = chance = 0
    for i in range(ha):
        for j in range(wa):
            p = h @ np.array([(j + 0.5) * stride, (i + 0.5) * stride, 1.0])
            tx, ty = p[0] / p[2], p[1] / p[2]
            if not (0 <= tx < size and 0 <= ty < size):
                continue
            valid += 1
            no_movement += math.hypot((j + 0.5) * stride - tx, (i + 0.5) * stride - ty) <= stride
            near = [
                math.hypot((x + 0.5) * stride - tx, (y + 0.5) * stride - ty) <= stride
                for y in range(fb.shape[1])
                for x in range(fb.shape[2])
            ]
            chance += sum(near) / len(near)
            q = fa[:, i, j] / np.linalg.norm(fa[:, i, j])
            best, best_sim = None, -np.inf
            for y in range(fb.shape[1]):
                for x in range(fb.shape[2]):
                    sim = q @ fb[:, y, x] / np.linalg.norm(fb[:, y, x])
                    if sim > best_sim:
                        best, best_sim = (x, y), sim
            px, py = (best[0] + 0.5) * stride, (best[1] + 0.5) * stride
            correct += math.hypot(px - tx, py - ty) <= stride
    return correct, valid, no_movement, chance


def match_counts(fa, fb, h, stride, size) -> tuple[int, int]:
    stats = match_stats(fa, fb, h, stride, size)
    return int(stats[0]), int(stats[1])


def test_identical_features_under_the_identity_are_all_correct():
    fa = torch.randn(16, 7, 7, generator=torch.Generator().manual_seed(6))
    assert match_counts(fa, fa.clone(), np.eye(3), 32, (224, 224)) == (49, 49)


@pytest.mark.parametrize("shift_cells", [0.5, 1.0, 1.5, 3.0])
def test_identical_features_under_a_known_shift(shift_cells):
    # B's features equal A's, but the true map moves every point right by shift_cells cells: the
    # nearest neighbour is the same cell, off by the shift, so it is correct iff shift <= 1 cell,
    # and only cells whose shifted centre stays inside B count.
    stride, n = 16, 8
    fa = torch.randn(12, n, n, generator=torch.Generator().manual_seed(7))
    h = np.array([[1, 0, shift_cells * stride], [0, 1, 0], [0, 0, 1.0]])
    correct, valid = match_counts(fa, fa.clone(), h, stride, (n * stride, n * stride))
    columns_inside = sum((j + 0.5 + shift_cells) < n for j in range(n))
    assert valid == columns_inside * n
    assert correct == (valid if shift_cells <= 1 else 0)
    assert (correct, valid) == _slow_counts(fa.numpy(), fa.numpy(), h, stride, n * stride)


def test_match_stats_equal_the_slow_rules_under_a_homography():
    gen = torch.Generator().manual_seed(8)
    for seed in range(3):
        fa = torch.randn(6, 6, 6, generator=gen)
        fb = fa + 0.8 * torch.randn(6, 6, 6, generator=gen)
        h = random_homography(random.Random(seed), 96)
        got = match_stats(fa, fb, h, 16, (96, 96)).tolist()
        assert got == pytest.approx(_slow_stats(fa.numpy(), fb.numpy(), h, 16, 96), abs=1e-9)


def test_the_default_warps_leave_no_movement_near_chance_at_every_grid():
    # geometry only: the share of valid cells whose true match lies within one cell of where they
    # were, over the default warps, for the default 12 x 12 grid (at any stride: warps are relative)
    for stride in (8, 16, 32):
        size, moved = 12 * stride, torch.zeros(4, dtype=torch.float64)
        for k in range(200):
            h = random_homography(random.Random(f"0-{k}-0"), size)
            feats = torch.randn(4, 12, 12)
            moved += match_stats(feats, feats, h, stride, (size, size))
        no_movement, chance = float(moved[2] / moved[1]), float(moved[3] / moved[1])
        assert no_movement <= 0.05 and chance <= 0.05
        assert float(moved[1]) / 200 > 60  # enough valid cells per pair


def test_warp_moves_pixels_where_the_homography_says():
    # Coordinate-encoded image: every pixel holds its own centre (x, y); bilinear warping of a
    # linear function is exact, so B at q must hold H^-1 q wherever q's source is well inside A.
    size = 64
    ys, xs = np.mgrid[:size, :size].astype(np.float32) + 0.5
    coords = np.stack([xs, ys, np.zeros_like(xs)], axis=2)
    for seed in range(5):
        h = random_homography(random.Random(seed), size)
        warped = warp_image(coords, h)
        centres = torch.tensor(np.stack([xs.ravel(), ys.ravel()], 1))
        source = apply_homography(np.linalg.inv(h), centres).numpy().reshape(size, size, 2)
        inside = ((source > 1) & (source < size - 1)).all(axis=2)
        assert inside.mean() > 0.4
        np.testing.assert_allclose(warped[..., :2][inside], source[inside], atol=0.02)


def test_pairs_are_seeded(real_jpegs):
    photos = sorted(real_jpegs, key=lambda p: p.stat().st_size)[:2]
    a1, b1, h1, photo = make_pairs(photos, 64, 2, seed=3)
    a2, b2, h2, _ = make_pairs(photos, 64, 2, seed=3)
    _, b3, h3, _ = make_pairs(photos, 64, 2, seed=4)
    assert a1.shape == (4, 3, 64, 64) and a1.dtype == torch.uint8 and photo.tolist() == [0, 0, 1, 1]
    _, _, h4, _ = make_pairs(photos, 128, 2, seed=3)  # the same warps at another size
    scale = np.diag([2.0, 2.0, 1.0])
    for small, large in zip(h1, h4):
        np.testing.assert_allclose(scale @ small.numpy() @ np.linalg.inv(scale), large.numpy(), atol=1e-9)
    assert torch.equal(b1, b2) and torch.equal(h1, h2)
    assert not torch.equal(h1, h3) and not torch.equal(b1, b3)


# --------------------------------------------------------------------------------------------
# object probe: foreground IoU, boundary F, class balance
# --------------------------------------------------------------------------------------------


def _slow_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour inside the image that is not in the mask."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if mask[y, x]:
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and not mask[yy, xx]:
                        out[y, x] = True
    return out


def _near(b: np.ndarray, other: np.ndarray, tol: int) -> np.ndarray:
    ys, xs = np.nonzero(other)
    out = np.zeros_like(b)
    for y, x in zip(*np.nonzero(b)):
        out[y, x] = bool(len(ys)) and (np.maximum(abs(ys - y), abs(xs - x)) <= tol).any()
    return out


def test_foreground_and_boundary_stats_equal_their_definitions():
    gen = torch.Generator().manual_seed(9)
    target = torch.zeros(3, 20, 24, dtype=torch.bool)
    target[0, 3:12, 4:15] = True
    target[1, 10:20, 0:9] = True  # touches the image border: that edge is no boundary
    pred = torch.rand(3, 20, 24, generator=gen) > 0.7
    pred[0, 4:12, 5:16] = True
    got_fg, got_b = foreground_stats(pred, target), boundary_stats(pred, target, tolerance=2)
    for n in range(3):
        p, t = pred[n].numpy(), target[n].numpy()
        assert got_fg[n].tolist() == [(p & t).sum(), (p & ~t).sum(), (~p & t).sum()]
        bp, bt = _slow_boundary(p), _slow_boundary(t)
        assert got_b[n].tolist() == [_near(bp, bt, 2).sum(), bp.sum(), _near(bt, bp, 2).sum(), bt.sum()]
    assert float(foreground_iou(foreground_stats(target, target).sum(0))) == 1.0
    assert float(boundary_f(boundary_stats(target, target).sum(0))) == 1.0
    assert float(boundary_f(boundary_stats(torch.zeros_like(target), target).sum(0))) == 0.0


def test_the_class_balanced_probe_is_not_carried_by_the_majority():
    # 95 % background with features that barely tell: an unweighted probe calls everything
    # background; the balanced loss weighs the classes equally and finds the objects.
    gen = torch.Generator().manual_seed(10)
    y = (torch.rand(4000, generator=gen) < 0.05).long()
    x = torch.randn(4000, 4, generator=gen) + 0.8 * y[:, None]

    def recall(probe):
        pred = ((x - probe.mean) / probe.std @ probe.weight.T + probe.bias).argmax(1)
        return float((pred[y == 1] == 1).double().mean())

    assert recall(train_linear_probe(x, y, 2, epochs=50, balanced=False)) < 0.1
    assert recall(train_linear_probe(x, y, 2, epochs=50, balanced=True)) > 0.7


def test_majority_guess_answers_the_commonest_memory_label():
    memory = torch.tensor([3, 1, 3, 2, 1, 3])
    queries = torch.tensor([3, 1, 2, 3])
    assert majority_correct(memory, queries).tolist() == [True, False, False, True]
