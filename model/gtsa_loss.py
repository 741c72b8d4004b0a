"""GTSA's objective as pure functions (docs/methods.md, "GTSA"): aligned dense loss, patch
correspondence, rotation prediction (the pairs are :func:`model.pairs.student_teacher_pairs`).

Everything works on rows: one row is one (teacher global view t, student view v, image) triple, so
the module stacks all pairs of one student resolution into one call. Losses come back per row,
in fp32, whatever the autocast around them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from pipeline.geometry import sampling_grid, shared_region_points


def negative_cosine(a: Tensor, b: Tensor, dim: int = 1) -> Tensor:
    """``-cos(a, b)`` along ``dim`` (fp32)."""
    return -F.cosine_similarity(a.float(), b.float(), dim=dim, eps=1e-8)


def aligned_samples(
    student_maps: Tensor,
    teacher_maps: Tensor,
    matrices_student: Tensor,
    matrices_teacher: Tensor,
    student_size: tuple[int, int],
    teacher_size: tuple[int, int],
    cells: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Both maps read on a ``cells x cells`` grid over the region the two views share, ordered in
    the student's (rotated) frame, through the view matrices only.

    Args:
        student_maps: ``[R, C, hs, ws]`` covering the whole student view.
        teacher_maps: ``[R, C, ht, wt]`` covering the whole teacher view.
        matrices_student, matrices_teacher: ``[R, 3, 3]`` original -> view.
        student_size, teacher_size: ``(height, width)`` of the views in pixels.
        cells: grid cells per side (10 for a global student, 4 for a local one).

    Returns:
        student ``[R, C, cells, cells]``, teacher ``[R, C, cells, cells]`` (fp32), ``valid [R]``
        (False where the views do not overlap; those rows are meaningless).
    """
    points, valid = shared_region_points(matrices_student, matrices_teacher, student_size, teacher_size, cells)
    grid_s = sampling_grid(matrices_student, matrices_student, points, student_size)
    grid_t = sampling_grid(matrices_teacher, matrices_student, points, teacher_size)
    # "border": a point in the outer half cell of a view takes the edge cell's value, as RoIAlign
    # does, instead of fading towards zero padding
    kw = dict(mode="bilinear", padding_mode="border", align_corners=False)
    with torch.autocast(student_maps.device.type, enabled=False):
        s = F.grid_sample(student_maps.float(), grid_s.float(), **kw)  # [R, C, cells^2, 1]
        t = F.grid_sample(teacher_maps.float(), grid_t.float(), **kw)
    shape = (*s.shape[:2], cells, cells)
    return s.reshape(shape), t.reshape(shape), valid


def aligned_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Negative cosine averaged over cells: ``[R, C, S, S]`` twice -> ``[R]``."""
    return negative_cosine(student, teacher, dim=1).flatten(1).mean(dim=1)


def nearest_matches(queries: Tensor, candidates: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each query's nearest candidate by cosine, then the ``keep`` most similar of those pairs.

    Args:
        queries: ``[R, Nq, C]``; candidates: ``[R, Nc, C]``; ``1 <= keep <= Nq``.

    Returns:
        query indices ``[R, keep]``, their nearest candidates' indices ``[R, keep]`` and the cosines
        ``[R, keep]`` (fp32, differentiable in both inputs).
    """
    if not 1 <= keep <= queries.shape[1]:
        raise ValueError(f"keep must be in [1, {queries.shape[1]}] (the query count), got {keep}")
    with torch.autocast(queries.device.type, enabled=False):
        q = F.normalize(queries.float(), dim=-1, eps=1e-8)
        c = F.normalize(candidates.float(), dim=-1, eps=1e-8)
        best, nearest = (q @ c.transpose(1, 2)).max(dim=-1)  # [R, Nq]
    cos, query_idx = best.topk(keep, dim=-1)
    return query_idx, nearest.gather(1, query_idx), cos


def patch_correspondence_loss(student: Tensor, teacher: Tensor, keep: int) -> Tensor:
    """½(L1 + L2): L1 the negative cosine of the ``keep`` best student -> teacher nearest
    neighbours, L2 the same teacher -> student. ``[R, Ns, C]``, ``[R, Nt, C]`` -> ``[R]``."""
    l1 = -nearest_matches(student, teacher, keep)[2].mean(dim=-1)
    l2 = -nearest_matches(teacher, student, keep)[2].mean(dim=-1)
    return 0.5 * (l1 + l2)


def pc_keep(num_student_tokens: int, ratio: float) -> int:
    """Matches kept per direction: ``int(N_student * ratio)``, at least 1 (98 for 14x14, 18 for
    6x6 at the default 0.5). The count follows the student's tokens in both directions, as the
    reference does."""
    return max(1, int(num_student_tokens * ratio))


def rotation_loss(logits: Tensor, quarter_turns: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy and accuracy of quarter-turn logits ``[N, 4]`` against ``quarter_turns [N]``
    (any integers; taken mod 4). Returns two fp32 scalars (accuracy detached)."""
    target = quarter_turns.long().remainder(4)
    ce = F.cross_entropy(logits.float(), target)
    acc = (logits.detach().argmax(dim=-1) == target).float().mean()
    return ce, acc
