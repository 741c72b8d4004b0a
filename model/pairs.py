"""Views and (student view, teacher view) pairs of the multi-crop student/teacher methods."""

from __future__ import annotations

from torch import Tensor

from pipeline.batch import ViewBatch


def student_teacher_pairs(num_global: int, num_views: int) -> list[tuple[int, int]]:
    """``(student view, teacher view)`` pairs: every teacher global view against every other view.

    Views ``0..num_global-1`` are global (the teacher sees only those). CLoVE's 2 global + 6 local
    views give 2 * (1 + 6) = 14 pairs, GTSA's 2 + 8 give 18.
    """
    return [(s, t) for t in range(num_global) for s in range(num_views) if s != t]


def views_by_size(views: list[Tensor]) -> dict[tuple[int, int], list[int]]:
    """Indices of the views of each ``(height, width)``, in order: one backbone call per size."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, v in enumerate(views):
        groups.setdefault(tuple(v.shape[-2:]), []).append(i)
    return groups


def checked_views(batch: ViewBatch, method: str) -> list[Tensor]:
    """The batch's views after checking there is a matrix per view and the views are normalised float."""
    views = batch.views
    if len(views) != batch.num_views:
        raise ValueError(f"batch has {len(views)} views but matrices for {batch.num_views}")
    if not all(v.is_floating_point() for v in views):
        raise ValueError(f"{method} needs normalised float views; run pipeline.batch.normalize_views first")
    return views


def global_view_count(views: list[Tensor], num_global: int | None) -> int:
    """``num_global`` if given, else the number of views of the largest size, which must lead."""
    sizes = [tuple(v.shape[-2:]) for v in views]
    g = num_global
    if g is None:
        largest = max(sizes, key=lambda s: s[0] * s[1])
        g = sum(s == largest for s in sizes)
        if any(s != largest for s in sizes[:g]):
            raise ValueError(f"global (largest) views must come first, got view sizes {sizes}")
    if not 1 <= g <= len(views) or len(set(sizes[:g])) != 1:
        raise ValueError(f"{g} global views do not fit view sizes {sizes}; set the method option num_global")
    return int(g)
