"""Collapse monitor: statistics of a batch of embeddings, read on logging steps only.

A student/teacher method collapses when its embeddings stop varying (every image and location
maps to nearly the same vector) or span only a few directions. Two numbers show it:

- ``emb_std``: the mean over dimensions of the per-dimension standard deviation of the
  L2-normalised embeddings. Unit vectors spread uniformly over ``D`` dimensions give about
  ``1 / sqrt(D)``; a collapsed method gives ~0 (SimSiam's monitor).
- ``emb_rank``: the effective rank ``exp(H(p))`` with ``p`` the normalised singular values of the
  centred embeddings (Roy & Vetterli 2007): between 1 (one direction) and ``min(N, D)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def collapse_stats(embeddings: Tensor, max_rows: int = 4096) -> dict[str, Tensor]:
    """``embeddings [N, D]`` -> ``{"emb_std": [], "emb_rank": []}`` device scalars (fp32).

    At most ``max_rows`` evenly spaced rows are used, so the SVD stays cheap on large batches.
    """
    x = embeddings.detach().float().flatten(0, -2)
    if x.shape[0] > max_rows:
        x = x[torch.linspace(0, x.shape[0] - 1, max_rows, device=x.device).long()]
    unit = torch.nn.functional.normalize(x, dim=-1)
    std = unit.std(dim=0, unbiased=True).mean() if unit.shape[0] > 1 else unit.new_zeros(())
    finite = torch.isfinite(x).all()
    x = torch.where(finite, x, torch.zeros_like(x))  # NaN embeddings (a skipped step) must not crash the SVD
    s = torch.linalg.svdvals(x - x.mean(dim=0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    nan = torch.full_like(std, float("nan"))
    return {"emb_std": torch.where(finite, std, nan), "emb_rank": torch.where(finite, torch.exp(entropy), nan)}
