"""The (student view, teacher view) pairs of the multi-crop student/teacher methods."""

from __future__ import annotations


def student_teacher_pairs(num_global: int, num_views: int) -> list[tuple[int, int]]:
    """``(student view, teacher view)`` pairs: every teacher global view against every other view.

    Views ``0..num_global-1`` are global (the teacher sees only those). CLoVE's 2 global + 6 local
    views give 2 * (1 + 6) = 14 pairs, GTSA's 2 + 8 give 18.
    """
    return [(s, t) for t in range(num_global) for s in range(num_views) if s != t]
