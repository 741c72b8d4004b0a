"""The CLoVE module: shapes, pairing and M against a reference from the definition, gradients,
EMA-only teacher, and a few optimizer steps on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.clove_loss import clove_pair_loss
from model.registry import METHODS
from pipeline.views import Recipe, ViewSpec, named_recipe
from tests.model.helpers import make_batch

SMALL = {"backbone": "resnet18", "proj_hidden": 32, "proj_dim": 16, "heads": 2}


def build(seed: int = 0, **over):
    torch.manual_seed(seed)
    return METHODS["clove"]({**SMALL, **over})


def reference_mask(a_s: np.ndarray, a_t: np.ndarray, grid_s, stride_s, grid_t, stride_t, t_pos) -> np.ndarray:
    """M from the definition: cell centres mapped to the original image, threshold on the larger
    cell diagonal measured as the original-image distance between a cell's opposite corners."""

    def centres_and_diag(a, grid, stride):
        inv = np.linalg.inv(a)
        pts = [((j + 0.5) * stride, (i + 0.5) * stride) for i in range(grid[0]) for j in range(grid[1])]

        def to_orig(x, y):
            return (inv @ np.array([x, y, 1.0]))[:2]

        diag = np.linalg.norm(to_orig(stride, stride) - to_orig(0.0, 0.0))
        return np.array([to_orig(x, y) for x, y in pts]), diag

    cs, ds = centres_and_diag(a_s, grid_s, stride_s)
    ct, dt = centres_and_diag(a_t, grid_t, stride_t)
    dist = np.sqrt(((cs[:, None, :] - ct[None, :, :]) ** 2).sum(-1))
    return dist < t_pos * max(ds, dt)


def test_shapes_224_and_96():
    model = build()
    batch = make_batch(named_recipe("clove", 224, 96, num_local=2), b=2)
    with torch.no_grad():
        emb = model.embed(batch)
    assert emb.num_global == 2
    groups = {g.grid: g for g in emb.student}
    assert groups[(7, 7)].views == [0, 1] and groups[(7, 7)].emb.shape == (2, 2, 49, 16)
    assert groups[(3, 3)].views == [2, 3] and groups[(3, 3)].emb.shape == (2, 2, 9, 16)
    assert groups[(7, 7)].stride == 32 and groups[(3, 3)].stride == 32
    assert emb.teacher.emb.shape == (2, 2, 49, 16)
    for t in [emb.teacher.emb] + [g.emb for g in emb.student]:
        torch.testing.assert_close(t.norm(dim=-1), torch.ones(t.shape[:-1]))


@pytest.mark.parametrize("attention", ["dot", "cosine"])
def test_forward_equals_reference_over_pairs(attention):
    """Loss from embed() + masks and pairs rebuilt here from the definition; three view sizes."""

    def spec(s, g):
        return ViewSpec(s, (0.3, 1.0) if g else (0.1, 0.4), photometric=None, is_global=g)

    recipe = Recipe("mixed", (spec(96, True), spec(96, True), spec(64, False), spec(32, False), spec(64, False)))
    # a generous T_pos gives non-trivial M; a small margin keeps fp32 rounding of the total small
    model = build(attention=attention, t_pos=1.5, margin=4.0)
    batch = make_batch(recipe, b=3, seed=1)
    with torch.no_grad():
        out = model(batch)
        emb = model.embed(batch)
    per_view = {v: (g.emb[n], g.grid, g.stride) for g in emb.student for n, v in enumerate(g.views)}
    teacher = {t: emb.teacher.emb[t] for t in range(2)}
    losses, matches = [], []
    for t in range(2):  # teacher global views
        for s in range(5):  # every other student view
            if s == t:
                continue
            z, grid_s, stride_s = per_view[s]
            for b in range(3):
                m = reference_mask(
                    batch.matrices[b, s].double().numpy(),
                    batch.matrices[b, t].double().numpy(),
                    grid_s,
                    stride_s,
                    emb.teacher.grid,
                    emb.teacher.stride,
                    1.5,
                )
                loss, _, _ = clove_pair_loss(z[b : b + 1], teacher[t][b : b + 1], torch.from_numpy(m)[None], margin=4.0)
                losses.append(loss.item())
                matches.append(m.sum())
    assert len(losses) == 8 * 3  # 2 teachers x 4 other views x 3 images
    assert 0 < np.mean(matches)  # the test exercises positives
    assert out["loss"].item() == pytest.approx(np.mean(losses), abs=1e-5)
    assert out["matches"].item() == pytest.approx(np.mean(matches), abs=1e-5)


def test_batched_equals_looped_pairs():
    batch = make_batch(named_recipe("clove", 64, 32, num_local=3), b=2, seed=2)
    model = build()
    with torch.no_grad():
        fast = model(batch)
        model.batched_pairs = False
        slow = model(batch)
    for key in ("loss", "positive", "negative", "matches"):
        torch.testing.assert_close(fast[key], slow[key])


def test_gradients_reach_student_only_and_teacher_moves_only_by_ema():
    model = build()
    batch = make_batch(named_recipe("clove", 64, 32, num_local=2), b=2, seed=3)
    before = {n: p.detach().clone() for n, p in model.teacher.named_parameters()}
    out = model(batch)
    assert out["loss"].dtype == torch.float32 and out["loss"].requires_grad
    assert not out["positive"].requires_grad
    out["loss"].backward()
    assert all(p.grad is not None for p in model.student.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.student.attention.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    torch.optim.SGD(model.student.parameters(), lr=0.1).step()
    for n, p in model.teacher.named_parameters():  # forward, backward and step left it alone
        assert torch.equal(p, before[n]), n
    student = dict(model.student.named_parameters())
    assert any(not torch.equal(student[n], before[n]) for n in before)  # the student did move
    model.update_teacher(0.75)
    for n, p in model.teacher.named_parameters():
        torch.testing.assert_close(p, 0.75 * before[n] + 0.25 * student[n].detach())
    frozen = {n: p.clone() for n, p in model.teacher.named_parameters()}
    model.update_teacher(1.0)
    assert all(torch.equal(p, frozen[n]) for n, p in model.teacher.named_parameters())


def test_teacher_starts_as_student_copy():
    model = build()
    student = dict(model.student.named_parameters())
    names = [n for n, _ in model.teacher.named_parameters()]
    assert names and all(n.startswith(("backbone.", "projector.")) for n in names)
    assert all(torch.equal(p, student[n]) for n, p in model.teacher.named_parameters())
    assert all(p.data_ptr() != student[n].data_ptr() for n, p in model.teacher.named_parameters())


def test_optimizer_steps_lower_the_loss():
    model = build(seed=4)
    batch = make_batch(named_recipe("clove", 64, 32, num_local=4), b=4, seed=4)
    opt = torch.optim.SGD(model.student.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(5):
        model.update_teacher(model.teacher_momentum(step, 5))
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_autocast_and_channels_last():
    model = build(channels_last=True)
    assert model.student.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = make_batch(named_recipe("clove", 64, 32, num_local=6), b=8, seed=5, size=(1280, 960))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        emb = model.embed(batch)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    # M is geometry: autocast must not round the coordinates (bf16 matmuls would move cells)
    with torch.no_grad():
        exact = model.objective(emb, batch.matrices)
    assert out["matches"].item() == exact[3].item()
    torch.testing.assert_close(out["loss"], exact[0])


def test_global_views_from_sizes_or_config():
    model = build()
    two_sizes = make_batch(named_recipe("clove", 64, 32, num_local=2), b=2)
    assert model.global_view_count(two_sizes) == 2
    same = make_batch(Recipe("same", (ViewSpec(32, (0.5, 1.0), photometric=None),) * 3), b=2)
    assert model.global_view_count(same) == 3
    model.num_global = 1
    assert model.global_view_count(same) == 1
    model.num_global = None
    wrong_order = make_batch(named_recipe("clove", 64, 32, num_local=1), b=2)
    wrong_order.views = wrong_order.views[::-1]
    with pytest.raises(ValueError, match="must come first"):
        model.global_view_count(wrong_order)
    raw = make_batch(named_recipe("clove", 64, 32, num_local=1), b=2)
    raw.views = [v.to(torch.uint8) for v in raw.views]
    with pytest.raises(ValueError, match="normalize_views"):
        model(raw)
