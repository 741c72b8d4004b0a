"""GTSA's heads (docs/methods.md): dense projector, dense predictor, rotation head."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a map, without affine parameters: ``[B, C, H, W]`` -> same."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> same, each position normalised over ``C``."""
        # contiguous: a channels-last output would make the next 1x1 conv's weight gradient
        # channels-last too, against DDP's gradient layout contract (a copy per step in the reducer)
        return F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), eps=self.eps).permute(0, 3, 1, 2).contiguous()


def conv_ln_gelu(in_dim: int, out_dim: int) -> nn.Sequential:
    """3x3 conv (padding 1) -> LayerNorm over channels without affine -> GELU."""
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, padding=1), ChannelLayerNorm(out_dim), nn.GELU())


def _init_convs(module: nn.Module) -> None:
    # the reference initialises its head convs with N(0, 0.02) and zero bias, like its ViT linears
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class ResidualConvProjector(nn.Module):
    """Token grid -> ``blocks`` residual [3x3 conv, LN, GELU] blocks -> 1x1 conv.

    ``[B, in_dim, h, w]`` -> ``[B, out_dim, h, w]`` (GTSA: 384 -> 384 -> 768). A block adds its
    input when the widths agree (always, when ``hidden_dim == in_dim``).
    """

    def __init__(self, in_dim: int = 384, hidden_dim: int = 384, out_dim: int = 768, blocks: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(conv_ln_gelu(in_dim if i == 0 else hidden_dim, hidden_dim) for i in range(blocks))
        self.proj = nn.Conv2d(hidden_dim, out_dim, 1)
        self.out_dim = out_dim
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_dim, h, w]`` -> ``[B, out_dim, h, w]``."""
        for block in self.blocks:
            y = block(x)
            x = y + x if y.shape == x.shape else y
        return self.proj(x)


class DensePredictor(nn.Module):
    """[3x3 conv, LN, GELU] -> 1x1 conv, no residual: ``[B, dim, h, w]`` -> ``[B, out_dim, h, w]``."""

    def __init__(self, dim: int = 768, hidden_dim: int = 768, out_dim: int = 768) -> None:
        super().__init__()
        self.block = conv_ln_gelu(dim, hidden_dim)
        self.proj = nn.Conv2d(hidden_dim, out_dim, 1)
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, dim, h, w]`` -> ``[B, out_dim, h, w]``."""
        return self.proj(self.block(x))


class RotationHead(nn.Module):
    """MLP on the mean patch token: ``[B, dim]`` -> ``[B, 4]`` quarter-turn logits.

    dim -> hidden -> hidden (LN, GELU after each) -> bottleneck (LN) -> 4, as the reference
    (384 -> 768 -> 768 -> 128 -> 4).
    """

    def __init__(self, dim: int = 384, hidden_dim: int = 768, bottleneck_dim: int = 128, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim), nn.LayerNorm(bottleneck_dim),
            nn.Linear(bottleneck_dim, classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        """``[B, dim]`` -> ``[B, classes]`` logits."""
        return self.net(x)
