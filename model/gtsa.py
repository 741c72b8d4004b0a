"""GTSA as a module (docs/methods.md, "GTSA"): a timm ViT student with dense projector, predictor and
rotation head; an EMA teacher (encoder + projector) on the global views.

``forward`` groups the views by resolution (one encoder call per size), then for every student
resolution stacks all its (teacher global t, student view v) pairs x images into one aligned-loss
computation (one ``grid_sample`` per map) and one patch-correspondence computation. The aligned
targets come from the batch's view matrices through :mod:`pipeline.geometry` only.
Build it through ``model.registry.METHODS["gtsa"](options)``; options and defaults are
:data:`GTSA_DEFAULTS`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.contract import split_decay
from model.ema import EMATeacher
from model.gtsa_heads import DensePredictor, ResidualConvProjector, RotationHead
from model.gtsa_loss import aligned_loss, aligned_samples, patch_correspondence_loss, pc_keep, rotation_loss
from model.options import resolve_options
from model.pairs import PairRows, checked_views, global_view_count, looped_pair_rows
from model.vit import ViTEncoder, disable_drop_path, export_timm_vit, vit_model_kwargs
from pipeline.batch import ViewBatch
from pipeline.views import student_teacher_pairs

# The one place GTSA's defaults live (the paper's values, docs/methods.md).
GTSA_DEFAULTS: dict[str, Any] = {
    "arch": "vit_small_patch16_224",  # any timm ViT name
    "model_kwargs": {},  # extra timm.create_model kwargs, e.g. {patch_size: 8, depth: 4}
    "img_size": 224,  # position-embedding grid; other view sizes are interpolated
    "drop_path_rate": 0.1,  # student only; the teacher has none
    "proj_hidden": None,  # projector width; None: the encoder's width (384 for ViT-S)
    "proj_dim": 768,
    "proj_blocks": 2,
    "pred_hidden": 768,
    "rot_hidden": 768,
    "rot_bottleneck": 128,
    "aligned_cells_global": 10,  # S x S grid over the shared region, global student view
    "aligned_cells_local": 4,  # ... local student view
    "pc_keep_ratio": 0.5,  # K = int(N_student_tokens * ratio): 98 of 14x14, 18 of 6x6
    "pc_warmup_epochs": 11,  # patch-correspondence loss off (logged, no gradient) before this epoch
    "aligned_weight": 1.0,
    "pc_weight": 0.5,
    "rot_weight": 0.5,
    "momentum_base": 0.996,  # EMA momentum, cosine from base to final
    "momentum_final": 1.0,
    "num_global": None,  # None: the leading views of the largest size
    "batched_pairs": True,  # False: a Python loop over the 18 pairs (the benchmark's baseline)
}


class GTSAStudent(nn.Module):
    """Encoder, projector, predictor, rotation head (parameter names shared with the teacher)."""

    def __init__(self, encoder: ViTEncoder, projector: ResidualConvProjector, predictor: DensePredictor, rot_head: RotationHead):
        super().__init__()
        self.encoder, self.projector, self.predictor, self.rot_head = encoder, projector, predictor, rot_head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[n, 3, H, W]`` -> prediction map ``[n, C, h, w]`` and rotation logits ``[n, 4]``."""
        f = self.encoder(x)
        return self.predictor(self.projector(f)), self.rot_head(f.mean(dim=(2, 3)))


class GTSATeacher(nn.Module):
    """Encoder (no drop-path) and projector: ``[n, 3, H, W]`` -> ``[n, C, h, w]``."""

    def __init__(self, encoder: ViTEncoder, projector: ResidualConvProjector) -> None:
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: Tensor) -> Tensor:
        """``[n, 3, H, W]`` -> projected map ``[n, C, h, w]``."""
        return self.projector(self.encoder(x))


@dataclass
class StudentGroup:
    """Student outputs for the views of one resolution: ``maps [n, B, C, h, w]``."""

    views: list[int]
    maps: Tensor
    size: tuple[int, int]
    is_global: bool


@dataclass
class Embedded:
    """What the losses need: student groups, teacher maps ``[G, B, C, ht, wt]`` of the global views,
    rotation logits ``[V*B, 4]`` and their targets ``[V*B]`` (view-major)."""

    student: list[StudentGroup]
    teacher: Tensor
    teacher_size: tuple[int, int]
    rot_logits: Tensor
    rot_targets: Tensor


class GTSA(EMATeacher, nn.Module):
    """GTSA (docs/methods.md). ``GTSA(**options)``, options as in :data:`GTSA_DEFAULTS`."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        o = resolve_options("gtsa", GTSA_DEFAULTS, options)
        self.options = o
        kwargs = vit_model_kwargs(o["img_size"], o["model_kwargs"])
        encoder = ViTEncoder(o["arch"], kwargs, o["drop_path_rate"])
        dim = encoder.embed_dim
        projector = ResidualConvProjector(dim, o["proj_hidden"] or dim, o["proj_dim"], o["proj_blocks"])
        predictor = DensePredictor(o["proj_dim"], o["pred_hidden"], o["proj_dim"])
        self.student = GTSAStudent(encoder, projector, predictor, RotationHead(dim, o["rot_hidden"], o["rot_bottleneck"]))
        self.teacher = GTSATeacher(disable_drop_path(copy.deepcopy(encoder)), copy.deepcopy(projector))
        self.teacher.requires_grad_(False)
        self.epoch = 0
        self._pair_rows = PairRows()

    # --- the contract (model/contract.py) ---------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """The patch-correspondence loss counts from epoch ``pc_warmup_epochs`` (0-based) on."""
        self.epoch = int(epoch)

    @property
    def pc_active(self) -> bool:
        """True once the patch-correspondence warm-up is over (its loss then carries gradients)."""
        return self.epoch >= self.options["pc_warmup_epochs"]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The student's parameters; no decay for norms, biases, pos_embed, cls_token."""
        return split_decay(self.student)

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """The student ViT as a timm state dict plus ``backbone.json`` (:func:`model.vit.export_timm_vit`)."""
        return export_timm_vit(self.student.encoder, out_dir, method="gtsa")

    def forward(self, batch: ViewBatch) -> dict[str, Tensor]:
        """``{"loss", "aligned", "pc", "rot", "rot_acc", "embeddings"}``: the fp32 loss with grad,
        detached scalar terms, and the teacher's projector tokens of global view 0 ``[B*h*w, C]``."""
        emb = self.embed(batch)
        aligned, valid, pc = self.objective(emb.student, emb.teacher, emb.teacher_size, batch.matrices)
        l_aligned = (aligned * valid).sum() / valid.sum().clamp(min=1)
        l_pc = pc.mean()
        l_rot, rot_acc = rotation_loss(emb.rot_logits, emb.rot_targets)
        o = self.options
        loss = o["aligned_weight"] * l_aligned + o["rot_weight"] * l_rot
        if self.pc_active:
            loss = loss + o["pc_weight"] * l_pc
        teacher = emb.teacher
        tokens = teacher[0].detach().flatten(2).transpose(1, 2).reshape(-1, teacher.shape[2])
        return {
            "loss": loss,
            "aligned": l_aligned.detach(),
            "pc": l_pc.detach(),
            "rot": l_rot.detach(),
            "rot_acc": rot_acc,
            "embeddings": tokens,
        }

    # --- pieces -----------------------------------------------------------------------------------

    def embed(self, batch: ViewBatch) -> Embedded:
        """Student maps and rotation logits of every view (one encoder call per view size) and the
        teacher's maps of the global views (no gradient)."""
        views, b = checked_views(batch, "GTSA"), batch.batch_size
        g = self.global_view_count(batch)
        groups, logits, turns = [], [], []
        by_size: dict[tuple, list[int]] = {}
        for i, v in enumerate(views):
            by_size.setdefault((tuple(v.shape[-2:]), i < g), []).append(i)
        for (size, is_global), idx in by_size.items():
            p, r = self.student(torch.cat([views[i] for i in idx]))
            groups.append(StudentGroup(idx, p.view(len(idx), b, *p.shape[1:]), size, is_global))
            logits.append(r)
            turns.append(batch.rotation[:, idx].transpose(0, 1).reshape(-1))  # view-major, as cat
        with torch.no_grad():
            k = self.teacher(torch.cat(views[:g]))
        return Embedded(groups, k.view(g, b, *k.shape[1:]), tuple(views[0].shape[-2:]), torch.cat(logits), torch.cat(turns))

    def global_view_count(self, batch: ViewBatch) -> int:
        """Option ``num_global``, else the number of leading views of the largest size."""
        return global_view_count(batch.views, self.options["num_global"])

    def objective(self, groups: list[StudentGroup], teacher: Tensor, teacher_size: tuple[int, int], matrices: Tensor):
        """Per-row aligned loss, its validity and pc loss over all pairs x images; ``teacher
        [G, B, C, ht, wt]``, ``matrices [B, V, 3, 3]``. pc rows are detached during warm-up."""
        pairs = student_teacher_pairs(teacher.shape[0], matrices.shape[1])  # (student view, teacher view)
        run = self._group_rows if self.options["batched_pairs"] else self._looped_rows
        parts = [run(grp, teacher, teacher_size, [p for p in pairs if p[0] in grp.views], matrices) for grp in groups]
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ValueError("GTSA needs at least two views")
        aligned, valid, pc = (torch.cat([p[i] for p in parts]) for i in range(3))
        return aligned, valid.float(), (pc if self.pc_active else pc.detach())

    def _rows(self, z: Tensor, k: Tensor, ms: Tensor, mt: Tensor, grp: StudentGroup, teacher_size: tuple[int, int]):
        """One batch of rows: student maps ``z [R, C, h, w]``, teacher maps ``k [R, C, ht, wt]``,
        matrices ``[R, 3, 3]`` -> aligned ``[R]``, valid ``[R]``, pc ``[R]``."""
        o = self.options
        cells = o["aligned_cells_global"] if grp.is_global else o["aligned_cells_local"]
        s, t, valid = aligned_samples(z, k, ms, mt, grp.size, teacher_size, cells)
        keep = pc_keep(z.shape[-2] * z.shape[-1], o["pc_keep_ratio"])
        pc = patch_correspondence_loss(z.flatten(2).transpose(1, 2), k.flatten(2).transpose(1, 2), keep)
        return aligned_loss(s, t), valid, pc

    def _group_rows(
        self, grp: StudentGroup, teacher: Tensor, teacher_size: tuple[int, int], pairs: list[tuple[int, int]], matrices: Tensor
    ):
        """All pairs whose student view is in ``grp``, pair-major rows, in one computation."""
        if not pairs:
            return None
        z, k, ms, mt = self._pair_rows.gather(grp.maps, grp.views, teacher, pairs, matrices)  # [P*B, C, h, w]
        return self._rows(z, k, ms, mt, grp, teacher_size)

    def _looped_rows(
        self, grp: StudentGroup, teacher: Tensor, teacher_size: tuple[int, int], pairs: list[tuple[int, int]], matrices: Tensor
    ):
        """The rows of :meth:`_group_rows`, one pair at a time (the benchmark's baseline)."""
        if not pairs:
            return None
        return looped_pair_rows(
            lambda z, k, ms, mt: self._rows(z, k, ms, mt, grp, teacher_size), grp.maps, grp.views, teacher, pairs, matrices
        )
