"""A minimal sparse voxel tensor: integer coordinates (batch, x, y, z) with one feature row per voxel.

The shape TRELLIS's structured latents have: `coords` int32 `[N, 4]`, `feats` `[N, C]`, voxels of one
batch item may come in any order but rows of `coords` and `feats` always correspond. Operations
return new tensors; `coords` is shared between tensors that differ only in features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SparseTensor", "group_norm", "subdivide"]


@dataclass(frozen=True)
class SparseTensor:
    """`coords` int32 `[N, 4]` = (batch, x, y, z), `feats` `[N, C]`, `resolution` of the cubic grid."""

    coords: torch.Tensor
    feats: torch.Tensor
    batch_size: int
    resolution: int

    def __post_init__(self) -> None:
        if self.coords.dtype != torch.int32 or self.coords.dim() != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must be int32 [N, 4], got {self.coords.dtype} {tuple(self.coords.shape)}")
        if self.feats.dim() != 2 or self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"feats must be [N, C] with N = {self.coords.shape[0]}, got {tuple(self.feats.shape)}")

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """Same voxels, new features (row i of `feats` belongs to voxel i)."""
        return SparseTensor(self.coords, feats, self.batch_size, self.resolution)

    def type(self, dtype: torch.dtype) -> SparseTensor:
        return self if self.feats.dtype == dtype else self.replace(self.feats.to(dtype))

    def batch_counts(self) -> torch.Tensor:
        """Voxels per batch item, `[batch_size]` int64."""
        return torch.bincount(self.coords[:, 0].long(), minlength=self.batch_size)


def subdivide(x: SparseTensor) -> SparseTensor:
    """Split every voxel into its 8 children on a grid of twice the resolution; children copy the
    parent's features. Child rows are grouped by parent: rows 8i..8i+7 are the children of voxel i."""
    offsets = torch.tensor(
        [[0, dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)],
        dtype=torch.int32,
        device=x.coords.device,
    )
    scale = torch.tensor([1, 2, 2, 2], dtype=torch.int32, device=x.coords.device)
    coords = (x.coords * scale).unsqueeze(1) + offsets.unsqueeze(0)
    feats = x.feats.unsqueeze(1).expand(-1, 8, -1)
    return SparseTensor(coords.reshape(-1, 4), feats.reshape(-1, x.feats.shape[1]), x.batch_size, x.resolution * 2)


def group_norm(x: SparseTensor, num_groups: int, eps: float = 1e-5) -> torch.Tensor:
    """GroupNorm over the voxels of each batch item separately (TRELLIS's SparseGroupNorm32), computed
    in fp32 and returned in the input dtype, without affine parameters. Returns the new features."""
    feats = x.feats.float()
    n, c = feats.shape
    if c % num_groups:
        raise ValueError(f"{c} channels do not split into {num_groups} groups")
    batch = x.coords[:, 0].long()
    grouped = feats.view(n, num_groups, c // num_groups)
    # Per (batch item, group) statistics over all voxels and channels of the group.
    per_voxel_sum = grouped.sum(-1)
    per_voxel_sq = (grouped * grouped).sum(-1)
    count = (x.batch_counts().to(feats.dtype) * (c // num_groups)).clamp_min(1).unsqueeze(1)
    sums = torch.zeros(x.batch_size, num_groups, dtype=feats.dtype, device=feats.device)
    sqs = torch.zeros_like(sums)
    sums.index_add_(0, batch, per_voxel_sum)
    sqs.index_add_(0, batch, per_voxel_sq)
    mean = sums / count
    var = (sqs / count - mean * mean).clamp_min(0)
    normed = (grouped - mean[batch].unsqueeze(-1)) * torch.rsqrt(var[batch].unsqueeze(-1) + eps)
    return normed.view(n, c).to(x.feats.dtype)
