"""GTSA's objective against slow versions written here from the definitions (docs/methods.md, "GTSA").

The aligned targets are recomputed the way the reference does it, with no help from
``pipeline.geometry``'s derived functions: RoIAlign of each map over the shared crop region (boxes
from the crop windows by plain arithmetic), then a quarter turn of the pooled teacher map by the
rotation difference.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

from model.gtsa_loss import aligned_loss, aligned_samples, nearest_matches, patch_correspondence_loss, pc_keep, rotation_loss
from pipeline.geometry import crop_resize_matrix, rot90_matrix


def _matrix(window: tuple[float, float, float, float], size: int, turns: int) -> np.ndarray:
    """Crop ``window`` (x0, y0, w, h) resized to ``size x size``, then ``turns`` quarter turns."""
    return rot90_matrix(turns, size, size) @ crop_resize_matrix(*window, size, size)


def _roi_target(fmap: torch.Tensor, window, region, size: int, turns: int, cells: int) -> torch.Tensor:
    """Reference pooling of one view's map ``[C, h, w]`` (of the rotated view) over ``region``
    (original-image x0, y0, x1, y1): undo the view's quarter turns on the map, RoIAlign over the
    region's box in the unrotated view, and return the pooled ``[C, cells, cells]`` map in the
    unrotated (original) orientation."""
    x0, y0, w, h = window
    upright = torch.rot90(fmap, -turns, dims=(-2, -1))
    stride = size / upright.shape[-1]
    box = [(region[0] - x0) * size / w, (region[1] - y0) * size / h, (region[2] - x0) * size / w, (region[3] - y0) * size / h]
    boxes = torch.tensor([[0.0, *box]], dtype=torch.float32)
    return roi_align(upright[None].float(), boxes, cells, spatial_scale=1.0 / stride, sampling_ratio=1, aligned=True)[0]


def test_aligned_targets_equal_roi_align_and_rot90_for_every_pair_of_quarter_turns():
    rng = np.random.default_rng(0)
    cells, channels = 5, 6
    t_size, s_size, t_cells, s_cells = 64, 32, 8, 4  # stride 8 in both views
    rows = list(itertools.product(range(4), range(4)))  # (teacher turns, student turns)
    t_maps, s_maps, mt, ms, expected_s, expected_t = [], [], [], [], [], []
    for turns_t, turns_s in rows:
        # non-square windows (the resize is anisotropic) that overlap partly
        t_win = (rng.uniform(0, 80), rng.uniform(0, 60), rng.uniform(200, 300), rng.uniform(150, 220))
        s_win = (t_win[0] + rng.uniform(40, 150), t_win[1] + rng.uniform(30, 120), rng.uniform(90, 200), rng.uniform(70, 160))
        region = (
            max(t_win[0], s_win[0]),
            max(t_win[1], s_win[1]),
            min(t_win[0] + t_win[2], s_win[0] + s_win[2]),
            min(t_win[1] + t_win[3], s_win[1] + s_win[3]),
        )
        assert region[2] > region[0] and region[3] > region[1]
        t_map = torch.randn(channels, t_cells, t_cells)
        s_map = torch.randn(channels, s_cells, s_cells)
        # the teacher's pooled map in its own frame, then turned by the rotation difference
        pooled_t = torch.rot90(_roi_target(t_map, t_win, region, t_size, turns_t, cells), turns_t, dims=(-2, -1))
        expected_t.append(torch.rot90(pooled_t, turns_s - turns_t, dims=(-2, -1)))
        expected_s.append(torch.rot90(_roi_target(s_map, s_win, region, s_size, turns_s, cells), turns_s, dims=(-2, -1)))
        t_maps.append(t_map), s_maps.append(s_map)
        mt.append(_matrix(t_win, t_size, turns_t)), ms.append(_matrix(s_win, s_size, turns_s))

    def f32(a):
        return torch.tensor(np.stack(a), dtype=torch.float32)

    s, t, valid = aligned_samples(
        torch.stack(s_maps), torch.stack(t_maps), f32(ms), f32(mt), (s_size, s_size), (t_size, t_size), cells
    )
    assert valid.all()
    assert s.shape == t.shape == (len(rows), channels, cells, cells)
    # float32 matrices: sample positions agree to ~1e-4 cells, values to that times the map's slope
    torch.testing.assert_close(s, torch.stack(expected_s), atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(t, torch.stack(expected_t), atol=2e-4, rtol=1e-4)
    # and the loss is the negative cosine over channels, averaged over cells
    slow = torch.stack([-F.cosine_similarity(a, b, dim=0).mean() for a, b in zip(expected_s, expected_t)])
    torch.testing.assert_close(aligned_loss(s, t), slow, atol=1e-4, rtol=1e-4)


def test_views_that_do_not_overlap_are_flagged_invalid():
    mt = torch.tensor(_matrix((0, 0, 100, 100), 64, 1), dtype=torch.float32)[None]
    ms = torch.tensor(_matrix((200, 200, 50, 50), 32, 2), dtype=torch.float32)[None]
    _, _, valid = aligned_samples(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 8, 8), ms, mt, (32, 32), (64, 64), 4)
    assert not valid.any()


def _slow_direction(q: torch.Tensor, c: torch.Tensor, keep: int) -> tuple[float, set[tuple[int, int]]]:
    """From the definition: every query's nearest candidate by cosine, the ``keep`` most similar
    of those pairs, their mean negative cosine."""
    matches = []
    for i in range(q.shape[0]):
        cos = [F.cosine_similarity(q[i], c[j], dim=0).item() for j in range(c.shape[0])]
        j = int(np.argmax(cos))
        matches.append((cos[j], i, j))
    kept = sorted(matches, reverse=True)[:keep]
    return -float(np.mean([m[0] for m in kept])), {(m[1], m[2]) for m in kept}


@pytest.mark.parametrize("n_student,n_teacher", [(16, 36), (4, 36), (36, 36)])
def test_patch_correspondence_keeps_k_matches_and_equals_the_definition(n_student, n_teacher):
    torch.manual_seed(n_student)
    rows, dim = 3, 8
    z, k = torch.randn(rows, n_student, dim), torch.randn(rows, n_teacher, dim)
    keep = pc_keep(n_student, 0.5)
    assert keep == n_student // 2
    loss = patch_correspondence_loss(z, k, keep)
    qi, ci, cos = nearest_matches(z, k, keep)
    assert qi.shape == ci.shape == cos.shape == (rows, keep)
    for r in range(rows):
        assert len(set(qi[r].tolist())) == keep  # exactly K distinct student tokens kept
        l1, kept1 = _slow_direction(z[r], k[r], keep)
        l2, _ = _slow_direction(k[r], z[r], keep)
        assert {(int(a), int(b)) for a, b in zip(qi[r], ci[r])} == kept1
        assert loss[r].item() == pytest.approx(0.5 * (l1 + l2), abs=1e-5)
    # the paper's counts: 98 of a 14x14 student map, 18 of a 6x6 one
    assert (pc_keep(196, 0.5), pc_keep(36, 0.5)) == (98, 18)


def test_patch_correspondence_is_differentiable_in_the_student():
    z = torch.randn(2, 9, 4, requires_grad=True)
    patch_correspondence_loss(z, torch.randn(2, 16, 4), 4).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_rotation_loss_is_cross_entropy_against_quarter_turns():
    logits = torch.randn(12, 4)
    turns = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, -1, 0, 1, 2])  # taken mod 4
    ce, acc = rotation_loss(logits, turns)
    slow = np.mean([-torch.log_softmax(logits[i], 0)[int(turns[i]) % 4].item() for i in range(12)])
    assert ce.item() == pytest.approx(slow, abs=1e-5)
    assert acc.item() == pytest.approx(np.mean([int(logits[i].argmax()) == int(turns[i]) % 4 for i in range(12)]))
