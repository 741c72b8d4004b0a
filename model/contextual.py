"""Contextualization: multi-head self-attention over the locations of one view.

No positional encoding and no residual connection (CLoVE); the output is L2-normalised per
location. Two logit variants:

- ``dot``: scaled dot product ``q.k / sqrt(d_head)`` (what the reference code trains; numerically
  ``nn.MultiheadAttention`` with the same weights).
- ``cosine``: ``cos(q, k) / temperature`` per head (the paper's "normalized attention").
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ATTENTIONS = ("dot", "cosine")


class ContextualAttention(nn.Module):
    """Self-attention over ``H*W`` locations.

    ``forward``: ``[B, D, H, W]`` -> ``[B, H*W, D]`` unit-norm rows (row-major locations).
    """

    def __init__(self, dim: int = 256, heads: int = 8, attention: str = "dot", temperature: float = 0.2) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide the embedding dim ({dim})")
        if temperature <= 0:
            raise ValueError(f"attention_temperature must be > 0, got {temperature}")
        self.dim, self.heads, self.attention, self.temperature = dim, heads, attention, float(temperature)
        self.in_proj = nn.Linear(dim, 3 * dim)  # q, k, v stacked, as nn.MultiheadAttention stores them
        self.out_proj = nn.Linear(dim, dim)
        # nn.MultiheadAttention's initialisation
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Self-attention over positions: ``[B, D, h, w]`` -> ``[B, h*w, D]`` unit rows."""
        b, d, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, L, D]
        q, k, v = self.in_proj(tokens).view(b, h * w, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.attention == "cosine":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / self.temperature)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, d_head]
        out = self.out_proj(out.transpose(1, 2).reshape(b, h * w, d))
        return F.normalize(out, dim=-1)
