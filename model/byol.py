"""The global-only baseline: a BYOL-style image-level objective on the same views and backbone.

Student: ResNet trunk -> global average pool -> MLP projector -> MLP predictor. Teacher: EMA of
trunk + projector, on the global views only. Every teacher global view is regressed from every
other view (the pairs of :func:`model.pairs.student_teacher_pairs`), so the views, the trunk, the
EMA schedule and the pairs are CLoVE's: only the locality of the objective differs. This is the
"global-only" row the CLoVE paper compares against.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.backbones import build_backbone
from model.byol_loss import byol_pair_loss
from model.contract import split_decay
from model.ema import EMATeacher
from model.options import resolve_options
from model.pairs import checked_views, global_view_count, views_by_size
from model.resnet_export import export_resnet
from pipeline.batch import ViewBatch
from pipeline.views import student_teacher_pairs

BYOL_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet50",  # torchvision name: resnet18 (CPU runs), resnet50, ...
    "weights": None,  # local path to torchvision-named ResNet weights; never downloaded
    "zero_init_residual": True,
    "proj_hidden": 4096,
    "proj_dim": 256,
    "pred_hidden": 4096,
    "momentum_base": 0.99,
    "momentum_final": 1.0,
    "num_global": 2,  # the leading views the teacher sees
}


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """BYOL's MLP: Linear -> BN -> ReLU -> Linear. ``[N, in_dim]`` -> ``[N, out_dim]``."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class PooledEncoder(nn.Module):
    """Trunk -> global average pool -> projector: ``[B, 3, H, W]`` -> ``[B, proj_dim]``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: Tensor) -> Tensor:
        """Pooled projection: ``[B, 3, H, W]`` -> ``[B, proj_dim]``."""
        return self.projector(self.backbone(x).mean(dim=(-2, -1)))


class BYOL(EMATeacher, nn.Module):
    """Global-only baseline (method contract of ``model/contract.py``); ``BYOL(**options)`` with the
    keys of :data:`BYOL_DEFAULTS`."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        o = resolve_options("byol", BYOL_DEFAULTS, options)
        self.options = o
        trunk = build_backbone(o["backbone"], o["weights"], zero_init_residual=o["zero_init_residual"])
        self.student = PooledEncoder(trunk, mlp(trunk.out_channels, o["proj_hidden"], o["proj_dim"]))
        self.predictor = mlp(o["proj_dim"], o["pred_hidden"], o["proj_dim"])
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)

    def set_epoch(self, epoch: int) -> None:
        """The objective does not change with the epoch."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Student and predictor parameters, split by :func:`model.contract.split_decay` in one pass
        (student first), so each group holds both networks' parameters of its kind."""
        return split_decay(nn.ModuleList([self.student, self.predictor]))

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """Writes the student ResNet trunk via :func:`model.resnet_export.export_resnet`; returns the paths."""
        return export_resnet(self.student.backbone, out_dir, method="byol")

    def forward(self, batch: ViewBatch) -> dict[str, Tensor]:
        """``{"loss": fp32 scalar, "embeddings": [B, D] teacher projections of view 0}``.

        Views of one size go through the student together (BatchNorm statistics per size, as in
        CLoVE); the teacher sees the ``num_global`` leading views.
        """
        views, b = checked_views(batch, "BYOL"), batch.batch_size
        g = global_view_count(views, self.options["num_global"])
        preds: list[Tensor | None] = [None] * len(views)
        for idx in views_by_size(views).values():
            p = self.predictor(self.student(torch.cat([views[i] for i in idx])))
            for n, i in enumerate(idx):
                preds[i] = p[n * b : (n + 1) * b]
        with torch.no_grad():
            k = self.teacher(torch.cat(views[:g])).view(g, b, -1)
        pairs = student_teacher_pairs(g, len(views))
        p_all = torch.cat([preds[s] for s, _ in pairs])
        k_all = torch.cat([k[t] for _, t in pairs])
        loss = byol_pair_loss(p_all, k_all).mean()
        return {"loss": loss, "embeddings": k[0].detach()}
