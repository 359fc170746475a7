"""Transformer pieces of the SLAT VAE torso: fp32 LayerNorm, sinusoidal position embedding, tanh-GELU
MLP and the pre-norm sparse transformer block (TRELLIS `SparseTransformerBlock`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SparseWindowAttention
from .sparse import SparseTensor

__all__ = ["FeedForward", "LayerNorm32", "PositionEmbedder", "SparseTransformerBlock"]


class LayerNorm32(nn.Module):
    """LayerNorm without affine parameters computed in fp32, returned in the input dtype."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


class PositionEmbedder(nn.Module):
    """Sinusoidal embedding of integer voxel coordinates (TRELLIS `AbsolutePositionEmbedder`): per axis
    `channels // 6` frequencies 1 / 10000^(i/f), sin and cos, zero-padded to `channels`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        freq_dim = channels // 3 // 2
        freqs = 1.0 / (10000 ** (torch.arange(freq_dim, dtype=torch.float32) / freq_dim))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """`xyz` `[N, 3]` integer coordinates -> `[N, channels]` fp32."""
        angles = torch.outer(xyz.reshape(-1).float(), self.freqs)
        embed = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(xyz.shape[0], -1)
        return F.pad(embed, (0, self.channels - embed.shape[1]))


class FeedForward(nn.Module):
    """Linear -> tanh-GELU -> Linear with hidden width `mlp_ratio * channels`."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class SparseTransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)); x + mlp(norm2(x)), attention in (shifted) windows."""

    def __init__(self, channels: int, num_heads: int, window: int, shift: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm32()
        self.attn = SparseWindowAttention(channels, num_heads, window, shift)
        self.norm2 = LayerNorm32()
        self.mlp = FeedForward(channels, mlp_ratio)

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = x.feats + self.attn(x, self.norm1(x.feats))
        h = h + self.mlp(self.norm2(h))
        return x.replace(h)
