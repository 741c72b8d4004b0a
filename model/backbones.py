"""Convolutional trunks: torchvision ResNets cut after ``layer4`` (the C5 map).

The trunk keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so its
``state_dict`` is a torchvision ResNet's without ``fc``: export needs no renaming. Nothing here ever
downloads: weights come only from a local file the caller names.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

# name -> (torchvision builder, C5 channels)
RESNETS = {
    "resnet18": (torchvision.models.resnet18, 512),
    "resnet34": (torchvision.models.resnet34, 512),
    "resnet50": (torchvision.models.resnet50, 2048),
    "resnet101": (torchvision.models.resnet101, 2048),
    "resnet152": (torchvision.models.resnet152, 2048),
}


class ResNetC5(nn.Module):
    """ResNet without pooling and classifier.

    ``forward``: ``[B, 3, H, W]`` -> ``[B, C5, ceil(H / 32), ceil(W / 32)]`` (7x7 at 224, 3x3 at 96).
    """

    def __init__(self, resnet: torchvision.models.ResNet, out_channels: int) -> None:
        super().__init__()
        # Same attribute names as torchvision so that state_dict keys match it exactly.
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        """C5 feature map: ``[B, 3, H, W]`` -> ``[B, C5, ceil(H / 32), ceil(W / 32)]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_local_weights(trunk: ResNetC5, path: str | Path) -> None:
    """Load a torchvision-named ResNet state dict from a local file (``fc.*`` keys are ignored).

    Accepts a bare state dict or a checkpoint holding one under ``state_dict``/``model``; a
    ``module.`` prefix (DDP) is stripped. Raises ``FileNotFoundError``/``ValueError`` in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = trunk.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: not a torchvision ResNet state dict for this backbone "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    trunk.load_state_dict(state)


def build_backbone(name: str, weights: str | Path | None = None, zero_init_residual: bool = True) -> ResNetC5:
    """A ResNet trunk returning C5.

    ``zero_init_residual`` zeroes the last BN gamma of every residual block (bn2 of a basic block,
    bn3 of a bottleneck), so every block starts as the identity. ``weights`` is a local file path or
    None (random init); no pretrained weights are ever fetched from the network.
    """
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(RESNETS)}")
    builder, channels = RESNETS[name]
    trunk = ResNetC5(builder(weights=None, zero_init_residual=zero_init_residual), channels)
    if weights:
        load_local_weights(trunk, weights)
    return trunk
