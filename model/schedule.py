"""The half-cosine schedule, the one copy shared by the methods (EMA momentum) and the loop (lr, wd)."""

from __future__ import annotations

import math


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` at step 0 to ``end`` at ``total_steps``, clamped past the end:
    ``end + (start - end) * (1 + cos(pi * step / total_steps)) / 2``."""
    if total_steps <= 0:
        return end
    t = min(max(step / total_steps, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))
