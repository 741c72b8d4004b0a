"""The geometry contract: one 3x3 matrix per view, and what is derived from it.

``A_v`` maps a point of the original image to the same point in view ``v``, in pixel units,
``[u, v, 1]^T = A_v [x, y, 1]^T``. Coordinates are continuous, ``(x, y)`` order, pixel-centre
convention: pixel column ``j`` covers ``[j, j + 1)`` and its centre is ``j + 0.5``. The original
image spans ``[0, W] x [0, H]`` at the resolution stored in the shard.

The builders below (:func:`crop_resize_matrix`, :func:`hflip_matrix`, :func:`rot90_matrix`,
:func:`scale_matrix`) are composed by every backend, so all of them agree by construction; the
batched helpers (:func:`inverse_coordinate_map`, :func:`view_to_view`,
:func:`correspondence_mask`, :func:`sampling_grid`) run on whatever device the matrices are on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Builders (numpy float64, one view at a time; used by samplers in DataLoader workers)
# ---------------------------------------------------------------------------------------------


def scale_matrix(sx: float, sy: float | None = None) -> np.ndarray:
    """Uniform or anisotropic scaling about the origin, e.g. reduced-DCT decoding at 1/2."""
    sy = sx if sy is None else sy
    return np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def crop_resize_matrix(x0: float, y0: float, w: float, h: float, out_w: int, out_h: int) -> np.ndarray:
    """Window ``[x0, x0 + w] x [y0, y0 + h]`` resized to an ``out_w x out_h`` view."""
    sx, sy = out_w / w, out_h / h
    return np.array([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0], [0.0, 0.0, 1.0]])


def hflip_matrix(width: float) -> np.ndarray:
    """Horizontal flip of an image ``width`` pixels wide: ``u' = width - u``."""
    return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def rot90_matrix(k: int, width: float, height: float) -> np.ndarray:
    """``k`` counter-clockwise quarter turns of a ``width x height`` image, as ``torch.rot90(img, k,
    dims=(-2, -1))`` does them (rows top to bottom, so counter-clockwise as displayed).

    One turn maps ``(x, y)`` to ``(y, width - x)`` and the image becomes ``height x width``.
    """
    m = np.eye(3)
    w, h = float(width), float(height)
    for _ in range(k % 4):
        m = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w], [0.0, 0.0, 1.0]]) @ m
        w, h = h, w
    return m


# ---------------------------------------------------------------------------------------------
# Batched helpers (torch, on the batch's device)
# ---------------------------------------------------------------------------------------------


def full_precision(fn: Callable[..., Any]):
    """Run ``fn`` with autocast off and floating tensor arguments in float32 at least.

    Under bf16 autocast the matmul in :func:`apply_matrix` moves cell centres by pixels and
    silently changes M, so geometry never follows the surrounding autocast.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        def up(x: Any) -> Any:
            if isinstance(x, Tensor) and x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
                return x.float()
            return x

        args = tuple(up(a) for a in args)
        kwargs = {k: up(v) for k, v in kwargs.items()}
        device_type = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


@full_precision
def apply_matrix(matrices: Tensor, points: Tensor) -> Tensor:
    """Apply affine matrices to points.

    Args:
        matrices: ``[..., 3, 3]``.
        points: ``[..., N, 2]`` in ``(x, y)`` order (leading dims broadcast with ``matrices``).

    Returns:
        ``[..., N, 2]``.
    """
    linear = matrices[..., :2, :2]
    offset = matrices[..., :2, 2]
    return points @ linear.transpose(-1, -2) + offset.unsqueeze(-2)


def affine_inverse(matrices: Tensor) -> Tensor:
    """Exact inverse of affine matrices ``[..., 3, 3]`` (last row ``0 0 1``), computed in float64."""
    m = matrices.double()
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    det = a * e - b * d
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [
        torch.stack([e, -b, b * f - c * e], dim=-1) / det[..., None],
        torch.stack([-d, a, c * d - a * f], dim=-1) / det[..., None],
        torch.stack([zero, zero, one], dim=-1),
    ]
    return torch.stack(rows, dim=-2).to(matrices.dtype)


@full_precision
def view_to_view(matrices_a: Tensor, matrices_b: Tensor) -> Tensor:
    """Map from view a to view b, ``A_b A_a^-1``: ``[..., 3, 3]`` each, ``[..., 3, 3]`` out."""
    return matrices_b @ affine_inverse(matrices_a)


def cell_centres(
    grid_h: int, grid_w: int, stride: float, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """View-space centres of the cells of a ``grid_h x grid_w`` map at ``stride``, row-major.

    Cell ``(i, j)`` is centred at ``((j + 0.5) * stride, (i + 0.5) * stride)``, so every centre lies
    strictly inside the view. Returns ``[grid_h * grid_w, 2]`` in ``(x, y)`` order.
    """
    ys = (torch.arange(grid_h, device=device, dtype=dtype) + 0.5) * stride
    xs = (torch.arange(grid_w, device=device, dtype=dtype) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


@full_precision
def inverse_coordinate_map(matrices: Tensor, grid_h: int, grid_w: int, stride: float = 1.0) -> Tensor:
    """Original-image position of every cell centre of a view.

    Args:
        matrices: ``[B, 3, 3]`` original -> view.
        grid_h, grid_w: cells of the map (``view_size / stride``).
        stride: view pixels per cell; ``1`` gives the full-resolution map.

    Returns:
        ``[B, 2, grid_h, grid_w]``, channel 0 = x, channel 1 = y, in original-image pixels.
    """
    original = _original_centres(affine_inverse(matrices), (grid_h, grid_w), stride)  # [B, N, 2]
    return original.transpose(1, 2).reshape(matrices.shape[0], 2, grid_h, grid_w)


def _original_centres(inverse: Tensor, grid: tuple[int, int], stride: float) -> Tensor:
    """``[B, N, 2]`` original-image centres of a view's cells, from its inverse matrices."""
    return apply_matrix(inverse, cell_centres(grid[0], grid[1], stride, inverse.device, inverse.dtype))


def _diagonal(inverse: Tensor, stride: float) -> Tensor:
    return stride * torch.sqrt((inverse[..., :2, :2] ** 2).sum(dim=(-1, -2)))


@full_precision
def correspondence_mask(
    matrices_a: Tensor,
    matrices_b: Tensor,
    grid_a: tuple[int, int],
    stride_a: float,
    grid_b: tuple[int, int],
    stride_b: float,
    threshold: float,
) -> Tensor:
    """The set M of matching cells between views a and b, as a mask.

    A pair ``(i, j)`` matches when the original-image centres of cell ``i`` of view a and cell ``j``
    of view b are closer than ``threshold * max(diag_a, diag_b)``, with ``diag`` the cell
    diagonal in original-image pixels (CLoVE's ``T_pos`` rule, independent of view resolution).

    Args:
        matrices_a, matrices_b: ``[B, 3, 3]``.
        grid_a, grid_b: ``(h, w)`` cells of each view's feature map.
        stride_a, stride_b: view pixels per cell.
        threshold: ``T_pos`` (0.7 in CLoVE).

    Returns:
        ``[B, N_a, N_b]`` bool, ``N = h * w`` in row-major order.
    """
    inv_a, inv_b = affine_inverse(matrices_a), affine_inverse(matrices_b)
    pa = _original_centres(inv_a, grid_a, stride_a)
    pb = _original_centres(inv_b, grid_b, stride_b)
    dist = torch.cdist(pa, pb)  # [B, N_a, N_b]
    radius = threshold * torch.maximum(_diagonal(inv_a, stride_a), _diagonal(inv_b, stride_b))
    return dist < radius[:, None, None]


@full_precision
def sampling_grid(matrices_src: Tensor, matrices_dst: Tensor, points_dst: Tensor, src_size: tuple[int, int]) -> Tensor:
    """``grid_sample`` grid that reads a map of view ``src`` at points given in view ``dst``.

    Used to bring the teacher's feature map onto a student's cells (GTSA's aligned targets). A
    map of any resolution that covers the whole ``src`` view is sampled correctly with
    ``F.grid_sample(map, grid, align_corners=False)``.

    Args:
        matrices_src, matrices_dst: ``[B, 3, 3]``.
        points_dst: ``[B, N, 2]`` or ``[N, 2]`` in ``dst`` view pixels, ``(x, y)``.
        src_size: ``(height, width)`` of the ``src`` view in pixels.

    Returns:
        ``[B, N, 1, 2]`` normalised to ``[-1, 1]`` (outside means outside the ``src`` view).
    """
    dst_to_src = view_to_view(matrices_dst, matrices_src)
    pts = apply_matrix(dst_to_src, points_dst.expand(matrices_src.shape[0], -1, -1))
    h, w = src_size
    scale = torch.tensor([2.0 / w, 2.0 / h], device=pts.device, dtype=pts.dtype)
    return (pts * scale - 1.0).unsqueeze(2)


@full_precision
def view_window(matrices: Tensor, size: tuple[int, int]) -> Tensor:
    """Axis-aligned window ``[x0, y0, x1, y1]`` of the original image that a view shows.

    Every view this project makes is a crop, resize, flip and quarter turn of the original, so the
    view's rectangle maps to an axis-aligned rectangle. ``matrices [..., 3, 3]``, ``size`` the
    view's ``(height, width)``; returns ``[..., 4]``.
    """
    h, w = size
    corners = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], device=matrices.device, dtype=matrices.dtype)
    pts = apply_matrix(affine_inverse(matrices), corners.expand(*matrices.shape[:-2], 4, 2))
    return torch.cat([pts.amin(dim=-2), pts.amax(dim=-2)], dim=-1)


@full_precision
def shared_region_points(
    matrices_student: Tensor, matrices_teacher: Tensor, student_size: tuple[int, int], teacher_size: tuple[int, int], cells: int
) -> tuple[Tensor, Tensor]:
    """An ``cells x cells`` grid over the region two views share, in the student view's frame.

    The shared region is the intersection of the two views' windows in the original image (see
    :func:`view_window`). It is mapped into the student view (an axis-aligned rectangle there,
    whatever the flips and quarter turns) and split into ``cells x cells`` bins; the bin centres
    are listed row-major in the student's (rotated) frame. This is GTSA's RoIAlign with one sample
    per bin, expressed through the view matrices: read the student's map at these points with
    ``sampling_grid(ms, ms, points, student_size)`` and the teacher's with
    ``sampling_grid(mt, ms, points, teacher_size)``.

    Args:
        matrices_student, matrices_teacher: ``[B, 3, 3]``.
        student_size, teacher_size: ``(height, width)`` of each view in pixels.
        cells: bins per side (GTSA: 10 for a global student, 4 for a local one).

    Returns:
        points ``[B, cells * cells, 2]`` in student-view pixels ``(x, y)``, and ``valid [B]`` bool
        (False where the windows do not overlap; those points are meaningless).
    """
    ws, wt = view_window(matrices_student, student_size), view_window(matrices_teacher, teacher_size)
    lo, hi = torch.maximum(ws[..., :2], wt[..., :2]), torch.minimum(ws[..., 2:], wt[..., 2:])
    valid = (hi > lo).all(dim=-1)
    hi = torch.where(valid[..., None], hi, lo + 1.0)
    corners = torch.stack([lo, hi], dim=-2)  # [B, 2, 2] original-image corners of the region
    in_student = apply_matrix(matrices_student, corners)
    s_lo, s_hi = in_student.amin(dim=-2), in_student.amax(dim=-2)  # [B, 2] rectangle in the student view
    t = (torch.arange(cells, device=s_lo.device, dtype=s_lo.dtype) + 0.5) / cells
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    unit = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # [cells^2, 2] row-major
    points = s_lo[:, None, :] + unit[None] * (s_hi - s_lo)[:, None, :]
    return points, valid
