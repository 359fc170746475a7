"""Swin-style windowed sparse self-attention: voxels attend only to voxels of the same batch item in
the same (optionally shifted) cubic window, as in TRELLIS's `SparseWindowedMultiHeadAttention`.

Windows are gathered into padded dense blocks `[windows, max_len, heads, head_dim]` with a key mask.
On the CPU (and whenever a fault raises `logit_gain`) the logits are formed explicitly in the
activation dtype, so an fp16 logit past 65504 becomes inf exactly as it would in a naive kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .sparse import SparseTensor

__all__ = ["WindowAttentionCore", "WindowPartition", "SparseWindowAttention", "partition_windows"]


@dataclass(frozen=True)
class WindowPartition:
    """Voxel rows gathered per window: `index[w, j]` is the row of the j-th voxel of window w (or 0 where
    `valid[w, j]` is False)."""

    index: torch.Tensor
    valid: torch.Tensor


def partition_windows(coords: torch.Tensor, resolution: int, window: int, shift: int) -> WindowPartition:
    """Group voxel rows by (batch, window) after shifting coordinates by `shift` (swin).

    Windows are keyed by the batch index, so voxels of different batch items never share a window.
    """
    per_axis = (resolution + shift + window - 1) // window
    cell = (coords[:, 1:].long() + shift) // window
    key = coords[:, 0].long()
    for axis in range(3):
        key = key * per_axis + cell[:, axis]
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    window_of_sorted = torch.repeat_interleave(torch.arange(len(counts), device=coords.device), counts)
    pos = torch.arange(len(order), device=coords.device) - starts[window_of_sorted]
    max_len = int(counts.max()) if len(counts) else 0
    index = torch.zeros(len(counts), max_len, dtype=torch.long, device=coords.device)
    valid = torch.zeros(len(counts), max_len, dtype=torch.bool, device=coords.device)
    index[window_of_sorted, pos] = order
    valid[window_of_sorted, pos] = True
    return WindowPartition(index, valid)


class WindowAttentionCore(nn.Module):
    """softmax(q k^T / sqrt(d) * logit_gain) v within windows; no parameters.

    `logit_gain` is 1 in normal training; the `overflow` fault raises it so fp16 logits pass 65504.
    Input `qkv` is `[N, 3, heads, head_dim]`; output `[N, heads * head_dim]` in the input dtype.
    """

    def __init__(self) -> None:
        super().__init__()
        self.logit_gain = 1.0

    def forward(self, qkv: torch.Tensor, part: WindowPartition) -> torch.Tensor:
        n, _, heads, head_dim = qkv.shape
        blocks = qkv[part.index]  # [W, L, 3, H, D]
        q, k, v = (blocks[:, :, i].transpose(1, 2) for i in range(3))  # [W, H, L, D]
        key_mask = part.valid[:, None, None, :]
        scale = head_dim**-0.5
        if qkv.is_cuda and self.logit_gain == 1.0:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale)
        else:
            logits = torch.matmul(q, k.transpose(-1, -2)) * (scale * self.logit_gain)
            logits = logits.masked_fill(~key_mask, float("-inf"))
            out = torch.matmul(torch.softmax(logits, dim=-1), v)
        out = out.transpose(1, 2)[part.valid]  # [N_valid, H, D] in window order
        result = torch.empty(n, heads, head_dim, dtype=out.dtype, device=out.device)
        result[part.index[part.valid]] = out
        return result.reshape(n, heads * head_dim)


class SparseWindowAttention(nn.Module):
    """Multi-head self-attention within (shifted) windows of a SparseTensor: `to_qkv` -> core -> `to_out`."""

    def __init__(self, channels: int, num_heads: int, window: int, shift: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads, self.window, self.shift = num_heads, window, shift
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.core = WindowAttentionCore()
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: SparseTensor, feats: torch.Tensor) -> torch.Tensor:
        """Attend over `feats` (normalised features of `x`'s voxels); returns new features `[N, C]`."""
        part = partition_windows(x.coords, x.resolution, self.window, self.shift)
        qkv = self.to_qkv(feats).view(feats.shape[0], 3, self.num_heads, -1)
        return self.to_out(self.core(qkv, part))
