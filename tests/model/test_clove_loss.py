"""The CLoVE loss functions against a slow reference written here from docs/methods.md's definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.clove_loss import clove_pair_loss, hard_negative_term, positive_term
from pipeline.views import student_teacher_pairs as clove_pairs


def reference_pair_loss(z, k, m, gamma, margin, first=2, last=10):
    """One (pair, image) straight from the definition, in float64 Python loops.

    z [Nq, D], k [Nk, D], m [Nq, Nk] bool. Returns (L, P, N).
    """
    z, k, m = z.double().numpy(), k.double().numpy(), m.numpy()
    nq, nk = m.shape
    ell = [[-2.0 * sum(z[i, d] * k[j, d] for d in range(z.shape[1])) for j in range(nk)] for i in range(nq)]
    positives = [ell[i][j] for i in range(nq) for j in range(nk) if m[i, j]]
    p = sum(positives) / len(positives) if positives else 0.0
    query_means = []
    for i in range(nq):
        negatives = sorted(ell[i][j] for j in range(nk) if not m[i, j])  # most similar (smallest l) first
        chosen = negatives[first - 1 : last]  # ranks first..last, 1-based
        if chosen:
            query_means.append(sum(chosen) / len(chosen))
    n = sum(query_means) / len(query_means) if query_means else 0.0
    return max(0.0, gamma * p - n + margin), p, n


def unit(*shape, gen):
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


def random_case(rows, nq, nk, d, density, gen):
    z, k = unit(rows, nq, d, gen=gen), unit(rows, nk, d, gen=gen)
    mask = torch.rand(rows, nq, nk, generator=gen) < density
    return z, k, mask


@pytest.mark.parametrize(
    "nq,nk,density",
    [(9, 49, 0.1), (49, 49, 0.05), (4, 12, 0.5), (5, 7, 0.3), (3, 1, 0.5)],  # nk < 10 and nk < first too
)
def test_loss_matches_reference(nq, nk, density):
    gen = torch.Generator().manual_seed(nq * 100 + nk)
    z, k, mask = random_case(4, nq, nk, 8, density, gen)
    mask[0] = False  # an empty M
    mask[1, 0] = True  # an all-positive query row
    mask[2, :, : nk // 2 + 1] = True  # several rows with few negatives
    for gamma, margin in [(2.0, 100.0), (2.0, 0.0), (0.5, -1.0)]:  # small margins make the hinge clip
        loss, pos, neg = clove_pair_loss(z, k, mask, gamma, margin)
        for r in range(z.shape[0]):
            want = reference_pair_loss(z[r], k[r], mask[r], gamma, margin)
            got = (loss[r].item(), pos[r].item(), neg[r].item())
            assert got == pytest.approx(want, abs=1e-5), (r, gamma, margin)


def test_all_positive_and_empty_masks():
    gen = torch.Generator().manual_seed(1)
    z, k, _ = random_case(2, 6, 10, 8, 0.0, gen)
    full = torch.ones(2, 6, 10, dtype=torch.bool)
    loss, pos, neg = clove_pair_loss(z, k, full, 2.0, 100.0)
    assert torch.equal(neg, torch.zeros(2))  # no negatives anywhere: N = 0
    for r in range(2):
        assert (loss[r].item(), pos[r].item(), neg[r].item()) == pytest.approx(
            reference_pair_loss(z[r], k[r], full[r], 2.0, 100.0), abs=1e-5
        )
    empty = torch.zeros(2, 6, 10, dtype=torch.bool)
    loss, pos, neg = clove_pair_loss(z, k, empty, 2.0, 100.0)
    assert torch.equal(pos, torch.zeros(2))
    assert torch.all(torch.isfinite(loss))


@pytest.mark.parametrize("first,last", [(1, 1), (1, 5), (3, 4), (2, 30)])
def test_other_rank_ranges(first, last):
    gen = torch.Generator().manual_seed(first * 10 + last)
    z, k, mask = random_case(3, 5, 16, 4, 0.2, gen)
    loss, pos, neg = clove_pair_loss(z, k, mask, 2.0, 1.0, first, last)
    for r in range(3):
        want = reference_pair_loss(z[r], k[r], mask[r], 2.0, 1.0, first, last)
        assert (loss[r].item(), pos[r].item(), neg[r].item()) == pytest.approx(want, abs=1e-5)


def test_bad_rank_range_is_refused():
    with pytest.raises(ValueError, match="first <= last"):
        hard_negative_term(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3, dtype=torch.bool), 3, 2)


def test_gradient_matches_linear_form():
    """The hinge is active, so dL/dz_i = gamma * dP/dz_i - dN/dz_i: check against autograd of the
    reference written with torch ops on the selected entries."""
    gen = torch.Generator().manual_seed(3)
    z, k, mask = random_case(1, 4, 12, 6, 0.25, gen)
    z = z.double().requires_grad_(True)
    k = k.double()
    clove_pair_loss(z, k, mask).__getitem__(0).sum().backward()
    g = z.grad.clone()
    z2 = z.detach().clone().requires_grad_(True)
    ell = -2.0 * z2[0] @ k[0].T
    pos = ell[mask[0]].mean()
    negs = []
    for i in range(4):
        order = sorted((j for j in range(12) if not mask[0, i, j]), key=lambda j: ell[i, j].item())
        negs.append(torch.stack([ell[i, j] for j in order[1:10]]).mean())
    (2.0 * pos - torch.stack(negs).mean() + 100.0).backward()
    torch.testing.assert_close(g, z2.grad)


def test_fp32_under_autocast():
    gen = torch.Generator().manual_seed(4)
    z, k, mask = random_case(3, 9, 49, 16, 0.1, gen)
    zb, kb = z.bfloat16(), k.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pos, neg = clove_pair_loss(zb, kb, mask)
    assert loss.dtype == pos.dtype == neg.dtype == torch.float32
    want = clove_pair_loss(zb.float(), kb.float(), mask)  # same inputs, computed in fp32
    for got, ref in zip((loss, pos, neg), want):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_terms_are_row_independent():
    gen = torch.Generator().manual_seed(5)
    z, k, mask = random_case(5, 6, 11, 4, 0.3, gen)
    logits = -2.0 * z @ k.transpose(1, 2)
    whole = positive_term(logits, mask), hard_negative_term(logits, mask)
    for r in range(5):
        assert positive_term(logits[r : r + 1], mask[r : r + 1]).item() == pytest.approx(whole[0][r].item(), abs=1e-6)
        assert hard_negative_term(logits[r : r + 1], mask[r : r + 1]).item() == pytest.approx(whole[1][r].item(), abs=1e-6)


def test_pairs_are_the_fourteen_of_the_paper():
    pairs = clove_pairs(2, 8)
    assert len(pairs) == 14 and len(set(pairs)) == 14
    want = {(1, 0), (0, 1)} | {(s, t) for t in (0, 1) for s in range(2, 8)}
    assert set(pairs) == want
    assert clove_pairs(2, 2) == [(1, 0), (0, 1)]
    assert np.all([s != t for s, t in clove_pairs(3, 5)])
