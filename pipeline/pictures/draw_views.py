"""Figures of a batch's views: matches of M, inverse coordinate maps, GTSA's aligned grids.

Each function takes a :class:`~pipeline.batch.ViewBatch` with uint8 views (see
:func:`pipeline.pictures.batch_source.picture_batch`) and returns a matplotlib figure; what is drawn
comes from :mod:`pipeline.pictures.marks`. Images are placed with ``extent=(0, w, h, 0)`` so data
coordinates are the contract's continuous view pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.batch import ViewBatch
from pipeline.pictures.figure import pyplot
from pipeline.pictures.marks import (
    aligned_grid,
    coordinate_colours,
    match_segments,
    original_colour_key,
    shared_region_corners,
    view_label,
)

TEACHER = 0  # the teacher global view every picture pairs the others with


def num_global(batch: ViewBatch) -> int:
    """Global views come first and are the largest (every recipe of :mod:`pipeline.views`)."""
    first = batch.views[0].shape[-1]
    return sum(1 for v in batch.views if v.shape[-1] == first)


def view_name(batch: ViewBatch, v: int) -> str:
    """Label of view ``v``: ``"global k"`` or ``"local k"``, counted from 1."""
    g = num_global(batch)
    return f"global {v + 1}" if v < g else f"local {v - g + 1}"


def shown_views(batch: ViewBatch, locals_shown: int) -> list[int]:
    """Every global view, then the first ``locals_shown`` local views."""
    g = num_global(batch)
    return list(range(g)) + list(range(g, min(batch.num_views, g + locals_shown)))


def _size(batch: ViewBatch, v: int) -> tuple[int, int]:
    return tuple(batch.views[v].shape[-2:])


def _caption(batch: ViewBatch, b: int, v: int) -> str:
    return view_label(view_name(batch, v), batch.matrices[b, v], int(batch.rotation[b, v]), _size(batch, v))


def _show(ax: Any, image: np.ndarray, title: str, gid: str | None = None) -> None:
    """``image`` ``[h, w, 3]`` uint8 or float in [0, 1], drawn in view-pixel coordinates.

    ``gid`` tags the axes (``"view:b:v"``, ``"map:b:v"``) so that tests can find what was drawn where.
    """
    h, w = image.shape[:2]
    ax.set_gid(gid)
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _pixels(batch: ViewBatch, b: int, v: int) -> np.ndarray:
    return batch.views[v][b].permute(1, 2, 0).numpy()


def _row_label(ax: Any, batch: ViewBatch, b: int) -> None:
    key = batch.keys[b] if batch.keys else f"image {b}"
    w, h = batch.image_size[b].tolist()
    ax.set_ylabel(f"{key}\n{w}×{h}", fontsize=8)


def _pair_grid(plt: Any, rows: int, pairs: int, panel: float = 2.2) -> tuple[Any, list[list[tuple[Any, Any]]]]:
    """A figure of ``rows x pairs`` pairs of square axes, a gap between pairs."""
    fig = plt.figure(figsize=(pairs * 2 * panel + (pairs - 1) * 0.3, rows * (panel + 0.6)))
    ratios = [1.0, 1.0, 0.15] * pairs
    gs = fig.add_gridspec(rows, 3 * pairs - 1, width_ratios=ratios[:-1], wspace=0.05, hspace=0.35)
    axes = [[(fig.add_subplot(gs[r, 3 * p]), fig.add_subplot(gs[r, 3 * p + 1])) for p in range(pairs)] for r in range(rows)]
    return fig, axes


def matches_figure(
    batch: ViewBatch,
    stride: float,
    threshold: float = 0.7,
    images: int = 2,
    locals_shown: int = 3,
    max_lines: int = 30,
    title: str = "",
) -> Any:
    """Per image, the teacher global view next to each other view, lines joining the cells M matches.

    Lines from one teacher cell share a colour; ``|M|`` is the number of matched cell pairs, of
    which at most ``max_lines`` are drawn.
    """
    plt = pyplot()
    from matplotlib.patches import ConnectionPatch

    others = [v for v in shown_views(batch, locals_shown) if v != TEACHER]
    rows = min(images, batch.batch_size)
    fig, axes = _pair_grid(plt, rows, len(others))
    cmap = plt.get_cmap("hsv")
    size_t = _size(batch, TEACHER)
    cells_t = (size_t[0] // stride) * (size_t[1] // stride)
    for b in range(rows):
        for p, v in enumerate(others):
            ax_t, ax_v = axes[b][p]
            segments = match_segments(
                batch.matrices[b, TEACHER], batch.matrices[b, v], size_t, _size(batch, v), stride, threshold
            )
            total = len(segments)
            if total > max_lines:
                segments = match_segments(
                    batch.matrices[b, TEACHER],
                    batch.matrices[b, v],
                    size_t,
                    _size(batch, v),
                    stride,
                    threshold,
                    max_lines=max_lines,
                    seed=b * 1000 + v,
                )
            _show(ax_t, _pixels(batch, b, TEACHER), _caption(batch, b, TEACHER) + " (teacher)", f"view:{b}:{TEACHER}")
            drawn = "all drawn" if total <= max_lines else f"{len(segments)} drawn"
            _show(ax_v, _pixels(batch, b, v), f"{_caption(batch, b, v)}\n|M| = {total} ({drawn})", f"view:{b}:{v}")
            for (xa, ya), (xb, yb) in segments:
                cell = int(ya // stride) * int(size_t[1] // stride) + int(xa // stride)
                colour = cmap(cell / max(cells_t, 1))
                fig.add_artist(
                    ConnectionPatch(
                        (xa, ya),
                        (xb, yb),
                        coordsA=ax_t.transData,
                        coordsB=ax_v.transData,
                        color=colour,
                        linewidth=0.9,
                        alpha=0.85,
                    )
                )
                ax_t.plot(xa, ya, "o", color=colour, markersize=3, markeredgecolor="white", markeredgewidth=0.4)
                ax_v.plot(xb, yb, "o", color=colour, markersize=3, markeredgecolor="white", markeredgewidth=0.4)
        _row_label(axes[b][0][0], batch, b)
    fig.suptitle(title or f"cells matched by M (stride {stride:g}, threshold {threshold:g} × cell diagonal)", fontsize=10)
    return fig


def inverse_maps_figure(batch: ViewBatch, images: int = 2, locals_shown: int = 3, title: str = "") -> Any:
    """Per image, the colour key of the original, then each view next to its inverse coordinate map
    (red = original x / W, green = original y / H: one original point, one colour in every view)."""
    plt = pyplot()
    shown = shown_views(batch, locals_shown)
    rows = min(images, batch.batch_size)
    panel = 1.9
    fig = plt.figure(figsize=(panel * (1.4 + 2 * len(shown)) + 0.3 * len(shown), rows * (panel + 0.6)))
    ratios = [1.4] + [0.12, 1.0, 1.0] * len(shown)
    gs = fig.add_gridspec(rows, len(ratios), width_ratios=ratios, wspace=0.05, hspace=0.35)
    for b in range(rows):
        w, h = batch.image_size[b].tolist()
        ax = fig.add_subplot(gs[b, 0])
        _show(ax, original_colour_key((w, h)), "colour key: original\nx → red, y → green")
        _row_label(ax, batch, b)
        for k, v in enumerate(shown):
            size = _size(batch, v)
            _show(fig.add_subplot(gs[b, 2 + 3 * k]), _pixels(batch, b, v), _caption(batch, b, v), f"view:{b}:{v}")
            _show(
                fig.add_subplot(gs[b, 3 + 3 * k]),
                coordinate_colours(batch.matrices[b, v], size, (w, h)),
                "inverse map",
                f"map:{b}:{v}",
            )
    fig.suptitle(title or "views and their inverse coordinate maps (stride 1)", fontsize=10)
    return fig


def _draw_grid(ax: Any, points: np.ndarray, corners: np.ndarray, cells: int, colours: np.ndarray) -> None:
    """Region outline, row polylines (student order), coloured points (gid ``"grid"``), cell numbers."""
    ring = np.vstack([corners, corners[:1]])
    ax.plot(ring[:, 0], ring[:, 1], "--", color="white", linewidth=1.0)
    grid = points.reshape(cells, cells, 2)
    for r in range(cells):
        ax.plot(grid[r, :, 0], grid[r, :, 1], "-", color="white", linewidth=0.5, alpha=0.7)
    ax.scatter(
        points[:, 0], points[:, 1], c=colours, s=14 if cells <= 4 else 7, edgecolors="black", linewidths=0.3, zorder=3, gid="grid"
    )
    last = cells * cells - 1
    numbered = range(cells * cells) if cells <= 4 else (0, 1, cells - 1, last - cells + 1, last)
    for k in numbered:
        ax.annotate(
            str(k),
            points[k],
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=6,
            color="black",
            bbox=dict(boxstyle="round,pad=0.1", facecolor="white", alpha=0.7, linewidth=0),
        )


def aligned_grids_figure(
    batch: ViewBatch, cells_global: int = 10, cells_local: int = 4, images: int = 2, locals_shown: int = 2, title: str = ""
) -> Any:
    """Per image and student view, GTSA's aligned grid on the student view and the same points in the
    teacher view: cell ``k`` has one colour and number in both, rows are drawn as lines."""
    plt = pyplot()
    students = [v for v in shown_views(batch, locals_shown) if v != TEACHER]
    rows = min(images, batch.batch_size)
    fig, axes = _pair_grid(plt, rows, len(students))
    g = num_global(batch)
    size_t = _size(batch, TEACHER)
    for b in range(rows):
        for p, v in enumerate(students):
            ax_s, ax_t = axes[b][p]
            cells = cells_global if v < g else cells_local
            size_s = _size(batch, v)
            ms, mt = batch.matrices[b, v], batch.matrices[b, TEACHER]
            pts_s, pts_t, valid = aligned_grid(ms, mt, size_s, size_t, cells)
            _show(ax_s, _pixels(batch, b, v), f"{_caption(batch, b, v)} (student)\n{cells}×{cells} grid", f"view:{b}:{v}")
            _show(ax_t, _pixels(batch, b, TEACHER), _caption(batch, b, TEACHER) + " (teacher)", f"teacher-of:{b}:{v}")
            if not valid:
                ax_s.text(0.5, 0.5, "no overlap", transform=ax_s.transAxes, ha="center", color="red")
                continue
            colours = plt.get_cmap("turbo")(np.linspace(0.0, 1.0, cells * cells))
            corners_s, corners_t = shared_region_corners(ms, mt, size_s, size_t)
            _draw_grid(ax_s, pts_s, corners_s, cells, colours)
            _draw_grid(ax_t, pts_t, corners_t, cells, colours)
        _row_label(axes[b][0][0], batch, b)
    fig.suptitle(
        title
        or "aligned grids over the shared region: cell k is the same place in both views "
        "(dashed: shared region; lines: grid rows in the student's frame)",
        fontsize=10,
    )
    return fig
