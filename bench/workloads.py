"""Benchmark workloads: one `Job` per variant (its own model copy, optimizer and data, same seed).

A Job trains with the recipe real loops use: `zero_grad`, forward (under autocast for `amp`),
backward (scaled by the GradScaler when there is one), `optimizer.step()` (through the scaler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["WORKLOADS", "Job", "make_job"]


@dataclass
class Job:
    """One model copy with its optimizer; `loss()` runs the forward pass on the fixed batch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[], torch.Tensor]
    device: torch.device
    scaler: torch.amp.GradScaler | None = None
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = field(default=contextlib.nullcontext)

    def grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.model.parameters() if p.grad is not None]


def _adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-4)


def mlp(device: torch.device) -> Job:
    """Dense 6.8M-parameter MLP, batch 256 (fp16 hidden blocks on CUDA, fp32 on the CPU)."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = nn.Sequential(nn.Linear(512, 1024), *[m for _ in range(6) for m in (nn.GELU(), nn.Linear(1024, 1024))],
                          nn.Linear(1024, 1)).to(device)
    model[1:-1].to(dtype)
    x = torch.randn(256, 512, device=device)

    def loss() -> torch.Tensor:
        h = model[0](x).to(dtype)
        for layer in model[1:-1]:
            h = layer(h)
        return model[-1](h.float()).pow(2).mean()

    return Job(model, _adamw(model), loss, device)


def transformer(device: torch.device) -> Job:
    """Dense pre-norm transformer: 6 blocks, 256 channels, 4 heads, 512 tokens, batch 1 (4.7M params)."""
    layer = nn.TransformerEncoderLayer(256, 4, dim_feedforward=1024, dropout=0.0, batch_first=True, norm_first=True)
    model = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False).to(device)
    x = torch.randn(1, 512, 256, device=device)
    target = torch.randn(1, 512, 256, device=device)
    return Job(model, _adamw(model), lambda: (model(x) - target).pow(2).mean(), device)


def _slat(device: torch.device, config: str, amp: bool) -> Job:
    from monitor.example.config import TrainConfig
    from monitor.example.data import SyntheticVoxels
    from monitor.example.losses import vae_loss
    from monitor.example.model import SlatVAE

    cfg = TrainConfig(config=config).model_config()
    model = SlatVAE(cfg, native=device.type != "cuda").to(device)
    batch = SyntheticVoxels(cfg, 0, device).batch(0)
    job = Job(model, _adamw(model), lambda: vae_loss(model(batch.x), batch).total, device)
    if amp:  # fp32 weights, fp16 autocast, GradScaler: the real scaler path (skips, unscale_)
        job.scaler = torch.amp.GradScaler(device.type)
        job.autocast = lambda: torch.autocast(device.type, dtype=torch.float16)
    return job


def slat_tiny(device: torch.device) -> Job:
    """trainer_example's tiny SLAT VAE (spconv; fp32), one fixed batch."""
    return _slat(device, "tiny", amp=False)


def slat_base(device: torch.device) -> Job:
    """The `base` SLAT VAE (TRELLIS size) with fp16 autocast and a GradScaler: for CUDA (spconv's CUDA path)."""
    return _slat(device, "base", amp=device.type == "cuda")


WORKLOADS: dict[str, Callable[[torch.device], Job]] = {
    "slat": slat_tiny,
    "transformer": transformer,
    "mlp": mlp,
    "slat-base": slat_base,
}


def make_job(name: str, device: torch.device, seed: int = 0) -> Job:
    """A fresh Job of workload `name`; the same seed gives every variant identical weights and data."""
    torch.manual_seed(seed)
    return WORKLOADS[name](device)
