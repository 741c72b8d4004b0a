"""CLoVE as a module: student (backbone, projector, attention), EMA teacher (backbone, projector).

The module's ``forward`` takes a :class:`pipeline.batch.ViewBatch` whose views are normalised
float on the device and returns the loss and its terms. Views are grouped by resolution, so the
student runs its backbone once on all global views and once per local size, and the teacher once
on the global views. M is computed on the device from the batch's matrices with
:func:`pipeline.geometry.correspondence_mask`, at stride ``view size / feature-map size``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.backbones import build_backbone
from model.clove_loss import clove_pair_loss
from model.contextual import ContextualAttention
from model.contract import split_decay
from model.ema import EMATeacher
from model.heads import DenseProjector
from model.options import resolve_options
from model.pairs import PairRows, checked_views, global_view_count, looped_pair_rows, views_by_size
from model.resnet_export import export_resnet
from pipeline.batch import ViewBatch
from pipeline.geometry import correspondence_mask
from pipeline.views import student_teacher_pairs


class CLoVEStudent(nn.Module):
    """Backbone -> dense projector -> contextual attention: ``[B, 3, H, W]`` -> ``[B, h*w, D]`` unit rows."""

    def __init__(self, backbone: nn.Module, projector: DenseProjector, attention: ContextualAttention) -> None:
        super().__init__()
        self.backbone, self.projector, self.attention = backbone, projector, attention

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, 3, H, W]`` -> (``[B, h*w, D]`` unit rows, ``(h, w)``)."""
        f = self.projector(self.backbone(x))
        return self.attention(f), (f.shape[-2], f.shape[-1])


class CLoVETeacher(nn.Module):
    """Backbone -> dense projector -> L2 norm: ``[B, 3, H, W]`` -> ``[B, h*w, D]`` unit rows."""

    def __init__(self, backbone: nn.Module, projector: DenseProjector) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, 3, H, W]`` -> (``[B, h*w, D]`` unit rows, ``(h, w)``)."""
        f = self.projector(self.backbone(x))
        return nn.functional.normalize(f.flatten(2).transpose(1, 2), dim=-1), (f.shape[-2], f.shape[-1])


@dataclass
class ViewGroup:
    """Embeddings of the views of one resolution: ``emb [n_views, B, h*w, D]``."""

    views: list[int]
    emb: Tensor
    grid: tuple[int, int]
    stride: float


@dataclass
class Embeddings:
    """Student groups (every view, grouped by size) and the teacher group (global views)."""

    student: list[ViewGroup]
    teacher: ViewGroup
    num_global: int


def _stride(view: Tensor, grid: tuple[int, int]) -> float:
    """View pixels per feature cell; square views give the same value on both axes."""
    sh, sw = view.shape[-2] / grid[0], view.shape[-1] / grid[1]
    if abs(sh - sw) > 1e-6:
        raise ValueError(f"view {tuple(view.shape[-2:])} with a {grid} map has anisotropic stride {sh}x{sw}")
    return sh


CLOVE_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet50",  # torchvision name: resnet18 (CPU runs), resnet50 (paper), ...
    "weights": None,  # local path to torchvision-named ResNet weights; never downloaded
    "zero_init_residual": True,  # last BN gamma of every residual block starts at 0 (CLoVE, BYOL)
    "proj_hidden": 4096,
    "proj_dim": 256,
    "heads": 8,
    "attention": "dot",  # dot (reference code) | cosine (paper's normalized attention)
    "attention_temperature": 0.2,  # used by attention=cosine only
    "t_pos": 0.7,  # M: centre distance < t_pos * max(cell diagonals) in original-image pixels
    "gamma": 2.0,
    "margin": 100.0,
    "neg_rank_first": 2,  # hard negatives: ranks first..last among keys not in M(i)
    "neg_rank_last": 10,
    "momentum_base": 0.99,  # EMA momentum, cosine from this ...
    "momentum_final": 1.0,  # ... to this at the last step
    "num_global": None,  # None: the leading views of the largest size are the global ones
    "channels_last": False,
    "batched_pairs": True,  # False loops over the (student, teacher) pairs in Python (baseline)
}


class CLoVE(EMATeacher, nn.Module):
    """CLoVE (the method contract of ``model/contract.py``). ``CLoVE(**options)`` with the keys of
    :data:`CLOVE_DEFAULTS`; built by the registry as ``METHODS["clove"](options)``."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        o = resolve_options("clove", CLOVE_DEFAULTS, options)
        self.options = o
        trunk = build_backbone(o["backbone"], o["weights"], zero_init_residual=o["zero_init_residual"])
        projector = DenseProjector(trunk.out_channels, o["proj_hidden"], o["proj_dim"])
        attn = ContextualAttention(o["proj_dim"], o["heads"], o["attention"], o["attention_temperature"])
        self.student = CLoVEStudent(trunk, projector, attn)
        self.teacher = CLoVETeacher(copy.deepcopy(trunk), copy.deepcopy(projector))
        self.teacher.requires_grad_(False)
        if not 1 <= o["neg_rank_first"] <= o["neg_rank_last"]:
            raise ValueError(f"need 1 <= neg_rank_first <= neg_rank_last, got {o['neg_rank_first']}, {o['neg_rank_last']}")
        self.t_pos, self.gamma, self.margin = float(o["t_pos"]), float(o["gamma"]), float(o["margin"])
        self.neg_ranks = (int(o["neg_rank_first"]), int(o["neg_rank_last"]))
        self.num_global = o["num_global"]
        self.channels_last = bool(o["channels_last"])
        self.batched_pairs = bool(o["batched_pairs"])
        self._pair_rows = PairRows()
        self._rows_fn = None  # set by compile_objective()
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    # --- what the training loop calls -----------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """CLoVE's objective does not change with the epoch."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The student's parameters (the teacher has none trainable), split by :func:`split_decay`."""
        return split_decay(self.student)

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """The student trunk in torchvision (and for bottleneck ResNets detectron2) format."""
        return export_resnet(self.student.backbone, out_dir, method="clove")

    def forward(self, batch: ViewBatch) -> dict[str, Tensor]:
        """``{"loss": scalar fp32 with grad, "positive", "negative", "matches": detached scalars,
        "embeddings": [B * h * w, D] the teacher's unit embeddings of global view 0}``.

        ``positive``/``negative`` are the mean P and N terms, ``matches`` the mean size of M per
        (pair, image); ``embeddings`` feed the loop's collapse monitor on logging steps.
        """
        emb = self.embed(batch)
        loss, pos, neg, matches = self.objective(emb, batch.matrices)
        return {
            "loss": loss,
            "positive": pos.detach(),
            "negative": neg.detach(),
            "matches": matches,
            "embeddings": emb.teacher.emb[0].flatten(0, 1),
        }

    # --- pieces -----------------------------------------------------------------------------------

    def global_view_count(self, batch: ViewBatch) -> int:
        """Option ``num_global``, else the number of leading views of the largest size."""
        return global_view_count(batch.views, self.num_global)

    def _prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def embed(self, batch: ViewBatch) -> Embeddings:
        """Student embeddings of every view (one backbone call per resolution) and teacher
        embeddings of the global views (no gradient)."""
        views, b = checked_views(batch, "CLoVE"), batch.batch_size
        g = self.global_view_count(batch)
        student = []
        for idx in views_by_size(views).values():
            z, grid = self.student(self._prepare(torch.cat([views[i] for i in idx])))
            student.append(ViewGroup(idx, z.view(len(idx), b, *z.shape[1:]), grid, _stride(views[idx[0]], grid)))
        with torch.no_grad():
            k, grid = self.teacher(self._prepare(torch.cat(views[:g])))
        teacher = ViewGroup(list(range(g)), k.view(g, b, *k.shape[1:]), grid, _stride(views[0], grid))
        return Embeddings(student, teacher, g)

    def objective(self, emb: Embeddings, matrices: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean loss, P, N and |M| over every (pair, image); ``matrices [B, V, 3, 3]``."""
        pairs = student_teacher_pairs(emb.num_global, matrices.shape[1])
        if not pairs:
            raise ValueError("CLoVE needs at least two views")
        run = self._group_losses if self.batched_pairs else self._looped_losses
        parts = [run(group, emb.teacher, [p for p in pairs if p[0] in group.views], matrices) for group in emb.student]
        loss, pos, neg, matches = (torch.cat([p[i] for p in parts if p is not None]) for i in range(4))
        return loss.mean(), pos.mean(), neg.mean(), matches.float().mean()

    def compile_step(self) -> None:
        """``torch.compile`` the student, the teacher (in place: parameter names unchanged) and the
        objective, with static shapes: one graph per view resolution (``train.compile``)."""
        self.student.compile(dynamic=False)
        self.teacher.compile(dynamic=False)
        self.compile_objective()

    def compile_objective(self, **kwargs) -> None:
        """``torch.compile`` the per-group M + loss computation (static shapes, one graph per view
        resolution). Eager, it is a few hundred tiny kernels whose launch cost shows on a GPU."""
        self._rows_fn = torch.compile(self._rows_eager, dynamic=False, **kwargs)

    def _rows(self, z: Tensor, k: Tensor, ms: Tensor, mt: Tensor, group: ViewGroup, teacher: ViewGroup):
        fn = self._rows_fn or self._rows_eager
        return fn(z, k, ms, mt, group, teacher)

    def _rows_eager(self, z: Tensor, k: Tensor, ms: Tensor, mt: Tensor, group: ViewGroup, teacher: ViewGroup):
        """Rows of one batch of (pair, image): ``z [R, Nq, D]``, ``k [R, Nk, D]``, ``ms``/``mt``
        ``[R, 3, 3]`` student/teacher matrices -> (loss, P, N, |M|), each ``[R]``."""
        # geometry in fp32 even under autocast: bf16 matmuls would shift cell centres by pixels
        with torch.autocast(ms.device.type, enabled=False):
            mask = correspondence_mask(ms.float(), mt.float(), group.grid, group.stride, teacher.grid, teacher.stride, self.t_pos)
        loss, pos, neg = clove_pair_loss(z, k, mask, self.gamma, self.margin, *self.neg_ranks)
        return loss, pos, neg, mask.sum(dim=(1, 2))

    def _group_losses(self, group: ViewGroup, teacher: ViewGroup, pairs: list[tuple[int, int]], matrices: Tensor):
        """All pairs whose student view is in ``group``, in one batched computation."""
        if not pairs:
            return None
        z, k, ms, mt = self._pair_rows.gather(group.emb, group.views, teacher.emb, pairs, matrices)  # [P*B, N, D]
        return self._rows(z, k, ms, mt, group, teacher)

    def _looped_losses(self, group: ViewGroup, teacher: ViewGroup, pairs: list[tuple[int, int]], matrices: Tensor):
        """Same rows as :meth:`_group_losses`, one pair at a time (the benchmark's baseline)."""
        if not pairs:
            return None
        return looped_pair_rows(
            lambda z, k, ms, mt: self._rows(z, k, ms, mt, group, teacher), group.emb, group.views, teacher.emb, pairs, matrices
        )
