"""The CLoVE objective as pure functions (docs/methods.md, "CLoVE").

For a student view ``s`` and a teacher global view ``t`` of one image, with ``z_i`` the student's
contextualised embeddings, ``k_j`` the teacher's and ``l_ij = -2 <z_i, k_j>``:

- ``P`` = mean of ``l_ij`` over ``(i, j)`` in M (0 when M is empty);
- ``N`` = mean over queries ``i`` of the mean of ``l_ij`` over the keys ``j`` not in ``M(i)``
  ranked ``first..last`` (default 2..10) by similarity, most similar first; the single hardest is
  skipped. A query with fewer than ``first`` negatives has none in range and is left out of the
  mean (0 when no query has any); with fewer than ``last`` it uses those it has;
- ``L = max(0, gamma * P - N + margin)``.

The total is the mean of ``L`` over images and over the pairs of :func:`model.pairs.student_teacher_pairs` (14 for
2 global + 6 local views). Everything here runs in fp32, also under autocast.

Shapes: ``R`` rows = (pair, image) items stacked, ``Nq`` student cells, ``Nk`` teacher cells,
``D`` embedding dim.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pair_logits(z: Tensor, k: Tensor) -> Tensor:
    """``l = -2 z k^T`` in fp32: ``z [R, Nq, D]``, ``k [R, Nk, D]`` -> ``[R, Nq, Nk]``."""
    with torch.autocast(z.device.type, enabled=False):
        return -2.0 * torch.bmm(z.float(), k.float().transpose(1, 2))


def positive_term(logits: Tensor, mask: Tensor) -> Tensor:
    """``P`` per row: mean of ``logits [R, Nq, Nk]`` where ``mask [R, Nq, Nk]`` (bool), 0 if empty.

    Returns ``[R]``.
    """
    count = mask.sum(dim=(1, 2))
    total = torch.where(mask, logits, torch.zeros((), dtype=logits.dtype, device=logits.device)).sum(dim=(1, 2))
    return total / count.clamp(min=1)


def hard_negative_term(logits: Tensor, mask: Tensor, first: int = 2, last: int = 10) -> Tensor:
    """``N`` per row: per query, mean logit of the negatives ranked ``first..last`` (1-based, most
    similar = smallest logit first), then mean over the queries that have any in that range.

    ``logits [R, Nq, Nk]``, ``mask [R, Nq, Nk]`` bool (True = positive, excluded). Returns ``[R]``.
    """
    if not 1 <= first <= last:
        raise ValueError(f"negative ranks must satisfy 1 <= first <= last, got {first}..{last}")
    depth = min(last, logits.shape[-1])
    if depth < first:  # fewer keys than the first rank: no query has a negative in range
        return logits.new_zeros(logits.shape[0])
    inf = torch.tensor(float("inf"), dtype=logits.dtype, device=logits.device)
    ranked = torch.topk(torch.where(mask, inf, logits), depth, dim=-1, largest=False, sorted=True).values
    ranked = ranked[..., first - 1 :]  # [R, Nq, depth - first + 1]
    valid = torch.isfinite(ranked)  # positives sort last as +inf: they are never negatives
    per_query_count = valid.sum(-1)
    per_query = torch.where(valid, ranked, torch.zeros_like(ranked)).sum(-1) / per_query_count.clamp(min=1)
    has_neg = per_query_count > 0
    return (per_query * has_neg).sum(-1) / has_neg.sum(-1).clamp(min=1)


def clove_pair_loss(
    z: Tensor, k: Tensor, mask: Tensor, gamma: float = 2.0, margin: float = 100.0, neg_first: int = 2, neg_last: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """Hinge loss of every (pair, image) row, in fp32.

    Args:
        z: ``[R, Nq, D]`` student embeddings (unit norm).
        k: ``[R, Nk, D]`` teacher embeddings (unit norm, no gradient expected).
        mask: ``[R, Nq, Nk]`` bool, M of the row's (student view, teacher view).

    Returns:
        ``(loss, P, N)``, each ``[R]`` fp32, ``loss = max(0, gamma * P - N + margin)``.
    """
    logits = pair_logits(z, k)
    with torch.autocast(z.device.type, enabled=False):
        pos = positive_term(logits, mask)
        neg = hard_negative_term(logits, mask, neg_first, neg_last)
        loss = torch.relu(gamma * pos - neg + margin)
    return loss, pos, neg
