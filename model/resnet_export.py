"""Export a ResNet trunk for downstream fine-tuning: torchvision and detectron2 formats.

:func:`export_resnet` (called by the ResNet methods' ``export``) writes into a directory:

- ``{arch}_torchvision.pth``: a ``torchvision.models.{arch}()`` state dict that loads with
  ``strict=True``. The backbone has no classifier, so ``fc.weight``/``fc.bias`` (1000 classes) are
  zeros: replace or re-initialise the head for linear probing or fine-tuning.
- for bottleneck ResNets (50/101/152) ``{arch}_detectron2.pkl``: the same weights renamed to
  detectron2's ResNet names (``stem.conv1``, ``res2``..``res5``, ``conv1..3`` with ``.norm``,
  ``shortcut`` / ``shortcut.norm``), as numpy arrays in a pickled
  ``{"model": ..., "__author__": ..., "matching_heuristics": True}`` like detectron2's
  ``tools/convert-torchvision-to-d2.py`` output, plus ``detectron2_config.yaml`` with the settings
  detectron2 needs for these weights:

  - ``RESNETS.STRIDE_IN_1X1: False``: torchvision's bottleneck strides in the 3x3 conv (``conv2``),
    detectron2's default (True, MSRA weights) strides in the first 1x1;
  - ``INPUT.FORMAT: RGB`` and ``PIXEL_MEAN/STD`` = ImageNet mean/std x 255 in RGB order, because
    the pipeline trained on RGB images normalised that way (detectron2 defaults to BGR).

- ``backbone.json``: what :func:`model.features.load_exported` needs to rebuild the trunk
  (``family``, ``arch``, ``weights`` file name, ``method``).

``num_batches_tracked`` buffers are dropped from the detectron2 file (its frozen BN has none).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD

# (blocks per stage, bottleneck) -> torchvision builder name
RESNET_LAYOUTS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}

D2_AUTHOR = "densessl (self-supervised student backbone, torchvision layout)"


def identify_resnet(state: dict[str, Tensor]) -> str:
    """torchvision ResNet name whose layout matches a (fc-less) ResNet state dict."""
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(len(ids))
    bottleneck = any(re.match(r"layer1\.0\.conv3\.", k) for k in state)
    key = (tuple(blocks), bottleneck)
    if key not in RESNET_LAYOUTS:
        raise ValueError(f"not a torchvision ResNet layout: blocks per stage {blocks}, bottleneck={bottleneck}")
    return RESNET_LAYOUTS[key]


def torchvision_state_dict(backbone: nn.Module | dict[str, Tensor]) -> tuple[str, dict[str, Tensor]]:
    """``(arch, state)``: the backbone's weights plus a zero ``fc``, verified by loading them with
    ``strict=True`` into ``torchvision.models.{arch}()``."""
    src = backbone.state_dict() if isinstance(backbone, nn.Module) else backbone
    state = {k.removeprefix("module."): v.detach().cpu().clone() for k, v in src.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    arch = identify_resnet(state)
    reference = getattr(torchvision.models, arch)(weights=None)
    fc = reference.fc
    state["fc.weight"] = torch.zeros_like(fc.weight)
    state["fc.bias"] = torch.zeros_like(fc.bias)
    reference.load_state_dict(state, strict=True)  # raises on any missing/unexpected/mis-shaped key
    return arch, state


def detectron2_key(key: str) -> str:
    """torchvision ResNet key -> detectron2 ResNet key (the renaming of detectron2's converter)."""
    if not key.startswith("layer"):
        key = "stem." + key  # conv1, bn1 of the stem
    key = re.sub(r"^layer([1-4])", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"(^|\.)bn([1-3])\.", r"\1conv\2.norm.", key)
    key = key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return key


def detectron2_checkpoint(tv_state: dict[str, Tensor]) -> dict[str, Any]:
    """detectron2 checkpoint dict from a torchvision bottleneck-ResNet state dict (fc dropped)."""
    model = {
        detectron2_key(k): v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
        for k, v in tv_state.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    return {"model": model, "__author__": D2_AUTHOR, "matching_heuristics": True}


def detectron2_config_text(arch: str) -> str:
    """detectron2 YAML snippet (weights file, RGB pixel mean/std, depth, stride placement) for ``arch``."""
    depth = int(arch.removeprefix("resnet"))
    mean = ", ".join(f"{255 * m:.3f}" for m in IMAGENET_MEAN)
    std = ", ".join(f"{255 * s:.3f}" for s in IMAGENET_STD)
    return (
        "# Settings for detectron2 when loading the exported weights (merge into your config).\n"
        "MODEL:\n"
        f'  WEIGHTS: "{arch}_detectron2.pkl"\n'
        f"  PIXEL_MEAN: [{mean}]  # RGB order\n"
        f"  PIXEL_STD: [{std}]\n"
        "  RESNETS:\n"
        f"    DEPTH: {depth}\n"
        "    STRIDE_IN_1X1: False  # torchvision bottleneck: stride in the 3x3 conv\n"
        "INPUT:\n"
        '  FORMAT: "RGB"\n'
    )


def export_resnet(backbone: nn.Module | dict[str, Tensor], out_dir: str | Path, method: str) -> dict[str, Path]:
    """Write the torchvision (and, for bottleneck ResNets, detectron2) exports and ``backbone.json``
    for the trunk trained by ``method``; returns the written paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arch, state = torchvision_state_dict(backbone)
    written = {"torchvision": out_dir / f"{arch}_torchvision.pth"}
    torch.save(state, written["torchvision"])
    if "layer1.0.conv3.weight" in state:
        written["detectron2"] = out_dir / f"{arch}_detectron2.pkl"
        with open(written["detectron2"], "wb") as f:
            pickle.dump(detectron2_checkpoint(state), f)
        written["detectron2_config"] = out_dir / "detectron2_config.yaml"
        written["detectron2_config"].write_text(detectron2_config_text(arch))
    info = {"family": "torchvision_resnet", "arch": arch, "weights": written["torchvision"].name, "method": method}
    written["backbone"] = out_dir / "backbone.json"
    written["backbone"].write_text(json.dumps(info, indent=2) + "\n")
    return written
