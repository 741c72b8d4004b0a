"""timm Vision Transformers as dense encoders: patch tokens laid out as a grid.

Any timm ViT name works (``vit_small_patch16_224`` for GTSA, ``vit_tiny_patch16_224`` with a small
``img_size``/``patch_size`` for CPU runs). The model is built without classifier and with
``dynamic_img_size=True``, so timm interpolates the position embeddings for views of another size
than ``img_size`` (GTSA's 96-px crops). Nothing is ever downloaded (``pretrained=False``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import DropPath
from torch import Tensor, nn

# What every encoder gets on top of the user's kwargs; export writes these into backbone.json so
# that timm.create_model(arch, **model_kwargs) rebuilds exactly the exported module.
FIXED_KWARGS: dict[str, Any] = {"num_classes": 0, "dynamic_img_size": True}


def vit_model_kwargs(img_size: int, model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kwargs for ``timm.create_model``: the user's (e.g. ``patch_size``, ``depth``,
    ``embed_dim``), the position-embedding grid size and :data:`FIXED_KWARGS`. No drop-path:
    that is a training choice, passed separately."""
    kwargs = dict(model_kwargs or {})
    for key in ("pretrained", "drop_path_rate"):
        if key in kwargs:
            raise ValueError(f"set {key!r} through the GTSA options, not model_kwargs")
    return {**kwargs, "img_size": int(img_size), **FIXED_KWARGS}


class ViTEncoder(nn.Module):
    """A timm ViT whose forward gives the patch tokens as a map: ``[B, 3, H, W]`` ->
    ``[B, D, H / p, W / p]`` (after the final norm; prefix tokens dropped).

    The timm model is the attribute ``vit``, so ``encoder.vit.state_dict()`` loads with
    ``strict=True`` into ``timm.create_model(arch, **model_kwargs)``.
    """

    def __init__(self, arch: str, model_kwargs: dict[str, Any], drop_path_rate: float = 0.0) -> None:
        super().__init__()
        try:
            self.vit = timm.create_model(arch, pretrained=False, drop_path_rate=float(drop_path_rate), **model_kwargs)
        except (RuntimeError, TypeError) as e:  # unknown name / a non-ViT refusing ViT kwargs
            raise ValueError(f"timm cannot build the ViT {arch!r} ({e}); pick a name from timm.list_models('vit_*')") from None
        if not hasattr(self.vit, "patch_embed") or not hasattr(self.vit, "num_prefix_tokens"):
            raise ValueError(f"{arch!r} is not a timm VisionTransformer; pick a name from timm.list_models('vit_*')")
        self.arch, self.model_kwargs = arch, dict(model_kwargs)
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.embed_dim = int(self.vit.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Patch tokens as a map: ``[B, 3, H, W]`` -> ``[B, D, H / p, W / p]``; ValueError unless ``p`` divides H, W."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        if h * self.patch_size != x.shape[-2] or w * self.patch_size != x.shape[-1]:
            raise ValueError(f"view size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :]  # [B, h*w, D]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def disable_drop_path(module: nn.Module) -> nn.Module:
    """Set every timm ``DropPath`` in ``module`` to probability 0 (the teacher's encoder); returns it."""
    for m in module.modules():
        if isinstance(m, DropPath):
            m.drop_prob = 0.0
    return module


def export_timm_vit(encoder: ViTEncoder, out_dir: str | Path, method: str) -> dict[str, Path]:
    """Write ``{arch}_timm.pth`` (the ViT's state dict) and ``backbone.json``
    (``family: timm_vit``, ``arch``, ``weights``, ``model_kwargs``, ``method``); returns the paths
    by kind. ``timm.create_model(arch, **model_kwargs)`` loads the weights with ``strict=True``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"timm": out / f"{encoder.arch}_timm.pth", "backbone": out / "backbone.json"}
    state = {k.removeprefix("module."): v.detach().cpu().clone() for k, v in encoder.vit.state_dict().items()}
    torch.save(state, written["timm"])
    info = {
        "family": "timm_vit",
        "arch": encoder.arch,
        "weights": written["timm"].name,
        "model_kwargs": encoder.model_kwargs,
        "method": method,
    }
    written["backbone"].write_text(json.dumps(info, indent=2) + "\n")
    return written


class ViTFeatureMaps(nn.Module):
    """Dense features of a timm ViT for downstream use: the patch tokens after the last ``blocks``
    blocks (final norm applied to each, as the training losses saw the last one), as maps.

    ``forward``: ``[B, 3, H, W]`` -> ``{"block{i}": [B, D, H / p, W / p]}`` (1-based block numbers);
    ``strides``: ``{name: p}`` in input pixels. This is the ``timm_vit`` family of exported backbones.
    """

    def __init__(self, vit: nn.Module, blocks: int = 3) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if not 1 <= blocks <= depth:
            raise ValueError(f"blocks must be in [1, {depth}] (the ViT's depth), got {blocks}")
        self.vit, self.indices = vit, list(range(depth - blocks, depth))
        p = int(vit.patch_embed.patch_size[0])
        self.strides = {f"block{i + 1}": p for i in self.indices}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``{"block{i}": [B, D, H / p, W / p]}``."""
        maps = self.vit.forward_intermediates(x, indices=self.indices, norm=True, output_fmt="NCHW", intermediates_only=True)
        return dict(zip(self.strides, maps))


def load_timm_vit_features(directory: str | Path, info: dict[str, Any], blocks: int = 3) -> ViTFeatureMaps:
    """The ``timm_vit`` family's loader: rebuild ``info["arch"]`` with ``info["model_kwargs"]``,
    load ``directory / info["weights"]`` strictly, wrap as :class:`ViTFeatureMaps` (eval mode)."""
    vit = timm.create_model(info["arch"], pretrained=False, **info.get("model_kwargs", {}))
    state = torch.load(Path(directory) / info["weights"], map_location="cpu", weights_only=True)
    vit.load_state_dict(state, strict=True)
    return ViTFeatureMaps(vit, blocks).eval()
