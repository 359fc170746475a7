"""The SLAT VAE: sparse transformer encoder and mesh-style decoder (TRELLIS `SLatEncoder` and
`SLatMeshDecoder`, scaled by a ModelConfig).

`convert_to_fp16()` converts only the transformer blocks and the subdivide blocks (as TRELLIS's
`convert_module_to_f16`); input layers, output layers and the position embedding stay fp32, and
activations are cast to fp16 after the position embedding and back to fp32 before the output head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PositionEmbedder, SparseTransformerBlock
from .config import ModelConfig
from .sparse import SparseTensor
from .subdivide import SparseSubdivideBlock

__all__ = ["SlatDecoder", "SlatEncoder", "SlatVAE", "VAEOutput"]


def _make_blocks(cfg: ModelConfig, channels: int) -> nn.ModuleList:
    shift = cfg.window // 2
    return nn.ModuleList(
        SparseTransformerBlock(channels, cfg.num_heads, cfg.window, shift if i % 2 else 0, cfg.mlp_ratio)
        for i in range(cfg.num_blocks)
    )


class _Torso(nn.Module):
    """fp32 input linear + position embedding, then the blocks in `self.dtype`."""

    def __init__(self, cfg: ModelConfig, in_channels: int) -> None:
        super().__init__()
        channels = cfg.model_channels
        self.input_layer = nn.Linear(in_channels, channels)
        self.pos_embedder = PositionEmbedder(channels)
        self.blocks = _make_blocks(cfg, channels)
        self.dtype = torch.float32

    def torso(self, x: SparseTensor) -> SparseTensor:
        h = self.input_layer(x.feats.float()) + self.pos_embedder(x.coords[:, 1:])
        h = x.replace(h.to(self.dtype))
        for block in self.blocks:
            h = block(h)
        return h


class SlatEncoder(_Torso):
    """Sparse features -> (mean, logvar) per voxel, `latent_channels` each."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.in_channels)
        self.out_layer = nn.Linear(cfg.model_channels, 2 * cfg.latent_channels)
        nn.init.zeros_(self.out_layer.weight)
        nn.init.zeros_(self.out_layer.bias)

    def convert_to_fp16(self) -> None:
        self.blocks.half()
        self.dtype = torch.float16

    def forward(self, x: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.torso(x).feats.float()
        out = self.out_layer(F.layer_norm(h, h.shape[-1:]))
        mean, logvar = out.chunk(2, dim=-1)
        return mean, logvar


class SlatDecoder(_Torso):
    """Latent per voxel -> per-voxel predictions at `resolution * 2**len(subdiv_channels)`: channel 0 is
    the occupancy logit, the rest are attributes."""

    def __init__(self, cfg: ModelConfig, native: bool) -> None:
        super().__init__(cfg, cfg.latent_channels)
        widths = (cfg.model_channels, *cfg.subdiv_channels)
        self.upsample = nn.ModuleList(
            SparseSubdivideBlock(widths[i], widths[i + 1], cfg.norm_groups, native)
            for i in range(len(cfg.subdiv_channels))
        )
        self.out_layer = nn.Linear(widths[-1], 1 + cfg.attr_channels)

    def convert_to_fp16(self, upsample: bool = True) -> None:
        self.blocks.half()
        if upsample:
            self.upsample.half()
        self.dtype = torch.float16

    def forward(self, z: SparseTensor) -> SparseTensor:
        h = self.torso(z)
        for block in self.upsample:
            h = block(h)
        return h.replace(self.out_layer(h.feats.float()))


@dataclass(frozen=True)
class VAEOutput:
    """`pred` at the decoder's output resolution; `mean`/`logvar` per input voxel (fp32)."""

    pred: SparseTensor
    mean: torch.Tensor
    logvar: torch.Tensor


class SlatVAE(nn.Module):
    """Encoder and decoder trained together: z = mean + exp(logvar / 2) * noise."""

    def __init__(self, cfg: ModelConfig, native: bool = True) -> None:
        super().__init__()
        self.encoder = SlatEncoder(cfg)
        self.decoder = SlatDecoder(cfg, native)

    def convert_to_fp16(self, upsample: bool = True) -> None:
        """Blocks (Linear and sparse-conv weights) to fp16; in/out layers and norms stay fp32.

        `upsample=False` keeps the decoder's subdivide blocks fp32: spconv's CPU (Native) fp16
        convolution forward is ~100x slower than fp32, so CPU runs keep those blocks fp32.
        """
        self.encoder.convert_to_fp16()
        self.decoder.convert_to_fp16(upsample)

    def attention_cores(self) -> list[nn.Module]:
        """Every WindowAttentionCore, encoder first (the `overflow` fault raises their logit gain)."""
        return [b.attn.core for torso in (self.encoder, self.decoder) for b in torso.blocks]

    def forward(self, x: SparseTensor) -> VAEOutput:
        mean, logvar = self.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return VAEOutput(self.decoder(x.replace(z)), mean, logvar)
