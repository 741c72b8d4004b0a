"""EMA teacher update as a plain function (the momentum schedule is :func:`model.schedule.cosine`)."""

from __future__ import annotations

import torch
from torch import nn


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
