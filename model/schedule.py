"""Schedules as pure functions of the optimizer step, the one home of them all: the half-cosine the
methods (EMA momentum) and the loop (lr, weight decay) share, the loop's warm-up + cosine, and the
linear lr scaling rule. No state to checkpoint: ``step`` counts optimizer steps from 0,
``total_steps`` is the length of the whole run, and values past the end are clamped to the final
value, so ``max_steps`` beyond the planned length is harmless."""

from __future__ import annotations

import math


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` at step 0 to ``end`` at ``total_steps``, clamped past the end:
    ``end + (start - end) * (1 + cos(pi * step / total_steps)) / 2``."""
    if total_steps <= 0:
        return end
    t = min(max(step / total_steps, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """Linear warm-up to ``peak``, then cosine down to ``floor`` at ``total_steps``.

    Warm-up gives ``peak * (step + 1) / warmup_steps`` so that the very first step already moves
    (a zero lr would waste it) and the last warm-up step reaches ``peak``.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return cosine(step - warmup_steps, total_steps - warmup_steps, peak, floor)


def scaled_lr(base_lr: float, batch_size: int, num_processes: int, grad_accum: int) -> float:
    """Linear scaling rule: ``base_lr`` is for 256 images per optimizer step."""
    return base_lr * batch_size * num_processes * grad_accum / 256.0
