"""Synthetic voxel data: random spheres, boxes and ellipsoids, as sparse surface voxels with features.

A shape is sampled at the decoder's output resolution (`resolution * 2**levels`); its surface there
is the reconstruction target, and the coarse voxels containing any of it are the encoder's input.
Input features stand in for TRELLIS's averaged DINOv2 features: a fixed random projection of
what each voxel contains (occupancy of its 8 children, colour, shape kind). Deterministic in `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .sparse import SparseTensor, subdivide

__all__ = ["Batch", "SyntheticVoxels"]

KINDS = ("sphere", "box", "ellipsoid")


@dataclass(frozen=True)
class Batch:
    """`x`: encoder input; `occupancy` `[M]` and `attrs` `[M, A]`: targets for the decoder's M output
    voxels, in the decoder's row order (children grouped by parent)."""

    x: SparseTensor
    occupancy: torch.Tensor
    attrs: torch.Tensor


@dataclass(frozen=True)
class _Shape:
    coords: torch.Tensor  # [n, 3] coarse coordinates
    feats: torch.Tensor  # [n, C_in]
    fine_surface: torch.Tensor  # bool [F, F, F]
    base_color: torch.Tensor  # [A]


def _inside(kind: str, p: torch.Tensor, center: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    d = (p - center) / radii
    if kind == "box":
        return d.abs().amax(-1) <= 1
    return (d * d).sum(-1) <= 1


class SyntheticVoxels:
    """A fixed pool of `cfg.pool_size` shapes; `batch(i)` returns batch i, cycling through the pool."""

    def __init__(self, cfg: ModelConfig, seed: int, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.levels = len(cfg.subdiv_channels)
        if cfg.attr_channels > 3:
            raise ValueError(f"attr_channels must be at most 3 (a colour), got {cfg.attr_channels}")
        gen = torch.Generator().manual_seed(seed)
        n_raw = 8 + cfg.attr_channels + len(KINDS)
        self.projection = (torch.randn(n_raw, cfg.in_channels, generator=gen) / n_raw**0.5).to(device)
        self.shapes = [self._make_shape(gen) for _ in range(cfg.pool_size)]

    def _make_shape(self, gen: torch.Generator) -> _Shape:
        cfg, res = self.cfg, self.cfg.resolution
        kind_idx = int(torch.randint(len(KINDS), (1,), generator=gen))
        lo, hi = cfg.shape_size
        radius = (lo + (hi - lo) * torch.rand(1, generator=gen)) * res
        radii = radius * (0.6 + 0.4 * torch.rand(3, generator=gen)) if KINDS[kind_idx] == "ellipsoid" else radius
        center = radius + (res - 2 * radius) * torch.rand(3, generator=gen)
        base_color = torch.rand(cfg.attr_channels, generator=gen)
        scale = 2**self.levels
        axis = (torch.arange(res * scale, device=self.device, dtype=torch.float32) + 0.5) / scale
        p = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
        inside = _inside(KINDS[kind_idx], p, center.to(self.device), radii.to(self.device))
        outside = F.pad((~inside).float()[None, None], (1,) * 6, value=1.0)
        fine_surface = inside & (F.max_pool3d(outside, 3, stride=1)[0, 0] > 0)
        coarse = F.max_pool3d(fine_surface.float()[None, None], scale)[0, 0] > 0
        coords = coarse.nonzero().to(torch.int32)
        base_color = base_color.to(self.device)
        feats = self._features(coords, fine_surface, base_color, kind_idx)
        return _Shape(coords, feats, fine_surface, base_color)

    def _color(self, base_color: torch.Tensor, fine_coords: torch.Tensor) -> torch.Tensor:
        """Colour at fine voxels `[M, 3]` (long): the shape's colour plus a gentle gradient in space."""
        pos = (fine_coords.float() + 0.5) / (2**self.levels * self.cfg.resolution)
        return (base_color + 0.3 * (pos[:, : self.cfg.attr_channels] - 0.5)).clamp(0, 1)

    def _features(
        self, coords: torch.Tensor, surface: torch.Tensor, base_color: torch.Tensor, kind: int
    ) -> torch.Tensor:
        scale = 2**self.levels
        child = F.avg_pool3d(surface.float()[None, None], scale // 2)[0, 0] if scale > 2 else surface.float()
        c = coords.long()
        octants = torch.stack(
            [child[2 * c[:, 0] + i, 2 * c[:, 1] + j, 2 * c[:, 2] + k] for i in (0, 1) for j in (0, 1) for k in (0, 1)],
            dim=-1,
        )
        mean_color = self._color(base_color, c * scale + scale // 2)
        onehot = F.one_hot(torch.full((len(c),), kind, device=self.device), len(KINDS)).float()
        return torch.cat([octants, mean_color, onehot], -1) @ self.projection

    def batch(self, index: int) -> Batch:
        """Batch `index` (0-based): shapes `index * B .. index * B + B - 1` of the pool, modulo its size."""
        b = self.cfg.batch_size
        picks = [self.shapes[(index * b + j) % len(self.shapes)] for j in range(b)]
        coords = torch.cat([F.pad(s.coords, (1, 0), value=j) for j, s in enumerate(picks)])
        x = SparseTensor(coords, torch.cat([s.feats for s in picks]), b, self.cfg.resolution)
        fine = x
        for _ in range(self.levels):
            fine = subdivide(fine)
        fc = fine.coords.long()
        surface = torch.stack([s.fine_surface for s in picks])
        colors = torch.stack([s.base_color for s in picks])
        occupancy = surface[fc[:, 0], fc[:, 1], fc[:, 2], fc[:, 3]].float()
        attrs = self._color(colors[fc[:, 0]], fc[:, 1:])
        return Batch(x, occupancy, attrs)
