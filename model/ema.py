"""EMA teacher: the update and the cosine momentum schedule, as plain functions."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """Momentum at optimizer step ``step`` of ``total_steps``: ``base`` at 0, cosine up to ``final``.

    ``m = final - (final - base) * (cos(pi * step / total_steps) + 1) / 2``; clamped past the end.
    """
    if total_steps <= 0:
        return final
    t = min(max(step / total_steps, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * t) + 1.0) / 2.0


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher_p <- momentum * teacher_p + (1 - momentum) * student_p`` for every parameter.

    Parameters are matched by name: the teacher's names must be a subset of the student's.
    Buffers (BN running statistics) are not touched: the teacher runs its BN on batch statistics
    like the student, and its running statistics follow its own forward passes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    student_params = dict(student.named_parameters())
    t_params, s_params = [], []
    for name, p in teacher.named_parameters():
        if name not in student_params:
            raise ValueError(f"teacher parameter {name!r} has no student counterpart")
        t_params.append(p)
        s_params.append(student_params[name].detach())
    if t_params and momentum < 1.0:
        # one fused kernel per dtype/device group instead of one per tensor
        torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
