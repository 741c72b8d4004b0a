"""DINO as a module (docs/methods.md, "DINO"): the global-only ViT baseline the GTSA paper compares
against (Caron et al., 2021), on GTSA's encoder, views, EMA schedule and optimizer.

Student: timm ViT -> [CLS] token (the mean patch token when the ViT has none) -> :class:`DINOHead`.
Teacher: EMA of encoder + head, on the global views only, its output centred by a running mean and
sharpened by a temperature warmed up per epoch (``set_epoch``). Every student view is trained
towards every teacher global view but its own (:func:`model.pairs.student_teacher_pairs`). The
rotation labels that GTSA's views carry are not used. Build it through
``model.registry.METHODS["dino"](options)``; options and defaults are :data:`DINO_DEFAULTS`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from model.contract import split_decay
from model.dino_loss import batch_center, dino_loss, mean_entropy, teacher_probs, teacher_temperature, updated_center
from model.ema import EMATeacher
from model.options import resolve_options
from model.pairs import checked_views, global_view_count, views_by_size
from model.vit import ViTEncoder, disable_drop_path, export_timm_vit, vit_model_kwargs
from pipeline.batch import ViewBatch

# The one place DINO's defaults live (the DINO paper's ViT-S values; docs/methods.md).
DINO_DEFAULTS: dict[str, Any] = {
    "arch": "vit_small_patch16_224",  # any timm ViT name, as GTSA
    "model_kwargs": {},  # extra timm.create_model kwargs, e.g. {patch_size: 8, depth: 4}
    "img_size": 224,  # position-embedding grid; other view sizes are interpolated
    "drop_path_rate": 0.1,  # student only; the teacher has none
    "head_layers": 3,  # MLP layers, the last one to the bottleneck
    "head_hidden_dim": 2048,
    "head_bottleneck_dim": 256,
    "out_dim": 65536,  # K, the weight-normalised last layer's outputs; CPU presets use far fewer
    "student_temp": 0.1,
    "warmup_teacher_temp": 0.04,  # teacher temperature at epoch 0 ...
    "teacher_temp": 0.07,  # ... linearly up to this one at epoch warmup_teacher_temp_epochs - 1
    "warmup_teacher_temp_epochs": 30,
    "center_momentum": 0.9,
    "freeze_last_layer_epochs": 1,  # the last layer gets zero gradients before this epoch
    "momentum_base": 0.996,  # EMA momentum, cosine from base to final
    "momentum_final": 1.0,
    "num_global": None,  # None: the leading views of the largest size
}


def _zero_grad(x: Tensor) -> Tensor:
    """``x`` in the forward; a zero gradient (not none: DDP needs every parameter used) in the backward."""
    return x.detach() + 0.0 * x


class DINOHead(nn.Module):
    """MLP (``layers`` linear layers, GELU between them) -> L2-normalise -> weight-normalised linear.

    ``[N, in_dim]`` -> ``[N, out_dim]``. The last layer is ``weight_norm(Linear(bottleneck, out_dim,
    bias=False))`` with its norm ``g`` (``last_layer.parametrizations.weight.original0``) set to 1 and
    frozen, so every row of its weight has norm 1 and only the direction ``v`` is trained. MLP
    linears start from N(0, 0.02) truncated, zero bias; the last layer from PyTorch's default (as
    the reference code)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"head_layers must be >= 1, got {layers}")
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(dims[i], dims[i + 1])] + ([nn.GELU()] if i < layers - 1 else [])
        self.mlp = nn.Sequential(*mods)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(False)

    def forward(self, x: Tensor, freeze_last_layer: bool = False) -> Tensor:
        """``[N, in_dim]`` -> ``[N, out_dim]``; ``freeze_last_layer``: the last layer gets zero gradients."""
        z = F.normalize(self.mlp(x), dim=-1)
        w = self.last_layer.weight  # g * v / ||v|| per row, g = 1
        return F.linear(z, _zero_grad(w) if freeze_last_layer else w)


def global_token(encoder: ViTEncoder, x: Tensor) -> Tensor:
    """The image-level token of a timm ViT: ``[B, 3, H, W]`` -> ``[B, D]``: the [CLS] token after
    the final norm, or the mean of the patch tokens when the ViT has no class token; then timm's
    ``fc_norm`` (an identity unless the ViT was built with an averaging ``global_pool``)."""
    vit = encoder.vit
    tokens = vit.forward_features(x)  # [B, prefix + h*w, D]
    pooled = tokens[:, 0] if getattr(vit, "cls_token", None) is not None else tokens[:, vit.num_prefix_tokens :].mean(1)
    return vit.fc_norm(pooled)


class DINONet(nn.Module):
    """Encoder and head (the student and, copied, the teacher; same parameter names)."""

    def __init__(self, encoder: ViTEncoder, head: DINOHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: Tensor, freeze_last_layer: bool = False) -> tuple[Tensor, Tensor]:
        """``[n, 3, H, W]`` -> image token ``[n, D]`` and head output ``[n, K]``."""
        token = global_token(self.encoder, x)
        return token, self.head(token, freeze_last_layer)


class DINO(EMATeacher, nn.Module):
    """DINO (docs/methods.md). ``DINO(**options)``, options as in :data:`DINO_DEFAULTS`.

    The running center is the buffer ``center`` ``[1, K]`` (saved in the state dict, so a resumed
    run continues it); the teacher temperature follows the epoch set by :meth:`set_epoch`."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        o = resolve_options("dino", DINO_DEFAULTS, options)
        self.options = o
        encoder = ViTEncoder(o["arch"], vit_model_kwargs(o["img_size"], o["model_kwargs"]), o["drop_path_rate"])
        head = DINOHead(encoder.embed_dim, o["out_dim"], o["head_hidden_dim"], o["head_bottleneck_dim"], o["head_layers"])
        self.student = DINONet(encoder, head)
        self.teacher = DINONet(disable_drop_path(copy.deepcopy(encoder)), copy.deepcopy(head))
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, o["out_dim"]))
        self.epoch = 0

    # --- the contract (model/contract.py) ---------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """The teacher temperature and the last layer's freezing follow the epoch (0-based)."""
        self.epoch = int(epoch)

    @property
    def teacher_temp(self) -> float:
        """This epoch's teacher temperature (:func:`model.dino_loss.teacher_temperature`)."""
        o = self.options
        return teacher_temperature(self.epoch, o["warmup_teacher_temp_epochs"], o["warmup_teacher_temp"], o["teacher_temp"])

    @property
    def last_layer_frozen(self) -> bool:
        """True before epoch ``freeze_last_layer_epochs``: the last layer then gets zero gradients."""
        return self.epoch < self.options["freeze_last_layer_epochs"]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The student's trainable parameters (the frozen norm ``g`` is not one); no decay for norms,
        biases, pos_embed, cls_token."""
        return split_decay(self.student)

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """The student ViT as a timm state dict plus ``backbone.json`` (:func:`model.vit.export_timm_vit`)."""
        return export_timm_vit(self.student.encoder, out_dir, method="dino")

    def forward(self, batch: ViewBatch) -> dict[str, Tensor]:
        """``{"loss", "teacher_temp", "teacher_entropy", "embeddings"}``: the fp32 loss with grad, this
        epoch's teacher temperature, the mean entropy of the teacher's distributions (nats; ``ln K``
        uniform, 0 one-hot) and the teacher's image tokens of global view 0 ``[B, D]``.

        In training mode the center then moves towards this step's mean teacher output (all ranks)."""
        views, b = checked_views(batch, "DINO"), batch.batch_size
        g = global_view_count(views, self.options["num_global"])
        if len(views) < 2:
            raise ValueError("DINO needs at least two views")
        frozen = self.training and self.last_layer_frozen
        student: list[Tensor | None] = [None] * len(views)
        for idx in views_by_size(views).values():  # one student call per view size
            _, out = self.student(torch.cat([views[i] for i in idx]), frozen)
            for n, i in enumerate(idx):
                student[i] = out[n * b : (n + 1) * b]
        with torch.no_grad():
            token, t = self.teacher(torch.cat(views[:g]))
            t = t.float()
            q = teacher_probs(t, self.center, self.teacher_temp).view(g, b, -1)
        loss = dino_loss(torch.stack(student), q, self.options["student_temp"])
        if self.training:
            self.center.copy_(updated_center(self.center, batch_center(t), self.options["center_momentum"]))
        return {
            "loss": loss,
            "teacher_temp": torch.tensor(self.teacher_temp),
            "teacher_entropy": mean_entropy(q),
            "embeddings": token[:b].detach().float(),
        }
