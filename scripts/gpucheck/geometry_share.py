"""Time CLoVE's geometry (M and the inverse maps inside it) on real batches from the loader.

CLoVE (``model/clove.py``) computes M once per group of student views of one size: the rows of
all (student view, teacher global view) pairs of the group are stacked, pair-major, and
:func:`pipeline.geometry.correspondence_mask` maps every cell centre of both views back to the
original image (the inverse maps), measures the cell diagonals there and thresholds one batched
``cdist``. :func:`clove_geometry` repeats exactly that call pattern (index tensors built once, as
CLoVE caches them), and this command times it, synchronised, on batches of the configured loader.
Divided by a training step's time it is the share of the step spent on M.

    python -m gpucheck.geometry_share --shards DIR --backend torch --device cuda --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from pipeline.geometry import correspondence_mask
from pipeline.views import student_teacher_pairs as clove_pairs

RESNET_STRIDE = 32  # C5 of a ResNet: five halvings


def feature_grid(size: int, stride: int = RESNET_STRIDE) -> int:
    """Cells per side of a ResNet C5 map for a ``size``-pixel view (each halving rounds up)."""
    return math.ceil(size / stride)


class CLoVEGeometry:
    """The M computation of one CLoVE step for a fixed view layout (see module doc)."""

    def __init__(self, view_sizes: list[int], num_global: int, t_pos: float, device: torch.device) -> None:
        pairs = clove_pairs(num_global, len(view_sizes))
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(view_sizes):  # grouped by size in view order, as CLoVE.embed does
            groups.setdefault(s, []).append(i)
        g_teacher = feature_grid(view_sizes[0])
        self.teacher = ((g_teacher, g_teacher), view_sizes[0] / g_teacher)
        self.t_pos = t_pos
        self.calls = []
        for size, views in groups.items():
            mine = [p for p in pairs if p[0] in views]
            if mine:
                g = feature_grid(size)
                idx = (torch.tensor([s for s, _ in mine], device=device), torch.tensor([t for _, t in mine], device=device))
                self.calls.append((idx, (g, g), size / g))
        self.num_pairs = len(pairs)

    def __call__(self, matrices: Tensor) -> list[Tensor]:
        """``matrices [B, V, 3, 3]`` -> one mask ``[P*B, N_s, N_t]`` per view-size group."""
        masks = []
        for (s_view, t_view), grid, stride in self.calls:
            ms = matrices[:, s_view].transpose(0, 1).flatten(0, 1)
            mt = matrices[:, t_view].transpose(0, 1).flatten(0, 1)
            with torch.autocast(matrices.device.type, enabled=False):
                masks.append(
                    correspondence_mask(ms.float(), mt.float(), grid, stride, self.teacher[0], self.teacher[1], self.t_pos)
                )
        return masks


def mean_matches(masks: list[Tensor]) -> float:
    """Mean |M| per (pair, image) row, as CLoVE's forward reports it in ``matches``."""
    return torch.cat([m.sum(dim=(1, 2)) for m in masks]).float().mean().item()


def time_geometry(geometry: CLoVEGeometry, matrices: list[Tensor], reps: int, device: torch.device) -> float:
    """Milliseconds per call, cycling over ``matrices``, synchronised before and after."""
    for m in matrices:  # warm-up: kernels, caches
        geometry(m)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(reps):
        geometry(matrices[i % len(matrices)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - t0) / reps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--batch-size``, ``--batches`` and ``--reps`` below 1 are errors."""
    ap = argparse.ArgumentParser(
        prog="python -m gpucheck.geometry_share", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shards", required=True, help="shard directory, glob or URL")
    ap.add_argument("--backend", default="torch", choices=["cpu", "torch", "dali"], help="loader backend")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--num-local", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=3, help="loader batches whose matrices are timed")
    ap.add_argument("--reps", type=int, default=50, help="timed calls")
    ap.add_argument("--t-pos", type=float, default=0.7, help="CLoVE's threshold")
    ap.add_argument("--json-out", required=True, help="JSON-lines file; one line is appended")
    args = ap.parse_args(argv)
    if min(args.batch_size, args.batches, args.reps) < 1:
        ap.error("--batch-size, --batches and --reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Time CLoVE's M on the loader's matrices and append one JSON line to ``--json-out``; returns 0."""
    args = parse_args(argv)

    from pipeline.config import LoaderConfig
    from pipeline.loader import build_loader

    device = torch.device(args.device)
    cfg = LoaderConfig(
        shards=args.shards,
        backend=args.backend,
        recipe="clove",
        global_size=args.global_size,
        local_size=args.local_size,
        num_local=args.num_local,
        batch_size=args.batch_size,
        num_workers=args.workers,
        samples_per_epoch=args.batch_size * args.batches,
        photometric=False,
        pin_memory=device.type == "cuda",
    )
    loader = build_loader(cfg, device=device)
    batches = iter(loader)
    matrices = [next(batches).matrices.to(device) for _ in range(args.batches)]
    if hasattr(batches, "close"):
        batches.close()
    sizes = [args.global_size] * 2 + [args.local_size] * args.num_local
    geometry = CLoVEGeometry(sizes, 2, args.t_pos, device)
    ms = time_geometry(geometry, matrices, args.reps, device)
    record = {
        "geometry_ms": round(ms, 4),
        "reps": args.reps,
        "batch_size": args.batch_size,
        "backend": args.backend,
        "device": str(device),
        "pairs": geometry.num_pairs,
        "correspondence_mask_calls": len(geometry.calls),
        "mean_matches": round(mean_matches(geometry(matrices[0])), 2),
        "how": "CLoVE's M call pattern (pairs stacked per view-size group, one correspondence_mask each, fp32) "
        "on loader matrices, synchronised; per training step",
    }
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(
        f"CLoVE geometry: {ms:.3f} ms per step ({geometry.num_pairs} pairs, {len(geometry.calls)} calls, "
        f"batch {args.batch_size}, {device})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
