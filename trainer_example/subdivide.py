"""Sparse subdivide block of the SLAT mesh decoder (TRELLIS `SparseSubdivideBlock3d`), on spconv.

GroupNorm -> SiLU -> 2x subdivision of every voxel -> SubMConv3d -> GroupNorm -> SiLU ->
zero-initialised SubMConv3d, plus a linear skip of the subdivided input. spconv runs with
`ConvAlgo.Native` on the CPU (the only algorithm it has there) and its default algorithm on CUDA;
pick with `native=` at construction, since spconv fixes the algorithm per module.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .sparse import SparseTensor, group_norm, subdivide

with warnings.catch_warnings():
    # spconv 2.3 still uses the deprecated torch.cuda.amp decorators; the warnings are not ours to fix.
    warnings.simplefilter("ignore", FutureWarning)
    import spconv.pytorch as spconv
    from spconv.core import ConvAlgo

__all__ = ["SparseSubdivideBlock", "conv_algo"]


def conv_algo(native: bool) -> ConvAlgo | None:
    """`ConvAlgo.Native` for the CPU, None (spconv's default, implicit GEMM) for CUDA."""
    return ConvAlgo.Native if native else None


class SparseSubdivideBlock(nn.Module):
    """Doubles the resolution of a SparseTensor; `channels` -> `out_channels` features per voxel.

    Output rows 8i..8i+7 are the children of input voxel i (see `sparse.subdivide`).
    """

    def __init__(self, channels: int, out_channels: int, num_groups: int, native: bool) -> None:
        super().__init__()
        self.num_groups = num_groups
        algo = conv_algo(native)
        self.act = nn.SiLU()
        self.conv1 = spconv.SubMConv3d(channels, out_channels, 3, indice_key="subdiv", algo=algo)
        self.act2 = nn.SiLU()
        self.conv2 = spconv.SubMConv3d(out_channels, out_channels, 3, indice_key="subdiv", algo=algo)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Linear(channels, out_channels) if channels != out_channels else nn.Identity()

    def forward(self, x: SparseTensor) -> SparseTensor:
        """Runs in the dtype of the block's weights with autocast off: spconv's CPU path multiplies
        with `torch.mm(out=...)`, which autocast would hand an fp16 result for an fp32 buffer."""
        with torch.autocast(x.feats.device.type, enabled=False):
            return self._forward(x.type(self.conv1.weight.dtype))

    def _forward(self, x: SparseTensor) -> SparseTensor:
        h = self.act(group_norm(x, self.num_groups))
        fine = subdivide(x)
        h = subdivide(x.replace(h)).feats
        size = [fine.resolution] * 3
        t = spconv.SparseConvTensor(h, fine.coords, size, fine.batch_size)
        t = self.conv1(t)
        t = t.replace_feature(self.act2(group_norm(fine.replace(t.features), self.num_groups)))
        t = self.conv2(t)
        return fine.replace(t.features + self.skip(fine.feats))
