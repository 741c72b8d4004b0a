"""EMA teacher update as a plain function (the momentum schedule is :func:`model.schedule.cosine`)."""

from __future__ import annotations

import torch
from torch import nn

from model.schedule import cosine


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


class EMATeacher:
    """The contract's teacher schedule and update for a method with ``self.student``,
    ``self.teacher`` (parameter names a subset of the student's) and the options
    ``momentum_base`` / ``momentum_final`` in ``self.options``."""

    def teacher_momentum(self, step: int, total_steps: int) -> float:
        """Cosine EMA momentum, ``momentum_base`` at step 0 up to ``momentum_final`` at ``total_steps``."""
        return cosine(step, total_steps, self.options["momentum_base"], self.options["momentum_final"])

    def update_teacher(self, momentum: float) -> None:
        """EMA step of the teacher; the loop calls it before forward, on optimizer steps only."""
        ema_update(self.teacher, self.student, momentum)
