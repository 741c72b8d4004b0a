"""Frozen dense feature extractors for evaluation: an exported backbone, or a random one.

A method's ``export(out_dir)`` writes the student backbone plus ``backbone.json``, e.g.
``{"family": "torchvision_resnet", "arch": "resnet18", "weights": "resnet18_torchvision.pth",
"method": "clove"}``. :func:`load_exported` reads it back through :data:`FAMILIES` (one entry per
backbone family: a new family is one class and one dict line) into a :class:`DenseFeatures`,
which is all the evaluator in ``train/`` talks to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
import torchvision
from torch import Tensor, nn

EXPORT_META = "backbone.json"
INITS = {"default": "torchvision init", "zero_residual": "zero-residual init"}
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class DenseFeatures(nn.Module):
    """A frozen backbone returning named feature maps.

    ``forward(x)``: ``x`` ``[B, 3, H, W]`` ImageNet-normalised -> ``{layer: [B, C, ~H/s, ~W/s]}``
    for the layers of ``.strides`` (``{layer: s}``). Always in eval mode, without gradients.
    ``.name`` is a row label for tables; ``.info`` describes the source (family, arch, init or
    method, checkpoint step) for JSON output.
    """

    def __init__(self, body: nn.Module, strides: dict[str, int], name: str, info: dict[str, Any]) -> None:
        super().__init__()
        self.body = body
        self.strides = dict(strides)
        self.name = name
        self.info = dict(info)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DenseFeatures:  # noqa: ARG002 - frozen: BN statistics never update
        """Stays in eval mode whatever ``mode`` says."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``{layer: [B, C, ~H/s, ~W/s]}`` for the selected layers."""
        out = self.body(x)
        return {k: out[k] for k in self.strides}

    @torch.no_grad()
    def reestimate_batch_norm(self, batches: Iterable[Tensor]) -> bool:
        """Set every BatchNorm's running mean and variance to the population statistics of its
        input over all ``batches`` (ImageNet-normalised ``[B, 3, H, W]``): every value weighs the
        same, so a short last batch counts for its size. The forward passes run the norms in
        training mode, as training would have; the backbone stays frozen otherwise. Returns False,
        changing nothing, without BatchNorm.

        A random network's BatchNorm layers hold their initial statistics (mean 0, variance 1),
        i.e. they are the identity in eval mode; re-estimating puts every row of a table on the
        same footing: statistics of the images it is evaluated on.
        """
        norms = [m for m in self.body.modules() if isinstance(m, BATCH_NORMS)]
        if not norms:
            return False
        sums: dict[nn.Module, list] = {m: [0, 0.0, 0.0] for m in norms}  # values, sum, sum of squares per channel

        def accumulate(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].transpose(0, 1).reshape(inputs[0].shape[1], -1).double()  # [C, values]
            acc = sums[module]
            acc[0] += x.shape[1]
            acc[1] = acc[1] + x.sum(1)
            acc[2] = acc[2] + (x * x).sum(1)

        hooks = [m.register_forward_pre_hook(accumulate) for m in norms]
        try:
            for m in norms:
                m.train()  # the norms only: anything else (dropout, drop-path) stays in eval mode
            for x in batches:
                self.body(x)
        finally:
            for h in hooks:
                h.remove()
            for m in norms:
                m.eval()
        for m, (n, total, squares) in sums.items():
            if n == 0:
                raise ValueError("no images to re-estimate BatchNorm statistics on")
            mean = total / n
            m.running_mean.copy_(mean.to(m.running_mean))
            m.running_var.copy_((squares / n - mean * mean).clamp_min(0).to(m.running_var))
        return True

    def select(self, layers: list[str] | None) -> DenseFeatures:
        """Restrict to ``layers`` (None: keep all); ValueError naming the available ones."""
        if layers:
            unknown = [name for name in layers if name not in self.body.strides]
            if unknown:
                raise ValueError(f"unknown layer(s) {unknown} for {self.name}; choose from {list(self.body.strides)}")
            self.strides = {name: self.body.strides[name] for name in layers}
        return self


class _ResNetLayers(nn.Module):
    """torchvision ResNet trunk returning its stage outputs (layer1..layer4, strides 4..32)."""

    strides = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.resnet = resnet

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``{layerN: [B, C_N, ~H/s, ~W/s]}`` for layer1..layer4."""
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        out = {}
        for name in self.strides:
            x = getattr(r, name)(x)
            out[name] = x
        return out


class Family(Protocol):
    """How one backbone family is built from an export and at random."""

    def handles(self, arch: str) -> bool:
        """True when this family builds ``arch``."""

    def from_export(self, meta: dict[str, Any], directory: Path) -> DenseFeatures:
        """Frozen features from an export directory and its parsed ``backbone.json``."""

    def random(self, arch: str, init: str) -> DenseFeatures:
        """Frozen randomly initialised ``arch`` (``init``: a key of :data:`INITS`)."""


class TorchvisionResNet:
    """``torchvision.models.resnetXX`` state dicts (``fc.*`` present, strict load); reports layer3, layer4."""

    archs = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    default_layers = ("layer3", "layer4")

    def handles(self, arch: str) -> bool:
        """True for the torchvision ResNet names of ``archs``."""
        return arch in self.archs

    def _wrap(self, resnet: torchvision.models.ResNet, name: str, info: dict[str, Any]) -> DenseFeatures:
        body = _ResNetLayers(resnet)
        return DenseFeatures(body, {name: body.strides[name] for name in self.default_layers}, name, info)

    def from_export(self, meta: dict[str, Any], directory: Path) -> DenseFeatures:
        """Strict load of the exported torchvision state dict; FileNotFoundError/ValueError when unusable."""
        arch = meta.get("arch")
        if not self.handles(arch):
            raise ValueError(f"{directory / EXPORT_META}: arch {arch!r} is not one of {self.archs}")
        path = directory / meta["weights"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} (named in {EXPORT_META}) is missing")
        resnet = getattr(torchvision.models, arch)(weights=None)
        resnet.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        name = f"{meta.get('method', 'exported')} {arch}" + (f" step {meta['step']}" if "step" in meta else "")
        return self._wrap(resnet, name, {"family": "torchvision_resnet", **meta, "source": str(directory)})

    def random(self, arch: str, init: str) -> DenseFeatures:
        """Randomly initialised ResNet (``init``: ``default`` or ``zero_residual``)."""
        resnet = getattr(torchvision.models, arch)(weights=None, zero_init_residual=init == "zero_residual")
        return self._wrap(resnet, f"random {arch} ({INITS[init]})", {"family": "torchvision_resnet", "arch": arch, "init": init})


class TimmViT:
    """timm ViT state dicts (strict load into ``timm.create_model(arch, **model_kwargs)``); reports the
    patch tokens after the last 3 blocks as maps (stride = patch size)."""

    def handles(self, arch: str) -> bool:
        """True for timm ViT/DeiT/EVA names."""
        return arch.startswith(("vit_", "deit_", "eva"))

    def from_export(self, meta: dict[str, Any], directory: Path) -> DenseFeatures:
        """Strict load of the exported timm state dict; FileNotFoundError when the weights file is missing."""
        from model.vit import load_timm_vit_features

        path = directory / meta["weights"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} (named in {EXPORT_META}) is missing")
        body = load_timm_vit_features(directory, meta)
        name = f"{meta.get('method', 'exported')} {meta['arch']}" + (f" step {meta['step']}" if "step" in meta else "")
        return DenseFeatures(body, dict(body.strides), name, {"family": "timm_vit", **meta, "source": str(directory)})

    def random(self, arch: str, init: str) -> DenseFeatures:
        """Randomly initialised timm ViT (``init`` must be ``default``)."""
        import timm

        from model.vit import ViTFeatureMaps

        if init != "default":
            raise ValueError(f"a ViT has no {init!r} init; use random:{arch}")
        body = ViTFeatureMaps(timm.create_model(arch, pretrained=False, dynamic_img_size=True))
        return DenseFeatures(
            body, dict(body.strides), f"random {arch} ({INITS[init]})", {"family": "timm_vit", "arch": arch, "init": init}
        )


FAMILIES: dict[str, Family] = {"torchvision_resnet": TorchvisionResNet(), "timm_vit": TimmViT()}


def load_exported(path: str | Path) -> DenseFeatures:
    """The backbone of an export directory (one holding ``backbone.json``), frozen, on the CPU."""
    directory = Path(path)
    meta_path = directory / EXPORT_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"no {EXPORT_META} in {directory}: pass a directory written by a method's export()")
    meta = json.loads(meta_path.read_text())
    family = meta.get("family")
    if family not in FAMILIES:
        raise ValueError(f"{meta_path}: unknown backbone family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family].from_export(meta, directory)


def random_features(arch: str, init: str = "default", seed: int = 0) -> DenseFeatures:
    """A randomly initialised backbone (drawn from torch's RNG seeded with ``seed``, the global RNG untouched).

    ``init``: ``"default"`` (the library's own init) or ``"zero_residual"`` (last norm of every
    residual block zeroed, CLoVE's step 0).
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {sorted(INITS)}")
    for family in FAMILIES.values():
        if family.handles(arch):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                features = family.random(arch, init)
            features.info.update(seed=seed)
            return features
    raise ValueError(f"no backbone family knows arch {arch!r} (families: {sorted(FAMILIES)})")
