"""Views and (student view, teacher view) pairs of the multi-crop student/teacher methods."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pipeline.batch import ViewBatch


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


class PairRows:
    """The rows of (student view, teacher view) pairs x images, gathered for one batched computation.

    ``gather`` stacks every pair whose student view is in one resolution group pair-major, so a
    loss runs once per group instead of once per pair. The index tensors are built once per layout
    and device, so a step does no host-to-device copies.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def _index(self, views: list[int], pairs: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        key = (tuple(views), tuple(pairs), str(device))
        if key not in self._cache:
            idx = [[s for s, _ in pairs], [views.index(s) for s, _ in pairs], [t for _, t in pairs]]
            self._cache[key] = tuple(torch.tensor(i, device=device) for i in idx)
        return self._cache[key]

    def gather(
        self, student: Tensor, views: list[int], teacher: Tensor, pairs: list[tuple[int, int]], matrices: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pair-major rows.

        Args:
            student: ``[n, B, ...]``, the outputs of student views ``views`` (one resolution).
            teacher: ``[G, B, ...]``, the outputs of teacher views ``0..G-1``.
            pairs: ``(student view, teacher view)``, every student view in ``views``.
            matrices: ``[B, V, 3, 3]``, the batch's view matrices.

        Returns:
            ``student [P*B, ...]``, ``teacher [P*B, ...]``, their matrices ``[P*B, 3, 3]`` twice.
        """
        s_view, s_pos, t_view = self._index(views, pairs, matrices.device)
        return (
            student[s_pos].flatten(0, 1),
            teacher[t_view].flatten(0, 1),
            matrices[:, s_view].transpose(0, 1).flatten(0, 1),
            matrices[:, t_view].transpose(0, 1).flatten(0, 1),
        )


def looped_pair_rows(
    rows: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, ...]],
    student: Tensor,
    views: list[int],
    teacher: Tensor,
    pairs: list[tuple[int, int]],
    matrices: Tensor,
) -> tuple[Tensor, ...]:
    """What ``rows`` of :meth:`PairRows.gather`'s output gives, one pair at a time (the benchmarks'
    baseline): ``rows(student [B, ...], teacher [B, ...], ms [B, 3, 3], mt [B, 3, 3])`` per pair,
    concatenated pair-major."""
    parts = [rows(student[views.index(s)], teacher[t], matrices[:, s], matrices[:, t]) for s, t in pairs]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
