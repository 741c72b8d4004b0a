"""Dense projector: a per-location MLP written as 1x1 convolutions."""

from __future__ import annotations

from torch import Tensor, nn


class DenseProjector(nn.Module):
    """1x1 conv in->hidden (no bias), BN, ReLU, 1x1 conv hidden->out (no bias), BN without affine.

    ``forward``: ``[B, in_dim, H, W]`` -> ``[B, out_dim, H, W]``. The final BN has no affine
    parameters (CLoVE's projector); its statistics are per call, i.e. per view-resolution group.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, out_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_dim, affine=False),
        )
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_dim, h, w]`` -> ``[B, out_dim, h, w]``."""
        return self.net(x)
