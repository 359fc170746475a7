"""Small real watched runs for the CLI and source tests (CPU, a second or two each)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import monitor


class Fp16Blocks(nn.Module):
    """fp16 blocks and an fp32 output layer: the TRELLIS #162 shape."""

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64)).to(dtype)
        self.out_layer = nn.Linear(64, 1)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.blocks(x.to(self.dtype)).float())


def watched_run(record: Path | None, *, eps: float = 1e-8, dtype: torch.dtype = torch.float16, steps: int = 3,
                port: int | None = None, run: str = "test", between=None) -> monitor.Watcher:
    """Train `steps` AdamW steps under monitor.watch; `between(step, watcher)` runs after each step.
    Returns the closed watcher."""
    torch.manual_seed(0)
    model = Fp16Blocks(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=eps)
    x, y = torch.randn(32, 16), torch.randn(32, 1)
    with monitor.watch(model, opt, port=port, record=None if record is None else str(record), run=run) as w:
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            w.observe_loss(loss)
            loss.backward()
            opt.step()
            if between is not None:
                between(step, w)
    return w
