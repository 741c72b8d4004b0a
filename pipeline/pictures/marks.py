"""What the pictures draw, as pure functions of the view matrices (no matplotlib here).

Every point is in the contract's continuous pixel coordinates of a view (``(x, y)``, pixel ``j``
covers ``[j, j + 1)``), which is also how the figures place images (``extent=(0, w, h, 0)``), so a
point drawn at ``(x, y)`` is exactly the view location the geometry functions talk about.
One image at a time: matrices are ``[3, 3]`` tensors, sizes ``(height, width)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.geometry import (
    affine_inverse,
    apply_matrix,
    cell_centres,
    correspondence_mask,
    inverse_coordinate_map,
    shared_region_points,
    view_to_view,
    view_window,
)


def is_flipped(matrix: Tensor) -> bool:
    """A view is mirrored when its linear part has a negative determinant (quarter turns keep it positive)."""
    m = matrix.double()
    return bool(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0] < 0)


def view_label(name: str, matrix: Tensor, turns: int, size: tuple[int, int]) -> str:
    """Caption of one view: ``"local 2 · 96 px · flip · 270°"`` (turns counter-clockwise)."""
    parts = [name, f"{size[1]} px"]
    if is_flipped(matrix):
        parts.append("flip")
    if turns % 4:
        parts.append(f"{90 * (turns % 4)}°")
    return " · ".join(parts)


def match_segments(
    matrix_a: Tensor,
    matrix_b: Tensor,
    size_a: tuple[int, int],
    size_b: tuple[int, int],
    stride: float,
    threshold: float,
    max_lines: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Line segments joining the cells of views a and b matched by M.

    M is :func:`pipeline.geometry.correspondence_mask` at ``stride`` in both views (grids
    ``size // stride``) with ``threshold`` (CLoVE's ``T_pos``). Each segment runs from the centre
    of cell ``i`` of view a to the centre of cell ``j`` of view b, for every ``(i, j)`` in M, in
    row-major order of ``i``; at most ``max_lines`` of them, an even random subset fixed by ``seed``.

    Returns:
        ``[K, 2, 2]`` float64: segment, endpoint (a then b), ``(x, y)`` in that view's pixels.
    """
    grid_a = (int(size_a[0] // stride), int(size_a[1] // stride))
    grid_b = (int(size_b[0] // stride), int(size_b[1] // stride))
    mask = correspondence_mask(matrix_a[None], matrix_b[None], grid_a, stride, grid_b, stride, threshold)[0]
    ia, ib = torch.nonzero(mask, as_tuple=True)
    if max_lines is not None and len(ia) > max_lines:
        keep = np.sort(np.random.default_rng(seed).choice(len(ia), size=max_lines, replace=False))
        ia, ib = ia[keep], ib[keep]
    ca = cell_centres(*grid_a, stride, dtype=torch.float64)[ia]
    cb = cell_centres(*grid_b, stride, dtype=torch.float64)[ib]
    return torch.stack([ca, cb], dim=1).numpy()


def coordinate_colours(matrix: Tensor, size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """The view's inverse coordinate map at stride 1 as an RGB image.

    Red is the original-image x divided by the image width, green the y divided by its height, blue
    0, so one original point has one colour in every view whatever the crop, flip or turn.

    Args:
        matrix: ``[3, 3]`` original -> view.
        size: the view's ``(height, width)``.
        image_size: the original ``(W, H)``.

    Returns:
        ``[height, width, 3]`` float64 in ``[0, 1]``.
    """
    coords = inverse_coordinate_map(matrix[None].double(), size[0], size[1], stride=1.0)[0]  # [2, h, w]
    rgb = np.zeros((size[0], size[1], 3))
    rgb[..., 0] = coords[0].numpy() / float(image_size[0])
    rgb[..., 1] = coords[1].numpy() / float(image_size[1])
    return np.clip(rgb, 0.0, 1.0)


def original_colour_key(image_size: tuple[int, int], height: int = 96) -> np.ndarray:
    """The same colouring over the whole original image (the legend), ``[height, ~W/H*height, 3]``."""
    w, h = image_size
    width = max(1, round(height * w / h))
    rgb = np.zeros((height, width, 3))
    rgb[..., 0] = ((np.arange(width) + 0.5) / width)[None, :]
    rgb[..., 1] = ((np.arange(height) + 0.5) / height)[:, None]
    return rgb


def aligned_grid(
    matrix_student: Tensor, matrix_teacher: Tensor, student_size: tuple[int, int], teacher_size: tuple[int, int], cells: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """GTSA's aligned grid: ``cells x cells`` points over the shared region, in both views.

    The points come from :func:`pipeline.geometry.shared_region_points` (row-major in the
    student's rotated frame) and are carried into the teacher view by ``A_t A_s^-1``, so point
    ``k`` is the same original-image place in both views.

    Returns:
        student points ``[cells^2, 2]``, teacher points ``[cells^2, 2]`` (float64, ``(x, y)``
        view pixels), and whether the two views overlap at all.
    """
    ms, mt = matrix_student[None].double(), matrix_teacher[None].double()
    points, valid = shared_region_points(ms, mt, student_size, teacher_size, cells)
    in_teacher = apply_matrix(view_to_view(ms, mt), points)
    return points[0].numpy(), in_teacher[0].numpy(), bool(valid[0])


def shared_region_corners(
    matrix_student: Tensor, matrix_teacher: Tensor, student_size: tuple[int, int], teacher_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The outline of the region two views share, as 4 corners ``[4, 2]`` in each view (closed in order).

    The region is the intersection of the views' windows in the original image; it is a rectangle
    in each view too. Meaningless when the views do not overlap (see :func:`aligned_grid`).
    """
    ms, mt = matrix_student.double(), matrix_teacher.double()
    ws, wt = view_window(ms, student_size), view_window(mt, teacher_size)
    x0, y0 = torch.maximum(ws[:2], wt[:2]).tolist()
    x1, y1 = torch.minimum(ws[2:], wt[2:]).tolist()
    corners = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float64)
    return apply_matrix(ms, corners).numpy(), apply_matrix(mt, corners).numpy()


def to_original(matrix: Tensor, points: np.ndarray) -> np.ndarray:
    """View pixels ``[N, 2]`` -> original-image pixels ``[N, 2]`` through ``A^-1``."""
    inverse = affine_inverse(matrix.double())
    return apply_matrix(inverse, torch.as_tensor(points, dtype=torch.float64)).numpy()
