"""The evaluation maths against slow versions written here from the definitions."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.eval_correspondence import apply_homography, make_pairs, match_counts, random_homography, warp_image
from train.eval_knn import knn_predict
from train.eval_segmentation import LinearProbe, mean_iou, pixel_training_set, sample_at_pixels

# --------------------------------------------------------------------------------------------
# mIoU
# --------------------------------------------------------------------------------------------


def _slow_miou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore=None) -> float:
    ious = []
    keep = np.ones_like(target, bool) if ignore is None else target != ignore
    for c in range(num_classes):
        p, t = (pred == c) & keep, (target == c) & keep
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious))


def test_miou_of_a_perfect_predictor_is_one():
    target = torch.randint(0, 5, (3, 20, 30), generator=torch.Generator().manual_seed(0))
    assert mean_iou(target.clone(), target, 7) == 1.0


def test_miou_of_a_constant_predictor_is_what_the_definition_gives():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (2, 16, 16), generator=gen)
    target[0, :8] = 0  # class 0 most frequent
    n = target.numel()
    for c in (0, 2, 5):  # a present class, another, and one absent from the target
        pred = torch.full_like(target, c)
        # By hand: IoU_c = |target == c| / N; every other class present in the target has IoU 0;
        # the mean runs over the classes present in the target plus c.
        present = set(target.unique().tolist()) | {c}
        expected = float((target == c).sum()) / n / len(present)
        assert mean_iou(pred, target, 6) == pytest.approx(expected, abs=1e-12)


def test_miou_matches_the_definition_with_ignored_pixels():
    gen = torch.Generator().manual_seed(2)
    pred = torch.randint(0, 6, (4, 12, 9), generator=gen)
    target = torch.randint(0, 6, (4, 12, 9), generator=gen)
    target[target == 5] = 255
    got = mean_iou(pred, target, 6, ignore_index=255)
    assert got == pytest.approx(_slow_miou(pred.numpy(), target.numpy(), 6, 255), abs=1e-12)


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
    """The docstring's rule, cell by cell."""
    c, ha, wa = fa.shape
    correct = valid = 0
    for i in range(ha):
        for j in range(wa):
            p = h @ np.array([(j + 0.5) * stride, (i + 0.5) * stride, 1.0])
            tx, ty = p[0] / p[2], p[1] / p[2]
            if not (0 <= tx < size and 0 <= ty < size):
                continue
            valid += 1
            q = fa[:, i, j] / np.linalg.norm(fa[:, i, j])
            best, best_sim = None, -np.inf
            for y in range(fb.shape[1]):
                for x in range(fb.shape[2]):
                    sim = q @ fb[:, y, x] / np.linalg.norm(fb[:, y, x])
                    if sim > best_sim:
                        best, best_sim = (x, y), sim
            px, py = (best[0] + 0.5) * stride, (best[1] + 0.5) * stride
            correct += math.hypot(px - tx, py - ty) <= stride
    return correct, valid


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


def test_match_counts_equal_the_slow_rule_under_a_homography():
    gen = torch.Generator().manual_seed(8)
    fa = torch.randn(6, 6, 6, generator=gen)
    fb = fa + 0.8 * torch.randn(6, 6, 6, generator=gen)
    h = random_homography(random.Random(1), 96)
    assert match_counts(fa, fb, h, 16, (96, 96)) == _slow_counts(fa.numpy(), fb.numpy(), h, 16, 96)


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
    a1, b1, h1 = make_pairs(photos, 64, 1, seed=3)
    a2, b2, h2 = make_pairs(photos, 64, 1, seed=3)
    _, b3, h3 = make_pairs(photos, 64, 1, seed=4)
    assert a1.shape == (2, 3, 64, 64) and a1.dtype == torch.uint8
    assert torch.equal(b1, b2) and torch.equal(h1, h2)
    assert not torch.equal(h1, h3) and not torch.equal(b1, b3)
