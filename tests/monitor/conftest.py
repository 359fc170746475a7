"""Small models in the shapes the monitor must handle (TRELLIS #162: fp16 blocks, fp32 out_layer)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import monitor


class Fp16Blocks(nn.Module):
    """fp16 blocks between an fp32 input and an fp32 output layer, like TRELLIS's convert_to_fp16()."""

    def __init__(self, fp16: bool = True) -> None:
        super().__init__()
        self.input_layer = nn.Linear(16, 32)
        self.blocks = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.out_layer = nn.Linear(32, 1)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.blocks.to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.input_layer(x).to(self.dtype))
        return self.out_layer(h.float())


def batch(seed: int = 0, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g), torch.randn(n, 1, generator=g)


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int, watcher=None, loss_mul: float = 1e-3,
                scaler=None) -> list[float]:
    losses = []
    for i in range(steps):
        x, y = batch(i)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y) * loss_mul
        if watcher is not None:
            watcher.observe_loss(loss)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture
def record_path(tmp_path):
    return tmp_path / "run.sqlite"


@pytest.fixture
def watched():
    """Factory: monitor.watch(...) with port=None by default, closed after the test."""
    made = []

    def make(model, opt, **kw):
        kw.setdefault("port", None)
        kw.setdefault("run", "test")
        w = monitor.watch(model, opt, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
