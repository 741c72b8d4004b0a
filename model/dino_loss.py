"""DINO's maths as pure functions (Caron et al., 2021; docs/methods.md, "DINO").

Notation: ``G`` teacher (global) views, ``V`` student views (the first ``G`` of them are the same
global views), ``B`` images, ``K`` head outputs. Everything is computed in fp32, also under autocast.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import functional as F


def teacher_temperature(epoch: int, warmup_epochs: int, start: float, end: float) -> float:
    """The teacher temperature of epoch ``epoch`` (0-based), as DINO's reference schedule
    ``np.linspace(start, end, warmup_epochs)[epoch]`` during the warm-up and ``end`` after it:
    ``start + (end - start) * epoch / (warmup_epochs - 1)`` for ``epoch < warmup_epochs`` (``start``
    when ``warmup_epochs == 1``), ``end`` from epoch ``warmup_epochs`` on (always, when it is 0)."""
    epoch = max(int(epoch), 0)
    if epoch >= warmup_epochs:
        return float(end)
    if warmup_epochs == 1:
        return float(start)
    return float(start + (end - start) * epoch / (warmup_epochs - 1))


def teacher_probs(teacher_logits: Tensor, center: Tensor, temperature: float) -> Tensor:
    """Centred and sharpened teacher distribution ``softmax((t - c) / temperature)`` over ``K``.

    ``teacher_logits [..., K]``, ``center [K]`` or ``[1, K]`` -> ``[..., K]`` (fp32, no gradient)."""
    return F.softmax((teacher_logits.detach().float() - center.float()) / temperature, dim=-1)


def dino_loss(student_logits: Tensor, teacher_p: Tensor, student_temp: float) -> Tensor:
    """Cross-entropy of every student view against every teacher view but its own, averaged.

    ``student_logits [V, B, K]`` (views 0..G-1 are the teacher's views), ``teacher_p [G, B, K]``
    (:func:`teacher_probs`) -> scalar: the mean over the ``G * (V - 1)`` pairs ``(t, v != t)`` and
    the ``B`` images of ``-sum_k teacher_p[t, b, k] * log_softmax(student_logits[v, b] / student_temp)[k]``.
    """
    g, v = teacher_p.shape[0], student_logits.shape[0]
    if student_logits.shape[1:] != teacher_p.shape[1:] or not 1 <= g <= v or v < 2:
        raise ValueError(f"student logits {tuple(student_logits.shape)} do not fit teacher probs {tuple(teacher_p.shape)}")
    with torch.autocast(student_logits.device.type, enabled=False):  # fp32 whatever the autocast around
        log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
        cross = -torch.einsum("tbk,vbk->tvb", teacher_p.float(), log_p)  # [G, V, B]: one batched matmul
    other = torch.arange(g, device=cross.device)[:, None] != torch.arange(v, device=cross.device)[None, :]
    return cross[other].mean()


@torch.no_grad()
def batch_center(teacher_logits: Tensor) -> Tensor:
    """The mean teacher output of this step over every rank: ``[N, K]`` -> ``[K]`` (fp32).

    The sum and the count are ``all_reduce``d when ``torch.distributed`` is initialised, so every
    rank gets the mean over the global batch (DINO's ``update_center``)."""
    total = teacher_logits.detach().float().sum(dim=0)
    count = teacher_logits.shape[0]
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        count *= dist.get_world_size()
    return total / count


@torch.no_grad()
def updated_center(center: Tensor, batch_mean: Tensor, momentum: float) -> Tensor:
    """The running mean's next value: ``center * momentum + batch_mean * (1 - momentum)`` (shape of ``center``)."""
    return center * momentum + batch_mean.reshape(center.shape).to(center.dtype) * (1.0 - momentum)


@torch.no_grad()
def mean_entropy(probs: Tensor) -> Tensor:
    """Mean entropy in nats of the distributions ``probs [..., K]`` -> scalar (``ln K`` when uniform, 0 when one-hot)."""
    p = probs.float()
    return -(p * torch.log(p.clamp(min=1e-30))).sum(dim=-1).mean()
